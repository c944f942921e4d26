"""Tests of hyperrecon_jax.orbax_noise: which of orbax's log records a failed save hides.

The records are those a save on a full disk logged (tmpfs filled for real,
2026-12-06): each is built here with the exception it carried, raised from
code whose file lies where orbax's does, or elsewhere.
"""

import errno
import logging
import os
import sys

import pytest

from hyperrecon_jax import orbax_noise

_ORBAX_FILE = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "_src", "path",
                           "async_path.py")


def _raised(error, filename):
  """``error`` raised (and caught) in code that claims to live in ``filename``."""
  code = compile("def write():\n  raise error\n", filename, "exec")
  scope = {"error": error}
  exec(code, scope)  # noqa: S102 (a frame with that file name)
  try:
    scope["write"]()
  except BaseException as e:  # noqa: BLE001
    return e
  raise AssertionError("not raised")


def _record(message, error=None):
  exc_info = None if error is None else (type(error), error, error.__traceback__)
  return logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1771, message, None,
                           exc_info)


def _no_space():
  return OSError(errno.ENOSPC, "No space left on device")  # a new one: a raise adds its frames


FUTURE = ("Future exception was never retrieved\n"
          "future: <Future finished exception=OSError(28, 'No space left on device')>")
THREAD = ("[process=0][thread=array_type_handler][operation_id=2] _SignalingThread.run() "
          "raised an exception: {}")


def test_the_uncollected_future_of_a_file_orbax_wrote_is_hidden():
  # It came after the one error line, as a 13-line traceback.
  assert not orbax_noise._not_a_failed_write(_record(FUTURE, _raised(_no_space(), _ORBAX_FILE)))


def test_an_uncollected_future_of_other_code_is_kept():
  mine = os.path.join(os.sep, "home", "me", "script.py")
  assert orbax_noise._not_a_failed_write(_record(FUTURE, _raised(_no_space(), mine)))
  assert orbax_noise._not_a_failed_write(
      _record(FUTURE, _raised(ValueError("bad"), _ORBAX_FILE)))


@pytest.mark.parametrize("words", ["cannot schedule new futures after shutdown",
                                   "cannot schedule new futures after interpreter shutdown"])
def test_the_step_removal_cut_off_by_the_end_of_the_process_is_hidden(words):
  # Python 3.9+ says "after interpreter shutdown" when the interpreter ends:
  # matched on "after shutdown" alone, it printed a 54-line traceback.
  error = _raised(RuntimeError(words), _ORBAX_FILE)
  assert not orbax_noise._not_a_failed_write(_record(THREAD.format(words), error))


def test_other_thread_failures_and_records_are_kept():
  error = _raised(RuntimeError("a bug"), _ORBAX_FILE)
  assert orbax_noise._not_a_failed_write(_record(THREAD.format("a bug"), error))
  assert orbax_noise._not_a_failed_write(_record("Saving checkpoint 4."))
  assert not orbax_noise._not_a_failed_write(_record(
      'Error writing "/w/checkpoints/4.orbax-checkpoint-tmp/state/d/0" [os_error_code=28]'))


def test_a_real_uncollected_future_is_filtered_on_the_asyncio_logger(caplog):
  import asyncio
  import gc
  orbax_noise.hide_failed_writes()
  error = _raised(OSError(errno.ENOSPC, "No space left on device"), _ORBAX_FILE)
  other = _raised(OSError(errno.EACCES, "Permission denied"), __file__)
  loop = asyncio.new_event_loop()
  try:
    for e in (error, other):
      loop.create_future().set_exception(e)  # never retrieved: logged when collected
    gc.collect()
  finally:
    loop.close()
  logged = [r for r in caplog.records if "never retrieved" in r.getMessage()]
  assert [r.exc_info[1] for r in logged] == [other], [r.getMessage() for r in logged]
  assert sys.unraisablehook is not sys.__unraisablehook__


def test_asyncios_record_of_a_read_older_orbax_left_is_hidden():
  # orbax 0.11 (the lower bound): a restore that failed on one array logged
  # the other arrays' failed reads as asyncio.run() shut down, tracebacks
  # after the one warning on a damaged step.
  message = ("unhandled exception during asyncio.run() shutdown\n"
             "task: <Task finished name='Task-282' coro=<async_deserialize() done>>")
  read = _raised(Exception("Encountered error while reading array index"), _ORBAX_FILE)
  assert not orbax_noise._not_an_abandoned_read(_record(message, read))
  mine = _raised(Exception("a bug"), os.path.join(os.sep, "home", "me", "script.py"))
  assert orbax_noise._not_an_abandoned_read(_record(message, mine))
  assert orbax_noise._not_an_abandoned_read(_record(FUTURE, read))
