"""bench/floor_page.py, the floor of bench/app_bench.py's latency table, does what the table says it does:
one annotated picture per model for each upload, captioned as the app captions its own, and a new picture on
every move of its "Score threshold" slider (streamlit.testing, a real upload)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

FLOOR = Path(__file__).resolve().parents[2] / "bench" / "floor_page.py"


@pytest.mark.parametrize(
    ("model", "captions"), [("yolo", ["coffee.png · yolo"]), ("both", ["coffee.png · ssd", "coffee.png · yolo"])]
)
def test_one_picture_per_model_redrawn_on_every_slider_move(images_dir, model, captions):
    at = AppTest.from_file(str(FLOOR), default_timeout=60)
    at.query_params["model"] = model
    at.run()
    at.file_uploader(key="images").set_value(("coffee.png", (images_dir / "coffee.png").read_bytes(), "image/png"))
    at.run()
    assert not at.exception, at.exception
    images = list(at.image)
    assert [i.proto.imgs[0].caption for i in images] == captions
    first = [i.proto.imgs[0].url for i in images]
    at.slider(key="conf").set_value(0.5).run()
    assert not at.exception, at.exception
    moved = [i.proto.imgs[0].url for i in at.image]
    assert all(a != b for a, b in zip(first, moved, strict=True)), "every picture is drawn again"
