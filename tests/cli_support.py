"""What the command-line tests share: the scripts, their environment, one-line errors.

tests/test_cli.py (mistakes found before any work), tests/test_cli_signals.py
(Ctrl-C, SIGTERM and the exit status) and tests/test_cli_runs.py (the commands
that need a model) run ``experiments/*.py`` in subprocesses, as a user does.
"""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "experiments", "configs", "demo.py") + ":quick"
SR = os.path.join(REPO, "experiments", "configs", "knee_sr_sl.py") + ":quick"


def script_env(tmp_path_factory, compilation_cache) -> dict:
  """The environment of the scripts a test module runs: CPU, its data folder, the cache."""
  out = dict(os.environ)
  out["JAX_PLATFORMS"] = "cpu"
  out["HYPERRECON_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
  out["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
  # The processes compile as a user's would, except for conftest's faster
  # compilation (the same HLO programs).
  out["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                              if "xla_backend_optimization_level" in f)
  return out


def script(name):
  return os.path.join(REPO, "experiments", f"{name}.py")


def run(env, name, *args, timeout=600):
  return subprocess.run([sys.executable, script(name), *args], env=env,
                        capture_output=True, text=True, timeout=timeout,
                        cwd=REPO, check=False)


def assert_one_error_line(proc, pattern):
  """Exit status 2, no traceback, one ``error:`` line matching ``pattern``; returns the line."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert re.search(pattern, errors[0]), errors[0]
  return errors[0]
