"""Property-based: random bytes, truncations and bit flips of real JPEG/PNG/WebP files, fed to
``load_image`` and to the CLI. Every outcome is an image or an ``ImageError`` naming the input,
never another exception, and every call stays within a memory bound.

Reproducible: derandomized, no example database, bounded examples; the deadline only guards
against hangs."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.engine.images import ImageError, load_image

REPO = Path(__file__).resolve().parents[2]
MAX_PIXELS = 1_000_000  # every decode below is at most 3 MB of pixels, whatever a flipped header claims
NUMPY_PEAK_BYTES = 32 * 2**20
PROPERTY = settings(
    max_examples=300,
    deadline=timedelta(seconds=10),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _sources() -> dict[str, bytes]:
    shared = Path(os.environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared")) / "assets" / "images"
    if not shared.is_dir():
        return {}
    buf = io.BytesIO()
    Image.open(shared / "chelsea.png").convert("RGB").resize((160, 100)).save(buf, "WEBP", quality=80)
    return {
        "rocket.jpg": (shared / "rocket.jpg").read_bytes(),
        "chelsea.png": (shared / "chelsea.png").read_bytes(),
        "chelsea.webp": buf.getvalue(),
    }


SOURCES = _sources()
needs_sources = pytest.mark.skipif(not SOURCES, reason="shared test images not found (set OBJDET_SHARED_DIR)")


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    """A real file truncated, bit-flipped, or both."""
    name = draw(st.sampled_from(sorted(SOURCES)))
    data = bytearray(SOURCES[name])
    how = draw(st.sampled_from(["truncate", "flip", "both"]))
    if how in ("flip", "both"):
        for _ in range(draw(st.integers(1, 8))):
            # half of the flips land in the first 2 KB (after the signature): the headers, where a flip
            # changes the most; the others anywhere
            limit = min(len(data), 2048) if draw(st.booleans()) else len(data)
            at = draw(st.integers(16, limit - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
    if how in ("truncate", "both"):
        data = data[: int(draw(st.floats(0.0, 1.0, exclude_max=True)) * len(data))]
    return name, bytes(data)


MAGIC = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"BM", b"II*\x00", b"MM\x00*"]


def check_outcome(data: bytes, name: str) -> None:
    tracemalloc.start()
    try:
        arr = load_image(data, name, max_pixels=MAX_PIXELS)
    except ImageError as exc:
        assert str(exc).startswith(f"{name}: ") and exc.reason
        event("ImageError: " + exc.reason.split(" (")[0])
    else:
        event("decoded")
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
        assert arr.shape[0] * arr.shape[1] <= MAX_PIXELS
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < NUMPY_PEAK_BYTES  # numpy's allocations are traced; the pixel limit bounds them


@needs_sources
@PROPERTY
@given(damaged())
def test_damaged_real_files_give_an_image_or_an_image_error(sample):
    name, data = sample
    check_outcome(data, "damaged-" + name)


@PROPERTY
@given(st.sampled_from(MAGIC), st.binary(max_size=4096))
def test_random_bytes_give_an_image_error(magic, body):
    check_outcome(magic + body, "random.bin")


@needs_sources
@pytest.mark.parametrize("name", ["rocket.jpg", "chelsea.png", "chelsea.webp"])
def test_every_prefix_of_the_headers_is_refused(name):
    data = SOURCES[name]
    for end in range(min(len(data), 600)):
        with pytest.raises(ImageError, match=rf"^cut-{name}: "):
            load_image(data[:end], f"cut-{name}", max_pixels=MAX_PIXELS)


def _limit_memory():  # runs in the child before exec: 3 GiB of address space at most
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


@needs_sources
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(damaged())
def test_cli_on_damaged_files_reports_them_by_name(yolo_env, images_dir, tmp_path, sample):
    name, data = sample
    bad = tmp_path / f"damaged-{name}"
    bad.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | yolo_env
    proc = subprocess.run(
        [sys.executable, "-m", "app", "detect", "--model", "yolo", "--json", str(bad), str(images_dir / "coffee.png")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    damaged_entry, coffee = json.loads(proc.stdout)["images"]
    assert ("results" in damaged_entry) != ("error" in damaged_entry)
    if "error" in damaged_entry:
        assert damaged_entry["error"].startswith(f"{bad}: ") and proc.returncode == 1
    assert "cup" in [d["label"] for d in coffee["results"][0]["detections"]]
