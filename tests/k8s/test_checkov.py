"""checkov on the rendered output of each overlay (and prod with every component): zero failed checks.

checkov pins many libraries of its own, so it lives in a separate environment: `$OBJDET_CHECKOV`, else
`<repo>/.venv-tools/bin/checkov` (`python3 -m venv .venv-tools && .venv-tools/bin/pip install
checkov==3.3.30`, the `policy` extra of pyproject.toml). Without it these tests skip, visibly.

Each skip is a `checkov.io/skipN: CKV_ID=reason` annotation on the object, next to the field it is
about (no skip list in a config file); the tests require a reason and an explicit allow-list.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .helpers import CHECKOV_ENV, DEPLOYABLE, REPO

# Every check the manifests skip, and why (the reasons themselves sit in the annotations).
ALLOWED_SKIPS = {
    "CKV_K8S_15",  # imagePullPolicy Always: IfNotPresent with immutable tags; minikube's loaded images
    "CKV_K8S_43",  # image digest: CI pins it with `kustomize edit set image` at release time
}


def checkov_bin() -> Path:
    path = Path(CHECKOV_ENV) if CHECKOV_ENV else REPO / ".venv-tools" / "bin" / "checkov"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"checkov not found at {path} (set OBJDET_CHECKOV or create .venv-tools: "
            "python3 -m venv .venv-tools && .venv-tools/bin/pip install checkov==3.3.30)"
        )
    return path


@pytest.fixture(scope="session")
def checkov_results(renders, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One checkov run over all rendered overlays; results by render name."""
    binary = checkov_bin()
    folder = tmp_path_factory.mktemp("checkov")
    for name in DEPLOYABLE:
        (folder / f"{name}.yaml").write_text(renders[name].text)
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    proc = subprocess.run(
        [
            str(binary),
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--soft-fail",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=folder,
    )
    assert proc.returncode == 0, f"checkov failed to run (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1 and reports[0].get("check_type") == "kubernetes", proc.stdout[:2000]
    results = reports[0]["results"]
    assert reports[0]["summary"]["parsing_errors"] == 0, reports[0]["summary"]
    by_render: dict[str, dict[str, list]] = {
        n: {"passed_checks": [], "failed_checks": [], "skipped_checks": []} for n in DEPLOYABLE
    }
    for kind in by_render[DEPLOYABLE[0]]:
        for check in results.get(kind, []):
            by_render[Path(check["file_abs_path"]).stem][kind].append(check)
    return by_render


@pytest.fixture(params=DEPLOYABLE)
def checkov_result(request: pytest.FixtureRequest, checkov_results) -> tuple[str, dict[str, list]]:
    return request.param, checkov_results[request.param]


def _fmt(check: dict[str, Any]) -> str:
    return f"{check['check_id']} {check['check_name']}: {check['resource']}"


def test_checkov_has_no_failed_checks(checkov_result) -> None:
    name, result = checkov_result
    assert result["passed_checks"], f"checkov ran no checks on {name}"
    failed = [_fmt(c) for c in result["failed_checks"]]
    assert not failed, f"checkov on {name}: {len(failed)} failed\n" + "\n".join(failed)


def test_checkov_skips_are_annotated_with_reasons(checkov_result) -> None:
    name, result = checkov_result
    for check in result["skipped_checks"]:
        assert check["check_id"] in ALLOWED_SKIPS, f"{name}: unexpected skip {_fmt(check)}"
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) >= 20, f"{name}: skip {_fmt(check)} needs a reason, got {reason!r}"


def test_checkov_summary(checkov_results) -> None:
    """Prints checkov's numbers per render (shown with -rA or -s)."""
    lines = [
        f"{name}: passed {len(r['passed_checks'])}, failed {len(r['failed_checks'])}, "
        f"skipped {len(r['skipped_checks'])}"
        for name, r in checkov_results.items()
    ]
    print("checkov " + "; ".join(lines))
    assert all(not r["failed_checks"] for r in checkov_results.values())
