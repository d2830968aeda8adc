"""SSD's backbone + head on onnxruntime: the fast path of ``SSDDetector`` (``OBJDET_SSD_ENGINE=onnxruntime``).

torchvision's SSD resizes every image to one fixed square, so its backbone + head is a static graph: it is
exported to ONNX once per (weights, architecture, torch version) at load time, cached, and run by
onnxruntime (2-3x faster than torch's eager CPU kernels on these networks). The graph ends with the first
step of torchvision's decode, the softmax over classes, and each anchor's best foreground probability (what
``ssd_fast.select`` starts from): onnxruntime computes both in ~0.05 ms where torch's one-thread softmax and
``amax`` took ~0.3-0.45 ms per image. The anchors are torchvision's; the transform and the rest of the decode
around the session are ``ssd_fast``'s equivalents of torchvision's.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ...ops.threads import onnxruntime_options
from ..catalog import SSD_ONNX
from .base import ModelLoadError


class BackboneHead(torch.nn.Module):
    """What is exported: normalised, resized images -> (box regression, class probabilities, best foreground
    probability per anchor): torchvision's ``SSD.forward`` between its transform and its decode, plus the
    decode's softmax (``postprocess_detections`` starts with it)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        out = self.head(list(features.values()))
        scores = torch.softmax(out["cls_logits"], dim=-1)
        return out["bbox_regression"], scores, scores[..., 1:].amax(dim=-1)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(weights: Path, arch: str, size: int) -> str:
    """What the exported graph depends on: the state dict's bytes, the architecture, the input side, the
    torch that traced it and the exporter's own version (``SSD_ONNX.version``)."""
    parts = (file_sha256(weights), arch, str(size), torch.__version__, str(SSD_ONNX.version))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/objdet/ssd-onnx`` (else ``~/.cache/...``): the Deployment points XDG_CACHE_HOME at a
    writable folder in its read-only container."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / SSD_ONNX.cache_subdir


def export(model: torch.nn.Module, size: int) -> bytes:
    """The backbone + head as ONNX bytes, traced on one ``size`` x ``size`` input (TorchScript exporter:
    no onnxscript, no compiler; 2-5 s on 2 CPUs)."""
    module = BackboneHead(model).eval()  # eval before export: the exporter restores the module's mode after
    buffer = io.BytesIO()
    # The exporter warns that TorchScript export is deprecated and that tracing fixes shapes: both expected
    # here (one fixed input size; the load-time check compares the graph with torch).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, size, size),),
            buffer,
            dynamo=False,
            opset_version=SSD_ONNX.opset,
            input_names=["images"],
            output_names=OUTPUTS,
        )
    model.eval()
    return buffer.getvalue()


def cached_export(model: torch.nn.Module, weights: Path, arch: str, size: int, cache_dir: Path | None) -> Path | bytes:
    """The exported graph's file under ``cache_dir``, exporting on the first call; written to a temp file in
    that folder and renamed, so concurrent processes never read a partial file. Its bytes when the folder
    cannot be written (the caller loads it from memory; the export repeats at each start)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = folder / f"{arch}-{cache_key(weights, arch, size)[:20]}.onnx"
    if out.is_file():
        return out
    data = export(model, size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache is read by other users too
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        return data
    return out


OUTPUTS = ["bbox_regression", "scores", "best_foreground"]


class OnnxBackboneHead:
    """An onnxruntime session of ``BackboneHead``: same inputs and outputs, thread-safe ``run``."""

    def __init__(self, model: torch.nn.Module, weights: Path, arch: str, size: int, num_threads: int, cache_dir=None):
        try:
            import onnxruntime
        except ImportError as exc:
            raise ModelLoadError(
                f"OBJDET_SSD_ENGINE=onnxruntime but onnxruntime cannot be imported ({exc}); install the `ssd` "
                "extra (`pip install .[ssd]`) or set OBJDET_SSD_ENGINE=torch"
            ) from None
        source = cached_export(model, weights, arch, size, cache_dir)
        self.where = str(source) if isinstance(source, Path) else "(in memory: the cache folder is not writable)"
        graph = str(source) if isinstance(source, Path) else source
        self.session = onnxruntime.InferenceSession(
            graph, onnxruntime_options(num_threads), providers=["CPUExecutionProvider"]
        )

    def run(self, images: np.ndarray):
        """(bbox_regression, scores, best_foreground) as arrays for a contiguous (1, 3, size, size) float32
        batch."""
        return self.session.run(None, {"images": images})

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The graph's outputs by name (``OUTPUTS``), as tensors, for a (1, 3, size, size) batch."""
        return {k: torch.from_numpy(v) for k, v in zip(OUTPUTS, self.run(images.contiguous().numpy()), strict=True)}
