"""The Evaluate tab: COCO metrics of every loaded model on the user's own labelled images, side by side.

The user uploads a COCO annotations file and its images (or one zip holding both). Uploads are bounded like
the page's others (each image by ``max_file_bytes`` / ``max_image_pixels``, all of them together by
``MAX_TOTAL_BYTES``); a zip's members are read with the same bounds, and members that would leave the
archive, that are no image, or that unpack far beyond their compressed size are refused by name. Images
go through the page's ``decode_once`` / ``forward_once``, so each model's network runs once per image per
process and a threshold change only decodes again. Scoring is ``app.engine.scoring``'s, as for
``python -m app eval``.

"Try an example" evaluates the example images (``examples/``) against ``examples/coco-examples.json``, boxes
drawn by hand (see that folder's README). Whatever a file holds, the tab shows one line naming the file and
what is wrong, never an exception: names, file names and categories from the file are shown as text.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st

from ..engine.annotate import FONT, annotate, styled_rectangle, text_scale
from ..engine.catalog import FAMILIES
from ..engine.coco import MAX_ANNOTATIONS_BYTES, AnnotationError, GroundTruth, match_categories, parse_annotations
from ..engine.config import Settings
from ..engine.images import ImageError
from ..engine.registry import get_detector
from ..engine.result import DetectionResult
from ..engine.scoring import (
    COUNT_CONF,
    EVAL_CONF,
    METRICS,
    ModelScore,
    eval_params,
    metrics_csv,
    per_image_csv,
    report,
    score_model,
)
from ..ops import logs
from .charts import series_styles
from .text import plain
from .uploads import IMAGE_TYPES, decode_once, forward_once, release_working_copy

MAX_TOTAL_BYTES = 512 * 2**20  # all images of one evaluation together (the page holds the uploads in memory)
MAX_ZIP_MEMBERS = 5000
MAX_ZIP_RATIO = 200  # uncompressed / compressed: images hardly compress, COCO JSON ~10x; a bomb is 1000x
GALLERY_SIZE = 4  # images with the most misses shown per model
GT_COLOUR = (255, 255, 255)  # ground truth: dashed white over black, tag below the box; predictions: annotate()
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLE_ANNOTATIONS = "coco-examples.json"  # the example images' boxes, drawn by hand (examples/README.md)
NO_VALUE = "\u2013"  # an en dash in a cell that has no value (the CLI prints "-")


class UploadError(ValueError):
    """An evaluation upload that cannot be used at all; str() names the file and what is wrong."""


@dataclass
class EvalUpload:
    """The annotations' bytes and the images' bytes by name (a zip member's path inside the zip)."""

    annotations_name: str
    annotations: bytes
    images: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # members or files refused, each named

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.images.values())


def _leaves_archive(member: str) -> bool:
    path = PurePosixPath(member.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (bool(path.parts) and ":" in path.parts[0])


def read_zip(data: bytes, name: str, settings: Settings) -> EvalUpload:
    """One zip holding exactly one ``.json`` annotations file and the images; ``UploadError`` when it cannot
    be used at all, a note naming each member refused (path leaving the archive, not an image, too large)."""
    archive, members = _open_zip(data, name)
    notes, json_members, images, total = [], [], {}, 0
    for member in members:
        base = PurePosixPath(member.filename).name
        if member.filename.startswith("__MACOSX/") or base.startswith("."):
            continue  # macOS and editor metadata, not content
        read = _read_member(archive, member, settings)
        if isinstance(read, str):
            notes.append(f"{name}: {member.filename}: refused, {read}")
            continue
        total += len(read)
        if total > MAX_TOTAL_BYTES:
            raise UploadError(f"{name}: the members unpack to more than {MAX_TOTAL_BYTES:,} bytes")
        if base.lower().endswith(".json"):
            json_members.append((member.filename, read))
        else:
            images[member.filename] = read
    if len(json_members) != 1:
        found = ", ".join(n for n, _ in json_members) or "none"
        raise UploadError(f"{name}: needs exactly one .json annotations file, found {len(json_members)} ({found})")
    (ann_name, ann_bytes) = json_members[0]
    return EvalUpload(f"{name}: {ann_name}", ann_bytes, images, notes)


def _open_zip(data: bytes, name: str) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The archive and its file members, refused whole when unreadable, too many or too large declared."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{name}: not a readable zip file ({exc})") from None
    if len(members) > MAX_ZIP_MEMBERS:
        raise UploadError(f"{name}: {len(members):,} members, more than {MAX_ZIP_MEMBERS:,}")
    declared = sum(m.file_size for m in members)
    if declared > MAX_TOTAL_BYTES:
        raise UploadError(
            f"{name}: its members unpack to {declared:,} bytes, more than the {MAX_TOTAL_BYTES:,} one evaluation "
            "may use; split the images over several evaluations"
        )
    return archive, members


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, settings: Settings) -> bytes | str:
    """The member's bytes (never more than its kind's limit, whatever its header claims), or why it is refused."""
    if _leaves_archive(member.filename):
        return "its path leaves the archive (absolute or '..')"
    suffix = PurePosixPath(member.filename).suffix.lower()
    if suffix == ".json":
        limit = MAX_ANNOTATIONS_BYTES
    elif suffix in IMAGE_SUFFIXES:
        limit = settings.max_file_bytes
    else:
        return f"not an image ({', '.join(IMAGE_SUFFIXES)}) or a .json annotations file"
    if member.file_size > limit:
        return f"{member.file_size:,} bytes is more than the limit of {limit:,}"
    if member.compress_size and member.file_size / member.compress_size > MAX_ZIP_RATIO:
        return (
            f"it unpacks to {member.file_size / member.compress_size:.0f}x its compressed size "
            f"(more than {MAX_ZIP_RATIO}x: a zip bomb, not an image)"
        )
    try:
        with archive.open(member) as fh:
            content = fh.read(limit + 1)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
        return f"cannot be read ({exc})"
    if len(content) > limit:
        return f"it unpacks to more than its limit of {limit:,} bytes"
    return content


def collect_upload(annotations, image_uploads, settings: Settings) -> EvalUpload:
    """The annotations upload (a .json or a .zip) plus the separately uploaded images, bounded in total."""
    data = annotations.getvalue()
    if annotations.name.lower().endswith(".zip"):
        upload = read_zip(data, annotations.name, settings)
    else:
        upload = EvalUpload(annotations.name, data)
    for image in image_uploads or []:
        upload.images[image.name] = image.getvalue()
    if upload.total_bytes > MAX_TOTAL_BYTES:
        raise UploadError(
            f"the images add up to {upload.total_bytes:,} bytes, more than the {MAX_TOTAL_BYTES:,} one evaluation "
            "may use; split them over several evaluations"
        )
    return upload


def pair_images(gt: GroundTruth, images: dict[str, bytes]) -> tuple[list[tuple[dict, str]], list[str]]:
    """(entry of 'images', upload name) for every annotated image that was uploaded (by its file_name, else
    by base name), and the file names of those that were not."""
    by_base: dict[str, str] = {}
    for name in images:
        by_base.setdefault(PurePosixPath(name).name, name)
    pairs, missing = [], []
    for entry in gt.images:
        name = (
            entry["file_name"] if entry["file_name"] in images else by_base.get(PurePosixPath(entry["file_name"]).name)
        )
        if name is None:
            missing.append(entry["file_name"])
        else:
            pairs.append((entry, name))
    return pairs, missing


def run_models(pairs, upload: EvalUpload, loaded: list[str], settings: Settings, conf: float):
    """Each loaded model's results (image id -> result in the original's pixels) and the display copies; the
    networks run through the page's process-wide cache (once per image and model), decode at ``conf``."""

    params = eval_params(conf)
    results: dict[str, dict[int, DetectionResult]] = {m: {} for m in loaded}
    prepared_by_id, errors = {}, []
    bar = st.progress(0.0, text="Running the models") if pairs else None
    for n, (entry, name) in enumerate(pairs):
        try:
            prepared_by_id[entry["id"]] = (name, run_image(entry, name, upload, loaded, settings, params, results))
        except ImageError as exc:
            errors.append(f"{exc} (left out of the evaluation)")
        except Exception as exc:  # noqa: BLE001 - one image's failure is its line; the others are evaluated
            logs.failure(f"{PurePosixPath(name).name}: evaluation of the image failed", error=type(exc).__name__)
            errors.append(f"{name}: left out of the evaluation ({type(exc).__name__}; the server log has the details)")
        bar.progress((n + 1) / len(pairs), text=f"{n + 1} of {len(pairs)} images")
    if bar is not None:
        bar.empty()
    return results, prepared_by_id, errors


def run_image(entry: dict, name: str, upload: EvalUpload, loaded: list[str], settings: Settings, params, results):
    """One image through every loaded model (results go into ``results[model][image id]``); its display copy."""
    digest, prepared = decode_once(name, upload.images[name], settings, loaded, loaded)
    for model in loaded:
        raw = forward_once(model, digest, prepared, settings)
        result = get_detector(model, settings).decode(raw, params)
        results[model][entry["id"]] = result.rescaled(prepared.working_factor, prepared.original_size)
    release_working_copy(digest, prepared, settings, loaded)
    return prepared


def draw_comparison(display: np.ndarray, factor: float, gt_boxes, result: DetectionResult) -> np.ndarray:
    """Predictions as ``annotate`` draws them (solid, class colour, tag above) and the ground truth in a second
    style (dashed white on black, ``GT name`` tag below the box); ``factor`` maps display to original pixels."""
    size = (display.shape[1], display.shape[0])
    out = annotate(display, result.rescaled(1 / factor, size))
    font, text_thick, box_thick = text_scale(*size)
    for name, box in gt_boxes:
        x1, y1, x2, y2 = (round(v / factor) for v in box)
        styled_rectangle(out, (x1, y1, x2, y2), (0, 0, 0), box_thick + 2, "dashed")  # dark edge: seen on white
        styled_rectangle(out, (x1, y1, x2, y2), GT_COLOUR, box_thick, "dashed")
        text = f"GT {name}"
        (tw, th), base = cv2.getTextSize(text, FONT, font, text_thick)
        top = min(y2 + 2, size[1] - th - base - 2)
        cv2.rectangle(out, (max(0, x1), top), (max(0, x1) + tw + 4, top + th + base + 2), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, text, (max(0, x1) + 2, top + th), FONT, font, GT_COLOUR, text_thick, cv2.LINE_AA)
    return out


def _metrics_frame(score: ModelScore) -> pd.DataFrame:
    row = dict(score.metrics) | {"images": score.images}
    return pd.DataFrame([row], columns=[*METRICS, "images"])


# Metrics with three decimals; a metric with no value (no object of that size, a class never annotated) is NO_VALUE.
METRICS_CONFIG = {m: st.column_config.NumberColumn(m, format="%.3f") for m in METRICS}


def _ap_bars(score: ModelScore):
    frame = pd.DataFrame(
        [{"class": r["name"], "AP": r["AP"], "AP50": r["AP50"]} for r in score.per_class if r["AP"] is not None]
    )
    if frame.empty:
        return None
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("AP:Q", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("class:N", sort="-x"),
            tooltip=["class", "AP", "AP50"],
        )
    )


def _pr_chart(score: ModelScore):
    rows = [{"class": name, **p} for name, points in score.pr_curves.items() for p in points]
    if not rows:
        return None
    pick = alt.selection_point(fields=["class"], bind="legend")
    frame = pd.DataFrame(rows)
    # curves that coincide (two classes found perfectly) stay apart: a dash pattern and marker shape each
    return (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", point=alt.OverlayMarkDef(size=40, filled=True), strokeWidth=2.5)
        .encode(
            x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("precision:Q", scale=alt.Scale(domain=[0, 1])),
            **series_styles("class", frame["class"], "class"),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=["class", "recall", "precision", "score"],
        )
        .add_params(pick)
        .interactive()
    )


def show_model(model: str, score: ModelScore, gt: GroundTruth, results, prepared_by_id, count_conf: float) -> None:
    """One model's column: metrics, speed, counts, what was not scored, AP bars, PR curves, misses gallery."""
    st.markdown(f"**{FAMILIES[model].title}**")
    st.dataframe(
        _metrics_frame(score),
        hide_index=True,
        width="stretch",
        key=f"eval-metrics-{model}",
        column_config=METRICS_CONFIG,
        placeholder=NO_VALUE,
    )
    c1, c2 = st.columns(2)
    c1.metric("Median latency", NO_VALUE if score.latency_ms_median is None else f"{score.latency_ms_median:.1f} ms")
    c2.metric("Images/s", NO_VALUE if score.images_per_s is None else f"{score.images_per_s:.1f}")
    totals = score.totals()
    st.caption(
        f"At IoU 0.5, score ≥ {count_conf:.2f}: {totals['tp']} TP, {totals['fp']} FP, {totals['fn']} FN. "
        "Latency: preprocess + network + decode at the evaluation threshold, per image."
    )
    if score.unpredictable:
        names = plain(", ".join(score.unpredictable))
        st.info(f"{model} cannot predict {names}: not scored (not counted as misses).")
    if score.unscored:
        outside = plain(", ".join(f"{k} ({v})" for k, v in score.unscored.items()))
        st.caption(f"Detections of classes the annotations do not have, not scored: {outside}")
    bars = _ap_bars(score)
    if bars is not None:
        st.markdown("AP per class (IoU 0.5:0.95)")
        st.altair_chart(bars, width="stretch", key=f"eval-ap-{model}")
    chart = _pr_chart(score)
    if chart is not None:
        st.markdown("Precision-recall per class at IoU 0.5 (click a legend entry to pick one)")
        st.altair_chart(chart, width="stretch", key=f"eval-pr-{model}")
    worst = sorted((r for r in score.per_image if r["fn"] > 0), key=lambda r: (-r["fn"], r["image_id"]))[:GALLERY_SIZE]
    if worst:
        st.markdown("Most misses (dashed white: ground truth; solid: predictions at the threshold)")
    for row in worst:
        name, prepared = prepared_by_id[row["image_id"]]
        result = results[row["image_id"]]
        kept = DetectionResult(
            result.model, result.image_size, [d for d in result.detections if d.score >= count_conf], result.timings_ms
        )
        picture = draw_comparison(prepared.display, prepared.display_factor, gt.boxes_of(row["image_id"]), kept)
        st.image(
            picture,
            caption=f"{plain(name)}: {row['fn']} missed, {row['tp']} found, {row['fp']} false",
            width="stretch",
            output_format="JPEG",
        )


def example_upload() -> EvalUpload:
    """The example images and their hand-drawn boxes, as if uploaded."""
    images = {p.name: p.read_bytes() for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    data = (EXAMPLES_DIR / EXAMPLE_ANNOTATIONS).read_bytes()
    return EvalUpload(f"example: {EXAMPLE_ANNOTATIONS}", data, images)


def cause(exc: BaseException) -> str:
    """What an exception says about the user's file, in words (never a server path or a traceback)."""
    if isinstance(exc, OverflowError):
        return "a number in it is too large (more than a float or a 64-bit id can hold)"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return "a number in it has more than 4,300 digits"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return f"it cannot be evaluated ({type(exc).__name__})"


def evaluate_tab(loaded: list[str], settings: Settings) -> None:
    """The tab: uploads (or the example), thresholds, then every loaded model's evaluation side by side and the
    downloads. Anything a file makes fail is one line naming the file; the session carries on."""

    st.markdown(
        "Upload a COCO annotations file (`images`, `annotations` with `bbox` [x, y, width, height], `categories`) "
        "and the images it names, or one zip with both. Categories are matched to each model's classes by name. "
        "Every loaded model is evaluated with the thresholds below: the sidebar's model, thresholds and classes "
        "do not apply here."
    )
    annotations = st.file_uploader(
        "Annotations (COCO JSON) or a zip of annotations + images", ["json", "zip"], key="eval_ann"
    )
    image_uploads = st.file_uploader("Images", IMAGE_TYPES, accept_multiple_files=True, key="eval_images")
    use_example = st.toggle(
        "Try an example: the three example images with boxes drawn by hand",
        key="eval_example",
        disabled=annotations is not None,
        help="app/page/examples/coco-examples.json: a person, a cat, a cup, a spoon, a dining table, and a space "
        "shuttle no model knows",
    )
    c1, c2 = st.columns(2)
    conf = c1.number_input("Evaluation score floor (AP)", 0.0, 1.0, EVAL_CONF, 0.001, format="%.3f", key="eval_conf")
    count_conf = c2.slider(
        "Threshold for TP/FP/FN and the gallery", 0.05, 0.95, COUNT_CONF, 0.05, key="eval_count_conf"
    )
    if annotations is None and not use_example:
        return
    if not loaded:
        st.warning("No model is loaded: nothing to evaluate.")
        return
    name = annotations.name if annotations is not None else f"example: {EXAMPLE_ANNOTATIONS}"
    try:
        upload = collect_upload(annotations, image_uploads, settings) if annotations is not None else example_upload()
        evaluate(upload, loaded, settings, conf, count_conf)
    except (UploadError, AnnotationError) as exc:
        st.error(plain(exc))
    except Exception as exc:  # noqa: BLE001 - a hostile file's failure is one line, never an exception box
        logs.failure(f"{Path(name).name}: evaluation failed", error=type(exc).__name__)
        st.error(plain(f"{name}: {cause(exc)}"))


def evaluate(upload: EvalUpload, loaded: list[str], settings: Settings, conf: float, count_conf: float) -> None:
    """Parse, pair, run and score one evaluation upload, then show it (``AnnotationError`` for a bad file)."""
    try:
        gt = parse_annotations(upload.annotations, upload.annotations_name)
    except (AnnotationError, UploadError):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a number json reads but Python cannot use: one line
        raise AnnotationError(f"{upload.annotations_name}: {cause(exc)}") from None
    for note in upload.notes:
        st.warning(plain(note))
    pairs, missing = pair_images(gt, upload.images)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        st.warning(plain(f"{len(missing)} annotated image(s) not uploaded, left out of the evaluation: {shown}"))
    if not pairs:
        st.info(plain(f"{gt.source}: upload the images it names to evaluate ({len(gt.images)} in the file)."))
        return
    results, prepared_by_id, errors = run_models(pairs, upload, loaded, settings, conf)
    scores = []
    for m in loaded:
        try:
            categories = match_categories(gt.categories, get_detector(m, settings).labels)
            scores.append(score_model(m, gt, categories, results[m], count_conf))
        except Exception as exc:  # noqa: BLE001 - ids the metric library cannot hold, say: one line per model
            logs.failure(f"{m}: scoring failed", error=type(exc).__name__)
            errors.append(f"{gt.source}: {m} cannot be scored: {cause(exc)}")
    for error in errors:
        st.error(plain(error))
    if not scores:
        return
    st.caption(
        plain(
            f"{gt.source}: {len(prepared_by_id)} of {len(gt.images)} images evaluated, {len(gt.annotations)} boxes, "
            f"{len(gt.categories)} categories."
        )
    )
    for column, score in zip(st.columns(len(scores)), scores, strict=True):
        with column:
            show_model(score.model, score, gt, results[score.model], prepared_by_id, count_conf)
    downloads(report(gt, scores, conf, errors), scores)


def downloads(doc: dict, scores: list[ModelScore]) -> None:
    """Metrics JSON and CSV and the per-image CSV, made when clicked."""
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        "Metrics JSON",
        lambda: json.dumps(doc, indent=2).encode("utf-8"),
        "metrics.json",
        "application/json",
        key="eval-json",
        on_click="ignore",
    )
    d2.download_button(
        "Metrics CSV", lambda: metrics_csv(scores), "metrics.csv", "text/csv", key="eval-csv", on_click="ignore"
    )
    d3.download_button(
        "Per-image CSV",
        lambda: per_image_csv(scores),
        "per_image.csv",
        "text/csv",
        key="eval-images-csv",
        on_click="ignore",
    )
