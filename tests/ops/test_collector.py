"""app/ops/collector.py in a fresh interpreter (freezing is per process): after the page's libraries and a
model are loaded, a full collection no longer visits them, later garbage is still collected, frozen objects
are still freed by reference counting, and freezing happens again only when imports or the marker change."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

CHILD = r"""
import gc, json, sys, weakref
import app.page.render  # the page and every library it draws with
from app.engine.config import Settings
from app.engine.registry import get_detector
from app.ops.collector import freeze_long_lived

get_detector("yolo", Settings.from_env())
tracked_before = len(gc.get_objects())

class Node:
    pass

long_lived = Node()
alive = weakref.ref(long_lived)
first = freeze_long_lived(("yolo",))
again = freeze_long_lived(("yolo",))
tracked_after = len(gc.get_objects())
del long_lived  # frozen, yet freed by reference counting when its last reference goes
freed_by_refcount = alive() is None

a, b = Node(), Node()  # a cycle made after the freeze: the collector still finds it
a.other, b.other = b, a
cycle = weakref.ref(a)
del a, b
gc.collect()
cycle_collected = cycle() is None

marker_changed = freeze_long_lived(("ssd", "yolo"))
import types
sys.modules["objdet_imported_later"] = types.ModuleType("objdet_imported_later")  # an import after the freeze
import_changed = freeze_long_lived(("ssd", "yolo"))
print(json.dumps(dict(
    tracked_before=tracked_before, tracked_after=tracked_after, frozen=gc.get_freeze_count(), first=first,
    again=again, freed_by_refcount=freed_by_refcount, cycle_collected=cycle_collected,
    marker_changed=marker_changed, import_changed=import_changed,
)))
"""


def run_child() -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freezing_takes_the_libraries_and_model_out_of_full_collections(yolo_env):
    got = run_child()
    assert got["tracked_before"] > 100_000, got  # what every full collection visited
    assert got["first"] is True and got["again"] is False, got
    assert got["frozen"] >= got["tracked_before"] * 0.9, got
    assert got["tracked_after"] < got["tracked_before"] * 0.02, got
    assert got["freed_by_refcount"] and got["cycle_collected"], got
    assert got["marker_changed"] is True and got["import_changed"] is True, got


PAGE_CHILD = r"""
import gc, json
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app/streamlit_app.py", default_timeout=180)
at.run()
assert not at.exception, at.exception
print(json.dumps(dict(frozen=gc.get_freeze_count(), tracked=len(gc.get_objects()))))
"""


def test_the_page_freezes_what_it_loaded(yolo_env):
    """The page's first run (the libraries imported, the model built) leaves the long-lived objects frozen: what
    Streamlit's collection after each run visits is a small rest."""
    out = subprocess.run([sys.executable, "-c", PAGE_CHILD], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["frozen"] > 100_000 and got["tracked"] < got["frozen"] * 0.1, got
