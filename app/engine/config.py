"""Settings from the environment (12-factor): the contract the Kubernetes ConfigMap fills.

Every variable the app reads is declared once: the general ones here, each model family's in
``app/engine/catalog.py``; ``ENV_VARS`` joins them. The table in docs/configuration.md, the kustomize policy tests
and the weights commands all read ``ENV_VARS`` instead of keeping lists of their own.
Invalid values fail at start-up with a ``ConfigError`` that names the variable and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..ops.cpus import available_cpus
from .catalog import FAMILIES, SSD_ARCHS, SSD_DEFAULT_FILES, SSD_ENGINES, YOLO_DEFAULT_WEIGHTS, EnvVar, yolo_format
from .video_jobs import ENV_VARS as VIDEO_ENV_VARS
from .video_jobs import VideoLimits

DEFAULT_VIDEO_LIMITS = VideoLimits()

REPO_ROOT = Path(__file__).resolve().parents[2]

MODEL_FAMILIES = tuple(FAMILIES)
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
WEIGHTS_MODES = ("fetch", "verify")
DEFAULT_WEIGHTS_WAIT_S = 600
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_max_file_bytes(max_pixels: int) -> int:
    """The largest file worth reading for an image within the pixel limit: an uncompressed 8-bit RGB
    PNG or a quality-100 JPEG stays under 3 bytes a pixel; 16 MiB more for metadata and headers."""
    return 3 * max_pixels + 16 * 2**20


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable and what is allowed."""


_MODEL_CHOICE = ", ".join(f"`{m}`" for m in MODEL_FAMILIES)
_SELECTION = (  # which models: read before any family's own variables
    EnvVar(
        "OBJDET_MODELS", ",".join(MODEL_FAMILIES), f"comma list of {_MODEL_CHOICE}", "Which detectors to enable.", True
    ),
    EnvVar(
        "OBJDET_REQUIRED_MODELS",
        "(the enabled ones)",
        "comma list of enabled models, or empty",
        "Models without which `python -m app serve` exits non-zero (the pod never turns Ready).",
    ),
)
_GENERAL = (
    EnvVar(
        "OBJDET_DEVICE",
        "auto",
        " / ".join(f"`{d}`" for d in DEVICES),
        "Torch device for SSD; `auto` takes CUDA when present. YOLO runs on OpenCV's CPU backend.",
    ),
    EnvVar(
        "OBJDET_NUM_THREADS",
        "(CPUs this process may use: the smallest of cgroup CPU quota, affinity, count)",
        "integer 1-256",
        "Threads for torch, onnxruntime and OpenCV, set in one place (`app/ops/threads.py`); "
        "set it to the container's CPU limit.",
        True,
    ),
    EnvVar(
        "OBJDET_MAX_IMAGE_PIXELS",
        str(DEFAULT_MAX_IMAGE_PIXELS),
        "integer >= 1",
        "Images with more pixels are refused before they are decoded (decompression bombs).",
    ),
    EnvVar(
        "OBJDET_MAX_FILE_BYTES",
        "3 bytes per allowed pixel + 16 MiB (136,777,216)",
        "integer >= 1",
        "Image files larger than this are refused before they are read (checked from the file size); "
        "video uploads larger than this are refused before they are written to disk.",
    ),
    EnvVar(
        "OBJDET_WEIGHTS_DIR",
        "`models/` in the repository",
        "directory",
        "Where default weight file names are looked for and where `weights fetch` writes.",
    ),
    EnvVar(
        "OBJDET_WEIGHTS_MODE",
        "verify",
        " / ".join(f"`{m}`" for m in WEIGHTS_MODES),
        "What `python -m app weights prepare` (the pod's init container) does: `fetch` downloads "
        "what is missing, `verify` waits until the files are present and verified.",
        True,
    ),
    EnvVar(
        "OBJDET_WEIGHTS_WAIT_S",
        str(DEFAULT_WEIGHTS_WAIT_S),
        "integer 0-86400",
        "How long `weights prepare` waits (verify mode) or downloads (fetch mode) before it fails "
        "naming each missing file.",
    ),
    EnvVar(
        "OBJDET_METRICS_PORT",
        "0 (off)",
        "integer 0-65535",
        "Port on which `python -m app serve` serves Prometheus metrics at `/metrics` (its own listener on "
        "`STREAMLIT_SERVER_ADDRESS`, never through Streamlit's port or base path); 0 turns it off.",
    ),
    EnvVar(
        "OBJDET_LOG_FORMAT",
        "text",
        " / ".join(f"`{f}`" for f in LOG_FORMATS),
        "The app's log lines on stderr: `[objdet] message key=value` or one JSON object per line.",
    ),
    EnvVar(
        "OBJDET_LOG_LEVEL",
        "info",
        " / ".join(f"`{v}`" for v in LOG_LEVELS),
        "Least severe event logged (`info`: one line per detection); Streamlit's own logger follows "
        "unless `STREAMLIT_LOGGER_LEVEL` is set.",
    ),
)
# Every variable the app reads: the model selection, each family's own (app/engine/catalog.py), the rest.
ENV_VARS: dict[str, EnvVar] = {
    v.name: v for v in (*_SELECTION, *(v for f in FAMILIES.values() for v in f.env_vars), *_GENERAL, *VIDEO_ENV_VARS)
}


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Build with ``Settings.from_env()``."""

    models: tuple[str, ...]
    required_models: tuple[str, ...]
    ssd_arch: str
    ssd_weights: Path
    yolo_weights: Path
    yolo_config: Path | None
    yolo_names: Path | None
    yolo_input_size: int | None
    device: str
    num_threads: int
    max_image_pixels: int
    weights_dir: Path
    max_file_bytes: int = 0  # 0 in a hand-built Settings: the default for max_image_pixels
    weights_mode: str = "verify"
    weights_wait_s: int = DEFAULT_WEIGHTS_WAIT_S
    ssd_engine: str = next(iter(SSD_ENGINES))
    metrics_port: int = 0
    log_format: str = "text"
    log_level: str = "info"
    video: VideoLimits = DEFAULT_VIDEO_LIMITS  # app/engine/video_jobs.py: concurrent video jobs, their scratch space

    def __post_init__(self):
        if not self.max_file_bytes:
            object.__setattr__(self, "max_file_bytes", default_max_file_bytes(self.max_image_pixels))

    @property
    def yolo_format(self) -> str:
        return yolo_format(self.yolo_weights)

    def model_files(self, model: str) -> dict[str, Path]:
        """The files a model needs, by role (what ``weights verify`` and the status panel show)."""
        return FAMILIES[model].model_files(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return _unquote(env.get(name, ""))

        weights_dir = Path(get("OBJDET_WEIGHTS_DIR") or REPO_ROOT / "models").expanduser()
        models = _model_list(
            "OBJDET_MODELS", get("OBJDET_MODELS") or ENV_VARS["OBJDET_MODELS"].default, allow_empty=False
        )
        raw_required = env.get("OBJDET_REQUIRED_MODELS")
        raw_required = None if raw_required is None else _unquote(raw_required)
        required = (
            models if raw_required is None else _model_list("OBJDET_REQUIRED_MODELS", raw_required, allow_empty=True)
        )
        not_enabled = [m for m in required if m not in models]
        if not_enabled:
            raise ConfigError(
                f"OBJDET_REQUIRED_MODELS={raw_required!r}: {', '.join(not_enabled)} is not enabled in "
                f"OBJDET_MODELS={','.join(models)!r}; a required model must be enabled"
            )

        ssd_arch = get("OBJDET_SSD_ARCH") or ENV_VARS["OBJDET_SSD_ARCH"].default
        if ssd_arch not in SSD_ARCHS:
            raise ConfigError(f"OBJDET_SSD_ARCH={ssd_arch!r} is not supported; allowed: {', '.join(SSD_ARCHS)}")
        ssd_weights = _path(get("OBJDET_SSD_WEIGHTS")) or weights_dir / SSD_DEFAULT_FILES[ssd_arch]
        ssd_engine = (get("OBJDET_SSD_ENGINE") or ENV_VARS["OBJDET_SSD_ENGINE"].default).lower()
        if ssd_engine not in SSD_ENGINES:
            raise ConfigError(
                f"OBJDET_SSD_ENGINE={get('OBJDET_SSD_ENGINE')!r} is not supported; allowed: {', '.join(SSD_ENGINES)}"
            )

        yolo_weights = _path(get("OBJDET_YOLO_WEIGHTS")) or weights_dir / YOLO_DEFAULT_WEIGHTS
        try:
            fmt = yolo_format(yolo_weights)
        except ValueError as exc:
            raise ConfigError(f"OBJDET_YOLO_WEIGHTS: {exc}") from None
        yolo_config = _path(get("OBJDET_YOLO_CONFIG"))
        if fmt == "darknet" and yolo_config is None:
            yolo_config = yolo_weights.with_suffix(".cfg")
        if fmt == "onnx" and yolo_config is not None:
            raise ConfigError(
                f"OBJDET_YOLO_CONFIG={str(yolo_config)!r} is only for Darknet models; "
                f"OBJDET_YOLO_WEIGHTS={str(yolo_weights)!r} is ONNX: unset OBJDET_YOLO_CONFIG"
            )
        yolo_names = _path(get("OBJDET_YOLO_NAMES"))
        if yolo_names is None and (yolo_weights.parent / "coco.names").is_file():
            yolo_names = yolo_weights.parent / "coco.names"

        size = _int_or(get, "OBJDET_YOLO_INPUT_SIZE", 32, 2048, None)
        if size is not None and size % 32:
            raise ConfigError(
                f"OBJDET_YOLO_INPUT_SIZE={get('OBJDET_YOLO_INPUT_SIZE')!r} must be a multiple of 32 "
                "(e.g. 320, 416, 640)"
            )

        device = (get("OBJDET_DEVICE") or "auto").lower()
        if device not in DEVICES:
            raise ConfigError(f"OBJDET_DEVICE={device!r} is not supported; allowed: {', '.join(DEVICES)}")

        threads = _int_or(get, "OBJDET_NUM_THREADS", 1, 256, None) or available_cpus()
        max_pixels = _int_or(get, "OBJDET_MAX_IMAGE_PIXELS", 1, 10**12, DEFAULT_MAX_IMAGE_PIXELS)
        max_bytes = _int_or(get, "OBJDET_MAX_FILE_BYTES", 1, 2**50, 0)
        weights_mode = (get("OBJDET_WEIGHTS_MODE") or "verify").lower()
        if weights_mode not in WEIGHTS_MODES:
            raise ConfigError(
                f"OBJDET_WEIGHTS_MODE={weights_mode!r} is not supported; allowed: {', '.join(WEIGHTS_MODES)}"
            )
        wait_s = _int_or(get, "OBJDET_WEIGHTS_WAIT_S", 0, 86400, DEFAULT_WEIGHTS_WAIT_S)
        metrics_port = _int_or(get, "OBJDET_METRICS_PORT", 0, 65535, 0)
        log_format = _choice(get, "OBJDET_LOG_FORMAT", LOG_FORMATS)
        log_level = _choice(get, "OBJDET_LOG_LEVEL", LOG_LEVELS)
        try:
            video = VideoLimits.from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            models=models,
            required_models=required,
            ssd_arch=ssd_arch,
            ssd_weights=ssd_weights,
            yolo_weights=yolo_weights,
            yolo_config=yolo_config,
            yolo_names=yolo_names,
            yolo_input_size=size,
            device=device,
            num_threads=threads,
            max_image_pixels=max_pixels,
            weights_dir=weights_dir,
            max_file_bytes=max_bytes,
            weights_mode=weights_mode,
            weights_wait_s=wait_s,
            ssd_engine=ssd_engine,
            metrics_port=metrics_port,
            log_format=log_format,
            log_level=log_level,
            video=video,
        )


def _unquote(raw: str) -> str:
    """Surrounding spaces and one pair of matching quotes go (a ConfigMap or env file written as
    KEY="value" often keeps them); nothing inside the value changes."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


def _path(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw else None


def _model_list(name: str, raw: str, allow_empty: bool) -> tuple[str, ...]:
    items = [m.strip().lower() for m in raw.split(",") if m.strip()]
    unknown = [m for m in items if m not in MODEL_FAMILIES]
    if unknown:
        raise ConfigError(f"{name}={raw!r}: unknown model {', '.join(unknown)}; allowed: {', '.join(MODEL_FAMILIES)}")
    if not items and not allow_empty:
        raise ConfigError(f"{name}={raw!r} enables no model; allowed: a comma list of {', '.join(MODEL_FAMILIES)}")
    return tuple(dict.fromkeys(items))


def _choice(get: Callable[[str], str], name: str, allowed: tuple[str, ...]) -> str:
    """The variable, lower-cased, when it is one of ``allowed``; unset or empty: ``ENV_VARS``' default."""
    value = (get(name) or ENV_VARS[name].default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}={get(name)!r} is not supported; allowed: {', '.join(allowed)}")
    return value


def _int_or(get: Callable[[str], str], name: str, low: int, high: int, default: int | None) -> int | None:
    """The variable as an integer in [low, high], or ``default`` when it is unset or empty."""
    raw = get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; allowed: {low}-{high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is out of range; allowed: {low}-{high}")
    return value
