"""The model catalog: every fact about each detector family, in one torch-free module.

Modelled on torchvision's ``Weights`` / ``register_model`` (torchvision/models/_api.py): a family is
registered once, here, with its UI title, its detector class (imported lazily, so a YOLO-only process
never imports torch), the fix when that import fails, the environment variables it reads, and its
published files. The weights manifest, the CLI's ``--model`` choices, the page's titles, the
environment contract (``config.ENV_VARS``) and the registry's dispatch all derive from ``FAMILIES``.
This module imports only the standard library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EnvVar:
    """One environment variable the app reads.

    ``deploy_required``: a deployment (the ConfigMap) must set it explicitly, because its
    default only makes sense in a repository checkout.
    """

    name: str
    default: str
    allowed: str
    meaning: str
    deploy_required: bool = False


@dataclass(frozen=True)
class ModelFile:
    """A published model file. ``sha256`` is the full digest, or torchvision's published prefix."""

    name: str  # the file name, as written into the weights directory
    url: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class SSDArch:
    """A torchvision SSD architecture: its builder, its official COCO weights and what bounds a state dict."""

    name: str
    builder: str  # the function's name in torchvision.models.detection
    weights: ModelFile
    parameters: int  # parameters + buffers with the 91 COCO classes (tests check them against torchvision)
    first_level: tuple[str, int]  # (classification-head key of the first feature level, anchors there)


@dataclass(frozen=True)
class Family:
    """One detector family: everything the CLI, the page, the registry and the weights commands need."""

    name: str  # the value of OBJDET_MODELS and --model
    title: str  # UI title, e.g. "SSD (torchvision)"
    label: str  # short label, e.g. "SSD"
    detector: str  # "module:Class", imported on first build
    weights_env: str  # the variable naming its main file (status messages point at it)
    env_vars: tuple[EnvVar, ...]
    files: tuple[ModelFile, ...]  # its published files (the weights manifest)
    model_files: Callable[[Any], dict[str, Path]]  # Settings -> the files it reads, by role
    # the fix when importing the detector class fails
    install_hint: str = "reinstall the project (`pip install .`): its pinned dependencies include OpenCV"
    # Settings -> (what, problem) for files that exist but do not belong together (`weights verify`)
    file_problems: Callable[[Any], list[tuple[str, str]]] = lambda settings: []

    def detector_class(self) -> type:
        """The detector class (imports its module: for SSD, torch). Raises ``ImportError``."""
        module, _, cls = self.detector.partition(":")
        return getattr(importlib.import_module(module), cls)


# --- SSD (torchvision) ---------------------------------------------------------------------------------------

_TORCHVISION = "https://download.pytorch.org/models/"


def _torchvision_file(name: str) -> ModelFile:
    """An official torchvision state dict: the file name carries the sha256 prefix torchvision publishes."""
    return ModelFile(name, _TORCHVISION + name, name.rsplit("-", 1)[1].split(".")[0])


def _by_name(*records):
    """Records keyed by their ``name``, in the order given (the first is the default)."""
    return {r.name: r for r in records}


SSD_ARCHS: dict[str, SSDArch] = _by_name(
    SSDArch(
        "ssdlite320_mobilenet_v3_large",
        "ssdlite320_mobilenet_v3_large",
        _torchvision_file("ssdlite320_mobilenet_v3_large_coco-a79551df.pth"),
        3_473_074,
        ("head.classification_head.module_list.0.1.weight", 6),
    ),
    SSDArch(
        "ssd300_vgg16",
        "ssd300_vgg16",
        _torchvision_file("ssd300_vgg16_coco-b556d3b4.pth"),
        35_641_826,
        ("head.classification_head.module_list.0.weight", 4),
    ),
)
SSD_DEFAULT_FILES = {a.name: a.weights.name for a in SSD_ARCHS.values()}
# How SSD's backbone + head runs (OBJDET_SSD_ENGINE); the first is the default. Transform, anchors and decode
# are torchvision's on both, so both give torchvision's detections.
SSD_ENGINES = {
    "onnxruntime": "exported to ONNX at load (cached), run by onnxruntime: 2-3x faster on CPU",
    "torch": "torchvision's eager model (channels_last weights on CPU): the fallback, and what runs on CUDA",
}


@dataclass(frozen=True)
class SSDOnnx:
    """What app/engine/detectors/ssd_onnx.py exports and where it caches it."""

    version: int = 2  # part of the cache key: bump it when the exported graph changes (2: softmax + best in it)
    opset: int = 17
    cache_subdir: str = "objdet/ssd-onnx"  # under $XDG_CACHE_HOME (else ~/.cache)


SSD_ONNX = SSDOnnx()

# --- YOLO (OpenCV DNN) ---------------------------------------------------------------------------------------

_YOLO_FASTEST = "https://raw.githubusercontent.com/dog-qiuqiu/Yolo-Fastest/master/ModelZoo/yolo-fastest-1.1_coco/"
YOLO_FILES = (  # the published Darknet models (cfg + weights) and their names file
    ModelFile(
        "yolo-fastest-1.1.cfg",
        _YOLO_FASTEST + "yolo-fastest-1.1.cfg",
        "f6df5775c1e862998cf69046eba9265be3ae84dfe8b2caab7529823f0795bf70",
        9685,
    ),
    ModelFile(
        "yolo-fastest-1.1.weights",
        _YOLO_FASTEST + "yolo-fastest-1.1.weights",
        "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890",
        1384268,
    ),
    ModelFile(
        "yolo-fastest-1.1-xl.cfg",
        _YOLO_FASTEST + "yolo-fastest-1.1-xl.cfg",
        "c458427acc4fbeabceff4528ef7b65b066c0308ce599460f8ba299eba63abad3",
        9696,
    ),
    ModelFile(
        "yolo-fastest-1.1-xl.weights",
        _YOLO_FASTEST + "yolo-fastest-1.1-xl.weights",
        "fac5fb41786c1f38f04972a658443b189f48720d7d117f9a044100e98a35b0c5",
        3693964,
    ),
    ModelFile(
        "coco.names",
        _YOLO_FASTEST + "coco.names",
        "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
        625,
    ),
)
YOLO_DEFAULT_WEIGHTS = "yolo-fastest-1.1.weights"
YOLO_FORMATS = {".weights": "darknet", ".onnx": "onnx"}  # the suffix picks the format


@dataclass(frozen=True)
class DarknetOnnx:
    """What ``detectors/darknet_onnx.py`` writes when it converts a Darknet model, and how the detector knows one.

    ``batchnorm_eps`` and ``region_thresh`` are the values OpenCV 4's Darknet importer uses (its BatchNorm
    layers get eps 1e-6, ``.000001f`` in Darknet; a ``[yolo]`` layer without ``thresh=`` zeroes class scores
    at or below 0.2), so the converted graph gives that importer's outputs.
    """

    version: int = 2  # part of the cache key: bump it when the graph the converter writes changes (2: raw heads)
    producer: str = "objdet-darknet-onnx"
    opset: int = 13
    ir_version: int = 8  # readable by the onnx versions OpenCV 4.x and 5.x parse
    input_name: str = "input"
    output_prefix: str = "darknet_yolo_"  # + layer index; marks a converted .onnx for the detector
    heads_key: str = "objdet.darknet_heads"  # metadata: JSON {output name: anchors, scale_xy, thresh}
    batchnorm_eps: float = 1e-6
    region_thresh: float = 0.2
    cache_subdir: str = "objdet/darknet-onnx"  # under $XDG_CACHE_HOME (else ~/.cache)


DARKNET_ONNX = DarknetOnnx()


def yolo_format(path: Path) -> str:
    """``darknet`` for ``.weights``, ``onnx`` for ``.onnx``; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix in YOLO_FORMATS:
        return YOLO_FORMATS[suffix]
    raise ValueError(f"{str(path)!r} has suffix {suffix or '(none)'!r}; allowed: .weights (Darknet) or .onnx")


def _yolo_files(settings) -> dict[str, Path]:
    files = {"weights": settings.yolo_weights}
    if settings.yolo_config is not None:
        files["config"] = settings.yolo_config
    if settings.yolo_names is not None:
        files["names"] = settings.yolo_names
    return files


def _yolo_file_problems(settings) -> list[tuple[str, str]]:
    """A Darknet ``.weights`` must fit its ``.cfg`` in size (custom files too): OpenCV never checks it."""
    weights, cfg = settings.yolo_weights, settings.yolo_config
    if yolo_format(weights) != "darknet" or cfg is None or not (weights.is_file() and cfg.is_file()):
        return []
    from .detectors.darknet import DarknetError, check_weights_size

    try:
        check_weights_size(weights, cfg)
    except DarknetError as exc:
        return [("size", str(exc))]
    return []


# --- the registry of families ---------------------------------------------------------------------------------

FAMILIES: dict[str, Family] = _by_name(
    Family(
        name="ssd",
        title="SSD (torchvision)",
        label="SSD",
        detector="app.engine.detectors.ssd:SSDDetector",
        weights_env="OBJDET_SSD_WEIGHTS",
        install_hint="install the `ssd` extra (`pip install .[ssd]`) or set OBJDET_MODELS=yolo",
        env_vars=(
            EnvVar(
                "OBJDET_SSD_ARCH",
                next(iter(SSD_ARCHS)),
                " / ".join(f"`{a}`" for a in SSD_ARCHS),
                "torchvision SSD architecture the state dict belongs to.",
                True,
            ),
            EnvVar(
                "OBJDET_SSD_WEIGHTS",
                "`$OBJDET_WEIGHTS_DIR/<official file of the arch>`",
                "path to a state dict (`.pth`)",
                "SSD weights: the official torchvision COCO file or your own state dict.",
                True,
            ),
            EnvVar(
                "OBJDET_SSD_ENGINE",
                next(iter(SSD_ENGINES)),
                " / ".join(f"`{e}`" for e in SSD_ENGINES),
                "What runs SSD's backbone + head on CPU: `onnxruntime` (exported at load, cached under "
                "`$XDG_CACHE_HOME/objdet/ssd-onnx`) or `torch`; same detections. CUDA always uses `torch`.",
            ),
        ),
        files=tuple(a.weights for a in SSD_ARCHS.values()),
        model_files=lambda settings: {"weights": settings.ssd_weights},
    ),
    Family(
        name="yolo",
        title="YOLO (OpenCV DNN)",
        label="YOLO",
        detector="app.engine.detectors.yolo:YoloDetector",
        weights_env="OBJDET_YOLO_WEIGHTS",
        env_vars=(
            EnvVar(
                "OBJDET_YOLO_WEIGHTS",
                f"`$OBJDET_WEIGHTS_DIR/{YOLO_DEFAULT_WEIGHTS}`",
                "path to `.weights` (Darknet) or `.onnx`",
                "YOLO model file; the suffix picks the format.",
                True,
            ),
            EnvVar(
                "OBJDET_YOLO_CONFIG",
                "the weights path with `.cfg`",
                "path to a Darknet `.cfg`",
                "Darknet network description (Darknet only).",
                True,
            ),
            EnvVar(
                "OBJDET_YOLO_NAMES",
                "`coco.names` beside the weights, else the COCO list",
                "path to a names file, one per line",
                "Class names; Darknet's COCO spellings are mapped to torchvision's, a custom file is used as given.",
                True,
            ),
            EnvVar(
                "OBJDET_YOLO_INPUT_SIZE",
                "from the `.cfg` (Darknet), 640 (ONNX)",
                "multiple of 32, 32-2048",
                "Network input size (square).",
            ),
        ),
        files=YOLO_FILES,
        model_files=_yolo_files,
        file_problems=_yolo_file_problems,
    ),
)


def family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(FAMILIES)}") from None


def published_files() -> Mapping[str, tuple[str, ModelFile]]:
    """Every published file of every family by file name: (family, file); the weights manifest."""
    return {f.name: (fam.name, f) for fam in FAMILIES.values() for f in fam.files}
