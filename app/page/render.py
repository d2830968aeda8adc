"""The Streamlit page's layout: title, sidebar (models, thresholds, status), the Images, Camera, Video and
Evaluate tabs, and each image's result (annotated picture, table, chart, downloads, agreement view).

``app/streamlit_app.py`` is the script Streamlit runs (``streamlit run app/streamlit_app.py`` locally;
``python -m app serve`` in containers, which loads the models first); it calls ``main()`` here on every
rerun, so the page is an ordinary module with ordinary imports. Detectors come from
``st.cache_resource`` over the process-wide registry (built once per process, shared by all sessions).

Memory is bounded per process, not per session: uploads are decoded and run through the networks once per
process (``uploads``), in the byte-budget cache every session shares (``cache``). A slider move decodes
nothing and runs no network: it only re-thresholds and redraws (the agreement view of "both side by side"
too: it matches the decoded results). Tables, JSON and CSV give boxes in the original's pixels.

The sidebar's settings round-trip through the URL's query parameters (``query``): a link reproduces the view
(never the uploaded data). Example images (``app/page/examples``, public domain or CC0) run the upload path.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ..engine.agreement import Agreement, match
from ..engine.annotate import annotate, annotate_agreement, to_png
from ..engine.catalog import FAMILIES
from ..engine.config import ConfigError, Settings
from ..engine.exports import result_csv, result_json
from ..engine.images import ImageError
from ..engine.labels import vocabulary
from ..engine.registry import get_detector, model_status
from ..engine.result import DetectionResult, DetectParams, detection_rows
from ..ops import prometheus
from . import query
from .cache import start_janitor
from .evaluate_tab import evaluate_tab
from .uploads import (
    IMAGE_TYPES,
    PreparedImage,
    decode_once,
    forward_once,
    release_working_copy,
    session_id,
)
from .video_view import video_tab

MODEL_TITLES = {name: family.title for name, family in FAMILIES.items()}
TABLE_COLUMNS = ["label", "score", "x1", "y1", "x2", "y2"]  # of result.detection_rows, as in the CSV
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


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
    """The example images shipped in ``app/page/examples`` (public domain or CC0, see its README)."""
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


def main() -> None:
    st.set_page_config(page_title="Object detection: SSD vs YOLO", page_icon="🔎", layout="wide")
    st.title("Object detection: SSD and YOLO")
    start_janitor()
    prometheus.session_seen(session_id())
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
