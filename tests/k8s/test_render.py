"""The kustomizations render cleanly and every rendered object is valid Kubernetes.

- `kubectl kustomize` (kustomize v5.8) renders base, each overlay and prod with all components,
  with nothing on stderr (the renders fixture asserts it).
- The kustomization files use no deprecated fields; overlays stay small.
- Every object validates with kubernetes-validate in strict mode (unknown fields rejected) for the
  oldest Kubernetes we support and the newest the package knows; custom resources (HTTPRoute,
  Envoy Gateway's BackendTrafficPolicy and SecurityPolicy, the Prometheus Operator's ServiceMonitor
  and PrometheusRule, and the Gateway and cert-manager
  Certificate examples in docs/kubernetes.md) validate against the JSON schemas in ../shared/schemas.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions

from .helpers import COMPONENTS, LAYERED_COMPONENTS, OVERLAYS, REPO, TARGETS, Render, require_shared

OLDEST_SUPPORTED = "1.30"
NEWEST = kubernetes_validate.latest_version()
VERSIONS = (OLDEST_SUPPORTED, NEWEST)
# Custom resources: validated against ../shared/schemas/<group>/<kind>_<version>.json.
CUSTOM_GROUPS = {"gateway.networking.k8s.io", "gateway.envoyproxy.io", "cert-manager.io", "monitoring.coreos.com"}

KUSTOMIZATIONS = [
    REPO / "base",
    *(REPO / "overlays" / o for o in OVERLAYS),
    *(REPO / p for p in LAYERED_COMPONENTS.values()),
    REPO / "docs" / "batch-example-start",
    *(REPO / "components" / c for c in (*COMPONENTS, *LAYERED_COMPONENTS)),
]
DEPRECATED_FIELDS = {
    "commonLabels": "use labels: with includeSelectors",
    "bases": "use resources:",
    "patchesStrategicMerge": "use patches:",
    "patchesJson6902": "use patches:",
    "vars": "use replacements:",
    "imageTags": "use images:",
}


def _kid(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_renders_without_warnings(render: Render) -> None:
    assert render.objects, f"{render.name} rendered nothing"
    for obj in render.objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=_kid)
def test_kustomization_uses_no_deprecated_fields(kdir: Path) -> None:
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    used = {f: why for f, why in DEPRECATED_FIELDS.items() if f in k}
    assert not used, f"{_kid(kdir)}: deprecated kustomize fields: {used}"
    if kdir.parent.name == "components":
        assert k["kind"] == "Component" and k["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
        # labels:/namespace: in a Component would rewrite every object of the overlay using it.
        assert "labels" not in k and "namespace" not in k, f"{_kid(kdir)}: a Component must not relabel the overlay"
    else:
        assert k["kind"] == "Kustomization"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_small_and_keeps_selectors(overlay: str) -> None:
    """An overlay: a kustomization, one env file, one or two patches; no selector labels."""
    kdir = REPO / "overlays" / overlay
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    assert k["resources"][0] == "../../base"
    assert 1 <= len(k.get("patches", [])) <= 2, "one or two patches per overlay"
    generators = k.get("configMapGenerator", [])
    assert len(generators) == 1 and generators[0]["behavior"] == "merge" and len(generators[0]["envs"]) == 1
    for entry in k.get("labels", []):
        assert not entry.get("includeSelectors"), "selectors are set once, in base"
    base = yaml.safe_load((REPO / "base" / "kustomization.yaml").read_text())
    selector_labels = [e for e in base["labels"] if e.get("includeSelectors")]
    assert selector_labels, "base sets the selector labels through labels: with includeSelectors"


def test_kubernetes_validate_knows_the_versions() -> None:
    known = {".".join(v.split(".")[:2]) for v in all_versions()}
    assert OLDEST_SUPPORTED in known, f"kubernetes-validate {kubernetes_validate.__version__} lacks {OLDEST_SUPPORTED}"


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_objects_validate_strictly(render: Render, version: str) -> None:
    errors = []
    for obj in render.objects:
        if obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message} (a custom resource? add its group to CUSTOM_GROUPS)")
    assert not errors, f"{render.name} against Kubernetes {version}:\n" + "\n".join(errors)


def test_custom_resources_validate_against_shared_schemas(renders) -> None:
    """HTTPRoute and the Envoy Gateway policies (components/) against ../shared/schemas."""
    schemas = require_shared("schemas")
    errors, seen = [], 0
    for target in TARGETS:
        for obj in renders[target].objects:
            if obj["apiVersion"].split("/")[0] not in CUSTOM_GROUPS:
                continue
            seen += 1
            group, version = obj["apiVersion"].split("/")
            path = schemas / group / f"{obj['kind'].lower()}_{version}.json"
            assert path.is_file(), f"no schema {path} for {obj['kind']}"
            validator = jsonschema.Draft7Validator(json.loads(path.read_text()))
            for err in validator.iter_errors(obj):
                errors.append(
                    f"{target}: {obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, err.path))}: {err.message}"
                )
    assert seen, "no custom resource rendered: is components/httproute in the prod-all-components variant?"
    assert not errors, "\n".join(errors)


def test_every_component_is_exercised(renders) -> None:
    """prod-all-components really contains each component's objects."""
    r = renders["prod-all-components"]
    kinds = {o["kind"] for o in r.objects}
    assert {
        "Job",
        "HTTPRoute",
        "HorizontalPodAutoscaler",
        "BackendTrafficPolicy",
        "SecurityPolicy",
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds, kinds
    listed = sorted(p.parent.name for p in (REPO / "components").glob("*/kustomization.yaml"))
    assert sorted([*COMPONENTS, *LAYERED_COMPONENTS]) == listed, (
        f"tests/k8s/helpers.py COMPONENTS + LAYERED_COMPONENTS {sorted([*COMPONENTS, *LAYERED_COMPONENTS])} "
        f"!= components/ {listed}"
    )
    for component, overlay in LAYERED_COMPONENTS.items():
        k = yaml.safe_load((REPO / overlay / "kustomization.yaml").read_text())
        assert f"../../components/{component}" in k["components"]


def documented_objects(kinds: set[str]) -> list[dict]:
    """The YAML examples in docs/kubernetes.md (```yaml blocks) of the given kinds."""
    doc = (REPO / "docs" / "kubernetes.md").read_text()
    found = []
    for block in re.findall(r"```yaml\n(.*?)```", doc, re.S):
        for obj in yaml.safe_load_all(block):
            if isinstance(obj, dict) and obj.get("kind") in kinds:
                found.append(obj)
    return found


def test_documented_gateway_and_certificate_validate() -> None:
    """The Gateway example (TLS from cert-manager) and its Certificate match their schemas, and the
    Gateway is the one the HTTPRoute attaches to, admitting routes from the overlays' namespaces."""
    schemas = require_shared("schemas")
    objs = documented_objects({"Gateway", "Certificate"})
    assert {o["kind"] for o in objs} == {"Gateway", "Certificate"}, "docs/kubernetes.md: a Gateway and a Certificate"
    for obj in objs:
        group, version = obj["apiVersion"].split("/")
        validator = jsonschema.Draft7Validator(
            json.loads((schemas / group / f"{obj['kind'].lower()}_{version}.json").read_text())
        )
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"docs/kubernetes.md {obj['kind']}: {errors}"
    (gateway,) = [o for o in objs if o["kind"] == "Gateway"]
    (cert,) = [o for o in objs if o["kind"] == "Certificate"]
    route = yaml.safe_load((REPO / "components" / "httproute" / "httproute.yaml").read_text())
    (parent,) = route["spec"]["parentRefs"]
    assert (gateway["metadata"]["name"], gateway["metadata"]["namespace"]) == (parent["name"], parent["namespace"])
    (listener,) = [x for x in gateway["spec"]["listeners"] if x["name"] == parent["sectionName"]]
    assert listener["protocol"] == "HTTPS" and listener["tls"]["mode"] == "Terminate"
    assert [r["name"] for r in listener["tls"]["certificateRefs"]] == [cert["spec"]["secretName"]]
    assert cert["metadata"]["namespace"] == gateway["metadata"]["namespace"], "the TLS Secret lives beside the Gateway"
    assert set(route["spec"]["hostnames"]) <= set(cert["spec"]["dnsNames"])
