"""Every thread pool's policy, set in one place from ``OBJDET_NUM_THREADS`` (``Settings.num_threads``).

Both detectors can run in one process (the app's compare mode, ``detect --model all``, batch): torch's
OpenMP workers spin after each call by default and take a core from OpenCV's pool, so a YOLO call right
after an SSD call ran up to 1.7x slower. Here every pool waits passively (OpenMP, onnxruntime) and each
library gets the same thread count. ``configure`` runs before the first model is built (the registry
calls it); the OpenMP variables only take effect when set before torch is imported, which the registry
guarantees for the service, the CLI and the app (none of them imports torch before building SSD).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

# Set only where the user did not: an explicit OMP_WAIT_POLICY in the environment wins.
PASSIVE_OPENMP = {
    "OMP_WAIT_POLICY": "PASSIVE",  # libgomp (torch's CPU wheels) and Intel OpenMP: sleep when idle, no spinning
    "KMP_BLOCKTIME": "0",  # Intel OpenMP (MKL builds): ms a worker spins before sleeping
}

_lock = threading.Lock()
_applied: dict[str, int] = {}


def configure(num_threads: int) -> None:
    """The process-wide policy for ``num_threads`` threads per inference: OpenMP waits passively, OpenCV's
    pool and (when torch is loaded) torch's intra-op pool get ``num_threads``, torch's inter-op pool one."""
    with _lock:
        for name, value in PASSIVE_OPENMP.items():
            os.environ.setdefault(name, value)
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
        if _applied.get("cv2") != num_threads:
            import cv2

            cv2.setNumThreads(num_threads)
            _applied["cv2"] = num_threads
    if "torch" in sys.modules:
        configure_torch(num_threads)


def configure_torch(num_threads: int) -> None:
    """torch's pools: ``num_threads`` intra-op, one inter-op (a detector runs one graph at a time;
    torch allows setting the inter-op count only before its first parallel work, hence the guard)."""
    import torch

    with _lock:
        if _applied.get("torch") == num_threads:
            return
        torch.set_num_threads(num_threads)
        if "torch_interop" not in _applied:
            with contextlib.suppress(RuntimeError):  # already started: keep torch's own count
                torch.set_num_interop_threads(1)
            _applied["torch_interop"] = 1
        _applied["torch"] = num_threads


def onnxruntime_options(num_threads: int):
    """``SessionOptions`` under the same policy: ``num_threads`` intra-op threads that do not spin
    between calls (``allow_spinning=0``), one inter-op thread, operators run in order."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
