"""The real download code against an HTTP server on loopback (no mocks of urllib)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from support.mirror import PAYLOAD, Mirror

from app.engine import weights
from app.engine.weights import CORRUPT, MISSING, OK, UNVERIFIED, FetchError, ManifestEntry, check_file, fetch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def manifest(monkeypatch):
    entries = {
        "good.bin": ManifestEntry(
            "good.bin", "https://example.invalid/good.bin", hashlib.sha256(PAYLOAD).hexdigest(), "yolo", len(PAYLOAD)
        ),
        "prefix-only.pth": ManifestEntry(
            "prefix-only.pth",
            "https://example.invalid/prefix-only.pth",
            hashlib.sha256(PAYLOAD[::-1]).hexdigest()[:8],
            "ssd",
        ),
    }
    monkeypatch.setattr(weights, "MANIFEST", entries)
    return entries


def test_fetch_verifies_and_writes_atomically(manifest, tmp_path):
    with Mirror({"good.bin": PAYLOAD, "prefix-only.pth": PAYLOAD[::-1]}) as srv:
        result = fetch(["good.bin", "prefix-only.pth"], tmp_path, progress=None, url_base=srv.url)
    assert result == [("good.bin", "fetched"), ("prefix-only.pth", "fetched")]
    assert (tmp_path / "good.bin").read_bytes() == PAYLOAD
    assert (tmp_path / "prefix-only.pth").read_bytes() == PAYLOAD[::-1]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_rerun_skips_verified_files_without_downloading(manifest, tmp_path):
    with Mirror({"good.bin": PAYLOAD}) as srv:
        fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url)
        assert fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url) == [("good.bin", "skipped")]
        assert len(srv.requests) == 1


def test_interrupted_download_resumes_with_range(manifest, tmp_path):
    with Mirror({"good.bin": PAYLOAD}) as srv:
        srv.cut_after = 300_000
        with pytest.raises(FetchError, match="run the command again to resume"):
            fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url, timeout=5)
        assert not (tmp_path / "good.bin").exists()  # nothing half-written in place
        assert (tmp_path / ".good.bin.part").stat().st_size == 300_000
        assert fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url) == [("good.bin", "fetched")]
        assert srv.requests[-1] == ("good.bin", "bytes=300000-")
    assert (tmp_path / "good.bin").read_bytes() == PAYLOAD


def test_corrupt_download_rejected_and_not_left(manifest, tmp_path):
    with Mirror({"good.bin": PAYLOAD[:-1] + b"X"}) as srv, pytest.raises(FetchError, match="corrupt: expected sha256"):
        fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url)
    assert list(tmp_path.iterdir()) == [tmp_path / ".good.bin.lock"]


def test_404_names_the_url_and_gives_no_resume_advice(manifest, tmp_path):
    with Mirror({}) as srv, pytest.raises(FetchError) as err:
        fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url)
    msg = str(err.value)
    assert f"good.bin: not found at {srv.url}/good.bin (HTTP 404)" in msg and "resume" not in msg
    assert not (tmp_path / "good.bin").exists() and not (tmp_path / ".good.bin.part").exists()


def test_other_http_errors_say_the_status(manifest, tmp_path):
    with Mirror({"good.bin": PAYLOAD}) as srv:
        srv.status["good.bin"] = 503
        with pytest.raises(
            FetchError,
            match=r"good.bin: .*/good.bin answered HTTP 503 Service Unavailable; "
            r"nothing was installed; try again later",
        ):
            fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url)
        srv.status["good.bin"] = 403
        with pytest.raises(FetchError, match=r"answered HTTP 403 Forbidden; nothing was installed$"):
            fetch(["good.bin"], tmp_path, progress=None, url_base=srv.url)
    assert not (tmp_path / "good.bin").exists()


def test_two_processes_fetching_into_one_volume(tmp_path):
    """Real manifest entry (coco.names), real CLI, two processes at once: one downloads, one skips."""
    shared = Path(__import__("os").environ.get("OBJDET_SHARED_DIR", REPO.parent / "shared"))
    src = shared / "assets" / "weights" / "yolo-fastest-1.1" / "coco.names"
    if not src.exists():
        pytest.skip(f"{src} absent (set OBJDET_SHARED_DIR)")
    with Mirror({"coco.names": src.read_bytes()}) as srv:
        cmd = [
            sys.executable,
            "-m",
            "app",
            "weights",
            "fetch",
            "coco.names",
            "--dest",
            str(tmp_path),
            "--mirror",
            srv.url,
        ]
        procs = [
            subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted("fetched" in o for o in outs) == [False, True], outs
    assert len(srv.requests) == 1
    assert (tmp_path / "coco.names").read_bytes() == src.read_bytes()


def test_check_file_states(manifest, tmp_path):
    (tmp_path / "good.bin").write_bytes(PAYLOAD)
    assert check_file(tmp_path / "good.bin").state == OK
    (tmp_path / "good.bin").write_bytes(PAYLOAD + b"!")
    bad = check_file(tmp_path / "good.bin")
    assert bad.state == CORRUPT and bad.expected == manifest["good.bin"].sha256
    assert bad.actual == hashlib.sha256(PAYLOAD + b"!").hexdigest() and bad.actual in bad.describe()
    (tmp_path / "mine.pth").write_bytes(b"custom")
    assert check_file(tmp_path / "mine.pth").state == UNVERIFIED
    assert check_file(tmp_path / "absent.bin").state == MISSING


def run_verify(env: dict, cwd=REPO):
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", "weights", "verify"],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_verify_command_reports_each_state(yolo_dir, tmp_path):
    for name in ("yolo-fastest-1.1.weights", "yolo-fastest-1.1.cfg"):
        (tmp_path / name).write_bytes((yolo_dir / name).read_bytes())
    (tmp_path / "coco.names").write_bytes((yolo_dir / "coco.names").read_bytes() + b"extra\n")  # corrupt
    (tmp_path / "my-ssd.pth").write_bytes(b"custom state dict")  # unverified
    env = {
        "OBJDET_WEIGHTS_DIR": str(tmp_path),
        "OBJDET_SSD_WEIGHTS": str(tmp_path / "my-ssd.pth"),
        "OBJDET_YOLO_WEIGHTS": str(tmp_path / "yolo-fastest-1.1.weights"),
    }
    out = run_verify(env)
    lines = {line.split()[1]: line for line in out.stdout.splitlines()}
    assert "unverified" in lines["weights"] or "unverified" in out.stdout
    assert " OK " in lines["config"]
    assert "corrupt" in lines["names"] and "expected sha256 634a1132" in lines["names"]
    assert out.returncode == 1
    (tmp_path / "coco.names").write_bytes((yolo_dir / "coco.names").read_bytes())
    ok = run_verify(env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("OK") >= 3 and "unverified" in ok.stdout
    (tmp_path / "yolo-fastest-1.1.cfg").unlink()
    missing = run_verify(env)
    assert missing.returncode == 1 and "missing" in missing.stdout and "weights fetch" in missing.stderr
