"""The Streamlit page's layout: title, sidebar (models, thresholds, status), a notice per model that is not
available, and the Images, Camera, Video and Evaluate tabs (each image's result: ``image_view``; the models'
status and the set-up guide: ``status``).

``app/streamlit_app.py`` is the script Streamlit runs (``streamlit run app/streamlit_app.py`` locally;
``python -m app serve`` in containers, which loads the models first); it calls ``main()`` here on every
rerun, so the page is an ordinary module with ordinary imports. Detectors come from
``st.cache_resource`` over the process-wide registry (built once per process, shared by all sessions), and
are looked for again on a new page or "Re-check models" while one is missing.

Memory is bounded per process, not per session: uploads are decoded and run through the networks once per
process (``uploads``), in the byte-budget cache every session shares (``cache``). A slider move decodes
nothing and runs no network: it only re-thresholds and redraws (the agreement view of "both side by side"
too: it matches the decoded results). Tables, JSON and CSV give boxes in the original's pixels. The libraries
and models are frozen out of the garbage collector's view (``ops.collector``): Streamlit collects after every
run, and visiting them took ~200 ms per slider move.

The sidebar's settings round-trip through the URL's query parameters (``query``): a link reproduces the view
(never the uploaded data). Example images (``app/page/examples``, public domain or CC0) run the upload path.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ..engine.catalog import FAMILIES
from ..engine.config import ConfigError, Settings
from ..engine.labels import vocabulary
from ..engine.result import DetectParams
from ..ops import prometheus
from ..ops.collector import freeze_long_lived
from . import query
from .cache import start_janitor
from .evaluate_tab import evaluate_tab
from .image_view import process_and_show
from .status import current_statuses, setup_guide, status_panel, unavailable_notices
from .text import plain
from .uploads import IMAGE_TYPES, session_id
from .video_view import video_tab

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def settings_or_stop() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        st.error(f"Configuration error: {plain(exc)}")
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
    for notice in st.session_state["query_notices"]:  # they quote the URL: shown as written, never as markup
        st.sidebar.warning(plain(notice), icon=":material/link_off:")
    st.sidebar.caption("For the Images, Camera and Video tabs; Evaluate has its own settings and runs every model.")
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
    status_panel(statuses)
    models = [] if choice is None else (loaded if choice == "both" else [choice])
    params = DetectParams(conf=conf, iou=iou, classes=frozenset(classes) or None, max_det=max_det)
    return models, params, match_iou


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
    # (name, bytes, identity): an upload is keyed by Streamlit's file id, so equal names never collide
    items = [(upload.name, upload.getvalue(), upload.file_id) for upload in uploads or []]
    if example is not None:  # exactly the upload's path, with the file's bytes
        items.append((example, (EXAMPLES_DIR / example).read_bytes(), f"example:{example}"))
    process_and_show(items, models, params, settings, loaded, match_iou)


def camera_tab(models: list[str], params: DetectParams, settings: Settings, loaded: list[str], match_iou: float):
    snapshot = st.camera_input("Take a snapshot", key="camera")
    if snapshot is not None:
        items = [("camera.jpg", snapshot.getvalue(), f"camera:{snapshot.file_id}")]
        process_and_show(items, models, params, settings, loaded, match_iou)


def main() -> None:
    st.set_page_config(page_title="Object detection: SSD vs YOLO", page_icon="🔎", layout="wide")
    st.title("Object detection: SSD and YOLO")
    start_janitor()
    prometheus.session_seen(session_id())
    settings = settings_or_stop()
    statuses = current_statuses(settings)
    models, params, match_iou = sidebar(settings, statuses)
    loaded = [m for m, status in statuses.items() if status.ok]
    freeze_long_lived(tuple(loaded))  # new imports or models: out of Streamlit's collection after every run
    if not models:
        setup_guide(settings, statuses)
        return
    unavailable_notices(statuses, settings)
    tabs = {  # title -> what renders it; a new tab is one more entry
        "Images": lambda: images_tab(models, params, settings, loaded, match_iou),
        "Camera": lambda: camera_tab(models, params, settings, loaded, match_iou),
        "Video": lambda: video_tab(models, params, settings),
        "Evaluate": lambda: evaluate_tab(loaded, settings),
    }
    for tab, render in zip(st.tabs(list(tabs)), tabs.values(), strict=True):
        with tab:
            render()
