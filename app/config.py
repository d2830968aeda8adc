"""Settings from the environment (12-factor): the contract the Kubernetes ConfigMap fills.

Every variable the app reads is declared once in ``ENV_VARS``; README's table, the kustomize policy
tests and the weights commands all read this module instead of keeping lists of their own.
Invalid values fail at start-up with a ``ConfigError`` that names the variable and what is allowed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent

MODEL_FAMILIES = ("ssd", "yolo")
SSD_ARCHS = ("ssdlite320_mobilenet_v3_large", "ssd300_vgg16")
DEVICES = ("auto", "cpu", "cuda")
# The official torchvision COCO state dicts: the file names carry torchvision's sha256 prefix.
SSD_DEFAULT_FILES = {
    "ssdlite320_mobilenet_v3_large": "ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
    "ssd300_vgg16": "ssd300_vgg16_coco-b556d3b4.pth",
}
YOLO_DEFAULT_WEIGHTS = "yolo-fastest-1.1.weights"
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
WEIGHTS_MODES = ("fetch", "verify")
DEFAULT_WEIGHTS_WAIT_S = 600


def default_max_file_bytes(max_pixels: int) -> int:
    """The largest file worth reading for an image within the pixel limit: an uncompressed 8-bit RGB
    PNG or a quality-100 JPEG stays under 3 bytes a pixel; 16 MiB more for metadata and headers."""
    return 3 * max_pixels + 16 * 2**20


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable and what is allowed."""


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


ENV_VARS: dict[str, EnvVar] = {
    v.name: v
    for v in (
        EnvVar("OBJDET_MODELS", "ssd,yolo", "comma list of `ssd`, `yolo`",
               "Which detectors to enable.", True),
        EnvVar("OBJDET_REQUIRED_MODELS", "(the enabled ones)", "comma list of enabled models, or empty",
               "Models without which `python -m app serve` exits non-zero (the pod never turns Ready)."),
        EnvVar("OBJDET_SSD_ARCH", SSD_ARCHS[0], " / ".join(f"`{a}`" for a in SSD_ARCHS),
               "torchvision SSD architecture the state dict belongs to.", True),
        EnvVar("OBJDET_SSD_WEIGHTS", "`$OBJDET_WEIGHTS_DIR/<official file of the arch>`", "path to a state dict (`.pth`)",
               "SSD weights: the official torchvision COCO file or your own state dict.", True),
        EnvVar("OBJDET_YOLO_WEIGHTS", f"`$OBJDET_WEIGHTS_DIR/{YOLO_DEFAULT_WEIGHTS}`", "path to `.weights` (Darknet) or `.onnx`",
               "YOLO model file; the suffix picks the format.", True),
        EnvVar("OBJDET_YOLO_CONFIG", "the weights path with `.cfg`", "path to a Darknet `.cfg`",
               "Darknet network description (Darknet only).", True),
        EnvVar("OBJDET_YOLO_NAMES", "`coco.names` beside the weights, else the COCO list", "path to a names file, one per line",
               "Class names; Darknet's COCO spellings are mapped to torchvision's, a custom file is used as given.", True),
        EnvVar("OBJDET_YOLO_INPUT_SIZE", "from the `.cfg` (Darknet), 640 (ONNX)", "multiple of 32, 32-2048",
               "Network input size (square)."),
        EnvVar("OBJDET_DEVICE", "auto", " / ".join(f"`{d}`" for d in DEVICES),
               "Torch device for SSD; `auto` takes CUDA when present. YOLO runs on OpenCV's CPU backend."),
        EnvVar("OBJDET_NUM_THREADS", "(CPUs this process may use: the smallest of cgroup CPU quota, affinity, count)", "integer 1-256",
               "Threads for torch and OpenCV; set it to the container's CPU limit.", True),
        EnvVar("OBJDET_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_IMAGE_PIXELS), "integer >= 1",
               "Images with more pixels are refused before they are decoded (decompression bombs)."),
        EnvVar("OBJDET_MAX_FILE_BYTES", "3 bytes per allowed pixel + 16 MiB (136,777,216)", "integer >= 1",
               "Image files larger than this are refused before they are read (checked from the file size); "
               "video uploads larger than this are refused before they are written to disk."),
        EnvVar("OBJDET_WEIGHTS_DIR", "`models/` in the repository", "directory",
               "Where default weight file names are looked for and where `weights fetch` writes."),
        EnvVar("OBJDET_WEIGHTS_MODE", "verify", " / ".join(f"`{m}`" for m in WEIGHTS_MODES),
               "What `python -m app weights prepare` (the pod's init container) does: `fetch` downloads "
               "what is missing, `verify` waits until the files are present and verified.", True),
        EnvVar("OBJDET_WEIGHTS_WAIT_S", str(DEFAULT_WEIGHTS_WAIT_S), "integer 0-86400",
               "How long `weights prepare` waits (verify mode) or downloads (fetch mode) before it fails "
               "naming each missing file."),
    )
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

    def __post_init__(self):
        if not self.max_file_bytes:
            object.__setattr__(self, "max_file_bytes", default_max_file_bytes(self.max_image_pixels))

    @property
    def yolo_format(self) -> str:
        return yolo_format(self.yolo_weights)

    def model_files(self, model: str) -> dict[str, Path]:
        """The files a model needs, by role (what ``weights verify`` and the status panel show)."""
        if model == "ssd":
            return {"weights": self.ssd_weights}
        files = {"weights": self.yolo_weights}
        if self.yolo_config is not None:
            files["config"] = self.yolo_config
        if self.yolo_names is not None:
            files["names"] = self.yolo_names
        return files

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return _unquote(env.get(name, ""))

        weights_dir = Path(get("OBJDET_WEIGHTS_DIR") or REPO_ROOT / "models").expanduser()
        models = _model_list("OBJDET_MODELS", get("OBJDET_MODELS") or "ssd,yolo", allow_empty=False)
        raw_required = env.get("OBJDET_REQUIRED_MODELS")
        raw_required = None if raw_required is None else _unquote(raw_required)
        required = models if raw_required is None else _model_list("OBJDET_REQUIRED_MODELS", raw_required, allow_empty=True)
        not_enabled = [m for m in required if m not in models]
        if not_enabled:
            raise ConfigError(
                f"OBJDET_REQUIRED_MODELS={raw_required!r}: {', '.join(not_enabled)} is not enabled in "
                f"OBJDET_MODELS={','.join(models)!r}; a required model must be enabled"
            )

        ssd_arch = get("OBJDET_SSD_ARCH") or SSD_ARCHS[0]
        if ssd_arch not in SSD_ARCHS:
            raise ConfigError(f"OBJDET_SSD_ARCH={ssd_arch!r} is not supported; allowed: {', '.join(SSD_ARCHS)}")
        ssd_weights = _path(get("OBJDET_SSD_WEIGHTS")) or weights_dir / SSD_DEFAULT_FILES[ssd_arch]

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

        raw_size = get("OBJDET_YOLO_INPUT_SIZE")
        size = None
        if raw_size:
            size = _int("OBJDET_YOLO_INPUT_SIZE", raw_size, 32, 2048)
            if size % 32:
                raise ConfigError(f"OBJDET_YOLO_INPUT_SIZE={raw_size!r} must be a multiple of 32 (e.g. 320, 416, 640)")

        device = (get("OBJDET_DEVICE") or "auto").lower()
        if device not in DEVICES:
            raise ConfigError(f"OBJDET_DEVICE={device!r} is not supported; allowed: {', '.join(DEVICES)}")

        raw_threads = get("OBJDET_NUM_THREADS")
        threads = _int("OBJDET_NUM_THREADS", raw_threads, 1, 256) if raw_threads else available_cpus()
        raw_pixels = get("OBJDET_MAX_IMAGE_PIXELS")
        max_pixels = (
            _int("OBJDET_MAX_IMAGE_PIXELS", raw_pixels, 1, 10**12) if raw_pixels else DEFAULT_MAX_IMAGE_PIXELS
        )
        raw_bytes = get("OBJDET_MAX_FILE_BYTES")
        max_bytes = _int("OBJDET_MAX_FILE_BYTES", raw_bytes, 1, 2**50) if raw_bytes else 0
        weights_mode = (get("OBJDET_WEIGHTS_MODE") or "verify").lower()
        if weights_mode not in WEIGHTS_MODES:
            raise ConfigError(f"OBJDET_WEIGHTS_MODE={weights_mode!r} is not supported; "
                              f"allowed: {', '.join(WEIGHTS_MODES)}")
        raw_wait = get("OBJDET_WEIGHTS_WAIT_S")
        wait_s = _int("OBJDET_WEIGHTS_WAIT_S", raw_wait, 0, 86400) if raw_wait else DEFAULT_WEIGHTS_WAIT_S
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
        )


def yolo_format(path: Path) -> str:
    """``darknet`` for ``.weights``, ``onnx`` for ``.onnx``; anything else is an error."""
    suffix = path.suffix.lower()
    if suffix == ".weights":
        return "darknet"
    if suffix == ".onnx":
        return "onnx"
    raise ValueError(f"{str(path)!r} has suffix {suffix or '(none)'!r}; allowed: .weights (Darknet) or .onnx")


CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")  # which cgroup (v2) this process is in


def cpu_budget(cgroup_root: Path | None = None, self_cgroup: Path | None = None) -> tuple[int, str]:
    """(CPUs this process may use, where the figure comes from): the smallest of the cgroup CPU
    quota (a Kubernetes CPU limit is a CFS quota, not an affinity), the affinity and the CPU count.
    A fractional quota rounds up; the result is at least 1."""
    count = os.cpu_count() or 1
    best = (max(1, count), "CPU count")
    try:
        affinity = len(os.sched_getaffinity(0))
        if 1 <= affinity <= best[0]:
            best = (affinity, "CPU affinity")
    except (AttributeError, OSError):  # not Linux
        pass
    for quota, period in _cgroup_quotas(Path(cgroup_root or CGROUP_ROOT), Path(self_cgroup or SELF_CGROUP)):
        cpus = max(1, -(-quota // period))
        if cpus < best[0]:
            best = (cpus, f"cgroup quota {quota}/{period}")
    return best


def available_cpus(cgroup_root: Path | None = None) -> int:
    """CPUs this process may use, at least 1 (see ``cpu_budget``)."""
    return cpu_budget(cgroup_root)[0]


def _cgroup_quotas(root: Path, self_cgroup: Path) -> list[tuple[int, int]]:
    """(quota, period) of every CPU limit found: cgroup v2 ``cpu.max`` ("max 100000" = none, or
    "200000 100000") at the root and at this process's own cgroup; cgroup v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (quota -1 = none). Unreadable or malformed files count as no limit."""
    dirs = [root]
    with contextlib.suppress(OSError, ValueError):
        for line in self_cgroup.read_text().splitlines():
            hierarchy, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
            rel = rel.strip().lstrip("/")
            if rel and hierarchy == "0" and not controllers:
                dirs.append(root / rel)  # v2 unified hierarchy
    found = []
    for folder in dirs:
        with contextlib.suppress(OSError, ValueError):
            fields = (folder / "cpu.max").read_text().split()
            if len(fields) == 2 and fields[0] != "max":
                found.append((int(fields[0]), int(fields[1])))
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        with contextlib.suppress(OSError, ValueError):
            quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
            period = int((folder / "cpu.cfs_period_us").read_text().strip())
            if quota > 0:
                found.append((quota, period))
    return [(q, p) for q, p in found if q > 0 and p > 0]


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


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; allowed: {low}-{high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is out of range; allowed: {low}-{high}")
    return value
