"""Joining a multi-process run from the command line: flags, a port check, a deadline.

How the processes of a run end together is `cli_ending`.
"""

import errno
import signal
import socket
import sys
import threading

import cli

# How long a process waits for the others of its run (JAX's own default).
JOIN_TIMEOUT = 300


def define_distributed_flags():
  """``--coordinator``, ``--num_processes``, ``--process_id``, ``--distributed``: join a run.

  Several processes train one run together (`jax.distributed.initialize`).
  Outside Slurm, Open MPI and TPU each process needs the three numbers; there
  ``--distributed`` alone lets JAX find them.

  Returns:
    A dict of the flag holders (and ``--join_timeout``'s), for `join_processes`.
  """
  from absl import flags
  holders = dict(
      coordinator=flags.DEFINE_string(
          "coordinator", None, "HOST:PORT of process 0 of a multi-process run (every process "
          "gives the same); with --num_processes and --process_id."),
      num_processes=flags.DEFINE_integer(
          "num_processes", None, "Number of processes of a multi-process run.", lower_bound=1),
      process_id=flags.DEFINE_integer(
          "process_id", None, "This process's number in a multi-process run, 0 … "
          "--num_processes - 1; process 0 writes the run's own files.", lower_bound=0),
      distributed=flags.DEFINE_bool(
          "distributed", False, "Join a multi-process run whose coordinator, size and "
          "process number JAX finds itself (Slurm, Open MPI, TPU); also "
          "--config.train.distributed=true."),
      join_timeout=flags.DEFINE_integer(
          "join_timeout", JOIN_TIMEOUT, "Seconds a process of a multi-process run waits for "
          "all of them to join before it gives up.", lower_bound=1))
  flags.register_validator("coordinator", _check_coordinator)
  flags.register_multi_flags_validator(
      ["num_processes", "process_id"],
      lambda f: (f["num_processes"] is None) == (f["process_id"] is None)
      and (f["num_processes"] is None or f["process_id"] < f["num_processes"]),
      message="give --num_processes and --process_id together, with --process_id < "
      "--num_processes")
  cli.key_flags(*holders.values())
  return holders


def _check_coordinator(value) -> bool:
  """``--coordinator`` is HOST:PORT with a port in 1–65535 (JAX crashed on anything else).

  Raises:
    flags.ValidationError: naming the value.
  """
  from absl import flags
  if value is None:
    return True
  host, _, port = value.rpartition(":")
  if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
    # absl names the flag and its value before this.
    raise flags.ValidationError(
        "expected HOST:PORT with a port 1-65535, the address of process 0, e.g. "
        "10.0.0.1:12345 or [::1]:12345")
  return True


def join_processes(holders, distributed: bool = False) -> bool:
  """Joins a multi-process run if the flags (or the config) ask for one.

  Must run before any JAX computation: JAX's backend starts knowing its peers.

  Args:
    holders: from `define_distributed_flags`.
    distributed: join even without flags (``config.train.distributed``).

  Returns:
    Whether this process joined a multi-process run.

  Raises:
    InputError: without ``--distributed``, not all three of ``--coordinator``,
      ``--num_processes`` and ``--process_id`` (naming the missing ones,
      before anything is printed); the arguments JAX finds are incomplete
      (JAX's message); or process 0's port is taken (another process 0, or
      another program).

  When not every process joins within ``--join_timeout`` seconds (one was
  never started, or two were given one ``--process_id``), JAX would end the
  process with a C++ stack dump: this one prints one ``error:`` line and
  exits with status 2 first.
  """
  value = {name: holder.value for name, holder in holders.items()}
  distributed = value.pop("distributed") or distributed
  timeout = value.pop("join_timeout", JOIN_TIMEOUT)
  if not distributed and all(v is None for v in value.values()):
    return False
  from hyperrecon_jax import errors
  coordinator, count, index = (value["coordinator"], value["num_processes"],
                               value["process_id"])
  if not distributed:
    _check_complete(value)
  import jax
  if coordinator is not None:
    _check_resolves(coordinator)
  if coordinator is not None and index == 0:
    _check_port_free(coordinator)
  where = f"at {coordinator}" if coordinator else "(found by JAX)"
  print(f"joining a run of {count or 'several'} processes {where} as process "
        f"{'?' if index is None else index}; waiting up to {timeout} s for all of them",
        file=sys.stderr, flush=True)
  watchdog = threading.Timer(timeout, _not_joined, (timeout, where, count))
  watchdog.daemon = True
  watchdog.start()
  stop_watching = _interruptible_wait()
  try:
    # JAX's own deadline after ours: its expiry aborts the process.
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=count,
                               process_id=index, initialization_timeout=timeout + 60)
  except (RuntimeError, ValueError, TypeError) as e:
    raise errors.InputError(f"cannot join the multi-process run ({cli.one_line(e)}); give "
                            "--coordinator, --num_processes and --process_id, or run "
                            "under Slurm or Open MPI") from e
  finally:
    stop_watching()
    watchdog.cancel()
  # JAX's preemption notifier takes SIGTERM over (in C++): a scheduler's
  # SIGTERM during start-up was only logged, and the run trained to its end.
  handler = signal.getsignal(signal.SIGTERM)
  if callable(handler):
    signal.signal(signal.SIGTERM, handler)
  return True


def check_process_count(holders) -> None:
  """Refuses a process whose ``--num_processes`` is not the run's.

  Process 0's count is the run's: a process given another one joins it all
  the same, and would train its share of batches cut for another count.
  Called inside `cli_ending.ending_with_the_run`, so that its peers are told
  why it ends.

  Args:
    holders: from `define_distributed_flags`.

  Raises:
    InputError: naming both counts.
  """
  import jax

  from hyperrecon_jax import errors
  count = holders["num_processes"].value
  if count is not None and jax.process_count() != count:
    raise errors.InputError(
        f"process {jax.process_index()} was given --num_processes={count}, but process 0 "
        f"started a run of {jax.process_count()}: give every process the same "
        "--num_processes")


def _check_complete(value) -> None:
  """Refuses some of ``--coordinator``, ``--num_processes``, ``--process_id`` without the rest.

  Without ``--distributed`` JAX has nothing to find the missing ones in, and
  would say so only at the join, after this process announced that it was
  joining.

  Args:
    value: the three flags' values by name (None: not given).

  Raises:
    InputError: naming the flags given and those missing.
  """
  from hyperrecon_jax import errors
  given = [f"--{name}={v}" for name, v in value.items() if v is not None]
  missing = [f"--{name}" for name, v in value.items() if v is None]
  if missing:
    raise errors.InputError(
        f"{' '.join(given)} {'needs' if len(given) == 1 else 'need'} "
        f"{' and '.join(missing)}: every process of a run gives "
        "--coordinator=HOST:PORT (process 0's address), --num_processes=N and its own "
        "--process_id=I; or give --distributed where JAX finds them (Slurm, Open MPI, TPU)")


def _check_resolves(coordinator: str) -> None:
  """Refuses a ``--coordinator`` host that has no address.

  JAX would wait for it until ``--join_timeout``, and that line names the
  processes that did not join, not the address.
  """
  from hyperrecon_jax import errors
  host, _, port = coordinator.rpartition(":")
  try:
    socket.getaddrinfo(host.strip("[]"), int(port))
  except (socket.gaierror, UnicodeError) as e:  # UnicodeError: an empty or overlong label
    raise errors.InputError(f"--coordinator={coordinator}: the host {host} cannot be resolved "
                            f"({getattr(e, 'strerror', None) or e}): give process 0's name or "
                            "address") from None


def _check_port_free(coordinator: str) -> None:
  """Refuses process 0 a port that something on this machine listens on already.

  JAX's coordination service shares its port (``SO_REUSEPORT``), so a second
  process 0 on the same port starts without a word and both then wait for
  peers that register with the other. A plain socket, which does not share,
  cannot bind a port anything listens on.
  """
  from hyperrecon_jax import errors
  port = int(coordinator.rpartition(":")[2])
  for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this machine
      continue
    with probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
      try:
        probe.bind((address, port))
      except OSError as e:
        if e.errno != errno.EADDRINUSE:
          return  # not this machine's address to bind: JAX will say
        raise errors.InputError(
            f"port {port} of --coordinator={coordinator} is in use on this machine: "
            "another process 0 holds it (give each process its own --process_id) or "
            "another program does (give another port)") from None
    return


def _interruptible_wait():
  """Ends the process on SIGINT or SIGTERM while the main thread waits in C++.

  Python runs its signal handlers on the main thread only, between
  bytecodes: inside ``jax.distributed.initialize`` a Ctrl-C waited for the
  join to end (``--join_timeout``, 300 s by default). The handlers' C part
  still writes each signal's number to the wakeup file descriptor; a thread
  reads it and ends the process as `cli.run` does: ``interrupted``, status
  128 + the signal. Nothing is written before the join, so nothing is lost.

  Returns:
    A function that stops the watching (call it when the wait is over).
  """
  read, write = socket.socketpair()
  write.setblocking(False)
  previous = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)

  def watch():
    try:
      got = read.recv(1)
    except OSError:  # closed by stop
      return
    if got:
      print("interrupted", file=sys.stderr, flush=True)
      cli.exit_now(128 + got[0])

  threading.Thread(target=watch, daemon=True).start()

  def stop():
    signal.set_wakeup_fd(previous)
    read.shutdown(socket.SHUT_RDWR)  # recv returns b'': the thread ends
    read.close()
    write.close()

  return stop


def _not_joined(timeout: int, where: str, count) -> None:
  """Ends a process whose run did not assemble: one line, exit status 2."""
  peers = {None: "0, 1, …", 2: "0 and 1"}.get(count, f"0 … {(count or 1) - 1}")
  print(f"error: not every process of the run joined within {timeout} s {where}: start "
        f"each of --process_id={peers} once, with the same --coordinator, or give them "
        "longer with --join_timeout", file=sys.stderr, flush=True)
  cli.exit_now(2)
