"""``python -m app serve`` as a real process on loopback: health 200 means the models are loaded."""

from __future__ import annotations

import http.client
import subprocess
import sys

import pytest
from support.serving import REPO, Server, health

pytestmark = pytest.mark.server

# overlays/minikube's STREAMLIT_SERVER_BASE_URL_PATH: the tutorial ends with http://<minikube ip>:30007/<this>
TUTORIAL_PATH = "kubernetes-object-detection"


@pytest.fixture(scope="module")
def ssd_file(tmp_path_factory):
    pytest.importorskip("torch")
    from support.ssd_weights import make_state_dict

    return make_state_dict("ssdlite320_mobilenet_v3_large", tmp_path_factory.mktemp("srv") / "ssdlite.pth")


def test_health_only_after_models_loaded(yolo_env, ssd_file):
    server = Server({**yolo_env, "OBJDET_MODELS": "ssd,yolo", "OBJDET_SSD_WEIGHTS": str(ssd_file)})
    try:
        server.wait_healthy()
        text = server.text()
        before = [p for p in server.polls if p[1] != 200]
        assert before, "health must not answer 200 before the models are loaded"
        assert "ssd: loaded and warmed" in text and "yolo: loaded and warmed" in text
        first_ok = next(p for p in server.polls if p[1] == 200)
        ready_line = next(i for i, line in enumerate(server.output) if "models ready" in line)
        assert ready_line < first_ok[2]  # the "models ready" line was logged before health turned 200
        assert health(server.base + "/") == 200
        assert health(server.base + "/_stcore/metrics") == 404  # Streamlit's own metrics: closed
    finally:
        server.stop()


def test_base_url_path_and_optional_model(yolo_env, tmp_path):
    env = {
        **yolo_env,
        "OBJDET_MODELS": "ssd,yolo",
        "OBJDET_REQUIRED_MODELS": "yolo",
        "OBJDET_SSD_WEIGHTS": str(tmp_path / "absent.pth"),
    }
    server = Server(env, base_path=TUTORIAL_PATH)
    try:
        server.wait_healthy()
        assert "ssd: not available (missing: " in server.text() and "the app starts without it" in server.text()
        assert health(f"http://127.0.0.1:{server.port}/{TUTORIAL_PATH}/_stcore/health") == 200
        # The tutorial prints the URL without a trailing slash: Streamlit redirects it to the app's page.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/{TUTORIAL_PATH}", headers={"Host": "192.168.49.2:30007"})
        answer = conn.getresponse()
        assert answer.status in (301, 302, 307, 308), answer.status
        assert answer.getheader("Location") == f"http://192.168.49.2:30007/{TUTORIAL_PATH}/"
        assert health(f"http://127.0.0.1:{server.port}/{TUTORIAL_PATH}") == 200  # urllib follows it
        assert health(f"http://127.0.0.1:{server.port}/") == 404  # nothing outside the base path
    finally:
        server.stop()


def test_missing_required_weights_exit_non_zero_naming_the_file(yolo_env, tmp_path):
    import os

    missing = tmp_path / "nowhere" / "ssd.pth"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBJDET_", "STREAMLIT_"))}
    env.update(
        yolo_env, OBJDET_MODELS="ssd,yolo", OBJDET_SSD_WEIGHTS=str(missing), STREAMLIT_SERVER_PORT="1"
    )  # would fail to bind: it must never get that far
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())  # the paragraph is wrapped
    assert "required model 'ssd' is missing" in err and str(missing) in err and "weights fetch" in err


def test_invalid_configuration_exits_2(yolo_env):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJDET_")} | yolo_env | {"OBJDET_DEVICE": "npu"}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "OBJDET_DEVICE='npu'" in proc.stderr


@pytest.fixture
def broken_yolo(yolo_dir, tmp_path):
    """Yolo-Fastest weights cut in half, under a name that is not in the manifest (the size check refuses it)."""
    half = tmp_path / "half.weights"
    data = (yolo_dir / "yolo-fastest-1.1.weights").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    return {
        "OBJDET_YOLO_WEIGHTS": str(half),
        "OBJDET_YOLO_CONFIG": str(yolo_dir / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(yolo_dir / "coco.names"),
    }


def test_broken_optional_model_is_reported_while_the_other_serves(broken_yolo, ssd_file):
    env = {
        **broken_yolo,
        "OBJDET_MODELS": "ssd,yolo",
        "OBJDET_REQUIRED_MODELS": "",
        "OBJDET_SSD_WEIGHTS": str(ssd_file),
        "OBJDET_NUM_THREADS": "1",
    }
    server = Server(env)
    try:
        server.wait_healthy()
        text = server.text()
        assert "ssd: loaded and warmed" in text
        yolo_line = next(line for line in text.splitlines() if line.startswith("[objdet] yolo:"))
        assert "yolo: not available (failed: " in yolo_line and broken_yolo["OBJDET_YOLO_WEIGHTS"] in yolo_line
        assert "692,134 bytes too short" in yolo_line
        cpu_line = next(line for line in text.splitlines() if "[objdet] CPUs: " in line)
        assert "1 threads per inference" in cpu_line and "inferences at once" in cpu_line
        assert health(server.base + "/") == 200
    finally:
        server.stop()


def test_broken_required_model_exits_1_with_the_paragraph(broken_yolo):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBJDET_", "STREAMLIT_"))}
    env.update(broken_yolo, OBJDET_MODELS="yolo", STREAMLIT_SERVER_PORT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert "objdet: cannot start: required model 'yolo' is failed." in err
    assert f"{broken_yolo['OBJDET_YOLO_WEIGHTS']} is 692,134 bytes, 692,134 bytes too short" in err
    assert "CPUs: " in err


def test_weights_dir_that_is_a_file_is_reported_at_start_up(yolo_env, tmp_path):
    import os

    afile = tmp_path / "models"
    afile.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBJDET_", "STREAMLIT_"))}
    env.update(OBJDET_MODELS="ssd,yolo", OBJDET_WEIGHTS_DIR=str(afile), STREAMLIT_SERVER_PORT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert f"warning: OBJDET_WEIGHTS_DIR={afile} is a file, not a folder" in err
    assert f"{afile} is a file, not a folder" in err.split("cannot start", 1)[1]


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("STREAMLIT_SERVER_PORT", "abc", "(env var: 'STREAMLIT_SERVER_PORT'): 'abc' is not a valid integer"),
        ("STREAMLIT_SERVER_PORT", "70000", "STREAMLIT_SERVER_PORT=70000: a TCP port is between 1 and 65535"),
        ("STREAMLIT_SERVER_MAX_UPLOAD_SIZE", "lots", "(env var: 'STREAMLIT_SERVER_MAX_UPLOAD_SIZE'): 'lots'"),
    ],
)
def test_a_bad_streamlit_setting_is_a_configuration_error_before_the_models_load(yolo_env, variable, value, words):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBJDET_", "STREAMLIT_"))}
    env.update(yolo_env, **{variable: value})
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("configuration error: ") and words in proc.stderr
    assert "loaded and warmed" not in proc.stderr  # checked with the other settings, before any model


def test_browsers_get_no_error_details():
    """serve's default hides an uncaught exception's type, message and traceback (server paths) from browsers;
    checked with Streamlit's own rule for the value (its legacy "false" still shows the traceback)."""
    from streamlit import config
    from streamlit.elements.exception import _error_detail_visibility

    from app.cli.serve import STREAMLIT_DEFAULTS

    value = STREAMLIT_DEFAULTS["STREAMLIT_CLIENT_SHOW_ERROR_DETAILS"]
    config.set_option("client.showErrorDetails", value)
    try:
        seen = _error_detail_visibility(apply_show_error_details=True)
        assert (seen.show_message, seen.show_trace, seen.show_type) == (False, False, False), value
    finally:
        config.set_option("client.showErrorDetails", "full")
