"""The app's log: one line per event on stderr, as text (``[objdet] message key=value``) or JSON.

``OBJDET_LOG_FORMAT`` (text / json) and ``OBJDET_LOG_LEVEL`` choose; ``configure`` applies them
and makes Streamlit's own logger follow the level (unless ``STREAMLIT_LOGGER_LEVEL`` is set). An
event carries model, stage timings, image size and outcome; never image content, and file names
only as base names. Before ``configure`` (the CLI, tests) only warnings and errors are printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from .terminal import printable

LOGGER = logging.getLogger("objdet")
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
_FIELDS = "objdet_fields"


class TextFormatter(logging.Formatter):
    """``[objdet] message key=value ...``: the shape ``serve`` always printed (the level is in the
    message where it matters, e.g. ``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {})
        extra = "".join(f" {k}={_text(v)}" for k, v in fields.items())
        trace = f"\n{self.formatException(record.exc_info)}" if record.exc_info else ""
        return printable(f"[objdet] {record.getMessage()}{extra}") + trace


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, _FIELDS, {}),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _text(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    text = str(value)
    return json.dumps(text) if " " in text or not text else text


def configured() -> bool:
    """Whether ``configure`` ran in this process (``serve``)."""
    return bool(LOGGER.handlers)


def event(message: str, level: str = "info", **fields) -> None:
    """Log one event; ``fields`` become JSON keys (json) or ``key=value`` pairs (text)."""
    levelno = logging.getLevelName(level.upper())
    if LOGGER.isEnabledFor(levelno):
        LOGGER.log(levelno, message, extra={_FIELDS: fields})


def failure(message: str, **fields) -> None:
    """Log an unexpected exception (call it inside ``except``) with its traceback: the page shows the user one
    line, the server's log keeps the details."""
    LOGGER.error(message, exc_info=True, extra={_FIELDS: fields})


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the event (test capture, redirection)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(log_format: str = "text", level: str = "info", stream=None) -> None:
    """Send the app's events to ``stream`` (default: stderr) in ``log_format`` at ``level``; Streamlit's
    logger follows."""
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", level)
