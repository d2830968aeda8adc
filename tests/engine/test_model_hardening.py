"""Bad model files and settings give one clear message naming the file and the cause: truncated, foreign,
mismatched and unreadable files of every format. Real files, real torch.load, real CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from app.engine import registry
from app.engine.config import Settings
from app.engine.detectors.base import ModelLoadError
from app.engine.labels import MAX_NAMES_BYTES, read_names
from app.engine.weights import MISSING, OK, check_file, missing_reason


def run_cli(args, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def flipped_yolo(yolo_dir, tmp_path) -> Path:
    """The real Yolo-Fastest files in a folder, the .weights with one bit flipped (same size, same name)."""
    for f in yolo_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    data = bytearray((tmp_path / "yolo-fastest-1.1.weights").read_bytes())
    data[5000] ^= 0x01
    (tmp_path / "yolo-fastest-1.1.weights").write_bytes(bytes(data))
    return tmp_path


@pytest.mark.parametrize("command", [["detect", "--model", "yolo"], ["bench", "--model", "yolo", "--repeat", "1"]])
def test_detect_and_bench_refuse_a_manifest_name_with_another_hash(flipped_yolo, images_dir, command):
    target = flipped_yolo / "yolo-fastest-1.1.weights"
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    proc = run_cli(
        [*command, str(images_dir / "astronaut.png")],
        {"OBJDET_MODELS": "yolo", "OBJDET_WEIGHTS_DIR": str(flipped_yolo)},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr
    assert f"yolo weights file {target} does not match the weights manifest entry" in err
    assert "expected sha256 1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890" in err
    assert f"actual {actual}" in err and "weights fetch" in err
    assert proc.stdout.strip() == ""  # no detections from the damaged file


def test_official_ssd_name_on_another_state_dict_is_refused(tmp_path):
    pytest.importorskip("torch")
    from support.ssd_weights import make_state_dict

    path = make_state_dict(
        "ssdlite320_mobilenet_v3_large", tmp_path / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    )
    settings = Settings.from_env({"OBJDET_MODELS": "ssd", "OBJDET_WEIGHTS_DIR": str(tmp_path)})
    with pytest.raises(
        ModelLoadError,
        match=rf"ssd weights file {path} does not match .* expected sha256 a79551df, "
        r"actual [0-9a-f]{64}\. .*give your own file a name",
    ):
        registry.build_detector("ssd", settings)


def test_manifest_check_hashes_once_per_unchanged_file(yolo_dir, tmp_path):
    path = tmp_path / "coco.names"
    path.write_bytes((yolo_dir / "coco.names").read_bytes())
    first = registry.checked_file(path, "names")
    assert first.state == OK and registry.checked_file(path, "names") is first  # cached, not hashed again
    path.write_bytes(path.read_bytes() + b"x\n")  # changed (size, mtime): checked again
    assert registry.checked_file(path, "names").state == "corrupt"


def test_names_file_not_utf8_names_the_file(tmp_path):
    names = tmp_path / "latin1.names"
    names.write_bytes("person\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{names}: names file is not UTF-8 text \(byte 0xe9 at offset 10\)"):
        read_names(names)


def test_names_file_of_10_mb_is_refused_without_reading_it(tmp_path):
    names = tmp_path / "huge.names"
    with open(names, "wb") as fh:
        fh.truncate(10 * 2**20)  # sparse: 10 MB of NULs
    with pytest.raises(ValueError, match=rf"{names}: names file is larger than {MAX_NAMES_BYTES:,} bytes"):
        read_names(names)


def test_names_problems_surface_through_the_detector(tmp_path):
    pytest.importorskip("onnx")
    import numpy as np
    from support.onnx_models import build_yolo_onnx

    from app.engine.detectors.yolo import YoloDetector

    model = build_yolo_onnx(tmp_path / "m.onnx", np.zeros((1, 5, 85), np.float32), 64)
    names = tmp_path / "bad.names"
    names.write_bytes(b"\xff\xfe\x00x")
    with pytest.raises(ModelLoadError, match=rf"YOLO names {names}: names file is not UTF-8 .*OBJDET_YOLO_NAMES"):
        YoloDetector(model, names=names, input_size=64)
    with pytest.raises(ModelLoadError, match=rf"YOLO names {tmp_path}: is a directory, not a names file"):
        YoloDetector(model, names=tmp_path, input_size=64)


def test_ssd_weights_pointing_at_a_directory(tmp_path):
    pytest.importorskip("torch")
    from app.engine.detectors.ssd import load_state_dict

    with pytest.raises(ModelLoadError, match=rf"SSD weights {tmp_path}: is a directory, not a state dict file"):
        load_state_dict(tmp_path)
    status = registry.model_status("ssd", Settings.from_env({"OBJDET_SSD_WEIGHTS": str(tmp_path)}), load=False)
    assert status.state == MISSING and f"weights {tmp_path} (is a directory, not a file)" in status.message


class RunsCode:
    """Pickles as a call to os.system: what a malicious .pth carries. It is never loaded here."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_not_loaded_and_says_why(tmp_path):
    torch = pytest.importorskip("torch")
    from app.engine.detectors.ssd import load_state_dict

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(3), "payload": RunsCode(marker)}, path)
    with pytest.raises(ModelLoadError) as err:
        load_state_dict(path)
    msg = str(err.value)
    assert msg.startswith(
        f"SSD weights {path}: not a plain state dict: it contains Python objects (it references posix.system)"
    )
    assert "loading them could run code, so it was NOT loaded" in msg and msg.endswith("at that file")
    assert not marker.exists()


def test_zip_bomb_state_dict_is_refused_before_torch_inflates_it(tmp_path):
    torch = pytest.importorskip("torch")
    from app.engine.detectors.ssd import SSDDetector, max_state_bytes

    small = tmp_path / "small.pth"
    torch.save({"weight": torch.zeros(4)}, small)
    bomb = tmp_path / "bomb.pth"
    limit = max_state_bytes("ssdlite320_mobilenet_v3_large")
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info))
        with out.open("small/data/1", "w", force_zip64=True) as fh:  # compresses ~1000:1
            chunk = bytes(1 << 20)
            for _ in range(limit // len(chunk) + 2):
                fh.write(chunk)
    assert bomb.stat().st_size < limit // 100
    with pytest.raises(
        ModelLoadError,
        match=rf"SSD weights {bomb}: its entries unpack to [\d,]+ bytes, more than "
        rf"the {limit:,} .*zip bomb.*NOT loaded",
    ):
        SSDDetector("ssdlite320_mobilenet_v3_large", bomb, device="cpu")


def test_catalog_architectures_match_torchvision():
    """Each SSD record of the catalog (builder, parameter count, first-level head key and anchors)
    against the torchvision model itself."""
    pytest.importorskip("torch")
    from torchvision.models import detection

    from app.engine.catalog import SSD_ARCHS

    for arch in SSD_ARCHS.values():
        state = getattr(detection, arch.builder)(weights=None, weights_backbone=None).state_dict()
        assert sum(t.numel() for t in state.values()) == arch.parameters, arch.name
        key, anchors = arch.first_level
        assert state[key].ndim == 4 and state[key].shape[0] == 91 * anchors, arch.name


def test_missing_reasons(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert missing_reason(tmp_path) == "is a directory, not a file"
    assert missing_reason(tmp_path / "absent.pth") == "file not found"
    assert missing_reason(tmp_path / "no" / "such" / "x.pth") == f"folder {tmp_path / 'no'} does not exist"
    assert missing_reason(afile / "x.pth") == f"{afile} is a file, not a folder"
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert missing_reason(tmp_path / "dangling") == f"is a broken symbolic link to {tmp_path / 'gone'}"


def test_verify_reports_symlinks_leaving_the_folder_and_a_bad_weights_dir(yolo_dir, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for f in yolo_dir.iterdir():
        (models / f.name).symlink_to(f)  # e.g. a volume pointing at a host path
    env = {"OBJDET_MODELS": "yolo", "OBJDET_WEIGHTS_DIR": str(models)}
    proc = run_cli(["weights", "verify"], env)
    # The content is right, but the volume holds only links: a container that mounts it (the server after
    # the init container) does not have their targets. Not ready, for `weights prepare` too (test_prepare).
    assert proc.returncode == 1, proc.stderr
    line = next(row for row in proc.stdout.splitlines() if "yolo-fastest-1.1.weights" in row)
    assert f"symbolic link to {yolo_dir / 'yolo-fastest-1.1.weights'}, outside its folder" in line and " OK " in line
    assert f"yolo  weights  link       {models / 'yolo-fastest-1.1.weights'} is a symbolic link to" in proc.stdout
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = run_cli(["weights", "verify"], {"OBJDET_MODELS": "yolo", "OBJDET_WEIGHTS_DIR": str(afile)})
    assert proc.returncode == 1 and f"OBJDET_WEIGHTS_DIR={afile} is a file, not a folder" in proc.stderr
    assert f"{afile} is a file, not a folder" in proc.stdout  # and each file says why it is missing
    proc = run_cli(["weights", "verify"], {"OBJDET_MODELS": "yolo", "OBJDET_WEIGHTS_DIR": str(tmp_path / "none")})
    assert proc.returncode == 1 and f"OBJDET_WEIGHTS_DIR={tmp_path / 'none'} does not exist" in proc.stderr


@pytest.mark.parametrize("quote", ["", '"', "'"])
def test_environment_values_with_spaces_and_quotes(tmp_path, quote):
    q = quote
    env = {
        name: f"  {q}{value}{q} "
        for name, value in {
            "OBJDET_MODELS": "ssd, yolo",
            "OBJDET_REQUIRED_MODELS": "yolo",
            "OBJDET_SSD_ARCH": "ssd300_vgg16",
            "OBJDET_WEIGHTS_DIR": str(tmp_path),
            "OBJDET_YOLO_WEIGHTS": str(tmp_path / "y.weights"),
            "OBJDET_YOLO_NAMES": str(tmp_path / "my.names"),
            "OBJDET_DEVICE": "CPU",
            "OBJDET_NUM_THREADS": "3",
            "OBJDET_MAX_IMAGE_PIXELS": "1000",
            "OBJDET_WEIGHTS_MODE": "fetch",
            "OBJDET_YOLO_INPUT_SIZE": "320",
        }.items()
    }
    s = Settings.from_env(env)
    assert s.models == ("ssd", "yolo") and s.required_models == ("yolo",) and s.ssd_arch == "ssd300_vgg16"
    assert s.weights_dir == tmp_path and s.ssd_weights == tmp_path / "ssd300_vgg16_coco-b556d3b4.pth"
    assert s.yolo_weights == tmp_path / "y.weights" and s.yolo_config == tmp_path / "y.cfg"
    assert s.yolo_names == tmp_path / "my.names" and s.device == "cpu" and s.num_threads == 3
    assert s.max_image_pixels == 1000 and s.weights_mode == "fetch" and s.yolo_input_size == 320
    assert Settings.from_env({"OBJDET_REQUIRED_MODELS": f"{q}{q}"}).required_models == ()


def test_yolo_weights_that_are_a_directory_or_under_a_missing_folder(tmp_path):
    from app.engine.detectors.yolo import YoloDetector

    folder = tmp_path / "model.weights"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match=rf"YOLO weights {folder}: is a directory, not a file\. Fetch"):
        YoloDetector(folder)
    deep = tmp_path / "gone" / "model.onnx"
    with pytest.raises(ModelLoadError, match=rf"YOLO weights {deep}: folder {tmp_path / 'gone'} does not exist"):
        YoloDetector(deep)


def test_verify_reports_a_darknet_size_mismatch_of_custom_files(yolo_dir, tmp_path):
    data = (yolo_dir / "yolo-fastest-1.1.weights").read_bytes()
    (tmp_path / "mine.weights").write_bytes(data[:-400])
    (tmp_path / "mine.cfg").write_bytes((yolo_dir / "yolo-fastest-1.1.cfg").read_bytes())
    env = {"OBJDET_MODELS": "yolo", "OBJDET_YOLO_WEIGHTS": str(tmp_path / "mine.weights")}
    proc = run_cli(["weights", "verify"], env)
    assert proc.returncode == 1
    assert f"mismatch   {tmp_path / 'mine.weights'} is 1,383,868 bytes, 400 bytes too short" in proc.stdout
    (tmp_path / "mine.weights").write_bytes(data)
    assert run_cli(["weights", "verify"], env).returncode == 0


def test_fifos_never_block_a_model_load(tmp_path):
    """A FIFO named like a model file would hang a plain read forever: each is refused by type."""
    from app.engine.detectors.darknet import DarknetError, parse_cfg

    for name in ("model.weights", "coco.names", "model.cfg"):
        os.mkfifo(tmp_path / name)
    assert missing_reason(tmp_path / "model.weights") == "is not a regular file (a FIFO, socket or device)"
    assert check_file(tmp_path / "model.weights").state == MISSING
    with pytest.raises(ValueError, match=rf"{tmp_path / 'coco.names'}: is not a regular file"):
        read_names(tmp_path / "coco.names")
    with pytest.raises(DarknetError, match=rf"{tmp_path / 'model.cfg'}: is not a regular file"):
        parse_cfg(tmp_path / "model.cfg")


@pytest.fixture(scope="module")
def seeded_ssd(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from support.ssd_weights import make_state_dict

    return make_state_dict("ssdlite320_mobilenet_v3_large", tmp_path_factory.mktemp("pth") / "seeded.pth")


@pytest.mark.parametrize(
    "kind,message",
    [
        ("empty", r"the file is empty \(0 bytes\)"),
        (
            "text",
            (
                r"not a torch state dict: its pickle data cannot be read \(Unsupported operand 123\); the file is "
                r"damaged or not a \.pth\."
            ),
        ),
        (
            "half",
            (
                r"not a loadable torch state dict \(PytorchStreamReader failed reading zip archive: failed finding "
                r"central directory\); the file is truncated, damaged or not a \.pth\. Re-fetch"
            ),
        ),
        ("few-bytes-short", r"not a loadable torch state dict \(.*\); the file is truncated"),
        ("list", r"holds a list, not a state dict of tensors"),
    ],
)
def test_damaged_or_foreign_pth_files_are_one_whole_message(seeded_ssd, tmp_path, kind, message):
    import torch

    from app.engine.detectors.ssd import load_state_dict

    data = seeded_ssd.read_bytes()
    path = tmp_path / f"{kind}.pth"
    if kind == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(
            {
                "empty": b"",
                "text": b'{"weights": [1, 2]}',
                "half": data[: len(data) // 2],
                "few-bytes-short": data[:-10],
            }[kind]
        )
    with pytest.raises(ModelLoadError, match=rf"^SSD weights {path}: {message}") as err:
        load_state_dict(path)
    assert "\n" not in str(err.value) and "If you are seeing" not in str(err.value)  # no cut torch paragraph
