"""The sidebar's settings <-> the URL's query parameters, so that a link reproduces a view.

Only settings travel (model, thresholds, classes, maximum detections, the agreement's match IoU), never
uploaded data. A value that cannot be used (not a number, out of range, an unknown model or class) is
dropped in favour of the default, with a notice that names the parameter and the value; nothing raises.
Notices are plain text that quotes the URL as written: whoever shows them escapes them (``page.text.plain``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..engine.labels import did_you_mean


@dataclass(frozen=True)
class Range:
    """A slider's bounds and step (the query value is snapped to the step)."""

    low: float
    high: float
    step: float
    default: float
    integer: bool = False


# The sidebar's sliders: query parameter = session-state key = widget key.
SLIDERS = {
    "conf": Range(0.05, 0.95, 0.05, 0.30),
    "iou": Range(0.10, 0.95, 0.05, 0.45),
    "max_det": Range(1, 300, 1, 100, integer=True),
    "match_iou": Range(0.10, 0.95, 0.05, 0.50),
}
KEYS = ("model", *SLIDERS, "classes")


def defaults(models: list[str]) -> dict:
    """The sidebar's values before anyone touched it (the last model choice: "both" when two are loaded)."""
    values = {key: (int(r.default) if r.integer else r.default) for key, r in SLIDERS.items()}
    return values | {"model": models[-1] if models else None, "classes": []}


def _one(value) -> str:
    """The last value of a repeated parameter (``?conf=0.3&conf=0.5`` means 0.5)."""
    return value[-1] if isinstance(value, list) else str(value)


def _number(key: str, text: str) -> tuple[float | int | None, str | None]:
    """(value snapped to the slider or None, notice or None)."""
    limits = SLIDERS[key]
    default = f"{int(limits.default)}" if limits.integer else f"{limits.default:.2f}"
    try:
        number = float(text)
    except ValueError:
        return None, f"'{key}={text}' is not a number; the default {default} is used"
    if not math.isfinite(number) or not limits.low <= number <= limits.high:
        return None, f"'{key}={text}' is outside {limits.low:g} to {limits.high:g}; the default {default} is used"
    if limits.integer:
        if number != int(number):
            return None, f"'{key}={text}' is not a whole number; the default {default} is used"
        return int(number), None
    snapped = round(limits.low + round((number - limits.low) / limits.step) * limits.step, 2)
    if abs(snapped - number) > 1e-9:
        return snapped, f"'{key}={text}' is not on the slider's {limits.step:g} steps; {snapped:.2f} is used"
    return snapped, None


def parse(query: Mapping[str, str | list[str]], models: list[str], vocabulary: Iterable[str]) -> tuple[dict, list[str]]:
    """(the settings the URL sets, notices about values it could not use). ``models`` are the sidebar's
    model choices; a missing parameter is simply absent from the result (the widget keeps its default)."""
    values: dict = {}
    notices: list[str] = []
    if "model" in query:
        model = _one(query["model"])
        if model in models:
            values["model"] = model
        else:
            fallback = f"the default {models[-1]} is used" if models else "no model is loaded"
            notices.append(f"'model={model}' is not one of {', '.join(models) or 'the loaded models'}; {fallback}")
    for key in SLIDERS:
        if key in query:
            number, notice = _number(key, _one(query[key]))
            if number is not None:
                values[key] = number
            if notice:
                notices.append(notice)
    if "classes" in query:
        known = set(vocabulary)
        raw = query["classes"]
        wanted = [c.strip() for part in (raw if isinstance(raw, list) else [raw]) for c in part.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in known]
        if unknown:
            hint = did_you_mean(unknown, sorted(known))
            notices.append(f"'classes': unknown {', '.join(repr(c) for c in unknown)}{hint} left out")
        values["classes"] = list(dict.fromkeys(c for c in wanted if c in known))
    return values, [f"The link's {n}." for n in notices]


def encode(values: Mapping) -> dict[str, str]:
    """The query parameters for the sidebar's current ``values`` (every setting, so a link does not depend on
    today's defaults; ``classes`` only when some are chosen)."""
    params: dict[str, str] = {}
    if values.get("model"):
        params["model"] = str(values["model"])
    for key, limits in SLIDERS.items():
        if key in values and values[key] is not None:
            params[key] = str(int(values[key])) if limits.integer else f"{float(values[key]):.2f}"
    if values.get("classes"):
        params["classes"] = ",".join(values["classes"])
    return params
