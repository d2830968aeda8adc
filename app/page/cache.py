"""One process-wide cache for the app's large values, under one byte budget, shared by all sessions.

Per-session caches multiply by the number of sessions (measured: four sessions of a 6000x6000 upload
took a server from 1.1 GB to 4 GB). Here every decoded image and network output lives once per
process, keyed by content digest; an LRU drops the oldest entries past ``CACHE_BUDGET_BYTES``; an
entry remembers the sessions that used it, and a janitor thread drops the entries that no live
Streamlit session uses any more and hands freed memory back to the OS (glibc ``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from ..ops import logs

# The Deployment's limit is 2Gi; the target is a peak under 75 % (1536 MiB). Measured (bench/app_bench.py):
# about 0.9 GiB idle once a first page was served (torch, both models, Streamlit, pyarrow), about 0.3 GiB
# per 40 MP PNG decode in flight (behind images' decode gate), 0.14 GiB for SSD's forward on a 2048x2048
# working copy. What is left holds a quarter of a GiB of cached copies and outputs: a large image costs
# about 20 MB while its forwards run (12.6 MB working, 4.9 MB display, ~2.5 MB outputs), about 6 MB after.
CACHE_BUDGET_BYTES = 256 * 2**20
JANITOR_PERIOD_S = 2.0


def log(message: str) -> None:
    """One line on stderr, like ``serve``'s own (the pod's log): through ``app.ops.logs`` (text or JSON) under
    ``serve``, printed as text elsewhere (``streamlit run``)."""
    if logs.configured():
        logs.event(message)
    else:
        print(f"[objdet] {message}", file=sys.stderr, flush=True)


def nbytes_of(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by numpy arrays, torch tensors and bytes objects inside ``value`` (containers and
    dataclasses are walked; an array reachable twice counts once). Everything else counts as 0: small next
    to pixels."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, (bytes, bytearray)):  # encoded media: a processed video's WebM and MP4
        return len(value)
    if isinstance(value, np.ndarray):
        base = value.base if isinstance(value.base, np.ndarray) else None
        return nbytes_of(base, seen) if base is not None else value.nbytes
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # a torch tensor, without importing torch
        return int(value.element_size() * value.nelement())
    if isinstance(value, dict):
        return sum(nbytes_of(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(nbytes_of(v, seen) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes_of(getattr(value, f.name), seen) for f in fields(value))
    return 0


@dataclass
class _Entry:
    value: Any
    nbytes: int
    owners: set[str] = field(default_factory=set)


class ByteBudgetCache:
    """Thread-safe LRU whose total size (``nbytes_of`` each value) stays within ``budget_bytes``.

    ``get_or_compute`` runs ``compute`` once per key even when several sessions ask at the same time
    (the others wait for it). The newest entry is kept even when it alone exceeds the budget.
    """

    def __init__(self, budget_bytes: int = CACHE_BUDGET_BYTES):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._bytes = 0
        self._counts = {"hits": 0, "misses": 0, "evictions": 0, "released": 0}
        self.freed_since_trim = 0  # bytes dropped since the last malloc_trim

    @property
    def bytes(self) -> int:
        """Bytes held now (the later metrics gauge)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "bytes": self._bytes,
                "budget_bytes": self.budget_bytes,
                "entries": len(self._entries),
                **self._counts,
            }

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any], owner: str | None = None) -> Any:
        """The cached value for ``key`` (marked as used by ``owner``), computing it on a miss."""
        value = self._lookup(key, owner)
        if value is not _MISSING:
            return value
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:  # one computation per key; latecomers find the entry when they get in
            value = self._lookup(key, owner)
            if value is not _MISSING:
                return value
            try:
                value = compute()
                self.put(key, value, owner, count_miss=True)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
        return value

    def get(self, key: Hashable, owner: str | None = None) -> Any:
        """The cached value for ``key`` (marked as used by ``owner``), or None when it is not (or no longer) here."""
        value = self._lookup(key, owner)
        return None if value is _MISSING else value

    def _lookup(self, key: Hashable, owner: str | None) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return _MISSING
            self._entries.move_to_end(key)
            if owner is not None:
                entry.owners.add(owner)
            self._counts["hits"] += 1
            return entry.value

    def put(self, key: Hashable, value: Any, owner: str | None = None, count_miss: bool = False) -> None:
        entry = _Entry(value, nbytes_of(value), {owner} if owner is not None else set())
        with self._lock:
            if count_miss:
                self._counts["misses"] += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                entry.owners |= old.owners
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.budget_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._drop(evicted, "evictions")

    def _drop(self, entry: _Entry, reason: str) -> None:
        self._bytes -= entry.nbytes
        self.freed_since_trim += entry.nbytes
        self._counts[reason] += 1

    def take_freed(self, threshold: int) -> int:
        """The bytes freed since the last call that returned non-zero, once they reach ``threshold``."""
        with self._lock:
            if self.freed_since_trim < threshold:
                return 0
            freed, self.freed_since_trim = self.freed_since_trim, 0
            return freed

    def release(self, is_live: Callable[[str], bool]) -> int:
        """Forget owners that are no longer live and drop the entries left without any (entries that
        never had an owner, e.g. from a script run outside a session, stay for the LRU). Returns the bytes
        dropped."""
        freed = 0
        with self._lock:
            for key in list(self._entries):
                entry = self._entries[key]
                if not entry.owners:
                    continue
                entry.owners = {o for o in entry.owners if is_live(o)}
                if not entry.owners:
                    del self._entries[key]
                    self._drop(entry, "released")
                    freed += entry.nbytes
        return freed

    def clear(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                self._drop(entry, "released")
            self._entries.clear()


_MISSING = object()

CACHE = ByteBudgetCache()


def malloc_trim() -> bool:
    """Ask glibc to return free heap memory to the OS (RSS falls after large frees); False elsewhere."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def trim_if_freed(cache: ByteBudgetCache = CACHE, threshold: int = 8 * 2**20) -> bool:
    """``malloc_trim`` once at least ``threshold`` bytes left the cache since the last trim."""
    return bool(cache.take_freed(threshold)) and malloc_trim()


def streamlit_liveness() -> Callable[[str], bool] | None:
    """``is_live(session_id)`` of the running Streamlit server, or None outside one (AppTest, the CLI).

    A closed page's session is "disconnected", not active: Streamlit keeps it a while for a reconnect,
    but what it used is dropped here (a reconnect recomputes it from the upload, which Streamlit keeps).
    """
    from streamlit import runtime

    if not runtime.exists():
        return None
    return runtime.get_instance().is_active_session


class _Janitor(threading.Thread):
    """Every ``period_s``: drop what no live session uses, then trim the heap if enough was freed."""

    def __init__(self, cache: ByteBudgetCache, period_s: float):
        super().__init__(name="objdet-cache-janitor", daemon=True)
        self.cache, self.period_s = cache, period_s

    def run(self) -> None:
        while True:
            threading.Event().wait(self.period_s)
            try:
                is_live = streamlit_liveness()
                if is_live is not None:
                    freed = self.cache.release(is_live)
                    if freed:
                        log(
                            f"cache: released {freed / 2**20:.1f} MiB that no open session uses; "
                            f"{self.cache.bytes / 2**20:.1f} MiB held"
                        )
                trim_if_freed(self.cache)
            except Exception as exc:  # noqa: BLE001 - the janitor must outlive any one failure
                log(f"cache janitor: {type(exc).__name__}: {exc}")


_janitor: _Janitor | None = None
_janitor_lock = threading.Lock()


def start_janitor(cache: ByteBudgetCache = CACHE, period_s: float = JANITOR_PERIOD_S) -> None:
    """Start the process's janitor thread once (later calls do nothing)."""
    global _janitor
    with _janitor_lock:
        if _janitor is None or not _janitor.is_alive():
            _janitor = _Janitor(cache, period_s)
            _janitor.start()
