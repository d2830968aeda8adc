"""COCO files (app/engine/coco.py) and scoring (app/engine/scoring.py) on hand-built cases whose answers follow
from COCO's definitions by hand, the name matching of categories to the models' labels, and the refusals of
bad annotation files."""

from __future__ import annotations

import json

import pytest

from app.engine.coco import (
    MAX_ANNOTATIONS_BYTES,
    AnnotationError,
    canonical_name,
    load_annotations,
    match_categories,
    parse_annotations,
)
from app.engine.labels import COCO80, COCO_CATEGORIES, read_names
from app.engine.result import Detection, DetectionResult
from app.engine.scoring import score_model

BOX = 100  # every hand-built object is a 100 x 100 square: "large" in COCO's area ranges (above 96^2)


def coco(images: int, boxes: list[tuple[int, str, list[float]]], names=("person", "cat", "dog")) -> dict:
    """A COCO document: ``images`` 640x480 images (ids 1..), boxes (image id, category name, xywh)."""
    categories = [{"id": 10 + n, "name": name} for n, name in enumerate(names)]
    ids = {c["name"]: c["id"] for c in categories}
    return {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": 640, "height": 480} for i in range(1, images + 1)],
        "annotations": [
            {"id": n + 1, "image_id": image_id, "category_id": ids[name], "bbox": bbox}
            for n, (image_id, name, bbox) in enumerate(boxes)
        ],
        "categories": categories,
    }


def gt_of(doc: dict):
    return parse_annotations(json.dumps(doc).encode(), "hand.json")


def results(images: int, dets: list[tuple[int, str, float, list[float]]]) -> dict[int, DetectionResult]:
    """Per image id a DetectionResult of (image id, label, score, xywh) detections, 10 ms each."""
    out = {i: DetectionResult("hand", (640, 480), [], {"inference": 10.0}) for i in range(1, images + 1)}
    for image_id, label, score, (x, y, w, h) in dets:
        out[image_id].detections.append(Detection(label, 0, score, (x, y, x + w, y + h)))
    return out


def evaluate(doc, dets, images, labels=("person", "cat", "dog"), count_conf=0.3):
    gt = gt_of(doc)
    return score_model("hand", gt, match_categories(gt.categories, labels), results(images, dets), count_conf)


def test_perfect_detections_give_ap_1():
    boxes = [(1, "person", [10, 10, BOX, BOX]), (1, "cat", [200, 200, BOX, BOX]), (2, "person", [50, 60, BOX, BOX])]
    s = evaluate(coco(2, boxes), [(i, n, 0.9, b) for i, n, b in boxes], 2)
    assert s.metrics["AP"] == s.metrics["AP50"] == s.metrics["AP75"] == s.metrics["APl"] == s.metrics["AR100"] == 1.0
    assert s.metrics["APs"] is None and s.metrics["APm"] is None  # no small or medium object: nothing to average
    assert {r["name"]: r["AP"] for r in s.per_class} == {"person": 1.0, "cat": 1.0, "dog": None}  # dog: no box
    assert s.totals() == {"tp": 3, "fp": 0, "fn": 0}
    assert s.latency_ms_median == 10.0 and s.images_per_s == 100.0  # 2 images in 20 ms


def test_boxes_shifted_to_iou_0_6_give_ap50_1_and_ap75_0():
    # Shifted 24 px along x: overlap 76 x 100, union 124 x 100, IoU 76 / 124 = 0.613.
    boxes = [(1, "person", [10, 10, BOX, BOX]), (2, "cat", [300, 100, BOX, BOX])]
    dets = [(i, n, 0.8, [b[0] + 24, b[1], BOX, BOX]) for i, n, b in boxes]
    s = evaluate(coco(2, boxes), dets, 2)
    assert s.metrics["AP50"] == 1.0
    assert s.metrics["AP75"] == 0.0
    # Matched at IoU thresholds 0.50, 0.55, 0.60 of the ten 0.50:0.05:0.95: AP = 3/10.
    assert s.metrics["AP"] == pytest.approx(0.3, abs=1e-4)
    assert s.totals() == {"tp": 2, "fp": 0, "fn": 0}  # the counts are at IoU 0.5


def test_iou_below_0_5_is_a_false_positive_and_a_miss():
    # Shifted 50 px: IoU 50 / 150 = 0.33.
    s = evaluate(coco(1, [(1, "dog", [0, 0, BOX, BOX])]), [(1, "dog", 0.9, [50, 0, BOX, BOX])], 1)
    assert s.metrics["AP50"] == 0.0
    assert s.per_image == [{"image_id": 1, "file_name": "im1.png", "tp": 0, "fp": 1, "fn": 1}]


def test_half_of_the_objects_missed_gives_recall_0_5():
    boxes = [(1, "person", [0, 0, BOX, BOX]), (1, "person", [300, 0, BOX, BOX])]
    boxes += [(2, "person", [0, 200, BOX, BOX]), (2, "person", [300, 200, BOX, BOX])]
    found = [(i, n, 0.9, b) for i, n, b in boxes[::2]]  # one of the two in each image
    s = evaluate(coco(2, boxes), found, 2)
    assert s.metrics["AR100"] == 0.5
    # Precision 1 at the 51 recall points 0.00..0.50 of COCO's 101, 0 above: AP50 = 51/101.
    assert s.metrics["AP50"] == pytest.approx(51 / 101, abs=1e-4)
    assert s.totals() == {"tp": 2, "fp": 0, "fn": 2}
    assert [r["fn"] for r in s.per_image] == [1, 1]
    curve = s.pr_curves["person"]
    assert curve[-1]["recall"] == 0.5 and all(p["precision"] == 1.0 for p in curve)


def test_a_class_absent_from_the_ground_truth_is_a_false_positive():
    boxes = [(1, "cat", [0, 0, BOX, BOX]), (2, "person", [0, 0, BOX, BOX])]
    dets = [
        (1, "cat", 0.7, [0, 0, BOX, BOX]),  # right
        (2, "cat", 0.9, [300, 300, BOX, BOX]),  # image 2 has no cat: a false positive, ranked first
        (2, "person", 0.8, [0, 0, BOX, BOX]),  # right
        (1, "dog", 0.6, [300, 300, BOX, BOX]),  # no dog anywhere in the file: a false positive too
    ]
    s = evaluate(coco(2, boxes), dets, 2)
    assert s.per_image == [
        {"image_id": 1, "file_name": "im1.png", "tp": 1, "fp": 1, "fn": 0},
        {"image_id": 2, "file_name": "im2.png", "tp": 1, "fp": 1, "fn": 0},
    ]
    per_class = {r["name"]: r for r in s.per_class}
    # cat ranked: FP (0.9), TP (0.7): precision 0.5 at recall 1, so 0.5 at every recall point.
    assert per_class["cat"]["AP50"] == 0.5
    assert per_class["person"]["AP50"] == 1.0
    # dog: no ground truth, so COCOeval has no AP to give it (and leaves it out of the mean).
    assert per_class["dog"]["AP"] is None and per_class["dog"]["detections"] == 1
    assert s.metrics["AP50"] == 0.75  # (0.5 + 1.0) / 2


def test_the_count_threshold_only_moves_the_counts():
    boxes = [(1, "person", [0, 0, BOX, BOX])]
    low = [(1, "person", 0.1, [0, 0, BOX, BOX])]
    at_03 = evaluate(coco(1, boxes), low, 1, count_conf=0.3)
    at_005 = evaluate(coco(1, boxes), low, 1, count_conf=0.05)
    assert at_03.metrics["AP"] == at_005.metrics["AP"] == 1.0
    assert at_03.totals() == {"tp": 0, "fp": 0, "fn": 1} and at_005.totals() == {"tp": 1, "fp": 0, "fn": 0}


def test_crowd_regions_are_neither_misses_nor_false_positives():
    doc = coco(1, [(1, "person", [0, 0, BOX, BOX]), (1, "person", [300, 0, BOX, BOX])])
    doc["annotations"][1]["iscrowd"] = 1
    s = evaluate(doc, [(1, "person", 0.9, [0, 0, BOX, BOX]), (1, "person", 0.8, [300, 0, BOX, BOX])], 1)
    assert s.totals() == {"tp": 1, "fp": 0, "fn": 0}
    assert s.metrics["AP"] == 1.0


# --- names, not ids ---------------------------------------------------------------------------------------

# Categories with COCO's own ids (the 91-id space with gaps: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 unused),
# two of them in Darknet's spelling, one no COCO model knows.
COCO_IDS = [
    {"id": 1, "name": "person"},
    {"id": 4, "name": "motorbike"},
    {"id": 13, "name": "stop sign"},
    {"id": 72, "name": "tvmonitor"},
    {"id": 90, "name": "toothbrush"},
    {"id": 91, "name": "Hard Hat"},
]


def test_names_match_torchvision_labels_indexed_by_coco_id():
    m = match_categories(COCO_IDS, COCO_CATEGORIES)
    assert m.label_to_category == {"person": 1, "motorcycle": 4, "stop sign": 13, "tv": 72, "toothbrush": 90}
    assert m.scored == (1, 4, 13, 72, 90) and m.unpredictable == ("Hard Hat",)


def test_names_match_darknet_labels_in_their_contiguous_order(yolo_dir):
    labels = read_names(yolo_dir / "coco.names")  # the shared Darknet file: motorbike, tvmonitor, ...
    m = match_categories(COCO_IDS, labels)
    assert m.label_to_category == {"person": 1, "motorcycle": 4, "stop sign": 13, "tv": 72, "toothbrush": 90}
    # Darknet's class 11 is "stop sign" (person, bicycle, car, motorbike, aeroplane, bus, train, truck, boat,
    # traffic light, fire hydrant, stop sign): its detections are scored on COCO's category 13 all the same.
    assert labels[11] == "stop sign" and labels[79] == "toothbrush"
    gt = gt_of({"images": [{"id": 5, "file_name": "a.png"}], "categories": COCO_IDS, "annotations": [
        {"id": 1, "image_id": 5, "category_id": 13, "bbox": [10, 10, BOX, BOX]}
    ]})  # fmt: skip
    dets = {5: DetectionResult("yolo", (640, 480), [Detection("stop sign", 11, 0.9, (10, 10, 110, 110))], {})}
    s = score_model("yolo", gt, m, dets)
    assert s.metrics["AP"] == 1.0 and [r["category_id"] for r in s.per_class if r["AP"] == 1.0] == [13]
    assert s.unpredictable == ["Hard Hat"]  # reported, and not a miss


def test_names_match_a_custom_names_file(tmp_path):
    names = tmp_path / "site.names"
    names.write_text("hard hat\nmotorbike\nvest\n")  # not Darknet's 80: read as given
    labels = read_names(names)
    assert labels == ("hard hat", "motorbike", "vest")
    categories = [{"id": 7, "name": "Hard  Hat"}, {"id": 3, "name": "motorcycle"}, {"id": 1, "name": "person"}]
    m = match_categories(categories, labels)
    assert m.label_to_category == {"hard hat": 7, "motorbike": 3}
    assert m.unpredictable == ("person",)
    # A label the file has no category for is not scored but counted.
    gt = gt_of({"images": [{"id": 1, "file_name": "a.png"}], "categories": categories, "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, BOX, BOX]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 0, BOX, BOX]},
    ]})  # fmt: skip
    dets = {
        1: DetectionResult(
            "yolo",
            (640, 480),
            [Detection("motorbike", 1, 0.9, (0, 0, 100, 100)), Detection("vest", 2, 0.8, (0, 0, 50, 50))],
            {},
        )
    }
    s = score_model("yolo", gt, m, dets)
    assert s.metrics["AP"] == 1.0  # the person it cannot predict is not a miss
    assert s.totals() == {"tp": 1, "fp": 0, "fn": 0}
    assert s.unscored == {"vest": 1} and s.unpredictable == ["person"]


def test_canonical_names():
    assert canonical_name("  Dining   Table ") == "dining table"
    assert [canonical_name(n) for n in ("aeroplane", "sofa", "pottedplant", "diningtable")] == [
        "airplane",
        "couch",
        "potted plant",
        "dining table",
    ]
    assert set(COCO80) <= {canonical_name(n) for n in COCO80}


# --- refusals ---------------------------------------------------------------------------------------------


def good() -> dict:
    return coco(2, [(1, "person", [0, 0, 10, 10]), (2, "cat", [5, 5, 10, 10])])


def refusal(doc_or_bytes) -> str:
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()
    with pytest.raises(AnnotationError) as info:
        parse_annotations(data, "mine.json")
    message = str(info.value)
    assert message.startswith("mine.json: ")
    return message


def test_a_good_file_loads_with_defaults_filled_in():
    doc = good()
    del doc["annotations"][0]["id"]
    gt = gt_of(doc)
    assert [a["id"] for a in gt.annotations] == [3, 2]  # the missing id is one past the largest given
    assert gt.annotations[1]["area"] == 100.0 and gt.annotations[1]["iscrowd"] == 0


def test_missing_keys_are_named():
    doc = good()
    del doc["categories"]
    assert "missing key 'categories'" in refusal(doc)
    assert "top level is a JSON list" in refusal([1, 2])


@pytest.mark.parametrize(
    "bbox,needle",
    [
        ([1, 2, 3], "bbox must be 4 numbers [x, y, width, height], got [1, 2, 3]"),
        ([0, 0, -5, 10], "width or height that is not above 0"),
        ([0, 0, "10", 10], "bbox must be 4 numbers"),
        (None, "got None"),
    ],
)
def test_bad_boxes_are_named(bbox, needle):
    doc = good()
    doc["annotations"][1]["bbox"] = bbox
    message = refusal(doc)
    assert "annotations[1] (id 2)" in message and needle in message


def test_unknown_and_duplicate_ids_are_named():
    doc = good()
    doc["annotations"][0]["image_id"] = 99
    doc["annotations"][1]["category_id"] = 77
    message = refusal(doc)
    assert "image_id 99 is not the id of any entry of 'images'" in message
    assert "category_id 77 is not the id of any entry of 'categories'" in message
    doc = good()
    doc["annotations"][0]["image_id"] = [1]  # not an id at all (and not hashable)
    assert "annotations[0] (id 1): image_id [1] is not the id of any entry of 'images'" in refusal(doc)
    doc = good()
    doc["images"][1]["id"] = 1
    doc["annotations"][1]["id"] = 1
    doc["categories"].append({"id": 10, "name": "bird"})
    message = refusal(doc)
    assert "images[1]: duplicate image id 1" in message
    assert "categories[3]: duplicate category id 10" in message
    doc = good()
    doc["categories"].append({"id": 50, "name": "motorbike"})
    doc["categories"].append({"id": 51, "name": "motorcycle"})
    assert "name 'motorcycle' is the same class as category 50" in refusal(doc)


def test_not_json_not_utf8_and_too_big(tmp_path):
    assert "not UTF-8 text (byte 0xff at offset 0)" in refusal(b"\xff\xfe{}")
    assert "not valid JSON (Expecting value at line 1, column 1)" in refusal(b"images: []")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_ANNOTATIONS_BYTES + 1))
    with pytest.raises(AnnotationError, match=r"big\.json: COCO annotations file is larger than 67,108,864 bytes"):
        load_annotations(big)
    with pytest.raises(AnnotationError, match="is a directory"):
        load_annotations(tmp_path)
