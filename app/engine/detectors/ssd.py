"""SSD through torchvision, filled from a local state dict (never downloaded at run time).

With the ``torch`` engine (the fallback, and on CUDA) ``forward`` runs torchvision's own transform,
backbone, head and anchor generator and ``decode`` runs torchvision's own ``postprocess_detections``
with the call's thresholds, so the result is what the torchvision model returns when built with
those thresholds. With the ``onnxruntime`` engine (the default on CPU) the backbone + head run as an
exported graph (``ssd_onnx``, with the decode's softmax), the anchors, computed once by torchvision's
generator, are reused (the input size never changes), and the transform and decode are ``ssd_fast``'s
vectorised equivalents of torchvision's: the same labels, boxes of IoU >= 0.99 and scores within 1e-3 of
torchvision's own (OpenCV's bilinear resize is not torch's to the last bit).
"""

from __future__ import annotations

import pickle
import re
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchvision.models import detection as tv_detection
from torchvision.models.detection.image_list import ImageList

from ...ops import threads
from ..catalog import SSD_ARCHS, SSD_ENGINES
from ..labels import COCO_CATEGORIES
from ..result import Detection, DetectionResult, DetectParams
from ..weights import missing_reason
from .base import Detector, ModelLoadError, RawOutput, ms_since

# The catalog's architectures, each with its torchvision builder.
BUILDERS = {arch.name: getattr(tv_detection, arch.builder) for arch in SSD_ARCHS.values()}


def build_model(arch: str, num_classes: int = 91) -> torch.nn.Module:
    """The architecture with no weights: ``weights=None, weights_backbone=None`` never downloads."""
    return BUILDERS[arch](weights=None, weights_backbone=None, num_classes=num_classes)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("OBJDET_DEVICE=cuda but torch sees no CUDA device; use OBJDET_DEVICE=cpu or auto")
    return torch.device(device)


def max_state_bytes(arch: str) -> int:
    """Largest uncompressed state dict accepted for ``arch``: 8x its float32 size (room for float64 and a
    bigger custom head) plus 64 MiB, from the catalog's parameter count (which bounds how much a state dict
    may ask torch.load to allocate). A zip whose entries declare more is a zip bomb, not a state dict."""
    return 8 * 4 * SSD_ARCHS[arch].parameters + 64 * 2**20


def check_archive_size(path: Path, limit: int) -> None:
    """torch's zip format declares each entry's uncompressed size: refuse before torch.load inflates it."""
    if not zipfile.is_zipfile(path):
        return  # legacy format: tensors are stored raw, so memory is bounded by the file size
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"SSD weights {path}: damaged zip archive ({exc}). Re-fetch with `python -m app weights fetch`"
        ) from None
    if declared > limit:
        raise ModelLoadError(
            f"SSD weights {path}: its entries unpack to {declared:,} bytes, more than the "
            f"{limit:,} any state dict of this architecture needs (a zip bomb or not a state dict "
            f"of it); it was NOT loaded. Point OBJDET_SSD_WEIGHTS at the right file"
        )


def load_state_dict(path: Path, max_bytes: int | None = None) -> dict:
    """The state dict in ``path``: never unpickles code, never inflates more than ``max_bytes``."""
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(
            f"SSD weights {path}: is a directory, not a state dict file. Point OBJDET_SSD_WEIGHTS "
            "at the .pth file inside it"
        )
    if not path.is_file():
        raise ModelLoadError(
            f"SSD weights {path}: {missing_reason(path)}. Fetch them with `python -m app weights "
            "fetch` or point OBJDET_SSD_WEIGHTS at a state dict"
        )
    if max_bytes is not None:
        check_archive_size(path, max_bytes)
    if path.stat().st_size == 0:
        raise ModelLoadError(
            f"SSD weights {path}: the file is empty (0 bytes). Re-fetch with `python -m app weights fetch`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found:
            raise ModelLoadError(
                f"SSD weights {path}: not a torch state dict: its pickle data cannot be read "
                f"({_torch_reason(str(exc))}); the file is damaged or not a .pth. Re-fetch with "
                "`python -m app weights fetch`"
            ) from None
        raise ModelLoadError(
            f"SSD weights {path}: not a plain state dict: it contains Python objects (it "
            f"references {found.group(1)}) that only a full unpickle could build, and loading "
            "them could run code, so it was NOT loaded. Save the weights with "
            "torch.save(model.state_dict(), path) and point OBJDET_SSD_WEIGHTS at that file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelLoadError(
            f"SSD weights {path}: not a loadable torch state dict ({_torch_reason(str(exc)) or type(exc).__name__}); "
            "the file is truncated, damaged or not a .pth. Re-fetch with `python -m app weights "
            "fetch`"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # training checkpoints wrap the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"SSD weights {path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _torch_reason(text: str) -> str:
    """The informative part of a torch.load error, as one whole sentence (torch's own are paragraphs)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else ""))[:200]
    first = lines[0] if lines else ""
    return first.split(". ", 1)[0].rstrip(".")[:200]


class SSDDetector(Detector):
    """A torchvision SSD model built once; ``forward`` is safe to call from several threads."""

    name = "ssd"

    @classmethod
    def from_settings(cls, settings) -> SSDDetector:
        return cls(
            settings.ssd_arch, settings.ssd_weights, settings.device, settings.num_threads, engine=settings.ssd_engine
        )

    @classmethod
    def bench_settings(cls, settings, folder: Path):
        """Without the configured state dict, seeded random weights of the same architecture stand in
        (same cost: the benchmark times the network, not what it finds)."""
        if settings.ssd_weights.is_file():
            return settings, str(settings.ssd_weights)
        torch.manual_seed(0)
        path = Path(folder) / "ssd-random-seed0.pth"
        torch.save(build_model(settings.ssd_arch).state_dict(), path)
        return (
            replace(settings, ssd_weights=path),
            f"seeded random weights ({settings.ssd_arch}; {settings.ssd_weights} absent)",
        )

    def __init__(
        self,
        arch: str,
        weights: Path,
        device: str = "auto",
        num_threads: int | None = None,
        name: str = "ssd",
        engine: str = next(iter(SSD_ENGINES)),
        cache_dir: Path | None = None,
    ):
        if arch not in BUILDERS:
            raise ModelLoadError(f"SSD architecture {arch!r} is not supported; allowed: {', '.join(BUILDERS)}")
        if engine not in SSD_ENGINES:
            raise ModelLoadError(f"SSD engine {engine!r} is not supported; allowed: {', '.join(SSD_ENGINES)}")
        self.name = name
        self.arch = arch
        self.weights = Path(weights)
        self.device = resolve_device(device)
        if num_threads:  # torch's own threads: one when it only runs the onnxruntime engine's pre/post steps
            used = engine if self.device.type == "cpu" else "torch"  # onnxruntime here is CPU-only
            threads.configure_torch(threads.torch_threads(num_threads, used))
        state = load_state_dict(self.weights, max_state_bytes(arch))
        num_classes = _num_classes(state, arch)
        model = build_model(arch, num_classes=num_classes or 91)
        result = _load_into(model, state, arch, self.weights)
        if result is not None:
            raise ModelLoadError(result)
        self.model = model.eval().to(self.device)
        self.input_size = int(model.transform.min_size[0])  # torchvision resizes to this square
        n = num_classes or 91
        # 91 outputs are torchvision's COCO ids; a custom head gets numbered names.
        self.labels = COCO_CATEGORIES if n == 91 else ("__background__", *(f"class{i}" for i in range(1, n)))
        # postprocess_detections reads thresholds from the model: decode sets them under this lock.
        self._decode_lock = threading.Lock()
        self.engine = engine if self.device.type == "cpu" else "torch"  # onnxruntime here is CPU-only
        self.onnx = None  # the exported backbone + head (onnxruntime engine)
        self.fast = None  # its pre- and postprocessing (onnxruntime engine)
        if self.engine == "onnxruntime":
            from .ssd_fast import FastSSD
            from .ssd_onnx import OnnxBackboneHead

            n = num_threads or torch.get_num_threads()
            self.onnx = OnnxBackboneHead(self.model, self.weights, arch, self.input_size, n, cache_dir)
            self.fast = FastSSD(self.model, self.input_size, self._check_onnx()[0])
        elif self.device.type == "cpu":  # NHWC weights: torch's CPU convolutions ~1.3x faster, same detections
            self.model = self.model.to(memory_format=torch.channels_last)

    def _features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        features = self.model.backbone(batch)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        return list(features.values())

    @torch.inference_mode()
    def _check_onnx(self) -> list[torch.Tensor]:
        """One seeded input through torch and through the exported graph: a graph that does not reproduce
        torch's head outputs (a damaged cache file) fails the load here. Returns torchvision's anchors for
        the fixed input size (they depend on the feature-map shapes only)."""
        size = self.input_size
        batch = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 4.0 - 2.0
        features = self._features(batch)
        head = self.model.head(features)
        scores = torch.softmax(head["cls_logits"], dim=-1)
        want = {
            "bbox_regression": head["bbox_regression"],
            "scores": scores,
            "best_foreground": scores[..., 1:].amax(-1),
        }
        got = self.onnx(batch)
        for key, expected in want.items():
            if not torch.allclose(got[key], expected, rtol=1e-3, atol=1e-3):
                diff = float((got[key] - expected).abs().max())
                raise ModelLoadError(
                    f"SSD weights {self.weights}: the onnxruntime graph {self.onnx.where} does not reproduce "
                    f"torch's {key} (max abs diff {diff:.3g}); delete that file to export it again, or set "
                    "OBJDET_SSD_ENGINE=torch"
                )
        images = ImageList(batch, [(size, size)])
        return self.model.anchor_generator(images, features)

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 RGB -> CHW float in [0, 1] on the model's device (torchvision normalises itself)."""
        if not image.flags.writeable:
            image = image.copy()
        tensor = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        return tensor.to(torch.float32).div_(255.0)

    @torch.inference_mode()
    def forward(self, image: np.ndarray) -> RawOutput:
        if self.fast is not None:
            return self._forward_fast(image)
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        tensor = self.to_tensor(image)
        preprocess_ms = ms_since(t0)
        t1 = time.perf_counter()
        model = self.model
        images, _ = model.transform([tensor])
        features = self._features(images.tensors)
        head_outputs = model.head(features)
        anchors = model.anchor_generator(images, features)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        data = {"head": head_outputs, "anchors": anchors, "sizes": images.image_sizes, "original": [(height, width)]}
        return RawOutput(self.name, (width, height), data, {"preprocess": preprocess_ms, "inference": ms_since(t1)})

    def _forward_fast(self, image: np.ndarray) -> RawOutput:
        """onnxruntime engine: ``ssd_fast`` resizes and normalises, the session runs, and what no threshold
        changes is kept in the raw output for ``decode``: the class probabilities (the graph's softmax, as
        torchvision's decode computes it), each anchor's best foreground probability and the box regression."""
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        batch = self.fast.prepare(image)
        preprocess_ms = ms_since(t0)
        t1 = time.perf_counter()
        regression, scores, best = (out[0] for out in self.onnx.run(batch))
        data = {"scores": scores, "best": best, "regression": regression, "original": (height, width)}
        timings = {"preprocess": preprocess_ms, "inference": ms_since(t1)}
        return RawOutput(self.name, (width, height), data, timings)

    @torch.inference_mode()
    def decode(self, raw: RawOutput, params: DetectParams) -> DetectionResult:
        self.check_classes(params)
        t0 = time.perf_counter()
        model = self.model
        cap = params.max_det if not params.classes else 10**9  # filter classes first, then cap
        if self.fast is not None:
            scores, regression, best = raw.data["scores"], raw.data["regression"], raw.data["best"]
            boxes, scores, ids = self.fast.select(scores, regression, params.conf, params.iou, cap, best)
            boxes = self.fast.rescale(boxes, raw.data["original"])  # torchvision's resize_boxes, in numpy
        else:
            with self._decode_lock:
                model.score_thresh, model.nms_thresh, model.detections_per_img = params.conf, params.iou, cap
                out = model.postprocess_detections(raw.data["head"], raw.data["anchors"], raw.data["sizes"])
            out = model.transform.postprocess(out, raw.data["sizes"], raw.data["original"])[0]
            boxes, scores, ids = out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(), out["labels"].cpu().numpy()
        detections = []
        for box, score, cid in zip(boxes, scores, ids, strict=True):
            label = self.labels[int(cid)]
            if params.classes and label not in params.classes:
                continue
            detections.append(Detection(label, int(cid), float(score), tuple(float(v) for v in box)))
            if len(detections) >= params.max_det:
                break
        timings = dict(raw.timings_ms)
        timings["postprocess"] = ms_since(t0)
        return DetectionResult(self.name, raw.image_size, detections, timings)

    def baseline(self, image: np.ndarray, params: DetectParams) -> Callable[[], object]:
        """torch engine: the torchvision model called directly on a ready tensor, built with the call's
        thresholds. onnxruntime engine: the session alone on a ready (resized, normalised) input."""
        if self.fast is not None:
            return partial(self.onnx.run, self.fast.prepare(image))
        tensor = self.to_tensor(image)

        @torch.inference_mode()
        def call() -> list[dict]:
            with self._decode_lock:
                m = self.model
                m.score_thresh, m.nms_thresh, m.detections_per_img = params.conf, params.iou, params.max_det
                return m([tensor])

        return call


def _num_classes(state: dict, arch: str) -> int | None:
    """Number of classes (background included) the state dict was trained for, if it is this arch's."""
    key, anchors = SSD_ARCHS[arch].first_level
    if key in state and state[key].ndim == 4 and state[key].shape[0] % anchors == 0:
        return state[key].shape[0] // anchors
    return None


def _load_into(model: torch.nn.Module, state: dict, arch: str, path: Path) -> str | None:
    """Load strictly; on mismatch return a short message instead of torch's long traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        guess = next((a for a in BUILDERS if a != arch and _fits(a, state)), None)
        hint = (
            f" It looks like {guess} weights: set OBJDET_SSD_ARCH={guess}."
            if guess
            else " Use the state dict saved from this architecture (torchvision's file or your own)."
        )
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
            )
        return f"SSD weights {path} do not fit architecture {arch}: {'; '.join(detail)}.{hint}"
    model.load_state_dict(state, strict=True)
    return None


def _fits(arch: str, state: dict) -> bool:
    own = build_model(arch, num_classes=_num_classes(state, arch) or 91).state_dict()
    return own.keys() == state.keys() and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own)
