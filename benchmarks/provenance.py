"""Where a benchmark's number came from: the fields every JSON line of `benchmarks/` carries.

A number is only comparable with one of the same backend, device, jax version
and code, so every script prints these beside its measurement.
"""

import functools
import os
import subprocess


@functools.cache
def commit():
  """The short git commit of the code measured (with ``+`` if it has changes), or None."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return head + ("+" if dirty.strip() else "")


def fields() -> dict:
  """``{'backend', 'device', 'jax', 'commit'}`` of this process's first device and code."""
  import jax
  return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
          "jax": jax.__version__, "commit": commit()}


def quiet_logs():
  """Keeps absl's logging at WARNING unless ``--verbosity`` was given.

  A benchmark's output is its JSON lines; JAX's start-up notes (``Unable to
  initialize backend 'tpu'``) and orbax's would come between them on a
  terminal. Call it first in ``main``, once absl has parsed the flags.
  """
  from absl import flags
  from absl import logging
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
