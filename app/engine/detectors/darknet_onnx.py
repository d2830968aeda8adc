"""Darknet (``.cfg`` + ``.weights``) to ONNX, so OpenCV 5 (which removed the Darknet importer) runs the
official Darknet models, and faster: its new engine takes ONNX.

The graph reproduces OpenCV 4's Darknet importer layer by layer (convolution + batch norm + activation,
route with groups, shortcut, upsample, maxpool with Darknet's padding, dropout as identity) and outputs
each ``[yolo]`` head's convolution as it is; ``decode_heads`` then does what OpenCV's region layer does,
on the rows that can score only: rows of (cx, cy, w, h, objectness, class scores) ordered by cell row,
cell column, anchor; boxes normalised to the input; class scores multiplied by objectness and zeroed at or
below the region threshold. Each head's anchors, ``scale_x_y`` and threshold travel in the model's
metadata (``DARKNET_ONNX.heads_key``), so a converted ``.onnx`` needs no cfg. The detector preprocesses a
converted model like a Darknet one (input RGB, NCHW, float32 scaled by 1/255, stretched).
Folding the 1/255 into the first convolution was measured: it saves ~0.03 ms of 2.5 ms and costs the
bit-exactness (outputs move by ~2e-6 relative), so it is not done.

Built with ``onnx.helper`` on ``app.engine.detectors.darknet``'s cfg parser. ``cached_onnx`` converts once per
(cfg, weights) pair into a cache folder, safely for concurrent processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...ops.terminal import printable
from ..catalog import DARKNET_ONNX
from .darknet import DarknetError, Section, check_weights_size, parse_cfg, parse_header

if TYPE_CHECKING:
    import onnx

# ``onnx`` is imported where a graph is built or read: a detector that finds its model in the cache
# does not pay for the import (0.2-0.8 s on these machines).

_ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "mish", "swish")


@dataclass
class _Tensor:
    name: str
    c: int
    h: int
    w: int


class _Graph:
    """Nodes and initializers being built, and the ``.weights`` floats being consumed in Darknet's order."""

    def __init__(self, floats: np.ndarray, weights: Path):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self.floats, self.offset, self.weights = floats, 0, weights

    def const(self, name: str, value) -> str:
        if name not in self.names:  # a constant named by its value is shared
            self.names.add(name)
            self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        """An int64 vector constant (shapes, slice bounds), named by its values."""
        return self.const("i64_" + "_".join(str(v) for v in values), np.array(values, np.int64))

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def take(self, count: int, where: str) -> np.ndarray:
        if self.offset + count > len(self.floats):
            raise DarknetError(
                f"{self.weights}: ends after {len(self.floats):,} floats; {where} needs {count:,} more from "
                f"float {self.offset:,} (the file is truncated or belongs to another .cfg)"
            )
        part = self.floats[self.offset : self.offset + count]
        self.offset += count
        return part


def read_weights(weights: Path) -> np.ndarray:
    """The parameters of a ``.weights`` file as float32, after its 16- or 20-byte header."""
    data = Path(weights).read_bytes()
    header = parse_header(data[:20], str(weights))
    body = data[header.size :]
    if len(body) % 4:
        raise DarknetError(f"{weights}: {len(body):,} bytes after the header is not a whole number of floats")
    return np.frombuffer(body, dtype="<f4").astype(np.float32)


def build_model(sections: list[Section], floats: np.ndarray, cfg: Path, weights: Path) -> onnx.ModelProto:
    """The ONNX model of a parsed cfg with its weights; ``DarknetError`` naming the file and layer otherwise."""
    import onnx
    from onnx import TensorProto, helper

    net = sections[0]
    c, h, w = net.int("channels", 3), net.int("height", 0), net.int("width", 0)
    if h < 1 or w < 1:
        raise DarknetError(f"{cfg}: [net] needs width= and height= (the network input size)")
    graph = _Graph(floats, weights)
    layers: list[_Tensor] = []
    heads: list[tuple[str, HeadSpec, _Tensor]] = []  # (output name, decoding facts, its conv output)
    current = _Tensor(DARKNET_ONNX.input_name, c, h, w)
    for index, sec in enumerate(sections[1:]):
        try:
            current = _layer(graph, sec, index, current, layers, heads, (w, h))
        except DarknetError as exc:
            where = f"{cfg}: [{sec.type}] at line {sec.line}"
            raise DarknetError(str(exc) if str(exc).startswith(str(weights)) else f"{where}: {exc}") from None
        layers.append(current)
    if not heads:
        raise DarknetError(f"{cfg}: no [yolo] layer; only YOLO detectors can be converted")
    if graph.offset != len(floats):
        raise DarknetError(
            f"{weights}: {len(floats) - graph.offset:,} floats are left after the last layer of {cfg} "
            "(the .weights belong to another .cfg)"
        )
    inputs = [helper.make_tensor_value_info(DARKNET_ONNX.input_name, TensorProto.FLOAT, [1, c, h, w])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, t.c, t.h, t.w]) for n, _, t in heads]
    model = helper.make_model(
        helper.make_graph(graph.nodes, Path(cfg).stem, inputs, outputs, initializer=graph.inits),
        opset_imports=[helper.make_opsetid("", DARKNET_ONNX.opset)],
        producer_name=DARKNET_ONNX.producer,
    )
    model.ir_version = DARKNET_ONNX.ir_version
    specs = {n: spec.to_json() for n, spec, _ in heads}
    helper.set_model_props(model, {DARKNET_ONNX.heads_key: json.dumps(specs, sort_keys=True)})
    onnx.checker.check_model(model)
    return model


def _layer(graph: _Graph, sec: Section, index: int, x: _Tensor, layers, heads, net_size) -> _Tensor:
    """The output of layer ``index`` (``sec``) whose input is ``x``, the previous layer's output."""
    kind = sec.type
    name = f"l{index}_{kind}"
    if kind in ("convolutional", "conv"):
        return _convolution(graph, sec, name, x)
    if kind == "route":
        return _route(graph, sec, name, [_ref(layers, index, ref) for ref in sec.ints("layers")], x)
    if kind == "shortcut":
        return _shortcut(graph, sec, name, _ref(layers, index, sec.int("from", -1)), x)
    if kind == "upsample":
        return _upsample(graph, sec, name, x)
    if kind == "maxpool":
        return _maxpool(graph, sec, name, x)
    if kind == "dropout":
        return x  # identity at inference
    if kind == "yolo":
        head, spec = _yolo(graph, sec, x, net_size, f"{DARKNET_ONNX.output_prefix}{index}")
        heads.append((head, spec, x))
        return _Tensor(head, x.c, x.h, x.w)
    raise DarknetError(f"layer type [{kind}] is not supported by the ONNX converter")


def _route(graph: _Graph, sec: Section, name: str, picked: list[_Tensor], x: _Tensor) -> _Tensor:
    """Earlier layers' outputs (a channel group of each, with ``groups``) joined along the channels."""
    if not picked:
        raise DarknetError("no layers=")
    groups, group_id = max(1, sec.int("groups", 1)), sec.int("group_id", 0)
    if groups > 1:
        if not 0 <= group_id < groups or any(t.c % groups for t in picked):
            raise DarknetError(f"groups={groups}, group_id={group_id} do not split the input channels")
        picked = [
            _channels(graph, t, group_id * t.c // groups, (group_id + 1) * t.c // groups, f"{name}_{i}")
            for i, t in enumerate(picked)
        ]
    if any((t.h, t.w) != (picked[0].h, picked[0].w) for t in picked):
        raise DarknetError("the routed layers differ in height or width")
    if len(picked) == 1:
        return picked[0]
    return _Tensor(graph.op("Concat", [t.name for t in picked], name, axis=1), sum(t.c for t in picked), x.h, x.w)


def _shortcut(graph: _Graph, sec: Section, name: str, other: _Tensor, x: _Tensor) -> _Tensor:
    """``x`` plus an earlier layer's output of the same shape, then the activation."""
    if sec.options.get("weights_type", "none") != "none":
        raise DarknetError("weighted shortcuts (weights_type) are not supported")
    if (other.c, other.h, other.w) != (x.c, x.h, x.w):
        raise DarknetError(f"from= layer has shape {(other.c, other.h, other.w)}, this one {(x.c, x.h, x.w)}")
    out = _Tensor(graph.op("Add", [x.name, other.name], name), x.c, x.h, x.w)
    return _activation(graph, sec, out, name)


def _upsample(graph: _Graph, sec: Section, name: str, x: _Tensor) -> _Tensor:
    stride = sec.int("stride", 2)
    if stride < 1 or float(sec.options.get("scale", "1")) != 1:
        raise DarknetError("only upsampling by a positive stride with scale=1 is supported")
    scales = graph.const(f"{name}_scales", np.array([1, 1, stride, stride], np.float32))
    out = graph.op(
        "Resize",
        [x.name, "", scales],
        name,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    return _Tensor(out, x.c, x.h * stride, x.w * stride)


def _maxpool(graph: _Graph, sec: Section, name: str, x: _Tensor) -> _Tensor:
    stride = sec.int("stride", 1)
    size = sec.int("size", stride)
    padding = sec.int("padding", size - 1)
    if size < 1 or stride < 1 or padding < 0 or sec.int("maxpool_depth", 0):
        raise DarknetError("size and stride must be >= 1 (maxpool_depth is not supported)")
    low, high = padding // 2, padding - padding // 2
    out = graph.op(
        "MaxPool", [x.name], name, kernel_shape=[size, size], strides=[stride, stride], pads=[low, low, high, high]
    )
    return _Tensor(out, x.c, (x.h + padding - size) // stride + 1, (x.w + padding - size) // stride + 1)


def _ref(layers: list[_Tensor], index: int, ref: int) -> _Tensor:
    target = index + ref if ref < 0 else ref
    if not 0 <= target < index:
        raise DarknetError(f"layer {ref} points outside the {index} layers before it")
    return layers[target]


def _channels(graph: _Graph, x: _Tensor, start: int, end: int, name: str) -> _Tensor:
    out = graph.op("Slice", [x.name, graph.ints(start), graph.ints(end), graph.ints(1)], f"{name}_slice")
    return _Tensor(out, end - start, x.h, x.w)


def _convolution(graph: _Graph, sec: Section, name: str, x: _Tensor) -> _Tensor:
    filters, size = sec.int("filters", 1), sec.int("size", 1)
    stride, groups = sec.int("stride", 1), max(1, sec.int("groups", 1))
    pad = size // 2 if sec.int("pad", 0) else sec.int("padding", 0)
    if filters < 1 or size < 1 or stride < 1:
        raise DarknetError("filters, size and stride must be >= 1")
    if x.c % groups or filters % groups:
        raise DarknetError(f"groups={groups} does not divide input channels {x.c} and filters {filters}")
    if sec.int("stride_x", stride) != stride or sec.int("stride_y", stride) != stride or sec.int("dilation", 1) != 1:
        raise DarknetError("stride_x/stride_y and dilation are not supported")
    where = f"[{sec.type}] at line {sec.line}"
    bias = graph.take(filters, where)
    norm = sec.int("batch_normalize", 0)
    if norm:
        scales, mean, variance = (graph.take(filters, where) for _ in range(3))
    kernel = graph.take(filters * (x.c // groups) * size * size, where).reshape(filters, x.c // groups, size, size)
    inputs = [x.name, graph.const(f"{name}_w", kernel)]
    if not norm:
        inputs.append(graph.const(f"{name}_b", bias))
    out = graph.op(
        "Conv",
        inputs,
        name,
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[pad, pad, pad, pad],
        group=groups,
    )
    if norm:
        params = [
            graph.const(f"{name}_{k}", v)
            for k, v in (("scale", scales), ("bias", bias), ("mean", mean), ("var", variance))
        ]
        out = graph.op("BatchNormalization", [out, *params], f"{name}_bn", epsilon=DARKNET_ONNX.batchnorm_eps)
    h = (x.h + 2 * pad - size) // stride + 1
    w = (x.w + 2 * pad - size) // stride + 1
    return _activation(graph, sec, _Tensor(out, filters, h, w), name)


def _activation(graph: _Graph, sec: Section, x: _Tensor, name: str) -> _Tensor:
    kind = sec.options.get("activation", "linear")
    if kind == "linear":
        return x
    if kind == "leaky":
        out = graph.op("LeakyRelu", [x.name], f"{name}_leaky", alpha=0.1)
    elif kind == "relu":
        out = graph.op("Relu", [x.name], f"{name}_relu")
    elif kind == "logistic":
        out = graph.op("Sigmoid", [x.name], f"{name}_logistic")
    elif kind == "mish":  # x * tanh(softplus(x))
        soft = graph.op("Softplus", [x.name], f"{name}_softplus")
        out = graph.op("Mul", [x.name, graph.op("Tanh", [soft], f"{name}_tanh")], f"{name}_mish")
    elif kind == "swish":
        out = graph.op("Mul", [x.name, graph.op("Sigmoid", [x.name], f"{name}_sigmoid")], f"{name}_swish")
    else:
        raise DarknetError(f"activation={kind} is not supported (supported: {', '.join(_ACTIVATIONS)})")
    return _Tensor(out, x.c, x.h, x.w)


@dataclass(frozen=True)
class HeadSpec:
    """What decoding one ``[yolo]`` head needs besides its output: its anchors as fractions of the network
    input, ``scale_x_y`` and the region threshold (class scores at or below it are zeroed)."""

    anchors: tuple[tuple[float, float], ...]
    scale_xy: float
    thresh: float

    def to_json(self) -> dict:
        return {"anchors": [list(a) for a in self.anchors], "scale_xy": self.scale_xy, "thresh": self.thresh}

    @classmethod
    def from_json(cls, doc: dict) -> HeadSpec:
        return cls(tuple((float(w), float(h)) for w, h in doc["anchors"]), float(doc["scale_xy"]), float(doc["thresh"]))


def head_spec(sec: Section, net_size: tuple[int, int], channels: int | None = None) -> HeadSpec:
    """A ``[yolo]`` section's decoding facts, checked (``channels``: the layer before it, when known)."""
    classes = sec.int("classes", 20)
    pixels = sec.ints("anchors")
    if not pixels or len(pixels) % 2:
        raise DarknetError("anchors= must list width, height pairs")
    anchors = np.array(pixels, np.float32).reshape(-1, 2)
    mask = sec.ints("mask") or list(range(len(anchors)))
    if any(not 0 <= m < len(anchors) for m in mask):
        raise DarknetError(f"mask={mask} points outside the {len(anchors)} anchors")
    if sec.int("new_coords", 0):
        raise DarknetError("new_coords=1 (Scaled-YOLOv4 heads) is not supported")
    if channels is not None and channels != len(mask) * (5 + classes):
        raise DarknetError(
            f"the layer before it has {channels} filters; {len(mask)} anchors x (5 + classes={classes}) "
            f"= {len(mask) * (5 + classes)} (fix filters= or classes=)"
        )
    used = anchors[mask] / np.array(net_size, np.float32)  # anchors in pixels -> fractions of the input
    return HeadSpec(
        tuple((float(w), float(h)) for w, h in used),
        float(sec.options.get("scale_x_y", "1")),
        float(sec.options.get("thresh", DARKNET_ONNX.region_thresh)),
    )


def head_specs(sections: list[Section]) -> dict[str, HeadSpec]:
    """Every ``[yolo]`` head of a parsed cfg by its output name (what the detector needs for a model it
    converted itself; a converted ``.onnx`` file carries the same in its metadata)."""
    net = sections[0]
    size = (net.int("width", 0), net.int("height", 0))
    return {
        f"{DARKNET_ONNX.output_prefix}{index}": head_spec(sec, size)
        for index, sec in enumerate(sections[1:])
        if sec.type == "yolo"
    }


def _yolo(graph: _Graph, sec: Section, x: _Tensor, net_size: tuple[int, int], name: str) -> tuple[str, HeadSpec]:
    """A ``[yolo]`` head: the convolution's output as it is, (1, A*(5+C), H, W), under the head's name.

    Decoding happens in ``decode_heads``, not in the graph: OpenCV's region layer applies the logistic to all
    H*W*A*(5+C) values, while the detector needs only the rows whose objectness passes the region threshold
    (a few of ~1500). Measured on OpenCV 5 with Yolo-Fastest-1.1 at 320, the decode ops in the graph cost
    ~0.4-0.7 ms of a 5-12 ms forward; ``decode_heads`` on the kept rows costs ~0.05 ms.
    """
    spec = head_spec(sec, net_size, x.c)
    return graph.op("Identity", [x.name], name), spec


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-values))


def decode_head(out: np.ndarray, spec: HeadSpec, full: bool = False) -> np.ndarray:
    """OpenCV's region layer (logistic mode) on one head's (1, A*(5+C), H, W) output: rows of (cx, cy, w, h,
    objectness, class scores x objectness, zeroed at or below the threshold), ordered by cell row, cell column,
    anchor, with boxes as fractions of the input. ``full``: every row, as the region layer gives them; else
    only the rows whose objectness passes the threshold (no other row can score)."""
    anchors = np.asarray(spec.anchors, np.float32)
    _, channels, height, width = out.shape
    per_anchor = out.reshape(len(anchors), channels // len(anchors), height * width)  # (A, 5+C, H*W), a view
    if full:
        cells, which = np.divmod(np.arange(height * width * len(anchors)), len(anchors))
    else:
        objectness = _sigmoid(per_anchor[:, 4, :]).T  # (H*W, A): nonzero lists it cell-major, like the rows
        cells, which = np.nonzero(objectness > np.float32(spec.thresh))
    values = per_anchor[which, :, cells]  # (rows, 5+C)
    xy = _sigmoid(values[:, 0:2])
    if spec.scale_xy != 1:
        half = np.float32(0.5)
        xy = (xy - half) * np.float32(spec.scale_xy) + half
    grid = np.stack([cells % width, cells // width], axis=1).astype(np.float32)
    centres = (xy + grid) / np.array([width, height], np.float32)
    sizes = np.exp(values[:, 2:4]) * anchors[which]
    objectness = _sigmoid(values[:, 4:5])
    scores = _sigmoid(values[:, 5:]) * objectness
    scores[scores <= np.float32(spec.thresh)] = 0
    return np.concatenate([centres, sizes, objectness, scores], axis=1)


def decode_heads(outputs: dict[str, np.ndarray], specs: dict[str, HeadSpec], full: bool = False) -> np.ndarray:
    """``decode_head`` over every head, in layer order, joined (the rows OpenCV 4's Darknet importer gives)."""
    names = sorted(specs, key=lambda n: int(n[len(DARKNET_ONNX.output_prefix) :]))
    return np.concatenate([decode_head(outputs[n], specs[n], full) for n in names])


def convert(cfg: Path, weights: Path) -> onnx.ModelProto:
    """The ONNX model of a Darknet cfg + weights pair (after the size check that names the wrong file)."""
    check_weights_size(weights, cfg)
    return build_model(parse_cfg(cfg), read_weights(weights), Path(cfg), Path(weights))


def cache_key(cfg: Path, weights: Path) -> str:
    """sha256 over the converter version, the cfg and the weights: a new converter or file converts anew."""
    digest = hashlib.sha256(f"{DARKNET_ONNX.producer}-{DARKNET_ONNX.version}\0".encode())
    for path in (cfg, weights):
        data = Path(path).read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def save(model: onnx.ModelProto, out: Path) -> Path:
    """Write atomically: a temp file in the target folder, then ``os.replace`` (concurrent writers are safe)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache is read by other users too
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _digest_file(path: Path) -> Path:
    """Where the sha256 of a cached model, as it was written, is kept: ``NAME.onnx.sha256`` beside it."""
    return path.with_name(path.name + ".sha256")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_is_intact(path: Path) -> bool:
    """Whether the cached model is byte for byte what the converter wrote: its sha256 against the digest
    recorded beside it. The cache's key is the source files' hash, which says nothing of the cached file
    itself: a truncated file or one with other weights (a valid graph) would otherwise be used as it is."""
    try:
        recorded = _digest_file(path).read_text().strip()
        return len(recorded) == 64 and _sha256(path.read_bytes()) == recorded
    except OSError:
        return False


def cached_onnx(cfg: Path, weights: Path, cache_dir: Path) -> Path | bytes:
    """The converted model of this pair under ``cache_dir``, converting on the first call and again when the
    cached file is not what was written (``cached_is_intact``); its bytes when the folder is not writable."""
    out = Path(cache_dir) / f"{Path(weights).stem}-{cache_key(cfg, weights)[:16]}.onnx"
    if out.is_file() and cached_is_intact(out):
        return out
    model = convert(cfg, weights)
    data = model.SerializeToString()
    try:
        save(model, out)
        _write_atomic(_digest_file(out), (_sha256(data) + "\n").encode())
        return out
    except OSError:  # no writable cache folder: the caller loads the model from memory, converting each time
        return data


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/objdet/darknet-onnx`` (else ``~/.cache/...``): the Deployment sets XDG_CACHE_HOME to a
    writable ``/tmp/.cache`` in its read-only container."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / DARKNET_ONNX.cache_subdir


def converted_facts(path: Path) -> tuple[int | None, dict[str, HeadSpec]]:
    """Input side and the heads' decoding facts of a converted ``.onnx`` (what the detector needs without the
    cfg), from the metadata the converter writes; ``DarknetError`` for a file converted by an older version."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    props = {p.key: p.value for p in model.metadata_props}
    if DARKNET_ONNX.heads_key not in props:
        raise DarknetError(
            f"{path}: converted by an older version of this project (its graph decodes the heads itself and "
            "carries no head metadata); convert it again with `python -m app weights convert CFG WEIGHTS`"
        )
    try:
        specs = {name: HeadSpec.from_json(doc) for name, doc in json.loads(props[DARKNET_ONNX.heads_key]).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise DarknetError(f"{path}: its head metadata cannot be read ({exc}); convert it again") from None
    return (dims[3] if len(dims) == 4 and dims[3] > 0 else None), specs


def cmd_convert(cfg: Path, weights: Path, out: Path | None = None) -> int:
    """``python -m app weights convert CFG WEIGHTS [--out FILE.onnx]``: 0 when written, 1 with a message."""
    out = Path(out) if out is not None else Path(weights).with_suffix(".onnx")
    try:
        model = convert(cfg, weights)
        save(model, out)
    except DarknetError as exc:
        print(printable(f"error: {exc}"), file=sys.stderr)
        return 1
    except OSError as exc:
        print(printable(f"error: {exc.filename or out}: {exc.strerror or exc}"), file=sys.stderr)
        return 1
    heads = ", ".join(f"{o.name} {[d.dim_value for d in o.type.tensor_type.shape.dim]}" for o in model.graph.output)
    print(printable(f"wrote {out} ({out.stat().st_size:,} bytes): outputs {heads}"))
    return 0
