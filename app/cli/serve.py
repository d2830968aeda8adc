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

from ..engine.config import ConfigError, Settings
from ..engine.registry import FAILED, ModelStatus, get_detector, inference_slot_count, model_status
from ..engine.weights import weights_dir_problem
from ..ops import logs, prometheus
from ..ops.collector import freeze_long_lived
from ..ops.cpus import cpu_budget
from ..ops.terminal import printable_lines
from .common import say

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
            print(printable_lines(textwrap.fill(paragraph, width=100)), file=sys.stderr, flush=True)
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
        say(f"objdet: cannot start: OBJDET_METRICS_PORT={settings.metrics_port}: {problem}")
        raise SystemExit(1)


def warm_page_libraries() -> None:
    """Import the page and what it draws with (pandas, pyarrow: ~100 MB) before Streamlit listens, so the
    first visitor does not wait for them and the idle memory is what a serving process holds: after the
    sessions close, RSS returns to this level, not to a never-used process's."""
    import pandas as pd
    import pyarrow as pa

    from ..page import render as page  # noqa: F401 - imported for its imports (the page's libraries)

    pa.Table.from_pandas(pd.DataFrame({"label": ["cup"], "score": [0.5]}))  # pyarrow's pandas bridge


def check_streamlit_settings() -> None:
    """Parse every ``STREAMLIT_*`` variable as ``streamlit run`` will (its own click options), before any model
    loads: ``STREAMLIT_SERVER_PORT=abc`` is a configuration error (exit 2) naming the variable, not a click
    traceback after a minute of loading."""
    import click
    from streamlit.web import cli as streamlit_cli

    try:
        ctx = streamlit_cli.main.commands["run"].make_context("run", [str(STREAMLIT_SCRIPT)])
    except click.ClickException as exc:
        raise ConfigError(exc.format_message()) from None
    port = ctx.params.get("server_port")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"STREAMLIT_SERVER_PORT={port}: a TCP port is between 1 and 65535")


def close_streamlit_metrics() -> None:
    """The app's port serves the page and its health check, not Streamlit's own ``/_stcore/metrics`` (session
    counts, cached function names): operators get metrics from ``OBJDET_METRICS_PORT``. Streamlit has no
    option to turn it off; its server builds the route in ``create_streamlit_routes`` with
    ``create_metrics_routes(runtime, base_url)`` (streamlit/web/server/starlette/starlette_app.py), so that
    name is replaced by one that routes the same path (base URL path included) to a 404."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from streamlit.web.server.starlette import starlette_app, starlette_routes

    if not hasattr(starlette_app, "create_metrics_routes") or not hasattr(starlette_routes, "ROUTE_METRICS"):
        print(
            "objdet: cannot start: this Streamlit no longer builds /_stcore/metrics where serve closes it",
            file=sys.stderr,
        )
        raise SystemExit(1)

    async def not_here(_request):
        return PlainTextResponse("not found\n", status_code=404)

    def closed_metrics_routes(_runtime, base_url):
        path = starlette_routes._with_base(starlette_routes.ROUTE_METRICS, base_url)  # Streamlit's own path rule
        return [Route(path, not_here, methods=["GET", "HEAD", "OPTIONS", "POST"])]

    starlette_app.create_metrics_routes = closed_metrics_routes


def serve(settings: Settings) -> int:
    for key, value in STREAMLIT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    check_streamlit_settings()
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
    freeze_long_lived(tuple(loaded))  # the libraries and models: out of the collection after every script run
    prometheus.enable()  # from here on: the warm-up runs above are not counted
    logs.event(
        f"models ready in {time.perf_counter() - t0:.1f} s: {', '.join(loaded) or 'none'}; starting Streamlit",
        models=loaded,
    )

    # Streamlit's own command line, in this process: it maps every STREAMLIT_* variable to its
    # option exactly as `streamlit run` does, and the script finds the models already built.
    from streamlit.web import cli as streamlit_cli

    close_streamlit_metrics()
    return streamlit_cli.main(args=["run", str(STREAMLIT_SCRIPT)], prog_name="streamlit", standalone_mode=False) or 0


def cmd_serve(args, settings: Settings) -> int:
    """``serve``: load and warm the models, then run the page (health 200 = models ready)."""
    return serve(settings)
