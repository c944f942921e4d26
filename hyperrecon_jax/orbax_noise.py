"""What orbax prints that says nothing to a user, kept off stderr.

A read-only checkpoint manager warns that it is read only; a restore that
fails on one array leaves the other arrays' reads to be collected later, each
printed as "Exception ignored in ..." with a traceback; a save that fails to
write leaves every other array's failed write to asyncio, which logs each as
"Future exception was never retrieved". `checkpoints` reports what matters (a
damaged step, a step it could not write, by name) itself.
"""

import contextlib
import os
import sys
import traceback

from absl import logging


@contextlib.contextmanager
def read_only_notice_hidden():
  """Hides orbax's warning that a read-only manager is read-only."""
  notice = lambda record: "is read only" not in record.getMessage()
  logger = logging.get_absl_logger()
  logger.addFilter(notice)
  try:
    yield
  finally:
    logger.removeFilter(notice)


def _abandoned_read(unraisable) -> bool:
  """Whether an unraisable exception is the remains of a failed orbax read.

  Two kinds: orbax's coroutines of the other arrays' reads, closed when they
  are collected; and tensorstore's completion callbacks, which call asyncio's
  ``call_soon_threadsafe`` straight from its own threads and find the event
  loop closed.
  """
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None:
    return f"{os.sep}orbax{os.sep}" in code.co_filename
  if unraisable.object is not None or not isinstance(unraisable.exc_value, RuntimeError):
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return bool(frames) and frames[0].name == "call_soon_threadsafe" and (
      frames[0].filename.endswith(os.path.join("asyncio", "base_events.py")))


def _not_an_abandoned_read(record) -> bool:
  """False for asyncio's log record of a read that orbax left when another array's failed.

  With older orbax (0.11) the event loop of a restore that failed on one
  array shuts down with the other arrays' reads still failing, and asyncio
  logs each ("unhandled exception during asyncio.run() shutdown") with its
  traceback through orbax's reader.
  """
  error = record.exc_info[1] if record.exc_info else None
  return not (record.getMessage().startswith("unhandled exception during asyncio.run() shutdown")
              and error is not None and _raised_in_orbax(error))


def hide_abandoned_reads() -> None:
  """Keeps what a failed orbax read leaves behind off stderr, from now on.

  When one array of a step cannot be read, orbax's restore raises while the
  reads of the other arrays are still under way, and Python prints each of
  their remains as "Exception ignored in ..." with a traceback: dozens for
  one damaged step, some long after `restore` has warned about the step and
  gone on (a failed save leaves the same). Installed once, before the first
  read or save, the hook drops exactly those (`_abandoned_read`) and passes
  every other one to the hook before it; a filter of asyncio's log drops
  the records older orbax leaves of the same reads (`_not_an_abandoned_read`).
  """
  global _unraisable_hook_installed
  if _unraisable_hook_installed:
    return
  import logging as std_logging
  std_logging.getLogger("asyncio").addFilter(_not_an_abandoned_read)
  previous = sys.unraisablehook

  def hook(unraisable):
    if not _abandoned_read(unraisable):
      previous(unraisable)
  sys.unraisablehook = hook
  _unraisable_hook_installed = True


_unraisable_hook_installed = False


def _not_a_failed_write(record) -> bool:
  """False for a log record of one array's failed write.

  tensorstore's failures name the step's temporary folder and carry the
  system's error code; orbax's own threads log the OSError of a file they
  write themselves, with its traceback.
  """
  message = record.getMessage()
  if ".orbax-checkpoint-tmp" in message and "os_error_code" in message:
    return False
  error = record.exc_info[1] if record.exc_info else None
  # A file orbax writes itself in a thread of asyncio's (`async_path`): the
  # OSError of its future, which nobody collects once the save has failed.
  if (message.startswith("Future exception was never retrieved")
      and isinstance(error, OSError) and _raised_in_orbax(error)):
    return False
  # After a failed write orbax removes the unfinished step in a thread of its
  # own; when the process ends first, that thread finds the executor shut
  # down ("after shutdown", or "after interpreter shutdown"; the next trainer
  # removes the step instead).
  shutdown = (isinstance(error, RuntimeError)
              and "cannot schedule new futures after" in str(error))
  return not ("_SignalingThread.run() raised an exception" in message
              and (isinstance(error, OSError) or "os_error_code" in message or shutdown))


def _raised_in_orbax(error: BaseException) -> bool:
  """Whether ``error``'s traceback passes through orbax's code."""
  marker = f"{os.sep}orbax{os.sep}"
  return any(marker in frame.filename for frame in traceback.extract_tb(error.__traceback__))


def hide_failed_writes() -> None:
  """Keeps what a save that fails to write leaves behind off stderr, from now on.

  When a file of a step cannot be written (a full disk), each array's write
  fails: orbax logs every failure with its traceback, asyncio logs the futures
  no one collected ("Future exception was never retrieved"), and tensorstore's
  callbacks find the event loop closed (`hide_abandoned_reads`): over a
  thousand lines for one full disk. `checkpoints.save` reports the failure
  itself, in one sentence. Only those records are dropped: the ones that name
  a file of an unfinished step (``*.orbax-checkpoint-tmp``) with a system
  error code, orbax's thread failures of an OSError, and its removal of the
  unfinished step cut off by the end of the process. Installed before the
  first save (again is a no-op).
  """
  import logging as std_logging
  for logger in (std_logging.getLogger("asyncio"), logging.get_absl_logger()):
    if _not_a_failed_write not in logger.filters:
      logger.addFilter(_not_a_failed_write)
  hide_abandoned_reads()
