"""Fixtures of the Kubernetes validation gate: each kustomization rendered once per session."""

from __future__ import annotations

import pytest
import yaml

from .helpers import BATCH_EXAMPLE, DEPLOYABLE, OVERLAYS, REPO, TARGETS, VARIANT, Render, kustomize_build, make_variant


class Renders:
    """Renders each target once, on first use; a failed render fails every test that needs it."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._done: dict[str, Render | str] = {}

    def path(self, name: str):
        if name == "base":
            return REPO / "base"
        if name == BATCH_EXAMPLE:
            return REPO / "docs" / "batch-example"
        if name in OVERLAYS:
            return REPO / "overlays" / name
        assert name == VARIANT, name
        return make_variant(self._tmp.mktemp("kustomize"))

    def __getitem__(self, name: str) -> Render:
        if name not in self._done:
            try:
                text = kustomize_build(self.path(name))
                self._done[name] = Render(name, text, [d for d in yaml.safe_load_all(text) if d])
            except AssertionError as exc:
                self._done[name] = str(exc)
        result = self._done[name]
        if isinstance(result, str):
            pytest.fail(f"render of {name} failed: {result}", pytrace=False)
        return result


@pytest.fixture(scope="session")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Renders:
    return Renders(tmp_path_factory)


@pytest.fixture(params=TARGETS)
def render(request: pytest.FixtureRequest, renders: Renders) -> Render:
    return renders[request.param]


@pytest.fixture(params=DEPLOYABLE)
def deployable(request: pytest.FixtureRequest, renders: Renders) -> Render:
    return renders[request.param]
