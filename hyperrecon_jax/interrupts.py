"""Ctrl-C that a library swallowed at start-up still stops training.

The command-line scripts (`experiments/cli.py`) install `handler` for SIGINT
and SIGTERM: it remembers the signal, then raises ``KeyboardInterrupt`` as
Python's own SIGINT handler does. Most of the time that exception unwinds the script. But code
that catches every exception can swallow it (once in CI, a Ctrl-C sent while
the TFDS dataset was being built was lost, and training ran to its end). The
training loop calls `take` when it starts: a signal remembered there stops it
after its first step, with a checkpoint, as a Ctrl-C during training does.

Only the scripts install the handler, so in a notebook an interrupted cell
leaves nothing behind for the next run.
"""

_pending: list[int] = []


def handler(signum, frame):
  """A SIGINT or SIGTERM handler: remembers ``signum``, then raises ``KeyboardInterrupt``."""
  del frame
  _pending.append(signum)
  raise KeyboardInterrupt


def take() -> list[int]:
  """The signals `handler` has seen since the last call (and forgets them)."""
  out = list(_pending)
  _pending.clear()
  return out


def last() -> int | None:
  """The last signal `handler` has seen and `take` has not given out yet, or None."""
  return _pending[-1] if _pending else None
