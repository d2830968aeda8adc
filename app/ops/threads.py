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


def torch_threads(num_threads: int, ssd_engine: str) -> int:
    """torch's intra-op threads. With the onnxruntime engine torch runs only SSD's pre- and postprocessing:
    small operations whose parallel regions wait for a descheduled worker whenever another process holds a
    core (measured on 2 busy vCPUs: SSD's pipeline at 3.3x its onnxruntime session with two torch threads);
    one thread keeps them steady, and the network itself still gets ``num_threads`` in onnxruntime."""
    return 1 if ssd_engine == "onnxruntime" else num_threads


def configure(num_threads: int, torch_count: int | None = None) -> None:
    """The process-wide policy for ``num_threads`` threads per inference: OpenMP waits passively, OpenCV's
    pool gets ``num_threads``, torch's intra-op pool (when torch is loaded) ``torch_count`` (default
    ``num_threads``; see ``torch_threads``) and torch's inter-op pool one."""
    torch_count = torch_count or num_threads
    with _lock:
        for name, value in PASSIVE_OPENMP.items():
            os.environ.setdefault(name, value)
        os.environ.setdefault("OMP_NUM_THREADS", str(torch_count))
        if _applied.get("cv2") != num_threads:
            import cv2

            cv2.setNumThreads(num_threads)
            _applied["cv2"] = num_threads
    if "torch" in sys.modules:
        configure_torch(torch_count)


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
