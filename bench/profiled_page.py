"""The app's page under pyinstrument, for ``bench/app_bench.py --profile``: what Streamlit runs instead of
app/streamlit_app.py (bench/profiled_serve.py starts it like ``python -m app serve``). Each script run of
``app.page.render.main`` is profiled and leaves ``run-<n>.json`` (its wall time, and the time inside each kind
of Streamlit call: ``st.image``, ``st.dataframe``, ``st.bar_chart``...) and ``run-<n>.txt`` (pyinstrument's
call tree) in ``$OBJDET_BENCH_PROFILE_DIR``."""

import importlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyinstrument import Profiler  # noqa: E402 - the optional `bench` extra

OUT = Path(os.environ["OBJDET_BENCH_PROFILE_DIR"])


def streamlit_calls(frame, found: dict) -> dict:
    """Seconds per Streamlit command (the function under each outermost ``wrapped_func``, Streamlit's wrapper of
    every ``st.*`` call), summed over the tree under ``frame``."""
    if frame.function == "wrapped_func" and "streamlit" in (frame.file_path or ""):
        inner = max(frame.children, key=lambda f: f.time, default=None)
        name = inner.function if inner is not None else "?"
        found[name] = found.get(name, 0.0) + frame.time
        return found
    for child in frame.children:
        streamlit_calls(child, found)
    return found


profiler = Profiler(interval=0.0005, async_mode="disabled")
started = time.perf_counter()
profiler.start()
try:
    importlib.import_module("app.page.render").main()
finally:
    profiler.stop()
    wall_ms = (time.perf_counter() - started) * 1e3
    run = f"run-{time.time_ns()}"
    (OUT / f"{run}.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    root = profiler.last_session.root_frame() if profiler.last_session else None
    calls = streamlit_calls(root, {}) if root is not None else {}
    (OUT / f"{run}.json").write_text(json.dumps({"wall_ms": wall_ms, "streamlit_s": calls}))
