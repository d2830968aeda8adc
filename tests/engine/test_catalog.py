"""app/engine/catalog.py is the one place a model family is described: what derives from it agrees with it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.engine.catalog import FAMILIES, SSD_ARCHS, YOLO_FORMATS, family, published_files, yolo_format
from app.engine.config import ENV_VARS, MODEL_FAMILIES, Settings
from app.engine.detectors.base import Detector
from app.engine.weights import MANIFEST


def test_manifest_is_every_published_file_of_every_family():
    expected = {f.name: (fam.name, f.url, f.sha256, f.size) for fam in FAMILIES.values() for f in fam.files}
    assert {n: (e.model, e.url, e.sha256, e.size) for n, e in MANIFEST.items()} == expected
    assert set(published_files()) == set(MANIFEST)
    assert {a.weights.name for a in SSD_ARCHS.values()} <= {n for n, e in MANIFEST.items() if e.model == "ssd"}


def test_environment_contract_holds_each_familys_variables_once():
    declared = [v.name for fam in FAMILIES.values() for v in fam.env_vars]
    assert len(declared) == len(set(declared))
    assert set(declared) <= set(ENV_VARS)
    assert tuple(FAMILIES) == MODEL_FAMILIES
    assert ENV_VARS["OBJDET_SSD_ARCH"].allowed == " / ".join(f"`{a}`" for a in SSD_ARCHS)


def test_cli_model_choices_come_from_the_catalog():
    from app.cli.parser import build_parser as _parser

    for command in ("detect", "bench", "batch"):
        sub = _parser()._subparsers._group_actions[0].choices[command]
        (model,) = [a for a in sub._actions if a.dest == "model"]
        assert tuple(model.choices) == (*FAMILIES, "all"), command


def test_yolo_formats_by_suffix():
    assert {yolo_format(f"m{suffix.upper()}") for suffix in YOLO_FORMATS} == set(YOLO_FORMATS.values())
    with pytest.raises(ValueError, match=r"'m\.pt' has suffix '\.pt'; allowed: \.weights \(Darknet\) or \.onnx"):
        yolo_format("m.pt")


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match=r"unknown model 'detr'; known: ssd, yolo"):
        family("detr")


def test_model_files_by_role_come_from_each_family(tmp_path):
    settings = Settings.from_env({"OBJDET_WEIGHTS_DIR": str(tmp_path)})
    assert settings.model_files("ssd") == {"weights": tmp_path / SSD_ARCHS[settings.ssd_arch].weights.name}
    assert settings.model_files("yolo") == {
        "weights": tmp_path / "yolo-fastest-1.1.weights",
        "config": tmp_path / "yolo-fastest-1.1.cfg",
    }


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_names_a_detector_class_of_the_one_interface(name):
    if name == "ssd":
        pytest.importorskip("torch")
    cls = FAMILIES[name].detector_class()
    assert issubclass(cls, Detector) and cls.name == name
    assert not getattr(cls, "__abstractmethods__", None), f"{cls.__name__} leaves {cls.__abstractmethods__} open"


def test_registry_builds_each_family_through_the_catalog(yolo_dir):
    from app.engine import registry

    settings = Settings.from_env(
        {
            "OBJDET_MODELS": "yolo",
            "OBJDET_YOLO_WEIGHTS": str(yolo_dir / "yolo-fastest-1.1.weights"),
            "OBJDET_YOLO_NAMES": str(yolo_dir / "coco.names"),
        }
    )
    detector = registry.build_detector("yolo", settings)
    assert type(detector) is FAMILIES["yolo"].detector_class() and detector.layout == "darknet"
    with pytest.raises(ValueError, match="unknown model 'detr'"):
        registry.build_detector("detr", settings)


def test_config_and_catalog_import_only_the_standard_library():
    """The deployment tests read ENV_VARS without the app's dependencies (and YOLO-only runs stay light)."""
    code = (
        "import sys, app.engine.config, app.engine.catalog; "
        "print([m for m in ('numpy', 'cv2', 'torch', 'PIL', 'streamlit') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
