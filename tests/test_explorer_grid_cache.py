"""Tests of the explorer's per-slice λ-set cache (hyperrecon_jax.explorer.grid_cache).

The computations are stand-ins (a dict with a ``recons`` array), so these run
in milliseconds; tests/test_explorer_many_terms.py checks the same over HTTP with a model.
"""

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from hyperrecon_jax.explorer.grid_cache import GridCache

WAIT_S = 30  # a bound for a thread that should finish at once, not a timing


def answer(i, nbytes=8):
  return {"recons": np.full(nbytes // 8, i, np.float64)}


def test_a_slice_is_computed_once_for_concurrent_requests():
  cache, release, calls = GridCache(), threading.Event(), []

  def compute(i):
    calls.append(i)
    assert release.wait(WAIT_S)
    return answer(i)

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = [pool.submit(cache.get, 1, compute) for _ in range(4)]
    release.set()
    results = [f.result(WAIT_S) for f in futures]
  assert calls == [1] and all(r is results[0] for r in results)
  assert cache.get(1, compute) is results[0] and calls == [1]  # cached


def test_a_cached_slice_does_not_wait_for_one_being_computed():
  cache, started, release = GridCache(), threading.Event(), threading.Event()
  cached = cache.get(0, answer)

  def slow(i):
    started.set()
    assert release.wait(WAIT_S)
    return answer(i)

  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(cache.get, 1, slow)
    assert started.wait(WAIT_S)
    try:
      assert cache.get(0, slow) is cached and not pending.done()
    finally:
      release.set()
    assert pending.result(WAIT_S)["recons"][0] == 1


def test_a_failed_computation_reaches_its_waiters_and_is_not_cached():
  cache, started, release = GridCache(), threading.Event(), threading.Event()

  def failing(i):
    started.set()
    assert release.wait(WAIT_S)
    raise RuntimeError(f"slice {i} failed")

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    first = pool.submit(cache.get, 2, failing)
    assert started.wait(WAIT_S)
    second = pool.submit(cache.get, 2, failing)  # waits for the first
    release.set()
    for future in (first, second):
      with pytest.raises(RuntimeError, match="slice 2 failed"):
        future.result(WAIT_S)
  assert cache.get(2, answer)["recons"][0] == 2  # computed again


def test_the_least_recently_used_slices_go_beyond_the_budget():
  cache = GridCache(max_bytes=3 * 8)
  for i in range(3):
    cache.get(i, answer)
  cache.get(0, lambda i: pytest.fail("slice 0 is cached"))  # now the most recent
  cache.get(3, answer)  # drops slice 1, the least recent
  computed = []
  cache.get(1, lambda i: computed.append(i) or answer(i))
  cache.get(0, lambda i: pytest.fail("slice 0 is still cached"))
  assert computed == [1]
  big = GridCache(max_bytes=1)  # smaller than one slice: the newest is still kept
  first = big.get(5, answer)
  assert big.get(5, lambda i: pytest.fail("kept")) is first


def test_two_slices_are_computed_one_at_a_time():
  # Each computation takes the whole machine and a chunk's memory: a second
  # slice waits for the first to finish instead of running beside it.
  cache, lock, running, most = GridCache(), threading.Lock(), [0], [0]
  started = threading.Event()

  def compute(i):
    with lock:
      running[0] += 1
      most[0] = max(most[0], running[0])
    started.set()
    time.sleep(0.2)  # long enough for the other request to arrive (not a bound)
    with lock:
      running[0] -= 1
    return answer(i)

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    first = pool.submit(cache.get, 0, compute)
    assert started.wait(WAIT_S)
    second = pool.submit(cache.get, 1, compute)
    assert first.result(WAIT_S)["recons"][0] == 0 and second.result(WAIT_S)["recons"][0] == 1
  assert most == [1]
