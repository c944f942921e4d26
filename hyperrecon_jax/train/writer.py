"""Where training metrics go: metrics.jsonl, TensorBoard event files, the terminal."""

import json
import os
import sys

from absl import logging

from hyperrecon_jax import extras


def _read_records(path: str) -> list[tuple[int, str]]:
  """(step, line) of every intact record; a cut-off or garbled line is dropped.

  The process that wrote the file may have died mid-line (kill -9, a full
  disk); such a line would otherwise block every resume.
  """
  kept = []
  with open(path, errors="replace") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        step = int(json.loads(line)["step"])
      except (ValueError, KeyError, TypeError):
        logging.warning("%s: line %d is not a complete record and was "
                        "dropped: %.80r", path, number, line)
        continue
      kept.append((step, line if line.endswith("\n") else line + "\n"))
  return kept


class MetricWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

  On resume from step ``start_step``, records of later steps (written by the
  interrupted run after its last checkpoint) are dropped, so ``metrics.jsonl``
  reads as one uninterrupted run. A run that starts from step 0 where a
  ``metrics.jsonl`` exists (its checkpoints were damaged, or never written)
  keeps the old records as ``metrics.jsonl.<n>.old`` and says so. A writer
  that is not ``enabled`` (every process but the first of a multi-host run)
  writes nothing.
  """

  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = self._tb = None
    if not enabled:
      return
    if start_step and os.path.exists(self.path):
      kept = [line for step, line in _read_records(self.path)
              if step <= start_step]
      with open(self.path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(self.path + ".tmp", self.path)
    elif not start_step and os.path.exists(self.path):
      if os.path.getsize(self.path):
        n = 1
        while os.path.exists(f"{self.path}.{n}.old"):
          n += 1
        os.replace(self.path, f"{self.path}.{n}.old")
        print(f"the metrics of the previous run in {workdir} are kept as "
              f"metrics.jsonl.{n}.old", file=sys.stderr)
      else:
        os.remove(self.path)
    self._file = open(self.path, "a")
    try:
      tensorboardx = extras.require("tensorboardX", "viz", "TensorBoard logging")
    except extras.MissingDependency as e:
      logging.warning("%s. Training goes on without TensorBoard event files.", e)
    else:
      # purge_step drops the events an interrupted run wrote after its last
      # checkpoint, as metrics.jsonl is truncated above.
      self._tb = tensorboardx.SummaryWriter(workdir, purge_step=start_step + 1
                                            if start_step else None)

  def write(self, step: int, record: dict) -> None:
    if self._file is None:
      return
    self._file.write(json.dumps({"step": step, **record}) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in record.items():
        self._tb.add_scalar(name, value, step)
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


def summary(record: dict) -> str:
  """The loss, validation PSNR and weight spreads of a log record, as one line."""
  keys = (["loss"] + sorted(k for k in record if k.startswith("val_psnr"))
          + sorted(k for k in record if k.startswith("weight_spread")))
  return " ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)
