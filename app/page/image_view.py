"""Images through the chosen models, and how the page shows them: each image's annotated result first and large
(the original one click away), its table, counts and downloads; with two models side by side, where they agree;
with several images, a summary grid first (thumbnail, counts per class, latency) and each image's details in
an expander.

What the browser works at stays off the first paint: the per-class chart and the original are made when their
expander or popover is opened, and a closed image's details hold only its annotated pictures (fetched ahead, so
opening shows them at once); its tables, numbers, downloads and agreement are made when it is opened. Pictures
come from ``pictures``: drawn on one thread, encoded once at the width they are shown, cached per detections.

Every widget of an image is keyed by the upload's identity (Streamlit's file id, or ``example:NAME``), never by
its file name: two different photos called ``IMG_0001.jpg``, or one file uploaded twice, are two images. A
failure while handling one image is one line for that image; the other images and the session carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from ..engine.agreement import Agreement, match
from ..engine.annotate import annotate, to_png
from ..engine.catalog import FAMILIES
from ..engine.config import Settings
from ..engine.exports import result_csv, result_json
from ..engine.images import ImageError
from ..engine.registry import get_detector
from ..engine.result import DetectionResult, DetectParams, detection_rows
from ..ops import logs
from .charts import class_colours
from .pictures import (
    agreement_jpeg,
    annotated_jpeg,
    fitted,
    on_drawing_thread,
    on_screen_width,
    original_jpeg,
    thumbnail_url,
)
from .text import plain
from .uploads import PreparedImage, decode_once, forward_once, image_key, release_working_copy

MODEL_TITLES = {name: family.title for name, family in FAMILIES.items()}
MODEL_LABELS = {name: family.label for name, family in FAMILIES.items()}
TABLE_COLUMNS = ["label", "score", "x1", "y1", "x2", "y2"]  # of result.detection_rows, as in the CSV
# Narrow columns, so two models' tables side by side fit a 1400 px window with the sidebar open (no column cut off).
TABLE_CONFIG = {
    "label": st.column_config.TextColumn("label", width=120),
    "score": st.column_config.NumberColumn("score", format="%.2f", width=56),
    **{c: st.column_config.NumberColumn(c, format="%.0f", width=52) for c in ("x1", "y1", "x2", "y2")},
}
# About how wide one model's picture is on screen in a 1400 px window with the sidebar open (the page's wide
# layout): the width each picture is drawn and sent at (never wider than the display copy), so boxes and labels
# are sized for the screen and the browser gets no pixels it would throw away. The agreement overlay's column.
SHOWN_WIDTH = {1: 900, 2: 440}
AGREEMENT_WIDTH = 528
THUMB_SIDE = 160  # the summary grid's thumbnails
IGNORE = "ignore"  # a download button's click does not rerun the page
NO_VALUE = "\u2013"  # an en dash in a cell that has no value


@dataclass
class Outcome:
    """One image through the chosen models: results in the original's pixels (or each model's one-line error),
    the display copy, the agreement of two models; or the one-line error of the image itself."""

    name: str
    key: str  # the upload's identity: what every widget of this image is keyed by
    prepared: PreparedImage | None = None
    results: dict[str, DetectionResult | str] = field(default_factory=dict)
    agreement: Agreement | None = None
    error: str | None = None
    image_key: tuple | None = None  # the decoded image's cache key: what its pictures are cached under


def process(
    name: str,
    data: bytes,
    key: str,
    models: list[str],
    params: DetectParams,
    settings: Settings,
    loaded: list[str],
    match_iou: float,
) -> Outcome:
    """Decode (once per process), run each network (once per process), decode at ``params``; any failure is the
    outcome's one-line error, logged with its traceback when it was not expected."""
    try:
        return _process(name, data, key, models, params, settings, loaded, match_iou)
    except ImageError as exc:
        return Outcome(name, key, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one image's failure is that image's line, never the page's
        logs.failure(f"{Path(name).name}: processing failed", error=type(exc).__name__)
        cause = type(exc).__name__
        return Outcome(name, key, error=f"{name}: could not be processed ({cause}); the server log has the details")


def _process(name, data, key, models, params, settings, loaded, match_iou) -> Outcome:
    digest, prepared = decode_once(name, data, settings, models, loaded)
    results: dict[str, DetectionResult | str] = {}
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
    return Outcome(name, key, prepared, results, agreement, image_key=image_key(digest, settings))


def process_and_show(
    items: list[tuple[str, bytes, str]],
    models: list[str],
    params: DetectParams,
    settings: Settings,
    loaded: list[str],
    match_iou: float,
) -> None:
    """Each (name, bytes, identity) processed and shown before the next is processed, so the browser fetches and
    paints one image's pictures while the server runs the networks on the next. One image: its details.
    Several: the summary grid on top (filled once every image is done), each image's details in an expander
    (opening or closing it reruns the page: a closed one holds only the pictures)."""
    several = len(items) > 1
    grid = st.empty() if several else None
    outcomes = []
    for name, data, key in items:
        outcome = process(name, data, key, models, params, settings, loaded, match_iou)
        outcomes.append(outcome)
        show_image(outcome, models, params, several)
    if grid is not None:
        with grid.container():
            summary(outcomes, models)


def show_image(outcome: Outcome, models: list[str], params: DetectParams, several: bool) -> None:
    """One image's details, in a collapsed expander when it is one of ``several``; a failure while drawing them is
    this image's one line."""
    if several:
        label = plain(_headline(outcome, models))
        where = st.expander(label, expanded=False, key=f"details-{outcome.key}", on_change="rerun")
        full = bool(where.open)
    else:
        where, full = st.container(), True
    with where:
        try:
            show_outcome(outcome, models, params, titled=not several, full=full)
        except Exception as exc:  # noqa: BLE001 - drawing one image must not take the page down
            logs.failure(f"{Path(outcome.name).name}: showing the result failed", error=type(exc).__name__)
            cause = type(exc).__name__
            st.error(plain(f"{outcome.name}: the result cannot be shown ({cause}); the server log has the details"))


def _counts_text(result: DetectionResult | str) -> str:
    if isinstance(result, str):
        return "error"
    return ", ".join(f"{label} {n}" for label, n in sorted(result.counts().items())) or "nothing"


def _headline(outcome: Outcome, models: list[str]) -> str:
    """The expander's label: the file name and what was found (plain text)."""
    if outcome.error:
        return f"{outcome.name}: error"
    found = "; ".join(f"{MODEL_LABELS[m]}: {_counts_text(outcome.results[m])}" for m in models)
    return f"{outcome.name}: {found}"


def _thumbnail(outcome: Outcome, models: list[str]) -> str | None:
    """A small annotated copy (the first model's boxes) as a JPEG data URL, for the summary grid."""
    if outcome.prepared is None:
        return None
    result = next((r for r in outcome.results.values() if isinstance(r, DetectionResult)), None)
    return thumbnail_url(outcome.image_key, outcome.prepared.display, result, THUMB_SIDE)


def summary(outcomes: list[Outcome], models: list[str]) -> None:
    """The summary grid: a row per image (thumbnail, file, per model the counts per class and the latency).
    Cells are data, not markdown: a file name is shown as written."""
    rows = []
    for outcome in outcomes:
        row = {"picture": _thumbnail(outcome, models), "image": outcome.name}
        for model in models:
            result = outcome.results.get(model)
            label = MODEL_LABELS[model]
            if outcome.error or result is None:
                row[f"{label}: found"], row[f"{label}: ms"] = outcome.error or "error", None
            else:
                row[f"{label}: found"] = _counts_text(result) if not isinstance(result, str) else result
                row[f"{label}: ms"] = None if isinstance(result, str) else round(sum(result.timings_ms.values()), 1)
        rows.append(row)
    config = {"picture": st.column_config.ImageColumn("picture", width=THUMB_SIDE * 3 // 4)}
    config |= {f"{MODEL_LABELS[m]}: ms": st.column_config.NumberColumn(format="%.0f ms", width=70) for m in models}
    st.markdown(f"**{len(outcomes)} images** (details of each below)")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        row_height=THUMB_SIDE * 3 // 5,
        column_config=config,
        key="summary",
        placeholder=NO_VALUE,
    )


def show_outcome(
    outcome: Outcome, models: list[str], params: DetectParams, titled: bool = True, full: bool = True
) -> None:
    """One image's details: a column per model (annotated picture first), the original one click away, the
    loader's remarks, and where two models agree. Not ``full``: only the annotated pictures."""
    if outcome.error:
        st.error(plain(outcome.error))
        return
    prepared = outcome.prepared
    if titled:
        st.subheader(plain(outcome.name))
    columns = st.columns(len(models)) if len(models) > 1 else [st.container()]
    for column, model in zip(columns, models, strict=True):
        with column:
            result = outcome.results[model]
            if isinstance(result, str):
                st.error(plain(result))
            else:
                show_result(outcome, model, result, params, SHOWN_WIDTH[min(2, len(models))], full)
    if not full:
        return
    width, height = prepared.original_size
    display_w, display_h = prepared.display_size
    shown = "" if (display_w, display_h) == (width, height) else f", shown at {display_w}x{display_h}"
    original = st.popover(
        f"Original ({width}x{height}{shown})", icon=":material/image:", key=f"original-{outcome.key}", on_change="rerun"
    )
    if original.open:  # made when opened: the picture is not sent with every rerun
        with original:
            picture = original_jpeg(outcome.image_key, prepared.display)
            st.image(picture, caption=plain(outcome.name), width="stretch", output_format="JPEG")
    for note in prepared.warnings:
        st.caption(f":material/warning: {plain(outcome.name)}: {plain(note)}")
    if outcome.agreement is not None:
        show_agreement(outcome, outcome.agreement)


def counts_chart(result: DetectionResult):
    """Detections per class as bars in the classes' box colours (None when there is nothing)."""
    counts = result.counts()
    if not counts:
        return None
    frame = pd.DataFrame({"class": list(counts), "count": list(counts.values())})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("count:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("class:N", sort="-x", title=None),
            color=alt.Color("class:N", scale=class_colours(counts), legend=None),
            tooltip=["class", "count"],
        )
        .properties(height=28 * len(counts) + 20)
    )


def show_result(
    outcome: Outcome, model: str, result: DetectionResult, params: DetectParams, shown: int, full: bool = True
) -> None:
    """One model's column: the annotated picture (drawn for ``shown`` px on screen), its counts and latency, the
    table (boxes in the original's pixels), a bar per class (when opened), the downloads. Not ``full``: the
    picture only."""
    name, key, prepared = outcome.name, outcome.key, outcome.prepared
    st.markdown(f"**{MODEL_TITLES[model]}**")
    display_w, display_h = prepared.display_size
    picture = annotated_jpeg(outcome.image_key, prepared.display, result, shown)
    on_screen = on_screen_width(fitted(prepared.display_size, shown), shown)
    st.image(picture, caption=f"{plain(name)} · {model}", width=on_screen, output_format="JPEG")
    if not full:
        return
    total_ms = sum(result.timings_ms.values())
    c1, c2 = st.columns(2)
    c1.metric("Detections", len(result.detections))
    c2.metric("Latency", f"{total_ms:.0f} ms")
    table = pd.DataFrame(detection_rows(result), columns=TABLE_COLUMNS)
    st.dataframe(table, hide_index=True, width="stretch", column_config=TABLE_CONFIG, key=f"table-{model}-{key}")
    if result.detections:  # Vega-Lite is heavy for the browser: the chart is drawn when asked for
        chart_box = st.expander("Detections per class", key=f"counts-{model}-{key}", on_change="rerun")
        if chart_box.open:
            chart_box.altair_chart(counts_chart(result), width="stretch")
    st.caption("Latency per stage: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items()))
    downloads(outcome, model, result, shown, params)
    width, height = result.image_size
    if (display_w, display_h) != (width, height):
        st.caption(
            f"PNG: the annotated picture at display size {display_w}x{display_h}; table, JSON and CSV "
            f"boxes are in the original's pixels ({width}x{height})."
        )


def annotated_png(prepared: PreparedImage, result: DetectionResult, shown: int) -> bytes:
    """The PNG download: the display copy with the boxes, sized as on the page (``on_screen_width`` in a column
    ``shown`` px wide)."""
    boxes = result.rescaled(1 / prepared.display_factor, prepared.display_size)
    on_screen = on_screen_width(fitted(prepared.display_size, shown), shown)
    return to_png(on_drawing_thread(annotate, prepared.display, boxes, shown_width=on_screen))


def downloads(outcome: Outcome, model: str, result: DetectionResult, shown: int, params: DetectParams) -> None:
    """PNG, JSON and CSV, made when a button is clicked, not on every rerun (a slider move stays cheap and
    sessions do not hold encoded copies); clicking does not rerun the page."""
    name, key, prepared = outcome.name, outcome.key, outcome.prepared
    stem = Path(name).stem
    params_doc = params.to_dict()
    agreement_doc = outcome.agreement.to_dict() if outcome.agreement is not None else None
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        "PNG",
        lambda: annotated_png(prepared, result, shown),
        f"{stem}.{model}.png",
        "image/png",
        key=f"png-{model}-{key}",
        on_click=IGNORE,
    )
    d2.download_button(
        "JSON",
        lambda: result_json(result, name, params_doc, agreement=agreement_doc),
        f"{stem}.{model}.json",
        "application/json",
        key=f"json-{model}-{key}",
        on_click=IGNORE,
    )
    d3.download_button(
        "CSV", lambda: result_csv(result), f"{stem}.{model}.csv", "text/csv", key=f"csv-{model}-{key}", on_click=IGNORE
    )


def show_agreement(outcome: Outcome, agreement: Agreement) -> None:
    """Where the two models agree: the per-class split, the mean IoU of the pairs and one overlay picture."""
    prepared, key = outcome.prepared, outcome.key
    first, second = agreement.first_model, agreement.second_model
    st.markdown(f"**Where {MODEL_TITLES[first]} and {MODEL_TITLES[second]} agree**")
    picture, numbers = st.columns([3, 2])
    titles = (MODEL_TITLES[first], MODEL_TITLES[second])
    overlay = agreement_jpeg(
        outcome.image_key, prepared.display, agreement, 1 / prepared.display_factor, titles, AGREEMENT_WIDTH
    )
    on_screen = on_screen_width(fitted(prepared.display_size, AGREEMENT_WIDTH), AGREEMENT_WIDTH)
    picture.image(overlay, caption=f"{plain(outcome.name)} · agreement", width=on_screen, output_format="JPEG")
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
