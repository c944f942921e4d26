"""Where a benchmark's number came from: the fields every JSON line of `benchmarks/` carries.

A number is only comparable with one of the same backend, device, jax version
and code, so every script prints these beside its measurement.
"""

import functools
import os
import subprocess

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def commit():
  """The short git commit of the code measured (with ``+`` if it has changes), or None."""
  try:
    head = subprocess.run(["git", "-C", _REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", _REPO, "status", "--porcelain", "--untracked-files=no"],
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
  """The libraries' log lines hidden unless ``--verbosity`` was given, as in the scripts.

  A benchmark's output is its JSON lines; JAX's start-up notes (``Unable to
  initialize backend 'tpu'``) and orbax's would come between them on a
  terminal. The rule is `experiments/cli.py`'s ``quiet_libraries``. Call it
  first in ``main``, once absl has parsed the flags.
  """
  import sys
  scripts = os.path.join(_REPO, "experiments")
  if scripts not in sys.path:
    sys.path.insert(0, scripts)
  import cli
  cli.quiet_libraries()
