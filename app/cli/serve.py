"""``python -m app serve``: load and warm the models, then run Streamlit in this same process.

Because the HTTP server only starts listening after every required model is built and has run
once, ``/_stcore/health`` answering 200 means "models ready" (what Kubernetes' probes need). A
required model that cannot load ends the process with status 1 and one paragraph naming the file
and the fix, so a pod with bad weights never turns Ready.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from ..engine.config import Settings
from ..engine.registry import FAILED, ModelStatus, get_detector, inference_slot_count, model_status
from ..engine.weights import weights_dir_problem
from ..ops import logs, prometheus
from ..ops.cpus import cpu_budget

STREAMLIT_SCRIPT = Path(__file__).resolve().parents[1] / "streamlit_app.py"

# Production defaults; an explicit STREAMLIT_* variable (the ConfigMap) wins.
STREAMLIT_DEFAULTS = {
    "STREAMLIT_SERVER_HEADLESS": "true",
    "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",  # torch's lazy modules break the watcher
    "STREAMLIT_SERVER_RUN_ON_SAVE": "false",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "STREAMLIT_SERVER_MAX_UPLOAD_SIZE": "200",
    "STREAMLIT_CLIENT_TOOLBAR_MODE": "viewer",
    # An uncaught exception shows a generic notice, not its type, message or traceback (server paths): the
    # log keeps them. ("false" is Streamlit's legacy value and still shows the traceback.)
    "STREAMLIT_CLIENT_SHOW_ERROR_DETAILS": "none",
}


def prepare_models(settings: Settings) -> list[str]:
    """Verify, build and warm every enabled model; returns the loaded ones.

    Raises ``SystemExit(1)`` when a required model is not loaded.
    """
    loaded, failures = [], []
    for model in settings.models:
        t0 = time.perf_counter()
        status = model_status(model, settings, load=True)
        if status.ok:
            try:  # warm-up: first-call allocations; a model that cannot run fails here, not on a user
                get_detector(model, settings).detect(np.full((240, 320, 3), 127, np.uint8))
            except Exception as exc:  # noqa: BLE001 - any failure makes this model "failed", not the server
                status = ModelStatus(
                    model,
                    FAILED,
                    status.files,
                    f"the warm-up run failed ({exc})",
                    "check that the model files belong together (`python -m app weights verify`)",
                )
        prometheus.set_model_status(status)
        seconds = round(time.perf_counter() - t0, 1)
        if status.ok:
            logs.event(
                f"{model}: loaded and warmed in {seconds:.1f} s "
                f"({', '.join(f'{f.role} {f.state}' for f in status.files)})",
                model=model,
                state=status.state,
                seconds=seconds,
            )
            loaded.append(model)
        elif model in settings.required_models:
            logs.event(
                f"{model}: {status.state} (REQUIRED): {status.message}", "error", model=model, state=status.state
            )
            failures.append(status)
        else:  # expected on a laptop without every file: one calm line, the page says how to add it
            why = status.message if status.message.startswith(status.state) else f"{status.state}: {status.message}"
            logs.event(
                f"{model}: not available ({why}); the app starts without it and its page "
                "says how to add it (docs/models.md)",
                model=model,
                state=status.state,
            )
    if failures:
        for status in failures:
            paragraph = (
                f"objdet: cannot start: required model '{status.model}' is {status.state}. "
                f"{status.message}. Fix: {status.fix}. "
                f"(Required models come from OBJDET_REQUIRED_MODELS, default: all in OBJDET_MODELS.)"
            )
            print(textwrap.fill(paragraph, width=100), file=sys.stderr, flush=True)
        raise SystemExit(1)
    return loaded


def start_metrics(settings: Settings) -> None:
    """The metrics listener on ``OBJDET_METRICS_PORT`` (0: none), on Streamlit's address; a port that
    cannot be used ends the process with status 1 and the reason."""
    if not settings.metrics_port:
        return
    address = os.environ.get("STREAMLIT_SERVER_ADDRESS") or "0.0.0.0"  # noqa: S104 - where Streamlit listens too
    app_port = os.environ.get("STREAMLIT_SERVER_PORT") or "8501"
    problem = ""
    if str(settings.metrics_port) == app_port.strip():
        problem = f"it is Streamlit's port (STREAMLIT_SERVER_PORT={app_port}); give the metrics their own port"
    else:
        from ..page.cache import CACHE, streamlit_liveness  # the page's cache and sessions, counted by gauges

        try:
            prometheus.start_server(settings.metrics_port, address, settings.models, CACHE, streamlit_liveness)
        except OSError as exc:
            problem = f"cannot listen on {address}:{settings.metrics_port} ({exc.strerror or exc})"
    if problem:
        print(f"objdet: cannot start: OBJDET_METRICS_PORT={settings.metrics_port}: {problem}", file=sys.stderr)
        raise SystemExit(1)


def warm_page_libraries() -> None:
    """Import the page and what it draws with (pandas, pyarrow: ~100 MB) before Streamlit listens, so the
    first visitor does not wait for them and the idle memory is what a serving process holds: after the
    sessions close, RSS returns to this level, not to a never-used process's."""
    import pandas as pd
    import pyarrow as pa

    from ..page import render as page  # noqa: F401 - imported for its imports (the page's libraries)

    pa.Table.from_pandas(pd.DataFrame({"label": ["cup"], "score": [0.5]}))  # pyarrow's pandas bridge


def serve(settings: Settings) -> int:
    for key, value in STREAMLIT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    logs.configure(settings.log_format, settings.log_level)  # Streamlit's logger level follows
    if os.environ.get("STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION", "true").lower() == "false":
        logs.event(
            "warning: STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false disables XSRF protection of uploads", "warning"
        )
    cpus, source = cpu_budget()
    slots = inference_slot_count(settings)
    logs.event(
        f"CPUs: {cpus} ({source}); {settings.num_threads} threads per inference, {slots} inferences at once",
        cpus=cpus,
        threads=settings.num_threads,
        slots=slots,
    )
    problem = weights_dir_problem(settings.weights_dir)
    if problem:
        logs.event(f"warning: {problem}; models whose files are expected there will be missing", "warning")
    start_metrics(settings)
    t0 = time.perf_counter()
    loaded = prepare_models(settings)
    warm_page_libraries()
    prometheus.enable()  # from here on: the warm-up runs above are not counted
    logs.event(
        f"models ready in {time.perf_counter() - t0:.1f} s: {', '.join(loaded) or 'none'}; starting Streamlit",
        models=loaded,
    )

    # Streamlit's own command line, in this process: it maps every STREAMLIT_* variable to its
    # option exactly as `streamlit run` does, and the script finds the models already built.
    from streamlit.web import cli as streamlit_cli

    return streamlit_cli.main(args=["run", str(STREAMLIT_SCRIPT)], prog_name="streamlit", standalone_mode=False) or 0


def cmd_serve(args, settings: Settings) -> int:
    """``serve``: load and warm the models, then run the page (health 200 = models ready)."""
    return serve(settings)
