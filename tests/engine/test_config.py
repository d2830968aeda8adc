"""Configuration from the environment: defaults, validation messages, the table in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.engine.config import ENV_VARS, REPO_ROOT, ConfigError, Settings

CONFIGURATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults():
    s = Settings.from_env({})
    assert s.models == ("ssd", "yolo") and s.required_models == ("ssd", "yolo")
    assert s.ssd_arch == "ssdlite320_mobilenet_v3_large"
    assert s.ssd_weights == REPO_ROOT / "models" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    assert s.yolo_weights == REPO_ROOT / "models" / "yolo-fastest-1.1.weights"
    assert s.yolo_config == REPO_ROOT / "models" / "yolo-fastest-1.1.cfg"
    assert s.max_image_pixels == 40_000_000 and s.device == "auto" and s.num_threads >= 1


def test_weights_dir_and_arch_pick_default_files(tmp_path):
    s = Settings.from_env({"OBJDET_WEIGHTS_DIR": str(tmp_path), "OBJDET_SSD_ARCH": "ssd300_vgg16"})
    assert s.ssd_weights == tmp_path / "ssd300_vgg16_coco-b556d3b4.pth"
    (tmp_path / "coco.names").write_text("person\n")
    assert Settings.from_env({"OBJDET_WEIGHTS_DIR": str(tmp_path)}).yolo_names == tmp_path / "coco.names"


def test_onnx_needs_no_config():
    s = Settings.from_env({"OBJDET_YOLO_WEIGHTS": "/m/yolov8n.onnx"})
    assert s.yolo_format == "onnx" and s.yolo_config is None


@pytest.mark.parametrize(
    "env,pattern",
    [
        ({"OBJDET_MODELS": "ssd,rcnn"}, r"OBJDET_MODELS='ssd,rcnn': unknown model rcnn; allowed: ssd, yolo"),
        ({"OBJDET_MODELS": ","}, r"OBJDET_MODELS.*enables no model"),
        ({"OBJDET_SSD_ARCH": "ssd512"}, r"OBJDET_SSD_ARCH='ssd512' is not supported; allowed: ssdlite320"),
        ({"OBJDET_YOLO_WEIGHTS": "/m/model.pt"}, r"OBJDET_YOLO_WEIGHTS: .*model\.pt.*allowed: \.weights.*\.onnx"),
        ({"OBJDET_YOLO_INPUT_SIZE": "300"}, r"OBJDET_YOLO_INPUT_SIZE='300' must be a multiple of 32"),
        ({"OBJDET_YOLO_INPUT_SIZE": "big"}, r"OBJDET_YOLO_INPUT_SIZE='big' is not an integer"),
        ({"OBJDET_DEVICE": "tpu"}, r"OBJDET_DEVICE='tpu' is not supported; allowed: auto, cpu, cuda"),
        ({"OBJDET_NUM_THREADS": "0"}, r"OBJDET_NUM_THREADS='0' is out of range; allowed: 1-256"),
        ({"OBJDET_MAX_IMAGE_PIXELS": "-5"}, r"OBJDET_MAX_IMAGE_PIXELS='-5' is out of range"),
        (
            {"OBJDET_MODELS": "yolo", "OBJDET_REQUIRED_MODELS": "ssd"},
            r"OBJDET_REQUIRED_MODELS='ssd': ssd is not enabled",
        ),
        (
            {"OBJDET_YOLO_WEIGHTS": "/m/a.onnx", "OBJDET_YOLO_CONFIG": "/m/a.cfg"},
            r"OBJDET_YOLO_CONFIG=.*only for Darknet",
        ),
    ],
)
def test_invalid_values_name_the_variable(env, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Settings.from_env(env)


def test_invalid_value_fails_cli_at_start_up(monkeypatch, capsys):
    from app.cli.main import main

    monkeypatch.setenv("OBJDET_DEVICE", "gpu")
    assert main(["weights", "verify"]) == 2
    assert "OBJDET_DEVICE='gpu'" in capsys.readouterr().err


def test_required_models_may_be_empty():
    assert Settings.from_env({"OBJDET_REQUIRED_MODELS": ""}).required_models == ()


def test_docs_document_every_variable_in_one_table():
    text = CONFIGURATION_DOC.read_text()
    rows = re.findall(r"^\| `(OBJDET_[A-Z_]+)` \|", text, re.M)
    assert sorted(rows) == sorted(ENV_VARS), "docs/configuration.md's table and app/engine/config.py disagree"


def fake_cgroup(root: Path, files: dict[str, str]) -> Path:
    """Real files in the layout the kernel uses, in a temp folder (the parser reads them as it would /sys)."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def own_cgroup(root: Path, line: str) -> Path:
    path = root / "self-cgroup"
    path.write_text(line)
    return path


@pytest.mark.parametrize(
    "files,self_line,want",
    [
        ({"cpu.max": "200000 100000\n"}, "0::/\n", (2, "cgroup quota 200000/100000")),
        ({"cpu.max": "150000 100000\n"}, "0::/\n", (2, "cgroup quota 150000/100000")),  # 1.5 CPUs round up
        ({"cpu.max": "50000 100000\n"}, "0::/\n", (1, "cgroup quota 50000/100000")),  # at least 1
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # no limit
        ({"kubepods/pod1/cpu.max": "100000 100000\n"}, "0::/kubepods/pod1\n", (1, "cgroup quota 100000/100000")),
        (
            {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "",
            (1, "cgroup quota 100000/100000"),
        ),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, "", None),  # v1: none
        ({"cpu.max": "banana\n"}, "0::/\n", None),  # malformed: ignored
        ({}, "", None),  # no cgroup files at all
    ],
)
def test_cpu_budget_reads_the_cgroup_quota(tmp_path, files, self_line, want):
    import os

    from app.ops.cpus import cpu_budget

    root = fake_cgroup(tmp_path / "cg", files)
    got = cpu_budget(root, own_cgroup(tmp_path, self_line))
    unlimited = len(os.sched_getaffinity(0))
    if want is None or want[0] >= unlimited:  # the quota only wins when it is the smallest
        assert got[0] == unlimited and got[1] in ("CPU affinity", "CPU count")
    else:
        assert got == want


def test_num_threads_default_and_inference_slots_follow_the_budget(tmp_path, monkeypatch):
    from app.engine import registry
    from app.ops import cpus

    monkeypatch.setattr(cpus, "CGROUP_ROOT", fake_cgroup(tmp_path / "cg", {"cpu.max": "100000 100000\n"}))
    monkeypatch.setattr(cpus, "SELF_CGROUP", own_cgroup(tmp_path, "0::/\n"))
    assert cpus.cpu_budget() == (1, "cgroup quota 100000/100000")
    settings = Settings.from_env({})
    assert settings.num_threads == 1
    assert registry.inference_slot_count(Settings.from_env({"OBJDET_NUM_THREADS": "1"})) == 1
