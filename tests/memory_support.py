"""What the memory tests share: the peak of NumPy's allocations while a function runs."""

import tracemalloc


def allocated_peak(fn):
  """``(fn(), the most bytes allocated at once while it ran)``, as tracemalloc sees
  NumPy's allocations (it reports them), above what was allocated before."""
  tracemalloc.start()
  try:
    start = tracemalloc.get_traced_memory()[0]
    result = fn()
    return result, tracemalloc.get_traced_memory()[1] - start
  finally:
    tracemalloc.stop()
