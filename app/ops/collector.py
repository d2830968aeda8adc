"""The process's long-lived objects moved out of the cyclic garbage collector's way.

Streamlit runs a full collection (``gc.collect(2)``, its ``runner.postScriptGC``) after every script run, and
a full collection visits every tracked object: with torch, torchvision, OpenCV, onnxruntime, pandas and the
models loaded that is ~430,000 objects and ~200 ms on this project's 2-vCPU machine, after every slider move,
while the collection holds the GIL and the server cannot even answer the browser's request for the new
picture. ``gc.freeze()`` moves every object tracked at that moment to the permanent generation, which no
collection visits: the modules and the models, which live as long as the process. Objects made later (an
upload, a session's widgets) are collected as before, and frozen objects are still freed by reference
counting when their last reference goes; only a frozen object caught in a reference cycle would outlive it.

So freezing happens only when the long-lived set grew: after the models are loaded (``serve``, before the
server listens) and on the page when modules were imported or a model was built since the last freeze (the
first script run imports the page's libraries; ``streamlit run`` builds the models there), never per session.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Hashable

from . import logs

_LOCK = threading.Lock()
_frozen_at: tuple | None = None  # (number of imported modules, the caller's marker) at the last freeze


def freeze_long_lived(marker: Hashable = ()) -> bool:
    """Collect, then freeze every object tracked now, when modules were imported or ``marker`` (e.g. the
    loaded models) changed since the last freeze; True when it froze. Cheap otherwise (a tuple compare)."""
    global _frozen_at
    state = (len(sys.modules), marker)
    if state == _frozen_at:
        return False
    with _LOCK:
        if state == _frozen_at:
            return False
        t0 = time.perf_counter()
        gc.collect()  # garbage of the start-up, not frozen with the rest
        before = gc.get_freeze_count()
        gc.freeze()
        _frozen_at = state
    moved = gc.get_freeze_count() - before
    ms = (time.perf_counter() - t0) * 1000
    logs.event(f"froze {moved} long-lived objects in {ms:.0f} ms", "debug", objects=moved, ms=round(ms))
    return True
