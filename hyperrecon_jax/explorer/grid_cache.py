"""Each slice's λ-set reconstructions, computed once and kept within a memory budget.

A cached slice is answered at once, whatever is being computed; a slice being
computed is waited for, not computed twice; one slice is computed at a time
(each computation takes the whole machine, and memory for a chunk of model
calls).
"""

import collections
import concurrent.futures
import threading

CACHE_BYTES = 256 << 20  # grid reconstructions kept (at least one slice's)


class GridCache:
  """The λ-set answers of the most recently used slices; thread-safe.

  Args:
    max_bytes: the memory the cached ``recons`` arrays may take; the least
      recently used slices are dropped beyond it, but the newest is always
      kept.
  """

  def __init__(self, max_bytes: int = CACHE_BYTES):
    self.max_bytes = int(max_bytes)
    # The lock guards the dicts only, never a computation: a cached answer is
    # never kept waiting by a slice being computed. `_pending` holds the
    # future of each slice whose grid is being computed, so that concurrent
    # requests for it wait for that one computation instead of repeating it;
    # `_computing` lets one grid run at a time.
    self._lock, self._computing = threading.Lock(), threading.Lock()
    self._cache, self._pending = collections.OrderedDict(), {}

  def get(self, i: int, compute) -> dict:
    """Slice ``i``'s answer: cached, awaited, or ``compute(i)`` (a dict with ``recons``).

    Args:
      i: the slice.
      compute: computes the answer of a slice that is neither cached nor
        being computed; its exception reaches every request waiting for it,
        and nothing is cached.
    """
    with self._lock:
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
      future = self._pending.get(i)
      mine = future is None
      if mine:
        future = self._pending[i] = concurrent.futures.Future()
    if not mine:
      return future.result()
    try:
      with self._computing:
        out = compute(i)
    except BaseException as e:
      with self._lock:
        del self._pending[i]
      future.set_exception(e)
      raise
    with self._lock:
      del self._pending[i]
      self._cache[i] = out
      while len(self._cache) > max(1, self.max_bytes // out["recons"].nbytes):
        self._cache.popitem(last=False)
    future.set_result(out)
    return out
