"""The Streamlit page: compare the detector families on images, camera snapshots and video.

``app/streamlit_app.py`` is the script Streamlit runs (``streamlit run app/streamlit_app.py`` locally;
``python -m app serve`` in containers, which loads the models first); it calls ``main()`` here on every
rerun, so the page is an ordinary module with ordinary imports. Detectors come from
``st.cache_resource`` over the process-wide registry (built once per process, shared by all sessions).

Memory is bounded per process, not per session (issue 8): an upload is decoded once into a working copy
(longer side ``images.work_side`` of the loaded networks, what they see) and a display copy (longer side
``DISPLAY_SIDE``, what the page shows, served to the browser as JPEG); the full-resolution array is
dropped at once, the working copy once every loaded model has run on it. The copies and each network
output live in ``app.memory.CACHE``, keyed by content digest and shared by every session, under one byte
budget; what no live session uses is released. Tables, JSON and CSV give boxes in the original's pixels.
A slider move decodes nothing and runs no network: it only re-thresholds and redraws (the agreement
view of "both side by side" too: it matches the decoded results). A processed video's result (its WebM
and MP4, per-frame rows and at most 64 key-frame JPEGs) lives in the same cache, counted by its bytes and
owned by the session that made it; the session keeps only its key until another video replaces it or the
upload is removed, so its key-frame slider and the sidebar rerun the page without processing again. Its
downloads are made when clicked; if the cache let the result go meanwhile, the page says so.

The sidebar's settings round-trip through the URL's query parameters (``app.query``): a link reproduces the
view (never the uploaded data). Example images (``app/examples``, public domain or CC0) run the upload path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from . import images as image_io  # load_image looked up per call (tests count decodes)
from . import metrics, query
from .agreement import Agreement, match
from .annotate import annotate, annotate_agreement, to_png
from .catalog import FAMILIES
from .config import ConfigError, Settings
from .detectors.base import RawOutput
from .eval_tab import evaluate_tab
from .exports import frames_csv, result_csv, result_json
from .images import ImageError
from .labels import vocabulary
from .memory import CACHE, malloc_trim, start_janitor
from .registry import get_detector, inference_slots, model_status
from .result import DetectionResult, DetectParams, detection_rows
from .video import VideoError, VideoReport, process_video, timeline
from .video_jobs import VideoBusy, gate

MODEL_TITLES = {name: family.title for name, family in FAMILIES.items()}
TABLE_COLUMNS = ["label", "score", "x1", "y1", "x2", "y2"]  # of result.detection_rows, as in the CSV
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
VIDEO_TYPES = ["mp4", "mov", "avi", "webm"]
DISPLAY_SIDE = 1280  # longer side of the copy the page shows and annotates (what Streamlit keeps per session)
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class PreparedImage:
    """An upload decoded once: the working copy for the networks, the display copy for the page, and
    what maps both back to the original (``x_original = x_copy * factor``). ``working`` becomes None
    once every loaded model's output for the image is cached (nothing needs it any more)."""

    working: np.ndarray | None
    working_factor: float
    display: np.ndarray
    display_factor: float
    original_size: tuple[int, int]  # width, height
    warnings: tuple[str, ...] = ()

    @property
    def display_size(self) -> tuple[int, int]:
        return self.display.shape[1], self.display.shape[0]


@st.cache_resource(show_spinner="Loading models (once per process)…")
def load_models(_settings: Settings, settings_key: str) -> dict:
    """Status of every enabled model, building each once per process (shared by all sessions). Cached
    per ``settings_key`` (the settings' repr); Streamlit does not hash the underscored ``_settings``."""
    settings = _settings
    return {m: model_status(m, settings, load=True) for m in settings.models}


def settings_or_stop() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()


def apply_query(choices: list[str]) -> None:
    """The sidebar's values before its widgets exist: on a session's first run, what the URL sets (bad
    values fall back to the defaults, with notices kept for the session); on every run, the default of any
    key not set yet (a widget that was hidden lost its state). Widgets then read session state only."""
    state = st.session_state
    if "query_notices" not in state:
        values, notices = query.parse(st.query_params.to_dict() | multi_classes(), choices, vocabulary())
        state["query_notices"] = notices
        state.update(values)
    for key, value in query.defaults(choices).items():
        if key not in state or (key == "model" and state[key] not in choices):
            state[key] = value


def multi_classes() -> dict:
    """``classes`` given more than once in the URL (``?classes=cup&classes=cat``), as a list."""
    repeated = st.query_params.get_all("classes")
    return {"classes": repeated} if len(repeated) > 1 else {}


def sync_query(values: dict) -> None:
    """Write the sidebar's current values into the URL (only what changed), so the address bar is a link."""
    wanted = query.encode(values)
    for key in query.KEYS:
        if key in wanted and st.query_params.get(key) != wanted[key]:
            st.query_params[key] = wanted[key]
        elif key not in wanted and key in st.query_params:
            del st.query_params[key]


def sidebar(settings: Settings, statuses: dict) -> tuple[list[str], DetectParams, float]:
    """The chosen models, the detection parameters and the agreement's match IoU."""
    loaded = [m for m, s in statuses.items() if s.ok]
    st.sidebar.header("Detection")
    choices = loaded + (["both"] if len(loaded) > 1 else [])
    apply_query(choices)
    for notice in st.session_state["query_notices"]:
        st.sidebar.warning(notice, icon=":material/link_off:")
    labels = {name: family.label for name, family in FAMILIES.items()} | {"both": "Both side by side"}
    choice = st.sidebar.radio("Model", choices, format_func=labels.get, key="model") if choices else None
    conf = st.sidebar.slider("Score threshold", 0.05, 0.95, step=0.05, key="conf")
    iou = st.sidebar.slider("NMS IoU", 0.10, 0.95, step=0.05, key="iou")
    max_det = st.sidebar.slider("Maximum detections", 1, 300, key="max_det")
    classes = st.sidebar.multiselect("Classes (empty = all)", vocabulary(), key="classes")
    if choice == "both":
        st.sidebar.header("Agreement")
        st.sidebar.slider(
            "Match IoU", 0.10, 0.95, step=0.05, key="match_iou", help="Same label and at least this IoU: found by both"
        )
    match_iou = st.session_state["match_iou"]
    shown = {"model": choice, "conf": conf, "iou": iou, "max_det": max_det, "classes": classes}
    sync_query(shown | ({"match_iou": match_iou} if choice == "both" else {}))
    st.sidebar.header("Model status")
    for model, status in statuses.items():
        icon = {"loaded": ":material/check_circle:", "missing": ":material/warning:"}.get(
            status.state, ":material/error:"
        )
        with st.sidebar.expander(f"{MODEL_TITLES[model]}: {status.state}", expanded=not status.ok, icon=icon):
            for f in status.files:
                st.markdown(f"**{f.role}** `{f.path}`  \n{f.describe()}")
            if status.message and not status.ok:
                st.markdown(f"**Problem:** {status.message}")
            if status.fix:
                st.markdown(f"**Fix:** {status.fix}")
    models = [] if choice is None else (loaded if choice == "both" else [choice])
    params = DetectParams(conf=conf, iou=iou, classes=frozenset(classes) or None, max_det=max_det)
    return models, params, match_iou


def setup_guide(settings: Settings, statuses: dict) -> None:
    st.warning(
        "No model is loaded yet, so there is nothing to detect with. The app is running; "
        "add weights and reload the page."
    )
    model_variables = ", ".join(f"`{v.name}`" for family in FAMILIES.values() for v in family.env_vars)
    st.markdown(f"""
### Set-up guide

1. **Fetch the official weights** into `{settings.weights_dir}`:
   ```bash
   python -m app weights fetch
   python -m app weights verify
   ```
2. **Or point the app at your own files** with environment variables, then restart:
   {model_variables} (see README, "Configuration").
3. **In Kubernetes** the weights live on the `objdet-weights` volume: the pod's init container
   (`python -m app weights prepare`) fills or checks it (see README, "Deploy").

The sidebar's **Model status** shows each file, its checksum state and the command that fixes it.
""")


def session_id() -> str | None:
    """This script run's Streamlit session (the owner recorded on cache entries), None outside one."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def loaded_work_side(settings: Settings, loaded: list[str]) -> int:
    """The working copy's side for every loaded model (so a model chosen later needs no new decode)."""
    return image_io.work_side(get_detector(m, settings).input_size for m in loaded)


def prepare(name: str, data: bytes, settings: Settings, side: int) -> PreparedImage:
    """Decode the upload into a working copy (``load_working``: through the gate that bounds concurrent
    large decodes, never building the full-resolution array) and a display copy. A refusal is returned,
    not raised, so it is cached like an image."""
    notes: list[str] = []
    try:
        working, working_factor, (width, height) = image_io.load_working(
            data,
            name,
            max_side=side,
            max_pixels=settings.max_image_pixels,
            max_bytes=settings.max_file_bytes,
            warnings=notes,
        )
    except ImageError as exc:
        return exc
    if working_factor != 1.0:  # hand the decoder's freed blocks back now: each session's thread has its own arena
        malloc_trim()
    display, display_factor = image_io.working_copy(working, DISPLAY_SIDE)
    return PreparedImage(
        working, working_factor, display, working_factor * display_factor, (width, height), tuple(notes)
    )


def image_key(digest: str, settings: Settings) -> tuple:
    return ("image", digest, settings.max_image_pixels, settings.max_file_bytes, DISPLAY_SIDE)


def raw_key(model: str, digest: str, settings: Settings) -> tuple:
    return ("raw", model, settings, digest)


def decode_once(
    name: str, data: bytes, settings: Settings, models: list[str], loaded: list[str]
) -> tuple[str, PreparedImage]:
    """(digest, prepared image) of an upload, decoded once per process whatever the number of sessions
    that upload it; an ``ImageError`` is remembered too (and re-raised with this session's file name).
    Decodes again only when one of ``models`` has no cached output and the working copy was let go."""
    digest = hashlib.sha256(data).hexdigest()
    key = image_key(digest, settings)
    side = loaded_work_side(settings, loaded)

    def decode() -> PreparedImage | ImageError:
        value = prepare(name, data, settings, side)
        if isinstance(value, ImageError):  # counted once per refused content, like the decode itself
            metrics.record_refused(name, value.reason, models)
        return value

    value = CACHE.get_or_compute(key, decode, owner=session_id())
    if isinstance(value, ImageError):
        raise ImageError(name, value.reason)
    if value.working is None and any(raw_key(m, digest, settings) not in CACHE for m in models):
        value = prepare(name, data, settings, side)
        CACHE.put(key, value, owner=session_id())
    return digest, value


def release_working_copy(digest: str, prepared: PreparedImage, settings: Settings, loaded: list[str]) -> None:
    """Keep only the display copy once every loaded model's output is cached: the working copy is the
    largest entry (12.6 MB at 2048x2048) and no slider, class filter or rerun needs it."""
    if prepared.working is not None and all(raw_key(m, digest, settings) in CACHE for m in loaded):
        CACHE.put(image_key(digest, settings), replace(prepared, working=None), owner=session_id())


def forward_once(model: str, digest: str, prepared: PreparedImage, settings: Settings) -> RawOutput:
    """The network output for (model, image) on the working copy, computed once per process."""

    def run() -> RawOutput:
        if prepared.working is None:  # only if the output was evicted between decode_once and here
            raise RuntimeError("the image left the cache meanwhile; rerun the page (R) to decode it again")
        detector = get_detector(model, settings)
        with inference_slots(settings):
            return detector.forward(prepared.working)

    return CACHE.get_or_compute(raw_key(model, digest, settings), run, owner=session_id())


def show_result(
    name: str,
    model: str,
    prepared: PreparedImage,
    result: DetectionResult,
    params: DetectParams,
    agreement: Agreement | None = None,
    key: str | None = None,
) -> None:
    """One model's column; ``result`` is in the original's pixels, the picture is the display copy. The
    JSON download carries the image's ``agreement`` block when both models ran. ``key`` (default: the
    name) keeps the widgets of an example apart from an upload of the same name."""
    key = name if key is None else key
    st.markdown(f"**{MODEL_TITLES[model]}**")
    display_w, display_h = prepared.display_size
    annotated = annotate(prepared.display, result.rescaled(1 / prepared.display_factor, prepared.display_size))
    st.image(annotated, caption=f"{name} · {model}", width="stretch", output_format="JPEG")
    total_ms = sum(result.timings_ms.values())
    c1, c2 = st.columns(2)
    c1.metric("Detections", len(result.detections))
    c2.metric("Latency", f"{total_ms:.0f} ms")
    table = pd.DataFrame(detection_rows(result), columns=TABLE_COLUMNS)
    st.dataframe(table, hide_index=True, width="stretch", key=f"table-{model}-{key}")
    counts = result.counts()
    if counts:
        st.bar_chart(pd.Series(counts, name="count"), horizontal=True)
    st.caption("Latency per stage: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items()))
    stem = Path(name).stem
    params_doc = params.to_dict()
    agreement_doc = agreement.to_dict() if agreement is not None else None
    # Deferred downloads: the bytes are made when a button is clicked, not on every rerun (a slider
    # move stays cheap and sessions do not hold encoded copies); clicking does not rerun the page.
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        "PNG",
        lambda: to_png(annotated),
        f"{stem}.{model}.png",
        "image/png",
        key=f"png-{model}-{key}",
        on_click="ignore",
    )
    d2.download_button(
        "JSON",
        lambda: result_json(result, name, params_doc, agreement=agreement_doc),
        f"{stem}.{model}.json",
        "application/json",
        key=f"json-{model}-{key}",
        on_click="ignore",
    )
    d3.download_button(
        "CSV",
        lambda: result_csv(result),
        f"{stem}.{model}.csv",
        "text/csv",
        key=f"csv-{model}-{key}",
        on_click="ignore",
    )
    width, height = result.image_size
    if (display_w, display_h) != (width, height):
        st.caption(
            f"PNG: the annotated picture at display size {display_w}x{display_h}; table, JSON and CSV "
            f"boxes are in the original's pixels ({width}x{height})."
        )


def show_image(
    name: str,
    data: bytes,
    models: list[str],
    params: DetectParams,
    settings: Settings,
    loaded: list[str],
    match_iou: float = query.SLIDERS["match_iou"].default,
    key: str | None = None,
) -> None:
    """One image's section: the original, a column per model and, for two models, where they agree.
    ``key`` (default: the name) names its widgets."""
    key = name if key is None else key
    try:
        digest, prepared = decode_once(name, data, settings, models, loaded)
    except ImageError as exc:
        st.error(str(exc))
        return
    results: dict[str, DetectionResult | str] = {}  # a model's result in the original's pixels, or its error
    for model in models:
        try:
            raw = forward_once(model, digest, prepared, settings)
            result = get_detector(model, settings).decode(raw, params)
        except (ValueError, RuntimeError) as exc:  # an unknown class, a model whose outputs do not fit
            results[model] = f"{name}: {model}: {exc}"
            continue
        results[model] = result.rescaled(prepared.working_factor, prepared.original_size)
    release_working_copy(digest, prepared, settings, loaded)
    found = [r for r in results.values() if isinstance(r, DetectionResult)]
    agreement = match(found[0], found[1], match_iou) if len(models) == 2 and len(found) == 2 else None
    st.subheader(name)
    columns = st.columns(1 + len(models))
    width, height = prepared.original_size
    display_w, display_h = prepared.display_size
    with columns[0]:
        st.markdown("**Original**")
        shown = "" if (display_w, display_h) == (width, height) else f" (shown at {display_w}x{display_h})"
        st.image(prepared.display, caption=f"{width}x{height}{shown}", width="stretch", output_format="JPEG")
        for note in prepared.warnings:
            st.caption(f":material/warning: {name}: {note}")
    for column, model in zip(columns[1:], models, strict=True):
        with column:
            if isinstance(results[model], str):
                st.error(results[model])
            else:
                show_result(name, model, prepared, results[model], params, agreement, key)
    if agreement is not None:
        show_agreement(name, prepared, agreement, key)


def show_agreement(name: str, prepared: PreparedImage, agreement: Agreement, key: str) -> None:
    """Where the two models agree: the per-class split, the mean IoU of the pairs and one overlay picture."""
    first, second = agreement.first_model, agreement.second_model
    st.markdown(f"**Where {MODEL_TITLES[first]} and {MODEL_TITLES[second]} agree**")
    picture, numbers = st.columns([3, 2])
    titles = (MODEL_TITLES[first], MODEL_TITLES[second])
    overlay = annotate_agreement(prepared.display, agreement, 1 / prepared.display_factor, titles)
    picture.image(overlay, caption=f"{name} · agreement", width="stretch", output_format="JPEG")
    with numbers:
        table = pd.DataFrame(agreement.per_class(), columns=["label", "both", f"only {first}", f"only {second}"])
        st.dataframe(table, hide_index=True, width="stretch", key=f"agreement-{key}")
        c1, c2, c3 = st.columns(3)
        c1.metric("Found by both", len(agreement.both))
        c2.metric(f"Only {first}", len(agreement.only_first))
        c3.metric(f"Only {second}", len(agreement.only_second))
        mean = agreement.mean_iou
        st.metric("Mean IoU of the pairs", "no pairs" if mean is None else f"{mean:.2f}")
        st.caption(
            f"A pair: same label and IoU ≥ {agreement.threshold:.2f} (sidebar, Match IoU), matched greedily by "
            "score. Computed from the results above: no extra network run. In the JSON downloads as `agreement`."
        )


def examples() -> list[str]:
    """The example images shipped in ``app/examples`` (public domain or CC0, see its README)."""
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.suffix.lstrip(".").lower() in IMAGE_TYPES)


def images_tab(models: list[str], params: DetectParams, settings: Settings, loaded: list[str], match_iou: float):
    uploads = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key="images")
    example = st.selectbox(
        "No image at hand? Try an example",
        examples(),
        index=None,
        placeholder="Choose an example image",
        key="example",
    )
    for upload in uploads or []:
        show_image(upload.name, upload.getvalue(), models, params, settings, loaded, match_iou)
    if example is not None:  # exactly the upload's path, with the file's bytes
        data = (EXAMPLES_DIR / example).read_bytes()
        show_image(example, data, models, params, settings, loaded, match_iou, key=f"example:{example}")


def video_tab(models: list[str], params: DetectParams, settings: Settings) -> None:
    upload = st.file_uploader("Video", type=VIDEO_TYPES, key="video")
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", models, format_func=MODEL_TITLES.get, key="video_model")
    every_n = c2.number_input("Detect every Nth frame", 1, 100, 5, key="every_n")
    budget = c3.number_input("Time budget (s)", 5, 600, 60, key="budget")
    clicked = st.button("Process video", key="run_video", disabled=upload is None or model is None)
    shown = st.session_state.get("video_result")
    if upload is None or (shown is not None and shown[0] != upload.name):
        st.session_state.pop("video_result", None)  # the result belongs to the upload it came from
    if clicked and upload is not None and model is not None:
        st.session_state.pop("video_result", None)
        report = run_video(upload, model, params, int(every_n), float(budget), settings)
        if report is not None:
            # The report (WebM, full-size MP4, key frames) lives in the process-wide cache under its byte
            # budget, owned by this session (released when it ends); the session keeps only the key.
            cache_key = ("video", session_id(), upload.name, model)
            CACHE.put(cache_key, report, owner=session_id())
            st.session_state["video_result"] = (upload.name, model, cache_key)
    if "video_result" in st.session_state:
        name, model, cache_key = st.session_state["video_result"]
        report = CACHE.get(cache_key, owner=session_id())
        if report is None:
            st.info(
                f"{name}: the processed video was released to keep the server's memory within its budget "
                "(other sessions needed the room); process it again to see it."
            )
        else:
            show_video(name, model, report, cache_key)


def run_video(upload, model: str, params: DetectParams, every_n: int, budget: float, settings: Settings):
    """Process the upload with progress; the report, or None after showing why the video cannot be used
    (or that every video slot of this process is taken: app/video_jobs.py)."""
    try:
        with gate(settings.video).slot():
            return _run_video(upload, model, params, every_n, budget, settings)
    except VideoBusy as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
        return None


def _run_video(upload, model: str, params: DetectParams, every_n: int, budget: float, settings: Settings):
    detector = get_detector(model, settings)
    bar = st.progress(0.0, text="starting")

    def detect(image, p):
        with inference_slots(settings):
            return detector.detect(image, p)

    try:
        report = process_video(
            upload.getvalue(),
            upload.name,
            detect,
            params,
            every_n,
            budget,
            settings.max_image_pixels,
            progress=lambda f, t: bar.progress(f, text=t),
            scratch_dir=settings.video.scratch_dir,
            max_scratch_bytes=settings.video.scratch_bytes,
        )
    except VideoError as exc:
        metrics.record_refused(upload.name, str(exc), [model])
        st.error(str(exc))
        return None
    metrics.record_video(model, report.frames_detected, report.stopped_by_budget)
    bar.progress(1.0, text="done")
    return report


def cached_bytes(cache_key: tuple, field: str) -> Callable[[], bytes]:
    """A deferred download of one of a cached video report's files: the bytes are looked up when the button
    is clicked (no copy in Streamlit's media store on every rerun); empty if the report was released since."""

    def data() -> bytes:
        report = CACHE.get(cache_key)
        return getattr(report, field) if report is not None else b""

    return data


def show_video(name: str, model: str, report: VideoReport, cache_key: tuple) -> None:
    """The annotated video inline, the per-class timeline, a slider over the key frames and the downloads."""
    note = " (stopped by the time budget)" if report.stopped_by_budget else ""
    st.success(
        f"{name}: {report.frames_read} frames, detection on {report.frames_detected}, "
        f"{len(report.rows)} detections{note}"
    )
    for extra in report.notes:
        st.caption(f":material/warning: {name}: {extra}")
    ext, mime = report.video_format
    playing, looking = st.columns(2)
    with playing:
        st.markdown(f"**Annotated video** ({model})")
        st.video(report.video, format=mime)
    with looking:
        rows = pd.DataFrame(timeline(report), columns=["frame", "time_s", "label", "count"])
        if rows.empty:
            st.caption("Nothing was detected on the processed frames.")
        else:
            st.markdown("**Detections per class over time**")
            chart = (
                alt.Chart(rows)
                .mark_line(point=True)
                .encode(
                    x=alt.X("time_s:Q", title="time (s)"),
                    y=alt.Y("count:Q", title="detections", axis=alt.Axis(tickMinStep=1)),
                    color=alt.Color("label:N", title="class"),
                    tooltip=["label", "frame", "time_s", "count"],
                )
            )
            st.altair_chart(chart, width="stretch", key="video_timeline")
    if report.key_frames:
        frames = dict(report.key_frames)
        slider, picture = st.columns(2)
        if len(frames) > 1:
            index = slider.select_slider(
                "Key frame (detection ran on it)",
                options=list(frames),
                format_func=lambda i: f"{i} ({i / report.fps:.1f} s)",
                key="key_frame",
            )
        else:
            index = next(iter(frames))
        picture.image(frames[index], caption=f"{name} · frame {index} · {model}", width="stretch")
    stem = Path(name).stem
    (web_w, web_h), separate_mp4 = report.web_size, report.video is not report.mp4
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        f"Annotated video (.{ext}, {web_w}x{web_h})",
        cached_bytes(cache_key, "video"),
        f"{stem}.{model}.{ext}",
        mime,
        key="annotated_video",
        on_click="ignore",
    )
    if separate_mp4:
        d2.download_button(
            "Annotated MP4 (source size)",
            cached_bytes(cache_key, "mp4"),
            f"{stem}.{model}.mp4",
            "video/mp4",
            key="mp4",
            on_click="ignore",
        )
    rows = report.rows
    d3.download_button(
        "Per-frame CSV",
        lambda: frames_csv(rows),
        f"{stem}.{model}.frames.csv",
        "text/csv",
        key="frames_csv",
        on_click="ignore",
    )


def main() -> None:
    st.set_page_config(page_title="Object detection: SSD vs YOLO", page_icon="🔎", layout="wide")
    st.title("Object detection: SSD and YOLO")
    start_janitor()
    metrics.session_seen(session_id())
    settings = settings_or_stop()
    statuses = load_models(settings, repr(settings))
    models, params, match_iou = sidebar(settings, statuses)
    loaded = [m for m, status in statuses.items() if status.ok]
    if not models:
        setup_guide(settings, statuses)
        return
    tabs = {  # title -> what renders it; a new tab is one more entry
        "Images": lambda: images_tab(models, params, settings, loaded, match_iou),
        "Camera": lambda: camera_tab(models, params, settings, loaded, match_iou),
        "Video": lambda: video_tab(models, params, settings),
        "Evaluate": lambda: evaluate_tab(loaded, settings),
    }
    for tab, render in zip(st.tabs(list(tabs)), tabs.values(), strict=True):
        with tab:
            render()


def camera_tab(models: list[str], params: DetectParams, settings: Settings, loaded: list[str], match_iou: float):
    snapshot = st.camera_input("Take a snapshot", key="camera")
    if snapshot is not None:
        show_image("camera.jpg", snapshot.getvalue(), models, params, settings, loaded, match_iou)
