"""What every chart of the page shares: each class in its boxes' colour (``annotate.class_colour``), and lines
told apart by more than colour (a dash pattern and a marker shape per series), so two series with the same
values stay distinguishable where they lie on top of each other.
"""

from __future__ import annotations

from collections.abc import Iterable

import altair as alt

from ..engine.annotate import class_hex

# Dash patterns (on, off in pixels), in turn per series: solid first, then ever sparser dashes and dots.
DASHES = ([1, 0], [8, 4], [2, 3], [12, 3, 2, 3], [4, 6], [1, 6])
SHAPES = ("circle", "square", "triangle-up", "diamond", "cross", "triangle-down")


def class_colours(labels: Iterable[str]) -> alt.Scale:
    """The colour scale that gives each class the colour of its boxes."""
    domain = sorted(set(labels))
    return alt.Scale(domain=domain, range=[class_hex(label) for label in domain])


def series_styles(field: str, labels: Iterable[str], title: str) -> dict:
    """``color``, ``strokeDash`` and ``shape`` encodings for ``field``: one legend, three cues per series."""
    domain = sorted(set(labels))
    dashes = [DASHES[i % len(DASHES)] for i in range(len(domain))]
    shapes = [SHAPES[i % len(SHAPES)] for i in range(len(domain))]
    return {
        "color": alt.Color(f"{field}:N", title=title, scale=class_colours(domain)),
        "strokeDash": alt.StrokeDash(f"{field}:N", title=title, scale=alt.Scale(domain=domain, range=dashes)),
        "shape": alt.Shape(f"{field}:N", title=title, scale=alt.Scale(domain=domain, range=shapes)),
    }
