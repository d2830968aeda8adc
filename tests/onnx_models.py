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
