"""The page through streamlit.testing (AppTest): a new session, an upload, the result table's labels, and a
counter of network calls."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

SCRIPT = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def new_app() -> AppTest:
    at = AppTest.from_file(SCRIPT, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, name: str, data: bytes, mime="image/png"):
    at.file_uploader(key="images").set_value((name, data, mime)).run()
    assert not at.exception, at.exception


def open_details(at: AppTest) -> AppTest:
    """Open every image's details (with several images each is in an expander, rendered when opened) and rerun,
    as clicking each expander would."""
    keys = list(at.session_state.keys())  # its state object has keys() but no iteration
    for key in [k for k in keys if str(k).startswith("details-")]:
        at.session_state[key] = True
    at.run()
    assert not at.exception, at.exception
    return at


def table_labels(at: AppTest, index: int = -1) -> list[str]:
    return list(at.dataframe[index].value["label"])


class Counter:
    """Wraps a detector's forward (the network) and counts calls; decode stays untouched."""

    def __init__(self, monkeypatch, detector):
        self.calls = 0
        original = detector.forward

        def counted(image):
            self.calls += 1
            return original(image)

        monkeypatch.setattr(detector, "forward", counted)


_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def shown(markdown: str) -> str:
    """What a markdown string of the page reads as on screen: the page escapes text from outside (file names,
    URL parameters, paths) with backslashes, which the markdown renderer removes, and puts an invisible word
    joiner (U+2060) before bare addresses."""
    return _ESCAPED.sub(r"\1", markdown).replace("\u2060", "")
