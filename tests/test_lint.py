"""The project's lint rules (ruff.toml) hold for every file: CI runs them here."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
  # ruff comes with the test extra; `python -m ruff` runs the installed one.
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", REPO],
                        capture_output=True, text=True, check=False, cwd=REPO)
  assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
