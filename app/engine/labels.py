"""One label vocabulary for every model: COCO names spelled as torchvision spells them.

Darknet's coco.names uses older spellings; they are mapped so that class filters and
side-by-side comparisons line up across SSD and YOLO. A custom names file is used as given.
This module must not import torch (YOLO-only runs stay fast to start).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .textfile import read_bounded

# torchvision's COCO category list (torchvision.models._meta._COCO_CATEGORIES):
# 91 entries indexed by the COCO category id, "N/A" for the ids COCO left unused.
# Kept here so YOLO runs need no torch; tests/engine/test_labels.py checks it equals torchvision's own list.
COCO_CATEGORIES = (
    "__background__",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# The 80 COCO classes in the contiguous order Darknet and YOLO exports use.
COCO80 = tuple(name for name in COCO_CATEGORIES if name not in ("__background__", "N/A"))

# Darknet spelling -> torchvision spelling.
DARKNET_TO_TORCHVISION = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}


def vocabulary() -> tuple[str, ...]:
    """The shared vocabulary offered to class filters (the 80 COCO names)."""
    return COCO80


MAX_NAMES_BYTES = 1 << 20  # 1 MiB: ~50,000 class names; a larger file is not a names file


def read_names(path: Path) -> tuple[str, ...]:
    """Class names from a names file, one per line (UTF-8, at most ``MAX_NAMES_BYTES``).

    A file that is Darknet's COCO list (80 names, all of them COCO names in either spelling)
    is mapped to torchvision's spellings; any other file is used as given.
    """
    data = read_bounded(
        path, MAX_NAMES_BYTES, "names file", "expected one class name per line (is this the right file?)"
    )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: names file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8, one class name per line"
        ) from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise ValueError(f"{path}: names file has no names")
    return normalize_coco(names)


def normalize_coco(names: tuple[str, ...]) -> tuple[str, ...]:
    mapped = tuple(DARKNET_TO_TORCHVISION.get(n, n) for n in names)
    return mapped if mapped == COCO80 else names


def did_you_mean(unknown: list[str], known: list[str]) -> str:
    """`` (did you mean cup?)`` naming the closest known label of each misspelt one (difflib, ratio >= 0.6)."""
    close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
    return f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
