"""app/engine/detectors/darknet.py: the cfg parser, the parameter count (OpenCV's own Darknet importer is the golden
value), the header, and the size check that refuses truncated weights or the cfg of another model.
The end-to-end cases go through YoloDetector and the real ``detect`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from conftest import ASSETS, REPO

from app.engine.detectors.darknet import (
    DarknetError,
    check_weights_size,
    count_parameters,
    parse_cfg,
    parse_cfg_text,
    parse_header,
    read_header,
    size_problem,
)

OPENCV_MAJOR = int(cv2.__version__.split(".")[0])
needs_cv4 = pytest.mark.skipif(OPENCV_MAJOR >= 5, reason=f"OpenCV {cv2.__version__} has no Darknet importer")
MODELS = ("yolo-fastest-1.1", "yolo-fastest-1.1-xl")


def files(model: str) -> tuple[Path, Path]:
    folder = ASSETS / "weights" / model
    if not (folder / f"{model}.weights").exists():
        pytest.skip(f"{folder} absent (set OBJDET_SHARED_DIR)")
    return folder / f"{model}.cfg", folder / f"{model}.weights"


def test_parser_sections_comments_and_whitespace():
    text = """# a comment line
    [net]
    width = 320   # trailing comment
    height=320
    ; another comment

    [convolutional]
    filters=8
      size =3
    anchors = 1,2,  3,4
    [ yolo ]
    """
    sections = parse_cfg_text(text)
    assert [s.type for s in sections] == ["net", "convolutional", "yolo"]
    assert sections[0].options == {"width": "320", "height": "320"}
    assert sections[1].options == {"filters": "8", "size": "3", "anchors": "1,2,  3,4"}
    assert sections[1].ints("anchors") == [1, 2, 3, 4] and sections[1].int("stride", 1) == 1
    assert sections[1].line == 7


@pytest.mark.parametrize(
    "text,message",
    [
        ("", r"x\.cfg: no sections: an empty file or not a Darknet \.cfg"),
        ("\n# only comments\n", r"x\.cfg: no sections"),
        (
            "[convolutional]\nfilters=8\n",
            (
                r"x\.cfg: the first section is \[convolutional\] at line 1; a Darknet \.cfg "
                r"starts with \[net\]"
            ),
        ),
        ("width=320\n[net]\n", r"x\.cfg: line 1: option 'width=320' before the first \[section\]"),
        ("[net]\nthis is not an option\n", r"x\.cfg: line 2: 'this is not an option' is neither"),
        ("[net\n", r"x\.cfg: line 1: '\[net' is not a \[section\] header"),
    ],
)
def test_parser_refuses_what_is_not_a_cfg(text, message):
    with pytest.raises(DarknetError, match=message):
        parse_cfg_text(text, "x.cfg")


def test_cfg_files_that_are_not_text_or_too_big(tmp_path):
    binary = tmp_path / "bin.cfg"
    binary.write_bytes(b"[net]\n\xff\xfe\x00")
    with pytest.raises(DarknetError, match=rf"{binary}: not a text file \(byte 6 is not UTF-8\)"):
        parse_cfg(binary)
    huge = tmp_path / "huge.cfg"
    huge.write_bytes(b"[net]\n" + b"#" * (1 << 20))
    with pytest.raises(DarknetError, match=rf"{huge}: Darknet \.cfg is larger than 1,048,576 bytes"):
        parse_cfg(huge)
    with pytest.raises(DarknetError, match=rf"{tmp_path / 'absent.cfg'}: cannot read the Darknet \.cfg"):
        parse_cfg(tmp_path / "absent.cfg")


def test_bad_values_name_file_section_and_line(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nchannels=3\n[convolutional]\nfilters=banana\n")
    with pytest.raises(DarknetError, match=rf"{cfg}: \[convolutional\] at line 3: filters='banana' is not an integer"):
        count_parameters(parse_cfg(cfg), str(cfg))
    cfg.write_text("[net]\n[route]\nlayers=-4\n")
    with pytest.raises(DarknetError, match=r"\[route\] at line 2: layers=-4 points outside"):
        count_parameters(parse_cfg(cfg), str(cfg))
    cfg.write_text("[net]\n[lstm]\n")
    with pytest.raises(DarknetError, match=r"layer type \[lstm\] is not supported"):
        count_parameters(parse_cfg(cfg), str(cfg))


def test_parameter_count_of_a_hand_computed_network():
    """conv 3->8 3x3 with BN, depthwise 8 groups, route concat, 1x1 conv on 16 channels, shortcut."""
    sections = parse_cfg_text("""[net]
channels=3
height=32
width=32
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
[convolutional]
filters=8
groups=8
size=3
pad=1
[route]
layers=-1,-2
[convolutional]
filters=4
size=1
[maxpool]
size=2
stride=2
[upsample]
stride=2
[shortcut]
from=-3
[route]
layers=-1
groups=2
group_id=1
[convolutional]
filters=6
size=1
[yolo]
""")
    want = (8 + 3 * 8 + 8 * 3 * 3 * 3) + (8 + 8 * 1 * 3 * 3) + (4 + 4 * 16) + (6 + 6 * 2)
    assert count_parameters(sections) == want


@needs_cv4
@pytest.mark.parametrize("model", MODELS)
def test_parameter_count_equals_what_opencv_loads(model):
    """Golden value: the floats OpenCV's Darknet importer put into the layers (Region anchors excluded)."""
    cfg, weights = files(model)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    loaded = 0
    for name in net.getLayerNames():
        layer = net.getLayer(net.getLayerId(name))
        if layer.type != "Region":  # its blob holds the cfg's anchors, not file data
            loaded += sum(int(blob.size) for blob in layer.blobs)
    assert count_parameters(parse_cfg(cfg)) == loaded


@pytest.mark.parametrize("model", MODELS)
def test_shared_files_pass_the_size_check(model):
    cfg, weights = files(model)
    header = read_header(weights)
    assert (header.major, header.minor, header.size) == (0, 2, 20)  # version 0.2: int64 "seen"
    assert check_weights_size(weights, cfg) == (weights.stat().st_size - 20) // 4


def test_header_width_follows_the_version():
    old = (0).to_bytes(4, "little") + (1).to_bytes(4, "little") + (0).to_bytes(4, "little") + (7).to_bytes(4, "little")
    header = parse_header(old)
    assert (header.minor, header.seen, header.size) == (1, 7, 16)
    with pytest.raises(DarknetError, match=r"w: 15 bytes; too short for its 16-byte Darknet \.weights header"):
        parse_header(old[:15], "w")


def test_every_truncation_length_is_refused():
    """Fuzz-style: all 1,384,268 shorter lengths of the real yolo-fastest-1.1.weights are refused."""
    cfg, weights = files("yolo-fastest-1.1")
    data = weights.read_bytes()
    parameters = count_parameters(parse_cfg(cfg))
    header = parse_header(data[:20])
    assert size_problem(len(data), header.size, parameters) is None
    for length in range(header.size):  # the header itself is cut
        with pytest.raises(DarknetError, match="too short"):
            parse_header(data[:length])
    refused = sum(size_problem(length, header.size, parameters) is not None for length in range(header.size, len(data)))
    assert refused == len(data) - header.size
    assert "1 bytes too short" in size_problem(len(data) - 1, header.size, parameters)
    assert "4 bytes too long" in size_problem(len(data) + 4, header.size, parameters)


def cut(src: Path, dest: Path, length: int, extra: bytes = b"") -> Path:
    dest.write_bytes(src.read_bytes()[:length] + extra)
    return dest


@needs_cv4
@pytest.mark.parametrize(
    "length,how",
    [
        (0, "too short for a Darknet"),
        (10, "too short for a Darknet"),
        (19, "too short for its 20-byte"),
        (692_134, "692,134 bytes too short"),
        (1_384_267, "1 bytes too short"),
        (None, "4 bytes too long"),
    ],
)
def test_truncated_or_padded_weights_refused_by_the_detector(tmp_path, length, how):
    from app.engine.detectors.base import ModelLoadError
    from app.engine.detectors.yolo import YoloDetector

    cfg, weights = files("yolo-fastest-1.1")
    bad = cut(
        weights,
        tmp_path / "mine.weights",
        weights.stat().st_size if length is None else length,
        b"\0\0\0\0" if length is None else b"",
    )
    with pytest.raises(ModelLoadError, match=rf"{bad}.*{how}"):
        YoloDetector(bad, cfg)


@needs_cv4
def test_cfg_of_the_other_model_is_refused(tmp_path):
    from app.engine.detectors.base import ModelLoadError
    from app.engine.detectors.yolo import YoloDetector

    cfg_xl, _ = files("yolo-fastest-1.1-xl")
    _, weights = files("yolo-fastest-1.1")
    with pytest.raises(ModelLoadError) as err:
        YoloDetector(weights, cfg_xl)
    msg = str(err.value)
    assert f"{weights} is 1,384,268 bytes, 2,309,696 bytes too short for its .cfg: expected 3,693,964" in msg
    assert f"the .cfg {cfg_xl} belongs to another model" in msg


@needs_cv4
def test_cfg_edited_to_another_class_count_is_a_load_error_not_a_crash(tmp_path):
    from app.engine.detectors.base import ModelLoadError
    from app.engine.detectors.yolo import YoloDetector

    cfg, weights = files("yolo-fastest-1.1")
    edited = tmp_path / "edited.cfg"
    edited.write_text(cfg.read_text().replace("classes=80", "classes=20"))
    with pytest.raises(
        ModelLoadError,
        match=rf"{weights} with config {edited}: OpenCV cannot run it .*classes= "
        r"and filters= agree",
    ):
        YoloDetector(weights, edited)


@needs_cv4
def test_names_with_the_wrong_class_count_is_a_load_error(tmp_path):
    from app.engine.detectors.base import ModelLoadError
    from app.engine.detectors.yolo import YoloDetector

    cfg, weights = files("yolo-fastest-1.1")
    names = tmp_path / "twenty.names"
    names.write_text("".join(f"thing{i}\n" for i in range(20)))
    with pytest.raises(
        ModelLoadError,
        match=rf"{weights}: no output has the shape of \(N, 25\) .* for 20 classes.*"
        rf"OBJDET_YOLO_NAMES .*20 names from {names}",
    ):
        YoloDetector(weights, cfg, names)


def run_detect(env: dict, *images) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "app", "detect", "--model", "yolo", *map(str, images)],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_cv4
def test_detect_cli_refuses_truncated_weights_and_mismatched_cfg(tmp_path, images_dir):
    cfg, weights = files("yolo-fastest-1.1")
    half = cut(weights, tmp_path / "half.weights", weights.stat().st_size // 2)
    env = {"OBJDET_MODELS": "yolo", "OBJDET_YOLO_WEIGHTS": str(half), "OBJDET_YOLO_CONFIG": str(cfg)}
    proc = run_detect(env, images_dir / "astronaut.png")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{half} is 692,134 bytes, 692,134 bytes too short" in proc.stderr
    cfg_xl, _ = files("yolo-fastest-1.1-xl")
    proc = run_detect(
        env | {"OBJDET_YOLO_WEIGHTS": str(weights), "OBJDET_YOLO_CONFIG": str(cfg_xl)}, images_dir / "astronaut.png"
    )
    assert proc.returncode == 1 and "2,309,696 bytes too short" in proc.stderr and str(cfg_xl) in proc.stderr
