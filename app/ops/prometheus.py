"""Prometheus metrics of ``python -m app serve``: definitions, the one detector hook, the HTTP server.

Everything is registered in ``REGISTRY`` (not the library's global one), served by
``start_server`` on its own port (``OBJDET_METRICS_PORT``), never through Streamlit. Recording (the
figures and the per-event log lines) is off until ``serve`` turns it on after the warm-up
(``enable``): the CLI, ``bench`` and ``batch`` push nothing and pay one flag test per call.
Labels are bounded: model (the catalog's families), stage (``STAGES``), kind (``FAILURE_KINDS``),
state (``MODEL_STATES``), limit (``LIMITS``).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector, make_wsgi_app

from . import logs

STAGES = ("preprocess", "inference", "postprocess")
FAILURE_KINDS = ("bad_image", "model_error", "timeout")
MODEL_STATES = ("loaded", "missing", "corrupt", "failed")
LIMITS = ("file_bytes", "image_pixels")
# 5 ms to 10 s: CPU inference of these models takes 10 ms to 2 s; a starved pod shows up in the tail.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, process_cpu_seconds_total, ...

STAGE_SECONDS = Histogram(
    "objdet_stage_seconds",
    "Time of one image in one stage of one model (network runs only: a slider move is not timed).",
    ["model", "stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IMAGES = Counter("objdet_images", "Images (and video frames) a model ran on.", ["model"], registry=REGISTRY)
DETECTIONS = Counter(
    "objdet_detections", "Detections returned by a model's first decode of an image.", ["model"], registry=REGISTRY
)
FAILURES = Counter(
    "objdet_failures",
    "Inputs a model could not serve, by kind: bad_image (refused upload, counted for each model it was "
    "meant for), model_error (an exception in the model), timeout (a video stopped by its time budget).",
    ["model", "kind"],
    registry=REGISTRY,
)
UPLOADS_REFUSED = Counter(
    "objdet_uploads_refused", "Uploads refused by a configured limit, before decoding.", ["limit"], registry=REGISTRY
)
VIDEO_FRAMES = Counter("objdet_video_frames", "Video frames a model ran on.", ["model"], registry=REGISTRY)
MODEL_STATE = Gauge(
    "objdet_model_state",
    "1 for the state each enabled model is in, 0 for the others.",
    ["model", "state"],
    registry=REGISTRY,
)
MODEL_WEIGHTS = Info(
    "objdet_model_weights",
    "The first 12 hex digits of the sha256 of each model's weights file.",
    ["model"],
    registry=REGISTRY,
)
SESSIONS = Gauge("objdet_sessions", "Open Streamlit sessions of this process.", registry=REGISTRY)
SLOTS_TOTAL = Gauge("objdet_inference_slots", "Network runs this process allows at once.", registry=REGISTRY)
SLOTS_IN_USE = Gauge("objdet_inference_slots_in_use", "Network runs in progress.", registry=REGISTRY)
SLOTS_WAITING = Gauge("objdet_inference_slots_waiting", "Network runs waiting for a slot.", registry=REGISTRY)
CACHE_BYTES = Gauge("objdet_cache_bytes", "Bytes held by the decoded-image and output cache.", registry=REGISTRY)
CACHE_BUDGET = Gauge("objdet_cache_budget_bytes", "The cache's byte budget.", registry=REGISTRY)

_enabled = False
_pending = "_objdet_metrics_pending"  # set on a RawOutput by a fresh network run, taken by its first decode
_sessions: set[str] = set()
_sessions_lock = threading.Lock()


def enabled() -> bool:
    return _enabled


def enable(on: bool = True) -> None:
    """Turn recording on (``serve``, after the warm-up) or off (the cost measurement)."""
    global _enabled
    _enabled = on


_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
}


def metric_names() -> set[str]:
    """Every sample name the registry can expose (``_bucket``, ``_total``, ... included), whether or not
    a labelled series exists yet: what alerts and dashboards may reference."""
    return {
        family.name + suffix for family in REGISTRY.collect() for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",))
    }


def instrument(detector, model: str):
    """Wrap ``detector``'s ``forward`` and ``decode`` (instance attributes; ``detect`` calls them too),
    labelled ``model`` (the registry's name for it, whatever the instance calls itself):
    the registry calls this once per built detector, so every path that serves a model is measured
    here and nowhere else. A network run is recorded at its first decode: stage times, one image, its
    detections, one log line; later decodes of the same output (slider moves) record nothing."""
    forward, decode = detector.forward, detector.decode

    def recorded_forward(image):
        try:
            raw = forward(image)
        except Exception:
            if _enabled:
                FAILURES.labels(model, "model_error").inc()
            raise
        setattr(raw, _pending, True)
        return raw

    def recorded_decode(raw, params):
        try:
            result = decode(raw, params)
        except ValueError:
            raise  # an unknown class in the filter: the request's fault, not the model's
        except Exception:
            if _enabled:
                FAILURES.labels(model, "model_error").inc()
            raise
        if raw.__dict__.pop(_pending, False):
            record_result(model, result)
        return result

    detector.forward, detector.decode = recorded_forward, recorded_decode
    return detector


def record_result(model: str, result) -> None:
    """One network run's figures (``result.timings_ms``, detections) and its log line."""
    if not _enabled:
        return
    for stage in STAGES:
        if stage in result.timings_ms:
            STAGE_SECONDS.labels(model, stage).observe(result.timings_ms[stage] / 1000.0)
    IMAGES.labels(model).inc()
    DETECTIONS.labels(model).inc(len(result.detections))
    logs.event(
        "detection",
        model=model,
        outcome="ok",
        width=result.image_size[0],
        height=result.image_size[1],
        detections=len(result.detections),
        timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()},
    )


def limit_of(reason: str) -> str | None:
    """Which configured limit refused an input, from its message (they name the variable), or None."""
    if "OBJDET_MAX_FILE_BYTES" in reason:
        return "file_bytes"
    if "OBJDET_MAX_IMAGE_PIXELS" in reason:
        return "image_pixels"
    return None


def record_refused(name: str, reason: str, models: Iterable[str]) -> None:
    """An upload that is not a usable image: a bad_image failure for each model it was meant for, and
    a refusal by limit when a limit said no. Logged with the base name only."""
    if not _enabled:
        return
    limit = limit_of(reason)
    for model in models:
        FAILURES.labels(model, "bad_image").inc()
    if limit:
        UPLOADS_REFUSED.labels(limit).inc()
    logs.event("input refused", level="warning", file=_base_name(name), reason=reason, limit=limit or "")


def record_video(model: str, frames_detected: int, stopped_by_budget: bool) -> None:
    """A processed video: its frames, and a timeout when its time budget stopped it."""
    if not _enabled:
        return
    VIDEO_FRAMES.labels(model).inc(frames_detected)
    if stopped_by_budget:
        FAILURES.labels(model, "timeout").inc()
    logs.event("video", model=model, frames_detected=frames_detected, stopped_by_budget=stopped_by_budget)


def _base_name(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def session_seen(session_id: str | None) -> None:
    """The page reports its session on each run; the gauge counts those still open (see ``start_server``)."""
    if session_id is not None:
        with _sessions_lock:
            _sessions.add(session_id)


def _open_sessions(is_live: Callable[[str], bool] | None) -> int:
    with _sessions_lock:
        if is_live is not None:
            _sessions.intersection_update({s for s in _sessions if is_live(s)})
        return len(_sessions)


class SlotGauges:
    """A semaphore's context manager that keeps ``objdet_inference_slots_*`` current."""

    def __init__(self, semaphore: threading.BoundedSemaphore, count: int):
        self.semaphore = semaphore
        SLOTS_TOTAL.set(count)

    def __enter__(self):
        SLOTS_WAITING.inc()
        try:
            self.semaphore.acquire()
        finally:
            SLOTS_WAITING.dec()
        SLOTS_IN_USE.inc()
        return self

    def __exit__(self, *exc) -> None:
        SLOTS_IN_USE.dec()
        self.semaphore.release()


def set_model_status(status) -> None:
    """A ``registry.ModelStatus``: its state gauge and the weights file's sha256 prefix."""
    for state in MODEL_STATES:
        MODEL_STATE.labels(status.model, state).set(1 if status.state == state else 0)
    weights = next((f for f in status.files if f.role == "weights"), None)
    digest = weights.actual if weights is not None and weights.actual else ""
    MODEL_WEIGHTS.labels(status.model).info({"sha256": digest[:12] or "none"})


def start_server(port: int, address: str, models: Iterable[str], cache=None, liveness=lambda: None) -> WSGIServer:
    """Serve ``REGISTRY`` on ``address:port`` (a thread of this process; port 0: any free one). Every
    model's series exist from the start at 0, so rates and ratios exist before the first failure.

    ``cache`` (its ``bytes`` and ``budget_bytes``) feeds the cache gauges; ``liveness()`` returns the test of
    a session being open (None outside a Streamlit server): the page owns both, ``serve`` passes them in."""

    for model in models:
        IMAGES.labels(model)
        DETECTIONS.labels(model)
        VIDEO_FRAMES.labels(model)
        for stage in STAGES:
            STAGE_SECONDS.labels(model, stage)
        for kind in FAILURE_KINDS:
            FAILURES.labels(model, kind)
    for limit in LIMITS:
        UPLOADS_REFUSED.labels(limit)
    SESSIONS.set_function(lambda: _open_sessions(liveness()))
    if cache is not None:
        CACHE_BYTES.set_function(lambda: cache.bytes)
        CACHE_BUDGET.set(cache.budget_bytes)
    server = make_server(address, port, only_metrics_path(make_wsgi_app(REGISTRY)), _Server, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="objdet-metrics", daemon=True).start()
    logs.event("metrics served", url=f"http://{address}:{server.server_port}{METRICS_PATH}")
    return server


METRICS_PATH = "/metrics"


def only_metrics_path(app):
    """``app`` at ``METRICS_PATH`` only; anything else is 404 (the port serves nothing but metrics)."""

    def serve(environ, start_response):
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: metrics are at {METRICS_PATH}\n".encode()]
        return app(environ, start_response)

    return serve


# A scrape is one small request a few times a minute. Connections beyond MAX_CONNECTIONS are closed at once
# (no thread is started for them), and each connection has REQUEST_S in all, from accept to its last byte: a
# client that sends half a request and waits, or a byte at a time, holds one of the few threads that long.
MAX_CONNECTIONS = 16
REQUEST_S = 10.0  # Prometheus' default scrape timeout


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the process at exit

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refused without a thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _DeadlineReader(io.RawIOBase):
    """A connection's reads, each with the time left to the request's deadline as its timeout."""

    def __init__(self, sock, deadline: float):
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _QuietHandler(WSGIRequestHandler):
    def setup(self):
        super().setup()
        deadline = time.monotonic() + REQUEST_S
        self.connection.settimeout(REQUEST_S)  # writes too: a client that stops reading
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def handle(self):
        with contextlib.suppress(OSError):  # a deadline or a vanished client ends the connection quietly
            super().handle()

    def log_message(self, format, *args):
        """Scrapes every 30 s would fill the log."""
