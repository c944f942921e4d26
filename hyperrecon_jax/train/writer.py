"""Where training metrics go: metrics.jsonl, TensorBoard event files, the terminal."""

import contextlib
import glob
import json
import os
import struct
import sys

from absl import logging

from hyperrecon_jax import atomic_writes
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


EVENT_FILES = "events.out.tfevents.*"


class MetricWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

  On resume from step ``start_step``, records of later steps (written by the
  interrupted run after its last checkpoint) are dropped, so ``metrics.jsonl``
  reads as one uninterrupted run, and TensorBoard drops the later events
  (``purge_step``). A run that starts from step 0 where an earlier run left
  records (its checkpoints were damaged, or never written) keeps them as
  ``metrics.jsonl.<n>.old`` and its TensorBoard event files in the folder
  ``events.<n>.old``, where TensorBoard shows them as a run of their own
  instead of mixed into the new run's curves, and its report ``eval/`` as
  ``eval.<n>.old``, and says so. A writer that is
  not ``enabled`` (every process but the first of a multi-host run) writes
  nothing.

  Raises:
    OSError: a write failed (a full disk), naming the file.
  """

  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._workdir = workdir
    self._file = self._tb = None
    if not enabled:
      return
    if start_step and os.path.exists(self.path):
      kept = [line for step, line in _read_records(self.path)
              if step <= start_step]
      atomic_writes.write_text(self.path, "".join(kept))
    if start_step:
      _set_aside_later_report(workdir, self.path, start_step)
    else:
      _set_aside_earlier_run(workdir, self.path)
    self._file = open(self.path, "a")
    try:
      tensorboardx = extras.require("tensorboardX", "viz", "TensorBoard logging")
    except extras.MissingDependency as e:
      logging.warning("%s. Training goes on without TensorBoard event files.", e)
      return
    # The earlier runs' event files are cut back to the resumed step as
    # metrics.jsonl is above, so that every reader sees one run; purge_step
    # tells a TensorBoard that has already read the dropped events.
    try:
      if start_step:
        for path in sorted(glob.glob(os.path.join(glob.escape(workdir), EVENT_FILES))):
          _cut_event_file(path, start_step)
      self._tb = self._tensorboard(lambda: tensorboardx.SummaryWriter(
          workdir, purge_step=start_step + 1 if start_step else None))
    except OSError:
      self._file = _discard(self._file)  # no writer is returned to close it
      raise

  def write(self, step: int, record: dict) -> None:
    if self._file is None:
      return
    line = json.dumps({"step": step, **record}) + "\n"
    try:
      self._file.write(line)
      self._file.flush()
    except OSError:
      # Both closed now, quietly: closing later would flush into the same
      # full disk, and its error would replace this one.
      self._file = _discard(self._file)
      self._end_tensorboard()
      with atomic_writes.naming_file(self.path):
        raise
    if self._tb is not None:
      def add():
        for name, value in record.items():
          self._tb.add_scalar(name, value, step)
        self._tb.flush()
      self._tensorboard(add)

  def close(self) -> None:
    """Closes both files; the first failure (a full disk) is raised, naming its file."""
    file, self._file = self._file, None
    if file is not None:
      try:
        with atomic_writes.naming_file(self.path):
          file.close()
      except OSError:
        self._end_tensorboard()
        raise
    if self._tb is not None:
      self._tensorboard(self._tb.close)

  def _end_tensorboard(self) -> None:
    """Closes the event file ignoring its errors: another error is being raised."""
    tb, self._tb = self._tb, None
    if tb is not None:
      with contextlib.suppress(Exception):
        tb.close()

  def _tensorboard(self, call):
    """``call()``; its OSError (a full disk) names the event file and ends TensorBoard logging."""
    try:
      return call()
    except OSError:
      self._end_tensorboard()
      with atomic_writes.naming_file(_newest_event_file(self._workdir)):
        raise


def _newest_event_file(workdir: str) -> str:
  """The event file TensorBoard writes now: the newest in ``workdir`` (else their pattern)."""
  events = glob.glob(os.path.join(glob.escape(workdir), EVENT_FILES))
  return max(events, key=os.path.getmtime) if events else os.path.join(workdir, EVENT_FILES)


def _cut_event_file(path: str, start_step: int) -> None:
  """Keeps the intact events of ``path`` up to ``start_step``, rewriting it if any go.

  An event file is a sequence of records (length, its masked CRC-32C, the
  event, its masked CRC-32C). A process killed mid-write leaves a cut-off
  last record, which readers other than TensorBoard (``tf.data``,
  ``summary_iterator``) refuse with a data-loss error; it is dropped, with
  anything after it, and said in a warning. Events after ``start_step``
  (written after the checkpoint the run resumes from) are dropped too, as
  they are from ``metrics.jsonl``. A file left with no events but its
  header (the format's version) is removed.

  Raises:
    OSError: the file could not be read or rewritten, naming it.
  """
  # Imported here: tensorboardX's protobuf is optional, and the caller runs
  # this only where it is installed.
  from google.protobuf import message

  with atomic_writes.naming_file(path), open(path, "rb") as f:
    blob = f.read()
  kept, pos, headers_only = [], 0, True
  while pos < len(blob):
    length = struct.unpack("<Q", blob[pos:pos + 8])[0] if pos + 8 <= len(blob) else 0
    record = blob[pos:pos + 12 + length + 4]
    try:
      if len(record) < 12 + length + 4:
        raise ValueError("cut off")
      e = _event(record)
    except (ValueError, message.DecodeError):
      logging.warning("%s: the record at byte %d is cut off or damaged; it and the "
                      "%d bytes after it were dropped", path, pos, len(blob) - pos)
      break
    if e.step <= start_step:
      kept.append(record)
      headers_only = headers_only and e.WhichOneof("what") == "file_version"
    pos += len(record)
  if headers_only:
    with atomic_writes.naming_file(path):
      os.remove(path)
    return
  data = b"".join(kept)
  if len(data) != len(blob):
    atomic_writes.write_bytes(path, data)


def _event(record: bytes):
  """The event of one record (length, its masked CRC-32C, the event, its masked CRC-32C).

  Raises:
    ValueError: a record cut off, or either CRC wrong.
    google.protobuf.message.DecodeError: an event that does not decode.
  """
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c
  header, data = record[:8], record[12:-4]
  if (len(record) < 16 or struct.unpack("<I", record[8:12])[0] != masked_crc32c(header)
      or struct.unpack("<I", record[-4:])[0] != masked_crc32c(data)):
    raise ValueError("cut off or damaged")
  return event_pb2.Event.FromString(data)


def _holds_events(path: str) -> bool:
  """Whether an event file may hold anything but its header.

  Every event file begins with one record giving the format's version; a
  process stopped before it logged anything leaves that alone, or an empty
  file. False only for those two: a file of one intact record that decodes
  as the version. Anything else (more records, a damaged record, no
  tensorboardX to read it with) counts as events, to be kept.
  """
  with atomic_writes.naming_file(path), open(path, "rb") as f:
    head = f.read(8)
    size = os.fstat(f.fileno()).st_size
    if size == 0:
      return False
    if len(head) < 8 or size != 12 + struct.unpack("<Q", head)[0] + 4:
      return True
    record = head + f.read()
  try:
    from google.protobuf import message
    event = _event(record)
  except ImportError:
    return True
  except (ValueError, message.DecodeError):
    return True
  return event.WhichOneof("what") != "file_version"


def _free_number(workdir: str, path: str) -> int:
  """The first n free for all of ``metrics.jsonl.<n>.old``, ``events.<n>.old``, ``eval.<n>.old``."""
  n = 1
  while any(os.path.lexists(p) for p in (
      f"{path}.{n}.old", os.path.join(workdir, f"events.{n}.old"),
      os.path.join(workdir, f"eval.{n}.old"))):
    n += 1
  return n


def _set_aside_later_report(workdir: str, path: str, start_step: int) -> None:
  """Moves aside a report of a checkpoint past the step a run resumes from (`MetricWriter`).

  A run resumes from its newest intact checkpoint: a report of a later one
  scored weights that are gone (damaged), and left as ``eval/`` it would read
  as the report of the checkpoint the run writes again at that step.
  """
  report = os.path.join(workdir, "eval")
  try:
    with open(os.path.join(report, "lambda_grid.json")) as f:
      step = json.load(f).get("checkpoint_step")
  except (OSError, ValueError, AttributeError):
    return  # no report, or none a reader would take for this run's
  if isinstance(step, bool) or not isinstance(step, int) or step <= start_step:
    return
  n = _free_number(workdir, path)
  os.replace(report, os.path.join(workdir, f"eval.{n}.old"))
  print(f"the report in {report} scored the checkpoint of step {step}, past step "
        f"{start_step} that this run resumes from: it is kept as eval.{n}.old",
        file=sys.stderr)


def _set_aside_earlier_run(workdir: str, path: str) -> None:
  """Moves an earlier run's records, event files and report aside (`MetricWriter`).

  Files without records (an empty ``metrics.jsonl``, an event file with no
  event but its header) are removed instead: there is no run to keep.
  """
  events = []
  for event in sorted(glob.glob(os.path.join(glob.escape(workdir), EVENT_FILES))):
    if _holds_events(event):
      events.append(event)
    else:
      with atomic_writes.naming_file(event):
        os.remove(event)
  records = os.path.exists(path) and os.path.getsize(path) > 0
  if os.path.exists(path) and not records:
    os.remove(path)
  # The earlier run's report scored weights this run replaces: left as eval/,
  # it would read as this run's report (summarize pairs it with the new run's
  # checkpoint of the step it names).
  report = os.path.join(workdir, "eval")
  report = report if os.path.lexists(report) else None
  if not records and not events and not report:
    return
  n = _free_number(workdir, path)
  kept = []
  if records:
    os.replace(path, f"{path}.{n}.old")
    kept.append(f"its metrics as metrics.jsonl.{n}.old")
  if events:
    folder = os.path.join(workdir, f"events.{n}.old")
    os.makedirs(folder)
    for event in events:
      os.replace(event, os.path.join(folder, os.path.basename(event)))
    kept.append(f"its TensorBoard events in events.{n}.old")
  if report:
    os.replace(report, os.path.join(workdir, f"eval.{n}.old"))
    kept.append(f"its report in eval.{n}.old")
  print(f"the previous run in {workdir} is kept: {' and '.join(kept)}", file=sys.stderr)


def _discard(file) -> None:
  """Closes ``file`` after a failed write, dropping what it could not write."""
  with contextlib.suppress(OSError):
    file.close()
  return None


def summary(record: dict) -> str:
  """The loss, validation PSNR and weight spreads of a log record, as one line."""
  keys = (["loss"] + sorted(k for k in record if k.startswith("val_psnr"))
          + sorted(k for k in record if k.startswith("weight_spread")))
  return " ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)
