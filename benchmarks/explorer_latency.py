r"""Latency of the λ explorer's API over real HTTP; one JSON line.

  python benchmarks/explorer_latency.py [--pretrained=mni152_csmri8x_dc_tv] [--requests=200]

Starts the explorer server in this process on a free port with a shipped
model, warms it up (the first /api/reconstruct compiles), then times
``--requests`` sequential /api/reconstruct requests at random slices and λ
(what a slider drag sends), and /api/curve: once for a slice not seen yet
(the λ grid is reconstructed; the first call also compiles the grid program,
timed separately) and once more from the cache. Times are wall-clock
milliseconds of the whole request (HTTP, JSON, PNG encoding included).
"""

import json
import os
import platform
import statistics
import sys
import threading
import time
import urllib.request

from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "experiments"))
import cli  # noqa: E402
import provenance  # noqa: E402

_PRETRAINED = flags.DEFINE_string("pretrained", "mni152_csmri8x_dc_tv", "Shipped model.")
_REQUESTS = flags.DEFINE_integer("requests", 200, "Timed /api/reconstruct requests.",
                                 lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random slices and λ.")


def _get(url):
  start = time.perf_counter()
  with urllib.request.urlopen(url, timeout=600) as r:
    body = r.read()
    assert r.status == 200, body[:200]
  return (time.perf_counter() - start) * 1e3


def main(argv):
  del argv
  provenance.quiet_logs()
  from hyperrecon_jax import explorer
  from hyperrecon_jax import pretrained
  start = time.perf_counter()
  with cli.user_errors():
    config, model, variables, step = pretrained.load(_PRETRAINED.value)
  ex = explorer.Explorer(config, model, variables, name=_PRETRAINED.value, step=step)
  server = explorer.make_server(ex, "127.0.0.1", 0)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}"
  startup_s = time.perf_counter() - start
  try:
    rng = np.random.default_rng(_SEED.value)
    n, s = ex.num_lambdas, len(ex.images)

    def query():
      lam = ",".join(f"{v:.4f}" for v in rng.random(n))
      return f"{url}/api/reconstruct?slice={rng.integers(s)}&lam={lam}"

    first_ms = _get(query())  # compiles
    for _ in range(10):
      _get(query())
    times = [_get(query()) for _ in range(_REQUESTS.value)]
    curve_compile_ms = _get(f"{url}/api/curve?slice=0")
    curve_ms = _get(f"{url}/api/curve?slice=1")
    curve_cached_ms = _get(f"{url}/api/curve?slice=1")
  finally:
    server.shutdown()
    server.server_close()
  device = jax.devices()[0]
  print(json.dumps({
      "benchmark": "explorer_latency", "model": _PRETRAINED.value,
      "image_size": int(config.data.image_size), "num_slices": s,
      "grid_points": len(ex.lam_grid), "chunk": ex.chunk, "requests": len(times),
      "reconstruct_median_ms": round(statistics.median(times), 2),
      "reconstruct_p90_ms": round(float(np.percentile(times, 90)), 2),
      "reconstruct_max_ms": round(max(times), 2),
      "reconstruct_first_ms": round(first_ms, 1),
      "curve_first_with_compile_ms": round(curve_compile_ms, 1),
      "curve_ms": round(curve_ms, 1), "curve_cached_ms": round(curve_cached_ms, 2),
      "startup_s": round(startup_s, 2), **provenance.fields(),
      "machine": {"backend": jax.default_backend(), "device_kind": device.device_kind,
                  "cpu_count": os.cpu_count(),
                  "affinity": len(os.sched_getaffinity(0)),
                  "processor": platform.processor() or platform.machine(),
                  "python": platform.python_version(), "jax": jax.__version__},
  }))


if __name__ == "__main__":
  cli.run(main)
