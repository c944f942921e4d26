"""Readers never write into a training run: where a report or an output may go.

A file or folder inside a run's folder that no trainer writes makes the run's
next ``train.py`` (a resume, or the rerun of a finished run) refuse its folder
(`workdir.check_folder`). Evaluation, the explorer and reconstruct check their
outputs here before any work.
"""

import json
import os

from hyperrecon_jax import errors


def is_run_folder(folder: str) -> bool:
  """Whether ``folder`` holds a training run (``train.py``, ``baselines.py``).

  A run is known by its ``config.json``: a JSON object with the config's
  ``task``, ``data`` and ``model`` sections (a user's own ``config.json`` of
  another tool is none). An exported model's folder holds such a file too,
  beside its ``info.json``, and is no run.
  """
  try:
    with open(os.path.join(folder, "config.json")) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return False
  return (isinstance(config, dict) and all(isinstance(config.get(k), dict)
                                           for k in ("task", "data", "model"))
          and not os.path.exists(os.path.join(folder, "info.json")))


def run_holding(path: str) -> str | None:
  """The training run's folder that ``path`` lies in, at any depth, or None.

  Links are followed (``path`` need not exist): a folder linked into a run
  lies in it, a run's folder linked from elsewhere is still that run.
  """
  real = os.path.realpath(path)
  folder = os.path.dirname(real)
  while True:
    if is_run_folder(folder):
      return folder
    parent = os.path.dirname(folder)
    if parent == folder:
      return None
    folder = parent


def check_outside_runs(path: str, what: str, flag: str, *,
                       report_of: str | None = None) -> None:
  """Refuses to write ``path`` inside a training run's folder.

  Readers never write into a run: a file or folder there that no trainer
  writes makes the run's next ``train.py`` (a resume, or the rerun of a
  finished run) refuse its folder (`workdir.check_folder`). The one exception is a
  report into ``<run>/eval``, the run's own report folder, of that run.

  Args:
    path: the file or folder to write (need not exist).
    what: what ``path`` is, in words, for the message (``"the report folder"``).
    flag: the command-line flag that gives ``path`` (``"--out"``).
    report_of: the workdir of the run a report is of; its ``eval`` folder is
      accepted as ``path``.

  Raises:
    InputError: naming ``path`` and the run.
  """
  run = run_holding(path)
  if run is None:
    return
  own = os.path.join(run, "eval")
  evaluated = report_of is not None and os.path.realpath(report_of) == run
  if os.path.realpath(path) == own:
    if evaluated:
      return
    raise errors.InputError(
        f"{what} {path} is the report folder of the training run {run}, not of the model "
        f"evaluated: give {flag} outside that run")
  where = f" (or its own report folder {own})" if evaluated else ""
  raise errors.InputError(
      f"{what} {path} lies inside the training run {run}, which readers never write "
      f"into (its next train.py would refuse the folder): give {flag} outside the run{where}")
