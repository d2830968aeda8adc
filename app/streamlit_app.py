"""The Streamlit page: compare SSD and YOLO on images, camera snapshots and video.

Run locally with ``streamlit run app/streamlit_app.py``; in containers ``python -m app serve`` loads
the models first and then runs this same script. Detectors come from ``st.cache_resource`` over the
process-wide registry (built once per process, shared by all sessions). Each image runs through the
network once, at the lowest threshold; moving a slider only re-decodes and redraws.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Streamlit puts the script's folder first on sys.path; this folder is a package, so put its parent
# there instead (``app/images.py`` must not shadow a library's ``import images``).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import pandas as pd  # noqa: E402 - after the path fix
import streamlit as st  # noqa: E402

from app.annotate import annotate, to_png  # noqa: E402
from app.config import ConfigError, Settings  # noqa: E402
from app.detectors.base import RawOutput  # noqa: E402
from app.exports import frames_csv, result_csv, result_json  # noqa: E402
from app.images import ImageError, load_image  # noqa: E402
from app.labels import vocabulary  # noqa: E402
from app.registry import get_detector, inference_slots, model_status  # noqa: E402
from app.result import DetectParams, DetectionResult  # noqa: E402
from app.video import VideoError, process_video  # noqa: E402

MODEL_TITLES = {"ssd": "SSD (torchvision)", "yolo": "YOLO (OpenCV DNN)"}
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
VIDEO_TYPES = ["mp4", "mov", "avi", "webm"]
RAW_CACHE_SIZE = 24  # network outputs kept per session (an SSD output is about 1.2 MB)
DECODED_CACHE_BYTES = 256 * 2**20  # decoded images kept per session, so a slider move decodes nothing


@st.cache_resource(show_spinner="Loading models (once per process)…")
def load_models(settings_key: str) -> dict:
    """Status of every enabled model, building each once per process (shared by all sessions)."""
    settings = Settings.from_env()
    return {m: model_status(m, settings, load=True) for m in settings.models}


def settings_or_stop() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()


def sidebar(settings: Settings, statuses: dict) -> tuple[list[str], DetectParams]:
    loaded = [m for m, s in statuses.items() if s.ok]
    st.sidebar.header("Detection")
    choices = loaded + (["both"] if len(loaded) > 1 else [])
    labels = {"ssd": "SSD", "yolo": "YOLO", "both": "Both side by side"}
    choice = st.sidebar.radio("Model", choices, index=len(choices) - 1 if choices else 0,
                              format_func=labels.get, key="model") if choices else None
    conf = st.sidebar.slider("Score threshold", 0.05, 0.95, 0.30, 0.05, key="conf")
    iou = st.sidebar.slider("NMS IoU", 0.10, 0.95, 0.45, 0.05, key="iou")
    max_det = st.sidebar.slider("Maximum detections", 1, 300, 100, key="max_det")
    classes = st.sidebar.multiselect("Classes (empty = all)", vocabulary(), key="classes")
    st.sidebar.header("Model status")
    for model, status in statuses.items():
        icon = {"loaded": ":material/check_circle:", "missing": ":material/warning:"}.get(
            status.state, ":material/error:")
        with st.sidebar.expander(f"{MODEL_TITLES[model]}: {status.state}", expanded=not status.ok, icon=icon):
            for f in status.files:
                st.markdown(f"**{f.role}** `{f.path}`  \n{f.describe()}")
            if status.message and not status.ok:
                st.markdown(f"**Problem:** {status.message}")
            if status.fix:
                st.markdown(f"**Fix:** {status.fix}")
    models = [] if choice is None else (loaded if choice == "both" else [choice])
    params = DetectParams(conf=conf, iou=iou, classes=frozenset(classes) or None, max_det=max_det)
    return models, params


def setup_guide(settings: Settings, statuses: dict) -> None:
    st.warning("No model is loaded yet, so there is nothing to detect with. The app is running; "
               "add weights and reload the page.")
    st.markdown(f"""
### Set-up guide

1. **Fetch the official weights** into `{settings.weights_dir}`:
   ```bash
   python -m app weights fetch
   python -m app weights verify
   ```
2. **Or point the app at your own files** with environment variables, then restart:
   `OBJDET_SSD_WEIGHTS`, `OBJDET_SSD_ARCH`, `OBJDET_YOLO_WEIGHTS`, `OBJDET_YOLO_CONFIG`,
   `OBJDET_YOLO_NAMES` (see README, "Configuration").
3. **In Kubernetes** the weights live on the `object-detection-model-weights` volume: run the
   weights-loader Job or copy them in (see docs).

The sidebar's **Model status** shows each file, its checksum state and the command that fixes it.
""")


def _bounded(cache: dict, key, value, fits) -> None:
    """Insert, then drop the oldest entries until ``fits(cache)``."""
    cache[key] = value
    while len(cache) > 1 and not fits(cache):
        cache.pop(next(iter(cache)))


def decode_once(name: str, data: bytes, settings: Settings):
    """(digest, RGB array) of an upload, decoded once per session; an ``ImageError`` is remembered too."""
    digest = hashlib.sha256(data).hexdigest()
    cache: dict = st.session_state.setdefault("decoded_images", {})
    if digest not in cache:
        try:
            value = load_image(data, name, max_pixels=settings.max_image_pixels)
        except ImageError as exc:
            value = exc
        _bounded(cache, digest, value, lambda c: sum(getattr(v, "nbytes", 0) for v in c.values())
                 <= DECODED_CACHE_BYTES)
    value = cache[digest]
    if isinstance(value, ImageError):
        raise ImageError(name, value.reason)
    return digest, value


def forward_once(model: str, digest: str, image, settings: Settings) -> RawOutput:
    """The network output for (model, image), computed once per session and image."""
    cache: dict = st.session_state.setdefault("raw_outputs", {})
    key = (model, digest)
    if key not in cache:
        detector = get_detector(model, settings)
        with inference_slots(settings):
            raw = detector.forward(image)
        _bounded(cache, key, raw, lambda c: len(c) <= RAW_CACHE_SIZE)
    return cache[key]


def show_result(name: str, model: str, image, result: DetectionResult, params: DetectParams) -> None:
    st.markdown(f"**{MODEL_TITLES[model]}**")
    annotated = annotate(image, result)
    st.image(annotated, caption=f"{name} · {model}", width="stretch")
    total_ms = sum(result.timings_ms.values())
    c1, c2 = st.columns(2)
    c1.metric("Detections", len(result.detections))
    c2.metric("Latency", f"{total_ms:.0f} ms")
    table = pd.DataFrame([{"label": d.label, "score": round(d.score, 3),
                           "x1": round(d.box[0]), "y1": round(d.box[1]), "x2": round(d.box[2]), "y2": round(d.box[3])}
                          for d in result.detections], columns=["label", "score", "x1", "y1", "x2", "y2"])
    st.dataframe(table, hide_index=True, width="stretch", key=f"table-{model}-{name}")
    counts = result.counts()
    if counts:
        st.bar_chart(pd.Series(counts, name="count"), horizontal=True)
    st.caption("Latency per stage: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items()))
    stem = Path(name).stem
    params_doc = {"conf": params.conf, "iou": params.iou, "max_det": params.max_det,
                  "classes": sorted(params.classes) if params.classes else None}
    # Deferred downloads: the bytes are made when a button is clicked, not on every rerun (a slider
    # move stays cheap and sessions do not hold encoded copies); clicking does not rerun the page.
    d1, d2, d3 = st.columns(3)
    d1.download_button("PNG", lambda: to_png(annotated), f"{stem}.{model}.png", "image/png",
                       key=f"png-{model}-{name}", on_click="ignore")
    d2.download_button("JSON", lambda: result_json(result, name, params_doc), f"{stem}.{model}.json",
                       "application/json", key=f"json-{model}-{name}", on_click="ignore")
    d3.download_button("CSV", lambda: result_csv(result), f"{stem}.{model}.csv", "text/csv",
                       key=f"csv-{model}-{name}", on_click="ignore")


def show_image(name: str, data: bytes, models: list[str], params: DetectParams, settings: Settings) -> None:
    try:
        digest, image = decode_once(name, data, settings)
    except ImageError as exc:
        st.error(str(exc))
        return
    st.subheader(name)
    columns = st.columns(1 + len(models))
    with columns[0]:
        st.markdown("**Original**")
        st.image(image, caption=f"{image.shape[1]}x{image.shape[0]}", width="stretch")
    for column, model in zip(columns[1:], models):
        with column:
            try:
                raw = forward_once(model, digest, image, settings)
                result = get_detector(model, settings).decode(raw, params)
            except (ValueError, RuntimeError) as exc:  # an unknown class, a model whose outputs do not fit
                st.error(f"{name}: {model}: {exc}")
                continue
            show_result(name, model, image, result, params)


def video_tab(models: list[str], params: DetectParams, settings: Settings) -> None:
    upload = st.file_uploader("Video", type=VIDEO_TYPES, key="video")
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", models, format_func=MODEL_TITLES.get, key="video_model")
    every_n = c2.number_input("Detect every Nth frame", 1, 100, 5, key="every_n")
    budget = c3.number_input("Time budget (s)", 5, 600, 60, key="budget")
    clicked = st.button("Process video", key="run_video", disabled=upload is None or model is None)
    if not clicked or upload is None or model is None:
        return
    detector = get_detector(model, settings)
    bar = st.progress(0.0, text="starting")

    def detect(image, p):
        with inference_slots(settings):
            return detector.detect(image, p)

    try:
        report = process_video(upload.getvalue(), upload.name, detect, params, int(every_n), float(budget),
                               settings.max_image_pixels, progress=lambda f, t: bar.progress(f, text=t))
    except VideoError as exc:
        st.error(str(exc))
        return
    bar.progress(1.0, text="done")
    note = " (stopped by the time budget)" if report.stopped_by_budget else ""
    st.success(f"{upload.name}: {report.frames_read} frames, detection on {report.frames_detected}, "
               f"{len(report.rows)} detections{note}")
    stem = Path(upload.name).stem
    st.download_button("Annotated MP4", report.mp4, f"{stem}.{model}.mp4", "video/mp4", key="mp4")
    st.download_button("Per-frame CSV", frames_csv(report.rows), f"{stem}.{model}.frames.csv", "text/csv",
                       key="frames_csv")


def main() -> None:
    st.set_page_config(page_title="Object detection: SSD vs YOLO", page_icon="🔎", layout="wide")
    st.title("Object detection: SSD and YOLO")
    settings = settings_or_stop()
    statuses = load_models(repr(settings))
    models, params = sidebar(settings, statuses)
    if not models:
        setup_guide(settings, statuses)
        return
    tab_images, tab_camera, tab_video = st.tabs(["Images", "Camera", "Video"])
    with tab_images:
        uploads = st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key="images")
        for upload in uploads or []:
            show_image(upload.name, upload.getvalue(), models, params, settings)
    with tab_camera:
        snapshot = st.camera_input("Take a snapshot", key="camera")
        if snapshot is not None:
            show_image("camera.jpg", snapshot.getvalue(), models, params, settings)
    with tab_video:
        video_tab(models, params, settings)


main()
