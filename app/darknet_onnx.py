"""Darknet (``.cfg`` + ``.weights``) to ONNX, so OpenCV 5 (which removed the Darknet importer) runs the
official Darknet models, and faster: its new engine takes ONNX.

The graph reproduces OpenCV 4's Darknet importer layer by layer (convolution + batch norm + activation,
route with groups, shortcut, upsample, maxpool with Darknet's padding, dropout as identity) and decodes
each ``[yolo]`` head in the graph exactly as OpenCV's region layer does: rows of (cx, cy, w, h, objectness,
class scores) ordered by cell row, cell column, anchor; boxes normalised to the input; class scores
multiplied by objectness and zeroed at or below the region threshold. So the detector preprocesses and
decodes a converted model like a Darknet one (input RGB, NCHW, float32 scaled by 1/255, stretched).
Folding the 1/255 into the first convolution was measured: it saves ~0.03 ms of 2.5 ms and costs the
bit-exactness (outputs move by ~2e-6 relative), so it is not done.

Built with ``onnx.helper`` on ``app.darknet``'s cfg parser. ``cached_onnx`` converts once per
(cfg, weights) pair into a cache folder, safely for concurrent processes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .catalog import DARKNET_ONNX
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
    heads: list[tuple[str, int, int]] = []  # (output name, rows, columns) of each [yolo] layer
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
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, cols]) for name, rows, cols in heads]
    model = helper.make_model(
        helper.make_graph(graph.nodes, Path(cfg).stem, inputs, outputs, initializer=graph.inits),
        opset_imports=[helper.make_opsetid("", DARKNET_ONNX.opset)],
        producer_name=DARKNET_ONNX.producer,
    )
    model.ir_version = DARKNET_ONNX.ir_version
    onnx.checker.check_model(model)
    return model


def _layer(graph: _Graph, sec: Section, index: int, x: _Tensor, layers, heads, net_size) -> _Tensor:
    """The output of layer ``index`` (``sec``) whose input is ``x``, the previous layer's output."""
    kind = sec.type
    name = f"l{index}_{kind}"
    if kind in ("convolutional", "conv"):
        return _convolution(graph, sec, name, x)
    if kind == "route":
        picked = [_ref(layers, index, ref) for ref in sec.ints("layers")]
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
    if kind == "shortcut":
        other = _ref(layers, index, sec.int("from", -1))
        if sec.options.get("weights_type", "none") != "none":
            raise DarknetError("weighted shortcuts (weights_type) are not supported")
        if (other.c, other.h, other.w) != (x.c, x.h, x.w):
            raise DarknetError(f"from= layer has shape {(other.c, other.h, other.w)}, this one {(x.c, x.h, x.w)}")
        out = _Tensor(graph.op("Add", [x.name, other.name], name), x.c, x.h, x.w)
        return _activation(graph, sec, out, name)
    if kind == "upsample":
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
    if kind == "maxpool":
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
    if kind == "dropout":
        return x  # identity at inference
    if kind == "yolo":
        head = _yolo(graph, sec, x, net_size, f"{DARKNET_ONNX.output_prefix}{index}")
        heads.append(head)
        return _Tensor(head[0], x.c, x.h, x.w)
    raise DarknetError(f"layer type [{kind}] is not supported by the ONNX converter")


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


def _yolo(graph: _Graph, sec: Section, x: _Tensor, net_size: tuple[int, int], name: str) -> tuple[str, int, int]:
    """OpenCV's region layer (logistic mode) in ONNX ops: (H*W*A, 5+C) rows ordered (row, column, anchor)."""
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
    n_anchors, cell = len(mask), 5 + classes
    if x.c != n_anchors * cell:
        raise DarknetError(
            f"the layer before it has {x.c} filters; {n_anchors} anchors x (5 + classes={classes}) "
            f"= {n_anchors * cell} (fix filters= or classes=)"
        )
    scale_xy = float(sec.options.get("scale_x_y", "1"))
    thresh = float(sec.options.get("thresh", DARKNET_ONNX.region_thresh))
    rows = x.h * x.w * n_anchors
    cells = np.arange(rows) // n_anchors
    grid = np.stack([cells % x.w, cells // x.w], axis=1).astype(np.float32)  # (column, row) of each row's cell
    used = anchors[mask] / np.array(net_size, np.float32)  # anchors in pixels -> fractions of the input
    # (1, A*(5+C), H, W) -> (A, 5+C, H*W) -> (H*W, A, 5+C) -> rows
    grouped = graph.op("Reshape", [x.name, graph.ints(n_anchors, cell, x.h * x.w)], f"{name}_grouped")
    cellwise = graph.op("Transpose", [grouped], f"{name}_cellwise", perm=[2, 0, 1])
    flat = graph.op("Reshape", [cellwise, graph.ints(rows, cell)], f"{name}_rows")
    logistic = graph.op("Sigmoid", [flat], f"{name}_sigmoid")

    def columns(src: str, start: int, end: int, tag: str) -> str:
        return graph.op("Slice", [src, graph.ints(start), graph.ints(end), graph.ints(1)], f"{name}_{tag}")

    xy = columns(logistic, 0, 2, "xy")
    if scale_xy != 1:
        half = graph.const(f"{name}_half", np.float32(0.5))
        xy = graph.op("Sub", [xy, half], f"{name}_xy_centred")
        xy = graph.op("Mul", [xy, graph.const(f"{name}_scale_xy", np.float32(scale_xy))], f"{name}_xy_scaled")
        xy = graph.op("Add", [xy, half], f"{name}_xy_shifted")
    xy = graph.op("Add", [xy, graph.const(f"{name}_grid", grid)], f"{name}_xy_cells")
    xy = graph.op("Div", [xy, graph.const(f"{name}_dims", np.array([x.w, x.h], np.float32))], f"{name}_cxcy")
    wh = graph.op("Exp", [columns(flat, 2, 4, "twh")], f"{name}_exp")
    wh = graph.op("Mul", [wh, graph.const(f"{name}_anchors", np.tile(used, (x.h * x.w, 1)))], f"{name}_wh")
    objectness = columns(logistic, 4, 5, "obj")
    probs = graph.op("Mul", [columns(logistic, 5, cell, "cls"), objectness], f"{name}_probs")
    above = graph.op("Greater", [probs, graph.const(f"{name}_thresh", np.float32(thresh))], f"{name}_above")
    kept = graph.op("Where", [above, probs, graph.const(f"{name}_zero", np.float32(0))], f"{name}_kept")
    return graph.op("Concat", [xy, wh, objectness, kept], name, axis=1), rows, cell


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


def cached_onnx(cfg: Path, weights: Path, cache_dir: Path) -> Path | bytes:
    """The converted model of this pair under ``cache_dir``, converting on the first call; its bytes when
    the folder is not writable."""
    out = Path(cache_dir) / f"{Path(weights).stem}-{cache_key(cfg, weights)[:16]}.onnx"
    if out.is_file():
        return out
    model = convert(cfg, weights)
    try:
        return save(model, out)
    except OSError:  # no writable cache folder: the caller loads the model from memory, converting each time
        return model.SerializeToString()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/objdet/darknet-onnx`` (else ``~/.cache/...``): the Deployment sets XDG_CACHE_HOME to a
    writable ``/tmp/.cache`` in its read-only container."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / DARKNET_ONNX.cache_subdir


def converted_facts(path: Path) -> tuple[int | None, float]:
    """Input side and lowest region threshold of a converted ``.onnx`` (what the detector needs without the cfg)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    thresholds = [
        float(numpy_helper.to_array(t))
        for t in model.graph.initializer
        if t.name.startswith(DARKNET_ONNX.output_prefix) and t.name.endswith("_thresh")
    ]
    return (dims[3] if len(dims) == 4 and dims[3] > 0 else None), min([DARKNET_ONNX.region_thresh, *thresholds])


def cmd_convert(cfg: Path, weights: Path, out: Path | None = None) -> int:
    """``python -m app weights convert CFG WEIGHTS [--out FILE.onnx]``: 0 when written, 1 with a message."""
    out = Path(out) if out is not None else Path(weights).with_suffix(".onnx")
    try:
        model = convert(cfg, weights)
        save(model, out)
    except DarknetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    heads = ", ".join(f"{o.name} {[d.dim_value for d in o.type.tensor_type.shape.dim]}" for o in model.graph.output)
    print(f"wrote {out} ({out.stat().st_size:,} bytes): outputs {heads}")
    return 0
