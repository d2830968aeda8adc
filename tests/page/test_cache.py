"""The app's process-wide cache (app/page/cache.py): byte budget, LRU order, one computation per key,
release of what no live session uses. Real numpy arrays; sizes come from numpy's own nbytes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.engine.detectors.base import RawOutput
from app.page.cache import ByteBudgetCache, malloc_trim, nbytes_of, trim_if_freed

MB = 2**20


def block(mb: int, fill: int = 0) -> np.ndarray:
    return np.full((mb, 1024, 1024), fill, np.uint8)


def test_evicts_oldest_by_bytes_not_by_count():
    cache = ByteBudgetCache(budget_bytes=10 * MB)
    for name, mb in (("a", 4), ("b", 4)):
        cache.put(name, block(mb))
    assert cache.bytes == 8 * MB and len(cache) == 2
    cache.put("c", block(4))  # 12 MB > 10 MB: the oldest goes
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.bytes == 8 * MB
    cache.put("tiny", np.zeros(10, np.uint8))  # 10 bytes more fit: nothing is evicted for them
    assert len(cache) == 3 and cache.bytes == 8 * MB + 10
    assert cache.stats()["evictions"] == 1


def test_a_hit_makes_an_entry_the_newest():
    cache = ByteBudgetCache(budget_bytes=10 * MB)
    cache.put("a", block(4))
    cache.put("b", block(4))
    assert cache.get_or_compute("a", lambda: pytest.fail("a is cached")) is not None
    cache.put("c", block(4))
    assert "a" in cache and "b" not in cache


def test_one_entry_larger_than_the_budget_is_kept_alone():
    cache = ByteBudgetCache(budget_bytes=2 * MB)
    cache.put("small", block(1))
    cache.put("big", block(3))
    assert list(cache._entries) == ["big"] and cache.bytes == 3 * MB


def test_replacing_a_key_does_not_count_it_twice():
    cache = ByteBudgetCache(budget_bytes=100 * MB)
    cache.put("a", block(4))
    cache.put("a", block(2))
    assert cache.bytes == 2 * MB and len(cache) == 1


def test_nbytes_counts_views_and_shared_arrays_once():
    image = block(3)
    view = image[: image.shape[0] // 2]
    assert nbytes_of((image, view)) == image.nbytes
    assert nbytes_of(view) == image.nbytes  # a view keeps its whole base alive
    raw = RawOutput("yolo", (640, 480), [np.zeros((100, 85), np.float32), np.zeros((300, 85), np.float32)])
    assert nbytes_of(raw) == 400 * 85 * 4
    assert nbytes_of({"x": raw, "y": "text", "z": 12}) == 400 * 85 * 4


def test_torch_tensors_are_counted():
    torch = pytest.importorskip("torch")
    assert nbytes_of([torch.zeros(1000, 4, dtype=torch.float32)]) == 16000


def test_concurrent_requests_for_one_key_compute_once():
    cache = ByteBudgetCache(budget_bytes=100 * MB)
    calls, started, release = [], threading.Event(), threading.Event()

    def compute():
        calls.append(1)
        started.set()
        release.wait(10)
        return block(1, fill=7)

    results = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(cache.get_or_compute("k", compute, owner=f"s{i}")))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    assert started.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(results) == 8
    assert all(r is results[0] for r in results)
    assert cache._entries["k"].owners == {f"s{i}" for i in range(8)}
    assert cache.stats()["misses"] == 1 and cache.stats()["hits"] == 7


def test_a_failed_computation_is_not_cached_and_can_be_retried():
    cache = ByteBudgetCache(budget_bytes=10 * MB)

    def boom():
        raise RuntimeError("network failed")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", boom)
    assert "k" not in cache and cache.bytes == 0
    assert cache.get_or_compute("k", lambda: block(1)).nbytes == MB


def test_release_drops_entries_that_no_live_session_uses():
    cache = ByteBudgetCache(budget_bytes=100 * MB)
    cache.get_or_compute("shared", lambda: block(4), owner="s1")
    cache.get_or_compute("shared", lambda: pytest.fail("cached"), owner="s2")
    cache.get_or_compute("only-s1", lambda: block(2), owner="s1")
    cache.put("no-owner", block(1))
    live = {"s1", "s2"}
    assert cache.release(live.__contains__) == 0
    live.discard("s1")  # the first page closes: its own entry goes, the shared one stays for s2
    assert cache.release(live.__contains__) == 2 * MB
    assert set(cache._entries) == {"shared", "no-owner"} and cache.bytes == 5 * MB
    live.clear()
    assert cache.release(live.__contains__) == 4 * MB
    assert set(cache._entries) == {"no-owner"}  # entries made outside any session are left to the LRU
    assert cache.stats()["released"] == 2


def test_trim_after_enough_was_freed():
    cache = ByteBudgetCache(budget_bytes=100 * MB)
    cache.put("a", block(4), owner="s")
    cache.release(lambda _: False)
    assert cache.freed_since_trim == 4 * MB
    trim_if_freed(cache, threshold=8 * MB)
    assert cache.freed_since_trim == 4 * MB  # below the threshold: no trim yet
    cache.put("b", block(5), owner="s")
    cache.release(lambda _: False)
    trim_if_freed(cache, threshold=8 * MB)
    assert cache.freed_since_trim == 0
    assert isinstance(malloc_trim(), bool)


def test_clear_empties_and_counts():
    cache = ByteBudgetCache(budget_bytes=100 * MB)
    cache.put("a", block(1))
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0 and cache.stats()["released"] == 1
