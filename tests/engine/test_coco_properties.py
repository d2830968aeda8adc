"""Property: any COCO document, valid or broken, through ``eval``'s loader (``parse_annotations``) gives a
``GroundTruth`` or one ``AnnotationError`` line naming the file, never another exception; a valid one then
scores (``score_model``, faster-coco-eval) with metrics in [0, 1]; memory stays bounded."""

from __future__ import annotations

import json
import tracemalloc

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.engine.coco import AnnotationError, GroundTruth, match_categories, parse_annotations
from app.engine.result import Detection, DetectionResult
from app.engine.scoring import score_model

SOURCE = "generated.json"
# Ids and numbers around every bound the loader has: 64-bit ids, floats, 400-digit integers.
INTS = st.one_of(st.integers(-3, 50), st.sampled_from([0, 2**53 + 1, 2**63 - 1, 2**63, 2**70, -(2**63), 10**400]))
NUMBERS = st.one_of(INTS, st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, 1e9, 1e10]))
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(["cup", "person", "a\x00b", "x" * 300])
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def document_strategy(maybe, unique: bool):
    """COCO documents whose every field goes through ``maybe``: the identity gives well-typed documents
    (ids, names and boxes still range over the bounds), ``_sometimes_anything`` broken ones."""

    def by_id(entry):
        return entry["id"]

    def by_name(entry):
        return entry["name"].lower()

    names = TEXT.filter(str.strip) if unique else TEXT
    image = st.fixed_dictionaries(
        {"id": maybe(st.integers(0, 2)), "file_name": maybe(names)},
        optional={"width": maybe(st.integers(1, 4000) | NUMBERS), "height": maybe(st.integers(1, 4000))},
    )
    category = st.fixed_dictionaries(
        {"id": maybe(st.integers(0, 2)), "name": maybe(st.sampled_from(["cup", "cat", "dog", "Cat", "x\x1b"]))}
    )
    good_box = st.lists(st.floats(1, 500) | st.integers(1, 50), min_size=4, max_size=4)
    box = st.lists(st.floats(0, 500) | st.integers(1, 50), min_size=4, max_size=4) | st.lists(NUMBERS, max_size=5)
    annotation = st.fixed_dictionaries(
        {
            "image_id": maybe(st.integers(0, 6)),
            "category_id": maybe(st.integers(0, 4)),
            "bbox": maybe(box if not unique else good_box),
        },
        optional={"id": maybe(INTS), "iscrowd": maybe(st.integers(0, 1)), "area": maybe(st.floats(0, 1e5) | NUMBERS)},
    )
    return st.fixed_dictionaries(
        {
            "images": maybe(st.lists(maybe(image), min_size=1, max_size=5, unique_by=by_id if unique else None)),
            "annotations": maybe(st.lists(maybe(annotation), max_size=8)),
            "categories": maybe(
                st.lists(maybe(category), min_size=1, max_size=4, unique_by=(by_id, by_name) if unique else None)
            ),
        }
    )


def _sometimes_anything(good):
    return st.one_of(good, good, good, JSON)


WELL_TYPED, BROKEN = document_strategy(lambda good: good, True), document_strategy(_sometimes_anything, False)


@st.composite
def documents(draw) -> bytes:
    """A document as bytes, sometimes damaged: cut short, nested past the parser, or not JSON at all."""
    data = json.dumps(draw(WELL_TYPED | BROKEN)).encode()
    damage = draw(st.sampled_from(["none"] * 5 + ["cut", "deep", "bytes", "top"]))
    if damage == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if damage == "deep":
        return data[:-1] + b', "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    if damage == "bytes":
        return draw(st.binary(max_size=64))
    if damage == "top":
        return json.dumps(draw(JSON)).encode()
    return data


def detections_for(gt: GroundTruth) -> dict[int, DetectionResult]:
    """Every box found once (score 0.9) and one stray box per image: a result COCOeval must score."""
    names = gt.category_names()
    out = {}
    for image in gt.images:
        dets = []
        for a in gt.annotations:
            if a["image_id"] == image["id"]:
                x, y, w, h = a["bbox"]
                dets.append(Detection(names[a["category_id"]], 0, 0.9, (x, y, x + w, y + h)))
        dets.append(Detection(gt.categories[0]["name"], 0, 0.2, (1.0, 1.0, 5.0, 5.0)))
        out[image["id"]] = DetectionResult("yolo", (640, 480), dets, {"inference": 1.0})
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_document_loads_or_is_refused_in_one_line(data):
    tracemalloc.start()
    try:
        try:
            gt = parse_annotations(data, SOURCE)
        except AnnotationError as exc:
            message = str(exc)
            assert message.startswith(f"{SOURCE}: ") and "\n" not in message and len(message) < 2000
            event("refused")
            return
        score = score_model(
            "yolo", gt, match_categories(gt.categories, [c["name"] for c in gt.categories]), detections_for(gt)
        )
        assert all(v is None or 0.0 <= v <= 1.0 for v in score.metrics.values())
        assert score.images == len(gt.images)
        event("loaded and scored")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 2**20
