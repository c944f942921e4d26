"""Ending the processes of a multi-process run together: each one's end told to its peers."""

import contextlib
import re
import signal
import sys
import threading
import time
import traceback

import cli


@contextlib.contextmanager
def ending_with_the_run(joined: bool):
  """In a multi-process run, ends this process at once when its work raises, and its peers.

  When another process of the run dies (``kill -9``, a lost host), this one's
  next collective fails (Gloo: "connection reset by peer"). Left to Python's
  shutdown, the process would then wait in JAX's distributed shutdown for the
  dead one: about 3 minutes deaf to SIGTERM (the main thread is in C++), and
  then an abort with a C++ stack dump. Every ``finally`` has run by the time
  the error gets here (the lock released, checkpoints written synchronously),
  so the process exits with status 1 without the shutdown, after one line on
  what to do: alone where the error is a broken connection to a peer
  (`lost_connection`), below the traceback for any other error. A user error
  (one ``error:`` line, status 2) and an interrupt (130, 143) end the same
  way.

  An error that stops one process (a data folder it cannot read: often on one
  process alone, or on each at its own moment) would leave the others waiting
  in their next collective, and when process 0 ends, JAX aborts them with a
  C++ stack dump, since process 0 hosts the run's coordination service. So an
  ending process posts its status and reason there (`_post_end`). Every
  process watches for such posts (`_watch_peers`) and ends with one
  ``error: process N of this run stopped: …`` line and that status, at once
  after posting its own end. Process 0 alone, which holds the workdir's lock,
  first gives its own stack a moment to unwind (its collective fails when the
  peer is gone), and takes the service down only once every other process
  has posted (`_wait_for_peers`).

  Args:
    joined: whether this process joined a multi-process run (else a no-op).
  """
  if not joined:
    yield
    return
  stop = threading.Event()
  watch = threading.Thread(target=_watch_peers, args=(stop,), daemon=True, name="peer-watch")
  watch.start()
  try:
    yield
  except SystemExit as e:  # sys.exit(): None is success, a message is status 1
    code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    if code in QUIET_ENDS:
      cli.exit_now(code)
    if _claim("self") == "peer":
      _after_peer()
    # The error line is printed (`cli.user_errors`); the peers are told it.
    _post_end(code, cli.one_line(e.__cause__) if e.__cause__ is not None
              else f"exit status {code}")
    _wait_for_peers()
    cli.exit_now(code)
  except KeyboardInterrupt:
    # A signal to this process alone, at start-up (in training the processes
    # agree on a signal and stop together, `sharded.stop_agreement`): its
    # peers are told, as of an error, and end with its status.
    if _claim("self") == "peer":
      _after_peer()
    from hyperrecon_jax import interrupts
    signum = interrupts.last() or signal.SIGINT
    _post_end(128 + signum, f"interrupted ({signal.Signals(signum).name})")
    _wait_for_peers()
    raise  # cli.run prints "interrupted" and ends the process without the shutdown
  except BaseException as e:  # noqa: BLE001 (a bug keeps its traceback, above the line)
    if _claim("self") == "peer" or _end_of_a_peer():
      _after_peer()  # the collective failed because a peer ended: its line says why
    lost = lost_connection(e)
    if lost is not None:
      # A peer that died says nothing: the broken connection is all there is to tell.
      reason = (f"the connection to another process of the run broke in a collective "
                f"({lost}): that process died or its host cannot be reached; rerun every "
                "process's command to resume from the last checkpoint")
      print(f"error: {reason}", file=sys.stderr)
    else:
      traceback.print_exc()
      print("error: this process of a multi-process run stopped on the error above; if "
            "another process of the run died, rerun every process's command to resume "
            "from the last checkpoint", file=sys.stderr)
      reason = (f"{type(e).__name__}: {cli.one_line(e)} (its traceback is in that "
                "process's output; if a process of the run died, rerun every process's "
                "command to resume from the last checkpoint)")
    _post_end(1, reason)
    _wait_for_peers()
    cli.exit_now(1)
  _end_well(stop, watch)


def _end_well(stop: threading.Event, watch: threading.Thread) -> None:
  """Leaves the run when this process's work ended well: JAX's shutdown, then the watch stops.

  JAX's distributed shutdown waits until every process of the run reaches it.
  The watch goes on meanwhile, so that a peer whose work fails after this
  one's ended (process 0 still writing the run's files) ends this process
  with that peer's line and status. The watch then stops before the
  interpreter exits: Python ends a daemon thread that wakes up during the exit
  by unwinding its stack, and when that thread is inside a call of the
  coordination client, the client's C++ frames catch the unwinding and the
  process aborts ("FATAL: exception not rethrown", status −6) after a run
  that succeeded. Every other end leaves by `cli.exit_now`, without the exit.

  Args:
    stop: the watch's stop.
    watch: the thread of `_watch_peers`.
  """
  import jax
  try:
    jax.distributed.shutdown()
  except Exception:  # noqa: BLE001 (a peer ended without it: the watch tells why, if it posted)
    pass
  stop.set()
  watch.join(WATCH_STOP_S)


# What a failed collective says when its connection to another process broke:
# Gloo's words for a socket whose other end is gone (a process killed, a host lost).
LOST_CONNECTION = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def lost_connection(error: BaseException) -> str | None:
  """The failed collective's message if ``error`` is a broken connection to a peer, else None.

  Only the runtime error itself counts: another exception raised while it
  unwound (a bug in a handler) keeps its traceback.

  Args:
    error: what ended this process's work.

  Returns:
    The runtime error's message on one line, without its status code (e.g.
    ``UNKNOWN:``) and Gloo's source location; None for any other error.
  """
  text = cli.one_line(error)
  # XLA's runtime errors (XlaRuntimeError in older jaxlib), raised by the
  # collective; a jitted all-gather's dispatch (orbax's barrier in a save)
  # raises the runtime's status as a ValueError, Gloo's failure word for word.
  runtime = type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError") or (
      isinstance(error, ValueError) and re.match(r"[A-Z_]+: Gloo [^:]* failed: ", text))
  if runtime and any(words in text for words in LOST_CONNECTION):
    return re.sub(r"^[A-Z_]+: |\[[^\]]*\.cc:\d+\] ", "", text)
  return None


# Ends that need no word to the peers: success, and the interrupts of training,
# which the processes agree on (`sharded.stop_agreement`).
QUIET_ENDS = (0, 130, 143)
# The coordination service's keys under which processes post their end.
ENDED_KEY = "hyperrecon/ended/"
PEER_POLL_S = 0.5  # how often a process looks for its peers' ends
# How long process 0 keeps the service up for its peers to read its end: each
# notices within PEER_POLL_S. A peer that died, or ended on a signal that
# its peers are not told of, never posts, and process 0 waits this long.
PEER_GRACE_S = 5.0
# How long process 0, when a peer ended, gives its own stack to unwind (a
# collective fails at once when the peer is gone; the lock is released on the
# way) before it exits without: a compilation or a dataset build would keep it
# for minutes, and nothing is lost (a lock left behind is taken over by the
# next trainer). The other processes hold nothing to release, and must be gone
# before process 0 takes the service down, or JAX aborts them.
UNWIND_S = 5.0
# How long a process that ends well waits for its watch to stop: at most one
# call to the coordination service, or `UNWIND_S` and `PEER_GRACE_S` when a
# peer's end arrived at the same moment and the watch ends the process.
WATCH_STOP_S = 60.0
_lock = threading.Lock()
_ending = {}  # who ends this process ('self' or 'peer') and, for a peer, with which status


def _claim(who: str) -> str:
  """Records who ends this process, unless that is decided; returns who does."""
  with _lock:
    _ending.setdefault("who", who)
    return _ending["who"]


def _end_of_a_peer() -> bool:
  """Whether another process posted its end; if so, says it, as the watch would."""
  try:
    ended = _peer_posts()
  except Exception:  # noqa: BLE001 (the service is gone: nothing to read)
    return False
  if not ended:
    return False
  _say_peer_end(ended)
  return True


def _say_peer_end(ended: dict) -> None:
  """Says which process stopped the run and why, and posts that this one ends with it."""
  code, origin, reason = min(ended.values(), key=lambda post: post[1])
  print(f"error: process {origin} of this run stopped: {reason}", file=sys.stderr, flush=True)
  _ending["code"] = code
  _post_end(code, reason, origin)


def _after_peer() -> None:
  """Ends this process with the status of the peer whose end `_watch_peers` said."""
  _wait_for_peers()
  cli.exit_now(_ending.get("code", 1))


def _post_end(code: int, reason: str, origin: int | None = None) -> None:
  """Posts this process's end: its status, and the process whose error it is, and why."""
  import jax

  from hyperrecon_jax.train import sharded
  me = jax.process_index()
  try:
    sharded.coordination_client().key_value_set(
        f"{ENDED_KEY}{me}", f"{code}\n{me if origin is None else origin}\n{reason}")
  except Exception:  # noqa: BLE001 (posted already, or the service is gone: nobody to tell)
    pass


def _ended_peers() -> dict[int, tuple[int, int, str]]:
  """``{process: (status, process whose error ended it, reason)}`` of those that posted."""
  from hyperrecon_jax.train import sharded
  ended = {}
  for key, value in sharded.coordination_client().key_value_dir_get(ENDED_KEY):
    code, origin, reason = value.split("\n", 2)
    ended[int(key.rsplit("/", 1)[-1])] = (int(code), int(origin), reason)
  return ended


def _peer_posts() -> dict[int, tuple[int, int, str]]:
  """`_ended_peers` of the other processes."""
  import jax
  me = jax.process_index()
  return {k: v for k, v in _ended_peers().items() if k != me}


def _wait_for_peers() -> None:
  """On process 0: waits until every other process posted its end (up to `PEER_GRACE_S`)."""
  import jax
  if jax.process_index() != 0:
    return
  deadline = time.monotonic() + PEER_GRACE_S
  while time.monotonic() < deadline:
    try:
      if len(_ended_peers()) >= jax.process_count():
        break
    except Exception:  # noqa: BLE001 (the service failed: nothing to wait for)
      return
    time.sleep(PEER_POLL_S / 5)
  # A peer posts and then exits at once; its exit must come before the service goes.
  time.sleep(PEER_POLL_S)


def _watch_peers(stop: threading.Event) -> None:
  """Ends this process, with the peer's status, when another process posts its end.

  Args:
    stop: set when this process ends well; the watch then returns within one poll.
  """
  import jax
  me = jax.process_index()
  while not stop.wait(PEER_POLL_S):
    try:
      ended = _peer_posts()
    except Exception:  # noqa: BLE001 (the service is gone: JAX's own handling follows)
      return
    if not ended:
      continue
    if _claim("peer") != "peer":
      return  # this process is ending on its own error and tells its peers itself
    _say_peer_end(ended)
    if me == 0:
      # The main thread's collective fails now that the peer is gone, and its
      # stack unwinds (the lock released); `ending_with_the_run` then exits.
      time.sleep(UNWIND_S)
    _after_peer()
