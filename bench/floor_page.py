"""The floor of bench/app_bench.py's latency table: the least a Streamlit page can do with the same upload.

    streamlit run bench/floor_page.py        # ?model=yolo (one picture per image) or ?model=both (two)

It receives the uploads, decodes each (``images.load_image``, as the app's pipeline does), draws one box and
one text per model picture and shows it with ``st.image`` (JPEG, as the app sends its pictures), redrawn on
every move of its "Score threshold" slider: the box's size follows the threshold, so every move changes every
picture. No network runs, no table, chart, download or overlay is sent: whatever the app takes beyond this is
the app's own work. Captions are the app's (``<file> · <model>``), so the bench finds both pages' pictures
the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import streamlit as st

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.engine.images import load_image  # noqa: E402 - after the repository is on sys.path

MODELS = {"yolo": ["yolo"], "ssd": ["ssd"], "both": ["ssd", "yolo"]}


@st.cache_data(max_entries=16)
def decoded(data: bytes, name: str):
    """The upload decoded once (the app also decodes once per content)."""
    return load_image(data, name)


def annotated(image, conf: float, model: str):
    """One box whose size follows the threshold, and one text."""
    out = image.copy()
    height, width = out.shape[:2]
    x2, y2 = int(width * (0.2 + 0.7 * conf)), int(height * (0.2 + 0.7 * conf))
    cv2.rectangle(out, (width // 10, height // 10), (x2, y2), (255, 0, 0), 2)
    cv2.putText(out, f"{model} {conf:.2f}", (width // 10, height // 10 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 0, 0))
    return out


def main() -> None:
    st.set_page_config(page_title="Floor page", layout="wide")
    st.title("Floor page")
    models = MODELS.get(st.query_params.get("model", "yolo"), ["yolo"])
    conf = st.sidebar.slider("Score threshold", 0.05, 0.95, 0.30, step=0.05, key="conf")
    uploads = st.file_uploader("Images", accept_multiple_files=True, key="images")
    for upload in uploads or []:
        image = decoded(upload.getvalue(), upload.name)
        for column, model in zip(st.columns(len(models)), models, strict=True):
            column.image(annotated(image, conf, model), caption=f"{upload.name} · {model}", output_format="JPEG")


main()
