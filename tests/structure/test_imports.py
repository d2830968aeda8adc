"""The package map of ``app/`` holds: imports only go down (cli -> page -> engine -> ops), and no module
imports itself back through others (no import circle). Read from the code with ``ast``: every import,
those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
# Higher floors may import lower ones, never the reverse; the same floor imports freely (without circles).
FLOORS = {"cli": 3, "page": 2, "engine": 1, "ops": 0}
MAX_TOP_LEVEL_MODULES = 12


def module_name(path: Path) -> str:
    parts = ["app", *path.relative_to(APP).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in APP.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``app`` modules ``name`` imports (a package's ``__init__`` counts as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "app")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "app":
                continue
            for alias in node.names:  # `from . import logs` imports the module app.ops.logs
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def floor(name: str) -> int | None:
    parts = name.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 else None


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path of module names, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_lives_in_a_package_with_a_floor():
    loose = [n for n, path in modules().items() if path.parent != APP and floor(n) is None]
    assert loose == [], f"modules outside cli/page/engine/ops: {loose}"
    top = sorted(p.name for p in APP.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_imports_only_go_down():
    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if floor(a) is not None and floor(b) is not None and floor(b) > floor(a)
    ]
    assert upward == [], "imports from a lower floor to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    circle = find_circle(graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_package_says_what_lives_there(package):
    doc = ast.get_docstring(ast.parse((APP / package / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), f"app/{package}/__init__.py: say what lives there and what it may import"


def test_the_checks_see_a_circle_and_an_upward_import():
    """The checker itself: a made-up circle is found, and a made-up upward import is named."""
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None
    assert floor("app.ops.logs") < floor("app.engine.registry") < floor("app.page.render") < floor("app.cli.main")
