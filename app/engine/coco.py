"""COCO detection files: read one (bounded), validate it with messages that name the file and the entry at
fault, and match its categories to a model's labels BY NAME (so COCO's ids, with their gaps, and Darknet's
spellings do not matter). See docs/evaluate.md.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .labels import DARKNET_TO_TORCHVISION
from .textfile import read_bounded

MAX_ANNOTATIONS_BYTES = 64 * 2**20  # COCO's own val2017 boxes + masks file is 25 MB
# Memory, measured by bench/coco_memory.py (docs/evaluate.md): reading costs ~1.4 kB per annotation and
# scoring ~2 kB per detection, so the pod's 2 GiB (the server holds ~1 GiB) bounds what one file may hold.
# A file is refused before it is parsed when its JSON has more items (commas and opening brackets, an upper
# bound of its values) than MAX_JSON_ITEMS; after parsing, when it lists more entries than these.
MAX_JSON_ITEMS = 6_000_000  # val2017's boxes + polygons file has ~4.2 million
MAX_IMAGES = 20_000  # val2017: 5,000
MAX_ANNOTATIONS = 100_000  # val2017: 36,781 boxes
MAX_CATEGORIES = 10_000  # COCO: 80; LVIS: 1,203
MAX_ID = 2**63 - 1  # COCOeval's ids are 64-bit; an annotation id outside 1..MAX_ID silently scores 0
MAX_INT_DIGITS = 30  # 2**63 has 19 digits: a longer integer is no COCO id or size (4,300+ digits break int())
MAX_COORDINATE = 1e9  # pixels: far past any image the app decodes; keeps w*h and IoUs finite
MAX_PROBLEMS = 8  # problems listed in one refusal of an annotations file
PATH_MAX, NAME_MAX = 4096, 255  # Linux: bytes of a path, of one of its components
IGNORED_LABELS = ("N/A", "__background__")


class AnnotationError(ValueError):
    """An annotations file that cannot be evaluated; str() names the file and every problem found."""


@dataclass(frozen=True)
class GroundTruth:
    """A validated COCO detection file: every image, annotation and category with the fields COCOeval needs
    (``area`` and ``iscrowd`` filled in, annotation ids assigned where the file has none)."""

    source: str
    images: tuple[dict, ...]
    annotations: tuple[dict, ...]
    categories: tuple[dict, ...]

    def coco_dataset(self) -> dict:
        return {
            "images": [dict(i) for i in self.images],
            "annotations": [dict(a) for a in self.annotations],
            "categories": [dict(c) for c in self.categories],
        }

    def category_names(self) -> dict[int, str]:
        return {c["id"]: c["name"] for c in self.categories}

    def boxes_of(self, image_id: int) -> list[tuple[str, tuple[float, float, float, float]]]:
        """(category name, (x1, y1, x2, y2)) of one image's annotations, for drawing."""
        names = self.category_names()
        out = []
        for ann in self.annotations:
            if ann["image_id"] == image_id:
                x, y, w, h = ann["bbox"]
                out.append((names[ann["category_id"]], (x, y, x + w, y + h)))
        return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A JSON number within +-MAX_COORDINATE (the parser refuses infinities; a long integer is not a float)."""
    return _is_real(value) and -MAX_COORDINATE <= value <= MAX_COORDINATE


def _is_id(value, low: int = 0) -> bool:
    return _is_int(value) and low <= value <= MAX_ID


class _TooLong(ValueError):
    """Raised from the JSON parser's number hook: the message is the refusal."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _TooLong(f"holds an integer of {digits:,} digits; COCO ids and sizes have at most {MAX_INT_DIGITS}")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _TooLong(f"holds the number {text[:40]}, too large for a float")
    return value


def _parse_constant(name: str) -> float:
    raise _TooLong(f"holds {name}, which is not JSON (nor a number COCO can use)")


def _decode_json(text: str, source: str):
    """``json.loads`` after a count that bounds its memory; every failure an ``AnnotationError``."""
    items = text.count(",") + text.count("[") + text.count("{")
    if items > MAX_JSON_ITEMS:
        raise AnnotationError(
            f"{source}: has {items:,} JSON items (values and separators), more than the {MAX_JSON_ITEMS:,} the app "
            f"reads in one file (at most {MAX_ANNOTATIONS:,} annotations and {MAX_IMAGES:,} images: memory); "
            "split it or drop its segmentation masks"
        )
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _TooLong as exc:
        raise AnnotationError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise AnnotationError(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # anything else the decoder refuses
        raise AnnotationError(f"{source}: not valid JSON ({exc})") from None


def load_annotations(path: Path) -> GroundTruth:
    """A COCO detection file from disk (at most ``MAX_ANNOTATIONS_BYTES``); ``AnnotationError`` otherwise."""
    try:
        data = read_bounded(
            Path(path), MAX_ANNOTATIONS_BYTES, "COCO annotations file", "is this a COCO detection JSON file?"
        )
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None
    return parse_annotations(data, str(path))


def parse_annotations(data: bytes, source: str) -> GroundTruth:
    """Validate a COCO detection file's bytes; ``AnnotationError`` naming ``source`` and what is wrong."""
    if len(data) > MAX_ANNOTATIONS_BYTES:
        raise AnnotationError(
            f"{source}: annotations file is larger than {MAX_ANNOTATIONS_BYTES:,} bytes ({len(data):,}); "
            "is this a COCO detection JSON file?"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "a COCO annotations file is UTF-8 JSON"
        ) from None
    doc = _decode_json(text, source)
    if not isinstance(doc, dict):
        raise AnnotationError(
            f"{source}: the top level is a JSON {type(doc).__name__}, not an object with "
            "'images', 'annotations' and 'categories'"
        )
    missing = [key for key in ("images", "annotations", "categories") if key not in doc]
    if missing:
        raise AnnotationError(
            f"{source}: missing key {', '.join(repr(k) for k in missing)} (a COCO detection file has "
            "'images', 'annotations' and 'categories')"
        )
    for key, most in (("images", MAX_IMAGES), ("annotations", MAX_ANNOTATIONS), ("categories", MAX_CATEGORIES)):
        if not isinstance(doc[key], list):
            raise AnnotationError(f"{source}: '{key}' is a JSON {type(doc[key]).__name__}, not a list")
        if len(doc[key]) > most:
            raise AnnotationError(
                f"{source}: '{key}' has {len(doc[key]):,} entries, more than the {most:,} the app evaluates in one "
                "file (memory: docs/evaluate.md); split the file"
            )
    problems: list[str] = []
    images = _images(doc["images"], problems)
    categories = _categories(doc["categories"], problems)
    annotations = _annotations(doc["annotations"], {i["id"] for i in images}, {c["id"] for c in categories}, problems)
    if not problems and not images:
        problems.append("'images' is empty: nothing to evaluate")
    if not problems and not categories:
        problems.append("'categories' is empty: nothing to evaluate")
    if problems:
        more = f"; and more (the first {MAX_PROBLEMS} are listed)" if len(problems) > MAX_PROBLEMS else ""
        raise AnnotationError(f"{source}: " + "; ".join(problems[:MAX_PROBLEMS]) + more)
    return GroundTruth(source, tuple(images), tuple(annotations), tuple(categories))


def _identified(entries: list, section: str, noun: str, text_key: str, problems: list[str]):
    """Each entry of ``section`` that is an object with a valid id not seen before and a non-empty ``text_key``
    string, as (where, entry, id, text); every other entry is one problem (``noun`` names it in a duplicate)."""
    seen = set()
    for n, entry in enumerate(entries):
        if len(problems) > MAX_PROBLEMS:
            return
        where = f"{section}[{n}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        entry_id, text = entry.get("id"), entry.get(text_key)
        if not _is_id(entry_id):
            problems.append(f"{where}: 'id' must be an integer from 0 to 2**63-1, got {_short(entry_id)}")
            continue
        if entry_id in seen:
            problems.append(f"{where}: duplicate {noun} id {entry_id}")
            continue
        seen.add(entry_id)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where} (id {entry_id}): '{text_key}' must be a non-empty string, got {_short(text)}")
            continue
        yield where, entry, entry_id, text


def _images(entries: list, problems: list[str]) -> list[dict]:
    out = []
    for where, entry, image_id, file_name in _identified(entries, "images", "image", "file_name", problems):
        image = {"id": image_id, "file_name": file_name}
        for key in ("width", "height"):
            value = entry.get(key)
            if value is None:
                continue
            if not _is_number(value) or value <= 0:
                problems.append(
                    f"{where} (id {image_id}): '{key}' must be a number above 0 and at most {MAX_COORDINATE:.0e}, "
                    f"got {_short(value)}"
                )
            image[key] = value
        out.append(image)
    return out


def _categories(entries: list, problems: list[str]) -> list[dict]:
    out, seen_names = [], {}
    for where, _entry, cat_id, name in _identified(entries, "categories", "category", "name", problems):
        key = canonical_name(name)
        if key in seen_names:
            problems.append(
                f"{where} (id {cat_id}): name {_short(name)} is the same class as category {seen_names[key]} "
                "(names are matched to the models' labels, so each class needs one category)"
            )
            continue
        seen_names[key] = cat_id
        out.append({"id": cat_id, "name": name.strip()})
    return out


def _annotations(entries: list, image_ids: set[int], category_ids: set[int], problems: list[str]) -> list[dict]:
    out, seen = [], set()
    given = {e.get("id") for e in entries if isinstance(e, dict) and _is_int(e.get("id"))}
    # Ids for entries without one (COCO's index needs them): past the largest given, else the free ones from 1.
    start = max(given, default=0) + 1
    fits = start + len(entries) <= MAX_ID
    free_ids = itertools.count(start) if fits else (i for i in itertools.count(1) if i not in given)
    for n, entry in enumerate(entries):
        if len(problems) > MAX_PROBLEMS:
            break
        if not isinstance(entry, dict):
            problems.append(f"annotations[{n}] is not an object")
            continue
        ann_id = entry.get("id")
        where = f"annotations[{n}]" + (f" (id {_short(ann_id)})" if ann_id is not None else "")
        if ann_id is None:
            ann_id = next(free_ids)
        elif not _is_id(ann_id, low=1):
            problems.append(f"{where}: 'id' must be an integer from 1 to 2**63-1, got {_short(ann_id)}")
            continue
        elif ann_id in seen:
            problems.append(f"{where}: duplicate annotation id {ann_id}")
            continue
        seen.add(ann_id)
        image_id, cat_id, bbox = entry.get("image_id"), entry.get("category_id"), entry.get("bbox")
        if not _is_int(image_id) or image_id not in image_ids:
            problems.append(f"{where}: image_id {_short(image_id)} is not the id of any entry of 'images'")
            continue
        if not _is_int(cat_id) or cat_id not in category_ids:
            problems.append(f"{where}: category_id {_short(cat_id)} is not the id of any entry of 'categories'")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_real(v) for v in bbox):
            problems.append(f"{where}: bbox must be 4 numbers [x, y, width, height], got {_short(bbox)}")
            continue
        if not all(_is_number(v) for v in bbox):
            problems.append(f"{where}: bbox {_short(bbox)} has a value beyond +-{MAX_COORDINATE:.0e} pixels")
            continue
        if bbox[2] <= 0 or bbox[3] <= 0:
            problems.append(f"{where}: bbox {bbox} has a width or height that is not above 0 (it is [x, y, w, h])")
            continue
        iscrowd = entry.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
            problems.append(f"{where}: 'iscrowd' must be 0 or 1, got {_short(iscrowd)}")
            continue
        area = entry.get("area", bbox[2] * bbox[3])
        if not _is_number(area) or area < 0:
            problems.append(f"{where}: 'area' must be a number of at least 0, got {_short(area)}")
            continue
        out.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": [float(v) for v in bbox],
                "area": float(area),
                "iscrowd": iscrowd,
            }
        )
    return out


def _short(value, limit: int = 80) -> str:
    """``repr`` of a value from the file, cut to ``limit`` characters (a refusal stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def canonical_name(name: str) -> str:
    """The name a category and a model label are compared by: spaces collapsed, lower case, Darknet's
    spellings (motorbike, aeroplane, sofa, pottedplant, diningtable, tvmonitor) as torchvision spells them."""
    key = " ".join(name.split()).lower()
    return DARKNET_TO_TORCHVISION.get(key, key)


@dataclass(frozen=True)
class CategoryMatch:
    """How one model's labels meet the file's categories."""

    label_to_category: dict[str, int]  # model label -> category id
    scored: tuple[int, ...]  # category ids the model can predict: the ones it is scored on
    unpredictable: tuple[str, ...]  # category names it has no label for (reported, not scored as misses)


def match_categories(categories, labels) -> CategoryMatch:
    """Match by ``canonical_name``: COCO's ids (with their gaps), Darknet's contiguous ids and a custom names
    file's order never enter; only names do."""
    by_name: dict[str, str] = {}
    for label in labels:
        if label not in IGNORED_LABELS:
            by_name.setdefault(canonical_name(label), label)
    mapping, scored, unpredictable = {}, [], []
    for cat in categories:
        label = by_name.get(canonical_name(cat["name"]))
        if label is None:
            unpredictable.append(cat["name"])
        else:
            mapping[label] = cat["id"]
            scored.append(cat["id"])
    return CategoryMatch(mapping, tuple(scored), tuple(unpredictable))


class ImageNotFound(LookupError):
    """An entry of 'images' whose file cannot be used; str() says why (the caller names the entry)."""


def file_name_problem(file_name: str) -> str | None:
    """Why ``file_name`` can never name a file on Linux, or None."""
    if "\0" in file_name:
        return "its file_name contains a NUL byte"
    encoded = file_name.encode("utf-8", "surrogateescape")
    if len(encoded) >= PATH_MAX:
        return f"its file_name is {len(encoded):,} bytes long, more than a path may be ({PATH_MAX - 1:,})"
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in file_name.split("/")), default=0)
    if longest > NAME_MAX:
        return f"its file_name has a component of {longest:,} bytes, more than a file name may be ({NAME_MAX})"
    return None


def image_path(images_dir: Path, file_name: str) -> Path:
    """The image file of an entry of 'images': ``DIR/file_name``, else ``DIR/<its base name>``; never outside
    ``DIR`` (a file_name with ``..`` that leaves it is not looked up). ``ImageNotFound`` says why not."""
    problem = file_name_problem(file_name)
    if problem:
        raise ImageNotFound(problem)
    root = images_dir.resolve()
    reason = f"not found in {images_dir}"
    for candidate in (images_dir / file_name, images_dir / Path(file_name).name):
        try:
            resolved = candidate.resolve()
            if resolved.is_relative_to(root) and resolved.is_file():
                return candidate
        except RuntimeError:  # Python 3.11's resolve() on a link loop
            reason = f"{candidate} is a symbolic link loop"
        except OSError as exc:
            reason = f"{candidate}: {exc.strerror or exc}"
    raise ImageNotFound(reason)
