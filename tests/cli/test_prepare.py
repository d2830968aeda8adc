"""`weights prepare` (the pod's init container) on real files: the Yolo-Fastest files from the shared
assets (their real manifest hashes), a real loopback HTTP server for fetch mode, the real CLI."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from support.mirror import Mirror

from app.cli.weights_prepare import prepare
from app.engine.config import Settings

REPO = Path(__file__).resolve().parents[2]
YOLO_FILES = ("yolo-fastest-1.1.weights", "yolo-fastest-1.1.cfg", "coco.names")


def names(requests) -> list[str]:
    """The file names test_weights' loopback server was asked for (its requests are (name, range) pairs)."""
    return [name for name, _ in requests]


def settings_for(weights_dir: Path, **extra: str) -> Settings:
    """Both models; SSD is a custom (unverified) state dict, YOLO the real Yolo-Fastest files. The names
    file is set explicitly, as every ConfigMap does (unset, it is only used when it already exists)."""
    env = {
        "OBJDET_MODELS": "ssd,yolo",
        "OBJDET_WEIGHTS_DIR": str(weights_dir),
        "OBJDET_SSD_WEIGHTS": str(weights_dir / "my-ssd.pth"),
        "OBJDET_YOLO_NAMES": str(weights_dir / "coco.names"),
        **extra,
    }
    return Settings.from_env(env)


def seed(dest: Path, yolo_dir: Path, names=YOLO_FILES, custom: bool = True) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(yolo_dir / name, dest / name)
    if custom:
        (dest / "my-ssd.pth").write_bytes(b"a custom state dict, not in the manifest")


def run(settings: Settings, dest: Path, mode: str = "verify", wait_s: int = 0, **kw) -> tuple[int, str]:
    log = io.StringIO()
    rc = prepare(settings, mode=mode, dest=dest, wait_s=wait_s, poll_s=kw.pop("poll_s", 0.1), out=log, **kw)
    return rc, log.getvalue()


# ------------------------------------------------------------------------------------- verify mode


def test_verify_succeeds_at_once_when_every_file_is_present(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir)
    rc, log = run(settings_for(tmp_path), tmp_path)
    assert rc == 0, log
    assert "waiting" not in log and "ready" in log
    # the custom SSD file counts as present and is said to be unverified
    assert "my-ssd.pth (ssd weights): present, not in the manifest" in log


def test_verify_waits_until_a_file_appears(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir, names=YOLO_FILES[1:])
    target = tmp_path / "yolo-fastest-1.1.weights"

    def copy_in_later():
        time.sleep(1.0)
        part = tmp_path / ".incoming"
        shutil.copyfile(yolo_dir / target.name, part)
        os.replace(part, target)  # appears whole, as kubectl cp + mv or the loader's rename do

    copier = threading.Thread(target=copy_in_later)
    copier.start()
    try:
        rc, log = run(settings_for(tmp_path), tmp_path, wait_s=60, poll_s=0.2)
    finally:
        copier.join()
    assert rc == 0, log
    waiting = [line for line in log.splitlines() if line.startswith("poll ")]
    assert waiting, log
    assert f"{target} (yolo weights): missing" in waiting[0]
    assert log.rstrip().endswith("ready")


def test_verify_times_out_naming_the_missing_file_and_the_fix(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir, names=("yolo-fastest-1.1.weights", "coco.names"), custom=False)
    rc, log = run(settings_for(tmp_path), tmp_path, wait_s=1, poll_s=0.3)
    assert rc == 1
    polls = [line for line in log.splitlines() if line.startswith("poll ")]
    assert len(polls) >= 2, "it polled more than once before giving up"
    final = log.strip().splitlines()[-1]
    assert final.startswith("error: weights not ready")
    assert f"{tmp_path / 'yolo-fastest-1.1.cfg'} (yolo config): missing" in final
    assert f"{tmp_path / 'my-ssd.pth'} (ssd weights): missing" in final
    assert "weights-loader" in final  # the seed Job for the manifest file
    assert "kubectl cp" in final and "my-ssd.pth" in final.split("kubectl cp")[0]  # custom: copy it in
    assert "coco.names" not in final and "yolo-fastest-1.1.weights)" not in final


def test_verify_reports_a_corrupt_file(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir)
    names = tmp_path / "coco.names"
    names.write_bytes(names.read_bytes() + b"extra class\n")
    rc, log = run(settings_for(tmp_path), tmp_path)
    assert rc == 1
    final = log.strip().splitlines()[-1]
    assert f"{names} (yolo names): corrupt" in final
    assert "expected 634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84" in final
    assert "corrupt file must be replaced" in final


def test_optional_model_is_reported_not_waited_for(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir, custom=False)
    rc, log = run(settings_for(tmp_path, OBJDET_REQUIRED_MODELS="yolo"), tmp_path, wait_s=30)
    assert rc == 0, log
    assert "waiting" not in log
    assert f"warning: {tmp_path / 'my-ssd.pth'} (ssd weights): missing; ssd is optional" in log


def test_dest_maps_the_weights_dir_onto_the_init_containers_mount(yolo_dir, tmp_path):
    """The server reads /mnt/models/...; the init container may mount the same volume elsewhere."""
    seed(tmp_path, yolo_dir)
    rc, log = run(settings_for(Path("/mnt/models")), tmp_path)
    assert rc == 0, log
    assert str(tmp_path / "my-ssd.pth") in log


# -------------------------------------------------------------------------------------- fetch mode


def test_fetch_downloads_only_what_is_missing_then_nothing(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir, names=("yolo-fastest-1.1.cfg",))
    served = {name: (yolo_dir / name).read_bytes() for name in YOLO_FILES}
    with Mirror(served) as srv:
        rc, log = run(settings_for(tmp_path), tmp_path, mode="fetch", wait_s=60, url_base=srv.url)
        assert rc == 0, log
        assert sorted(names(srv.requests)) == ["coco.names", "yolo-fastest-1.1.weights"]
        for name in YOLO_FILES:
            assert (tmp_path / name).read_bytes() == served[name]
        rc2, log2 = run(settings_for(tmp_path), tmp_path, mode="fetch", wait_s=60, url_base=srv.url)
    assert rc2 == 0, log2
    assert len(srv.requests) == 2, "the second run downloads nothing"
    assert "fetched" not in log2


def test_fetch_names_custom_files_it_cannot_download(yolo_dir, tmp_path):
    served = {name: (yolo_dir / name).read_bytes() for name in YOLO_FILES}
    with Mirror(served) as srv:
        rc, log = run(settings_for(tmp_path), tmp_path, mode="fetch", wait_s=0, url_base=srv.url)
    assert rc == 1
    assert all((tmp_path / n).is_file() for n in YOLO_FILES), "the fetchable files were downloaded"
    final = log.strip().splitlines()[-1]
    assert f"{tmp_path / 'my-ssd.pth'} (ssd weights): missing" in final
    assert "not in the manifest, so nothing can download them" in final and "kubectl cp" in final


def test_fetch_retries_failed_downloads_until_the_deadline(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir, names=YOLO_FILES[1:])
    with Mirror({}) as srv:  # every request answers 404
        rc, log = run(settings_for(tmp_path), tmp_path, mode="fetch", wait_s=1, poll_s=0.3, url_base=srv.url)
    assert rc == 1
    assert names(srv.requests).count("yolo-fastest-1.1.weights") >= 2, "retried at each poll"
    assert "error: yolo-fastest-1.1.weights:" in log and "127.0.0.1" in log  # fetch's own message
    assert "did not finish in time" in log.strip().splitlines()[-1]


def test_fetch_into_an_unwritable_volume_fails_at_once(yolo_dir, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    with Mirror({}) as srv:
        rc, log = run(settings_for(blocker), blocker, mode="fetch", wait_s=60, url_base=srv.url)
    assert rc == 1 and not srv.requests
    assert f"cannot write {blocker} ({blocker} is not a folder)" in log and "read-write" in log


# ------------------------------------------------------------------------------------------ the CLI


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", "weights", "prepare", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prepare_as_the_init_container_runs_it(yolo_dir, tmp_path):
    """The mode and the deadline come from the environment (the ConfigMap), --dest from the manifest."""
    env = {
        "OBJDET_MODELS": "yolo",
        "OBJDET_WEIGHTS_DIR": "/mnt/models",
        "OBJDET_YOLO_NAMES": "/mnt/models/coco.names",
        "OBJDET_WEIGHTS_MODE": "verify",
        "OBJDET_WEIGHTS_WAIT_S": "0",
    }
    missing = cli(["--dest", str(tmp_path)], env)
    assert missing.returncode == 1, missing.stderr
    assert "mode verify" in missing.stderr
    assert f"{tmp_path / 'yolo-fastest-1.1.weights'} (yolo weights): missing" in missing.stderr
    seed(tmp_path, yolo_dir, custom=False)
    ready = cli(["--dest", str(tmp_path)], env)
    assert ready.returncode == 0, ready.stderr
    assert ready.stderr.rstrip().endswith("ready")
    bad = cli(["--dest", str(tmp_path)], {**env, "OBJDET_WEIGHTS_MODE": "download"})
    assert bad.returncode == 2 and "OBJDET_WEIGHTS_MODE" in bad.stderr


# ------------------------------------------------------------------- one check for verify and prepare


def _verify_and_prepare(volume: Path, weights: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | {
        "OBJDET_MODELS": "yolo",
        "OBJDET_WEIGHTS_DIR": str(volume),
        "OBJDET_YOLO_WEIGHTS": str(volume / weights),
        "OBJDET_YOLO_CONFIG": str(volume / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(volume / "coco.names"),
    }
    verify, prepare_ = (
        subprocess.run(
            [sys.executable, "-m", "app", "weights", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for args in (["verify"], ["prepare", "--mode", "verify", "--wait", "0"])
    )
    return verify, prepare_


def test_a_half_written_custom_weights_file_is_not_ready_for_either_command(yolo_dir, tmp_path):
    seed(tmp_path, yolo_dir, names=YOLO_FILES[1:], custom=False)
    data = (yolo_dir / "yolo-fastest-1.1.weights").read_bytes()
    (tmp_path / "custom.weights").write_bytes(data[: len(data) // 2])  # a copy cut short: not in the manifest
    verify, prepared = _verify_and_prepare(tmp_path, "custom.weights")
    assert verify.returncode == 1 and "692,134 bytes too short" in verify.stdout, verify.stdout
    assert prepared.returncode == 1, prepared.stderr
    assert "weights prepare: ready" not in prepared.stderr and "692,134 bytes too short" in prepared.stderr
    assert "Traceback" not in verify.stderr + prepared.stderr


def test_a_link_out_of_the_volume_is_not_ready_for_either_command(yolo_dir, tmp_path):
    volume, elsewhere = tmp_path / "volume", tmp_path / "host"
    seed(volume, yolo_dir, names=YOLO_FILES[1:], custom=False)
    seed(elsewhere, yolo_dir, names=YOLO_FILES[:1], custom=False)
    (volume / "yolo-fastest-1.1.weights").symlink_to(elsewhere / "yolo-fastest-1.1.weights")
    verify, prepared = _verify_and_prepare(volume, "yolo-fastest-1.1.weights")
    words = f"is a symbolic link to {elsewhere / 'yolo-fastest-1.1.weights'}, outside the weights folder {volume}"
    assert verify.returncode == 1 and words in verify.stdout, verify.stdout
    assert prepared.returncode == 1 and words in prepared.stderr, prepared.stderr
    # The same file copied in whole is ready for both.
    (volume / "yolo-fastest-1.1.weights").unlink()
    seed(volume, yolo_dir, names=YOLO_FILES[:1], custom=False)
    verify, prepared = _verify_and_prepare(volume, "yolo-fastest-1.1.weights")
    assert verify.returncode == 0 and prepared.returncode == 0, verify.stdout + prepared.stderr
