"""Small synthetic ONNX graphs whose output is a known YOLOv5 or YOLOv8 tensor.

The output is ``constant + 0 * mean(input)``, so the network really consumes the input blob and
OpenCV runs a real graph, but what comes out is exactly the tensor the test wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_yolo_onnx(
    path: Path, output: np.ndarray, input_size: int, decoy_first: bool = False, opset: int = 13
) -> Path:
    """Write a graph with input ``images`` (1, 3, S, S) and output ``output0`` = ``output``.

    ``decoy_first`` adds a second output of another shape, declared before the real one, so a
    decoder that picks outputs by position instead of shape fails.
    """
    output = np.asarray(output, dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1),  # (1, 1, 1, 1)
        helper.make_node("Reshape", ["mean", "shape3"], ["mean3"]),  # (1, 1, 1)
        helper.make_node("Mul", ["mean3", "zero"], ["zeroed"]),
        helper.make_node("Add", ["zeroed", "table"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), "shape3"),
        numpy_helper.from_array(np.zeros((1, 1, 1), dtype=np.float32), "zero"),
        numpy_helper.from_array(output, "table"),
    ]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))]
    if decoy_first:
        nodes.append(helper.make_node("Reshape", ["mean", "shape2"], ["decoy"]))
        inits.append(numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "shape2"))
        outputs.insert(0, helper.make_tensor_value_info("decoy", TensorProto.FLOAT, [1, 1]))
    graph = helper.make_graph(
        nodes,
        "synthetic_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, input_size, input_size])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


# A YOLOv3-tiny-shaped network (with YOLOv4-tiny's grouped route) for the layers Yolo-Fastest lacks:
# (type, options, (filters, input channels, size, groups, batch_normalize) for convolutions).
TINY_INPUT, TINY_CLASSES = 128, 3
_TINY_ANCHORS = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"
_TINY_HEAD = 3 * (5 + TINY_CLASSES)
TINY_LAYERS = [
    ("convolutional", "filters=16\nsize=3\nstride=1\npad=1\nbatch_normalize=1\nactivation=leaky", (16, 3, 3, 1, 1)),
    ("maxpool", "size=2\nstride=2", None),
    ("convolutional", "filters=32\nsize=3\nstride=1\npad=1\nbatch_normalize=1\nactivation=leaky", (32, 16, 3, 1, 1)),
    ("maxpool", "size=2\nstride=2", None),
    (
        "convolutional",
        "filters=32\nsize=3\nstride=1\npad=1\ngroups=2\nbatch_normalize=1\nactivation=mish",
        (32, 32, 3, 2, 1),
    ),
    ("route", "layers=-1\ngroups=2\ngroup_id=1", None),
    ("convolutional", "filters=16\nsize=3\nstride=1\npad=1\nbatch_normalize=1\nactivation=leaky", (16, 16, 3, 1, 1)),
    ("route", "layers=-1,-2", None),
    ("shortcut", "from=-4\nactivation=linear", None),
    ("maxpool", "size=2\nstride=2", None),
    ("convolutional", "filters=64\nsize=3\nstride=1\npad=1\nbatch_normalize=1\nactivation=relu", (64, 32, 3, 1, 1)),
    ("maxpool", "size=2\nstride=1", None),  # Darknet pads right/bottom: the size stays
    ("dropout", "probability=0.1", None),
    ("convolutional", "filters=64\nsize=1\nstride=1\npad=1\nbatch_normalize=1\nactivation=leaky", (64, 64, 1, 1, 1)),
    ("convolutional", f"filters={_TINY_HEAD}\nsize=1\nstride=1\npad=1\nactivation=linear", (_TINY_HEAD, 64, 1, 1, 0)),
    ("yolo", f"mask=3,4,5\nanchors={_TINY_ANCHORS}\nclasses={TINY_CLASSES}\nnum=6", None),
    ("route", "layers=-4", None),
    ("convolutional", "filters=32\nsize=1\nstride=1\npad=1\nbatch_normalize=1\nactivation=leaky", (32, 64, 1, 1, 1)),
    ("upsample", "stride=2", None),
    ("route", "layers=-1,8", None),
    ("convolutional", f"filters={_TINY_HEAD}\nsize=1\nstride=1\npad=1\nactivation=linear", (_TINY_HEAD, 64, 1, 1, 0)),
    ("yolo", f"mask=0,1,2\nanchors={_TINY_ANCHORS}\nclasses={TINY_CLASSES}\nnum=6\nscale_x_y=1.05", None),
]


def write_tiny_darknet(folder: Path, version: tuple[int, int, int] = (0, 2, 0), seed: int = 0) -> tuple[Path, Path]:
    """``tiny.cfg`` + ``tiny.weights`` with seeded parameters in Darknet's order (bias, [scales, mean,
    variance], kernel per convolution) after a header of ``version`` (``seen`` is int64 from 0.2 on)."""
    rng = np.random.default_rng(seed)
    cfg = [f"[net]\nwidth={TINY_INPUT}\nheight={TINY_INPUT}\nchannels=3\n"]
    parts = []
    for kind, options, conv in TINY_LAYERS:
        cfg.append(f"[{kind}]\n{options}\n")
        if conv:
            filters, channels, size, groups, norm = conv
            parts.append(rng.normal(0, 0.1, filters))
            if norm:
                parts += [rng.uniform(0.8, 1.2, filters), rng.normal(0, 0.1, filters), rng.uniform(0.5, 1.5, filters)]
            fan_in = channels // groups * size * size
            gain = 2 if norm else 0.1  # heads (no batch norm) small: boxes near their anchors, scores spread
            parts.append(rng.normal(0, (gain / fan_in) ** 0.5, filters * fan_in))
    major, minor, revision = version
    wide = major * 10 + minor >= 2
    header = np.array([major, minor, revision], "<i4").tobytes() + np.array([0], "<i8" if wide else "<i4").tobytes()
    cfg_path, weights_path = Path(folder) / "tiny.cfg", Path(folder) / "tiny.weights"
    cfg_path.write_text("\n".join(cfg))
    weights_path.write_bytes(header + np.concatenate(parts).astype("<f4").tobytes())
    return cfg_path, weights_path
