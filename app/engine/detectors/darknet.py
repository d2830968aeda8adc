"""Darknet model files without Darknet: parse a ``.cfg``, count its parameters, read a ``.weights`` header.

OpenCV's Darknet importer reads as many floats as the ``.cfg`` asks for and never checks the file's
length, so a truncated ``.weights`` (or the ``.cfg`` of another model) loads "fine" and detects
nothing. ``check_weights_size`` compares the file's size with what the ``.cfg`` needs (header +
4 bytes per parameter) and says which file is too short or too long, by how much.

``parse_cfg`` is a general parser (the Darknet->ONNX converter reuses it): a list of
``Section(type, options)`` with ``[net]`` first. This module imports neither OpenCV nor torch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..textfile import read_bounded

MAX_CFG_BYTES = 1 << 20  # real cfgs are ~10 KB; a bigger file is not a network description
FLOAT_BYTES = 4

# Layers that hold no parameters in a .weights file (Darknet's load_weights skips them).
_NO_WEIGHTS = {
    "route",
    "shortcut",
    "upsample",
    "maxpool",
    "dropout",
    "yolo",
    "region",
    "avgpool",
    "reorg",
    "softmax",
    "cost",
    "sam",
    "scale_channels",
}


class DarknetError(ValueError):
    """A Darknet file cannot be used; the message names the file and what is wrong."""


@dataclass
class Section:
    """One ``[type]`` block of a cfg with its ``key=value`` options (values kept as strings)."""

    type: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0  # where the section starts, for messages

    def int(self, key: str, default: int) -> int:
        raw = self.options.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise DarknetError(f"[{self.type}] at line {self.line}: {key}={raw!r} is not an integer") from None

    def ints(self, key: str) -> list[int]:
        raw = self.options.get(key, "")
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise DarknetError(f"[{self.type}] at line {self.line}: {key}={raw!r} is not a list of integers") from None


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int
    size: int  # bytes the header takes: 20 (``seen`` is int64) or 16 (int32)


def parse_cfg_text(text: str, source: str = "<cfg>") -> list[Section]:
    """Sections of a cfg; ``#`` and ``;`` start comments, blank lines and spaces around ``=`` are ignored."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise DarknetError(f"{source}: line {number}: {raw.strip()!r} is not a [section] header")
            sections.append(Section(line[1:-1].strip().lower(), {}, number))
            continue
        if "=" not in line:
            raise DarknetError(f"{source}: line {number}: {raw.strip()!r} is neither [section] nor key=value")
        if not sections:
            raise DarknetError(f"{source}: line {number}: option {line!r} before the first [section]")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections:
        raise DarknetError(f"{source}: no sections: an empty file or not a Darknet .cfg")
    if sections[0].type not in ("net", "network"):
        raise DarknetError(
            f"{source}: the first section is [{sections[0].type}] at line {sections[0].line}; "
            "a Darknet .cfg starts with [net]"
        )
    return sections


def parse_cfg(path: Path) -> list[Section]:
    """``parse_cfg_text`` of a file, read with a size bound; errors name the file."""
    path = Path(path)
    try:
        data = read_bounded(path, MAX_CFG_BYTES, "Darknet .cfg", "real ones are about 10 KB")
    except ValueError as exc:
        raise DarknetError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DarknetError(f"{path}: not a text file (byte {exc.start} is not UTF-8); not a Darknet .cfg") from None
    return parse_cfg_text(text, str(path))


def count_parameters(sections: list[Section], source: str = "<cfg>") -> int:
    """Floats a ``.weights`` file holds for this network, in Darknet's own loading order.

    Tracks each layer's output shape (channels, height, width), because a convolution's weights
    depend on its input channels and ``[route]``/``[shortcut]`` take them from other layers.
    """
    try:
        return _count(sections, source)
    except DarknetError as exc:
        if str(exc).startswith(source):
            raise
        raise DarknetError(f"{source}: {exc}") from None


Shape = tuple[int, int, int]  # a layer's output (channels, height, width); 0 height/width: unknown


def _count(sections: list[Section], source: str) -> int:
    """The number of float parameters the cfg's layers read from a .weights file, layer by layer."""
    net = sections[0]
    shape: Shape = (net.int("channels", 3), net.int("height", 0), net.int("width", 0))
    shapes: list[Shape] = []  # output of each layer after [net]
    total = 0
    for index, sec in enumerate(sections[1:]):
        where = f"{source}: [{sec.type}] at line {sec.line}"
        layer = _LAYERS.get(sec.type)
        if layer is None:
            if sec.type not in _NO_WEIGHTS:
                raise DarknetError(f"{where}: layer type [{sec.type}] is not supported by this size check")
        else:
            params, shape = layer(sec, shape, shapes[:index], where)
            total += params
        shapes.append(shape)
    return total


def _earlier(ref: int, before: list[Shape], where: str, key: str) -> Shape:
    """The output of the layer ``ref`` points at (negative: counted back from this one)."""
    index = len(before)
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise DarknetError(f"{where}: {key}={ref} points outside the {index} layers before it")
    return before[target]


def _convolutional(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    c, h, w = shape
    filters, size = sec.int("filters", 1), sec.int("size", 1)
    groups, stride = max(1, sec.int("groups", 1)), sec.int("stride", 1)
    pad = size // 2 if sec.int("pad", 0) else sec.int("padding", 0)
    if filters < 1 or size < 1 or stride < 1:
        raise DarknetError(f"{where}: filters, size and stride must be >= 1")
    if c % groups or filters % groups:
        raise DarknetError(f"{where}: groups={groups} does not divide input channels {c} and filters {filters}")
    params = filters + filters * (c // groups) * size * size
    if sec.int("batch_normalize", 0):
        params += 3 * filters  # scales, rolling mean, rolling variance
    h, w = ((h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1) if h and w else (h, w)
    return params, (filters, h, w)


def _connected(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    c, h, w = shape
    outputs = sec.int("output", 1)
    params = outputs + outputs * c * max(h, 1) * max(w, 1)
    if sec.int("batch_normalize", 0):
        params += 3 * outputs
    return params, (outputs, 1, 1)


def _route(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    refs = sec.ints("layers")
    if not refs:
        raise DarknetError(f"{where}: no layers=")
    picked = [_earlier(ref, before, where, "layers") for ref in refs]
    groups = max(1, sec.int("groups", 1))
    return 0, (sum(s[0] for s in picked) // groups, picked[0][1], picked[0][2])


def _shortcut(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    _earlier(sec.int("from", -1), before, where, "from")
    if sec.options.get("weights_type", "none") != "none":
        raise DarknetError(f"{where}: weighted shortcuts (weights_type) are not supported")
    return 0, shape


def _upsample(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    c, h, w = shape
    stride = sec.int("stride", 2)
    return 0, (c, h * stride, w * stride)


def _maxpool(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    c, h, w = shape
    size, stride = sec.int("size", 2), sec.int("stride", 1)
    padding = sec.int("padding", size - 1)
    if h and w and stride:
        h, w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    return 0, (c, h, w)


def _reorg(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    c, h, w = shape
    stride = sec.int("stride", 2)
    return 0, (c * stride * stride, h // stride, w // stride)


def _avgpool(sec: Section, shape: Shape, before: list[Shape], where: str) -> tuple[int, Shape]:
    return 0, (shape[0], 1, 1)


# layer type -> (its parameters, its output shape); types in _NO_WEIGHTS keep the shape and read nothing
_LAYERS = {
    "convolutional": _convolutional,
    "conv": _convolutional,
    "connected": _connected,
    "conn": _connected,
    "route": _route,
    "shortcut": _shortcut,
    "upsample": _upsample,
    "maxpool": _maxpool,
    "reorg": _reorg,
    "avgpool": _avgpool,
}


def read_header(path: Path) -> WeightsHeader:
    """The ``.weights`` header: major, minor, revision (int32), then ``seen`` (int64 from version 0.2)."""
    path = Path(path)
    with open(path, "rb") as fh:
        return parse_header(fh.read(20), str(path))


def parse_header(head: bytes, source: str = "<weights>") -> WeightsHeader:
    """``read_header`` of the first (up to) 20 bytes of a file."""
    if len(head) < 12:
        raise DarknetError(f"{source}: {len(head)} bytes; too short for a Darknet .weights header (16-20 bytes)")
    major, minor, revision = struct.unpack("<3i", head[:12])
    wide = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
    size = 20 if wide else 16
    if len(head) < size:
        raise DarknetError(
            f"{source}: {len(head)} bytes; too short for its {size}-byte Darknet .weights header "
            f"(version {major}.{minor}.{revision})"
        )
    seen = struct.unpack("<q" if wide else "<i", head[12:size])[0]
    return WeightsHeader(major, minor, revision, seen, size)


def expected_size(header_size: int, parameters: int) -> int:
    return header_size + FLOAT_BYTES * parameters


def size_problem(actual: int, header_size: int, parameters: int) -> str | None:
    """None when a file of ``actual`` bytes fits, else what is wrong ("short by N bytes ...")."""
    want = expected_size(header_size, parameters)
    if actual == want:
        return None
    how = "short" if actual < want else "long"
    diff = abs(actual - want)
    return (
        f"{actual:,} bytes, {diff:,} bytes too {how} for its .cfg: expected {want:,} "
        f"({header_size}-byte header + {parameters:,} parameters x 4 bytes)"
    )


def check_weights_size(weights: Path, cfg: Path) -> int:
    """Refuse a ``.weights`` whose size does not match the ``.cfg``; returns the parameter count."""
    weights, cfg = Path(weights), Path(cfg)
    sections = parse_cfg(cfg)
    parameters = count_parameters(sections, str(cfg))
    header = read_header(weights)
    problem = size_problem(weights.stat().st_size, header.size, parameters)
    if problem:
        raise DarknetError(
            f"{weights} is {problem}: the file is truncated/damaged or the .cfg {cfg} belongs to another model"
        )
    return parameters


def net_option(sections: list[Section], key: str) -> str | None:
    """An option of the ``[net]`` section (e.g. ``width``), or None."""
    return sections[0].options.get(key) if sections else None
