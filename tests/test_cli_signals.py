"""The experiment scripts' ends: Ctrl-C, SIGTERM, the exit status, one-line errors.

Ctrl-C gives ``interrupted`` and 130 and SIGTERM 143, wherever it lands
(start-up, a library's callback, the interpreter's shutdown), a run refused
after start-up leaves nothing behind, and only the project's errors become one
``error:`` line. Each test runs a script, or a small program using
``experiments/cli.py``, in a subprocess.
"""

import os
import signal
import subprocess
import sys
import time

from cli_support import DEMO
from cli_support import REPO
from cli_support import assert_one_error_line
from cli_support import run
from cli_support import script
from cli_support import script_env
import loop_support
import pytest

from hyperrecon_jax import workdir_lock


@pytest.fixture(scope="module")
def env(tmp_path_factory, compilation_cache):
  return script_env(tmp_path_factory, compilation_cache)


def test_a_run_refused_after_start_up_leaves_no_folder_behind(env, tmp_path):
  # The missing data folder is found after the trainer has taken the lock,
  # which created the workdir (and its parent).
  workdir = tmp_path / "new" / "run"
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={workdir}",
             "--config.data.name=nifti", f"--config.data.manual_dir={tmp_path / 'missing'}")
  assert_one_error_line(proc, "manual_dir .*missing.* is not a folder")
  assert os.listdir(tmp_path) == []


def test_a_workdir_being_trained_refuses_a_second_trainer(env, tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lock.lock(workdir):
    proc = run(env, "train", f"--config={DEMO}", f"--workdir={workdir}")
  assert_one_error_line(proc, rf"being trained by process {os.getpid()} ")
  assert os.listdir(workdir) == []


def test_ctrl_c_during_start_up_prints_interrupted_and_exits_130(env, tmp_path):
  workdir = tmp_path / "run"
  # Started with SIGINT ignored, as a shell starts background jobs (and as CI
  # may run us): a SIGINT sent on purpose must still stop the script. The
  # ignored disposition survives exec; a preexec_fn would fork a threaded
  # process.
  ignore_then_exec = ("import os, signal, sys; "
                      "signal.signal(signal.SIGINT, signal.SIG_IGN); "
                      "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
  # So many steps that the run cannot end before the signal arrives.
  proc = subprocess.Popen(
      [sys.executable, "-c", ignore_then_exec, script("train"),
       f"--config={DEMO}", f"--workdir={workdir}", "--config.train.num_steps=1000000"], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  # The lock exists once the script is past its imports and flags; from then
  # on, wherever the signal lands (initialization, compilation, a step), the
  # script must end the same way.
  stderr = loop_support.signal_when(proc, (workdir / workdir_lock.LOCK_FILE).exists, signal.SIGINT)
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith("interrupted"), stderr[-3000:]


def test_a_ctrl_c_swallowed_during_start_up_stops_training_at_its_first_step(env, tmp_path):
  # Once in CI a Ctrl-C sent while the dataset was being built was lost (a
  # library caught the KeyboardInterrupt) and the script trained to its end
  # with status 0. Here building the operator raises SIGINT and swallows the
  # exception: the loop must still stop after its first step, with a
  # checkpoint, "interrupted" and 130.
  workdir = tmp_path / "run"
  program = f"""
import runpy, signal, sys
from hyperrecon_jax import physics
make_operator = physics.make_operator
def swallowing(*args, **kwargs):
  try:
    signal.raise_signal(signal.SIGINT)
  except BaseException:
    pass
  return make_operator(*args, **kwargs)
physics.make_operator = swallowing
sys.argv = [{script("train")!r}, "--config={DEMO}", "--workdir={workdir}"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 130, (proc.returncode, proc.stderr[-3000:])
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted: stopped by signal 2 at step 1;"), proc.stderr[-3000:]
  assert os.listdir(workdir / "checkpoints") == ["1"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_ctrl_c_swallowed_by_a_gc_callback_still_stops_the_script(env, signum):
  # Deterministic form of a CI failure: the SIGINT handler ran inside jax's
  # garbage-collection callback, Python printed "Exception ignored" and the
  # script trained to the end with status 0. Here a gc callback raises the
  # signal itself, so the KeyboardInterrupt is always swallowed there; the
  # script must still end with "interrupted" and 128 + the signal before its
  # loop finishes (a swallowed SIGTERM was sent again as SIGINT: 130, once in CI).
  program = """
import gc, signal, sys, time
sys.path.insert(0, "experiments")
import cli
def callback(phase, info):
  if phase == "start":
    gc.callbacks.remove(callback)
    signal.raise_signal(signal.SIGNUM)
def main(argv):
  gc.callbacks.append(callback)
  gc.collect()
  # Long enough for the resending thread on a loaded machine; the interrupt
  # ends the wait at once.
  for _ in range(12000):
    time.sleep(0.01)
  print("finished")
cli.run(main)
""".replace("SIGNUM", signal.Signals(signum).name)
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 128 + signum, (proc.returncode, proc.stderr[-3000:])
  assert "finished" not in proc.stdout
  assert proc.stderr.strip().splitlines()[-1] == "interrupted", proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("status", [0, 2])
def test_a_signal_after_the_command_has_finished_keeps_its_status(env, signum, status):
  # Every output was written, but a signal during the interpreter's shutdown
  # (a second or more with jax loaded, on a loaded machine) ended the command
  # with 130 or 143 and no word. From the moment an exit callback says
  # "finished" (main has returned) until the process ends, the signal comes
  # every 5 ms, so that one lands in each phase of the shutdown.
  program = f"""
import atexit, sys
sys.path.insert(0, "experiments")
import cli
def main(argv):
  import jax
  jax.jit(lambda x: x * 2)(jax.numpy.ones(3)).block_until_ready()
  atexit.register(lambda: print("finished", flush=True))
  return {status}
cli.run(main)
"""
  proc = subprocess.Popen([sys.executable, "-c", program], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline() == "finished\n"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
      proc.send_signal(signum)
      time.sleep(0.005)
    _, stderr = proc.communicate(timeout=10)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == status, (proc.returncode, stderr[-3000:])
  assert "interrupted" not in stderr and "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("verbosity", [[], ["--verbosity=0"]])
def test_libraries_repeating_what_a_line_of_ours_says_are_quiet_unless_asked(env, verbosity):
  # tensorboardX printed "W… x2num.py:13] NaN or Inf found in input tensor."
  # beside the loop's own line about the non-finite step.
  program = """
import logging, sys
from absl import logging as absl_logging
sys.path.insert(0, "experiments")
import cli
def main(argv):
  cli.quiet_libraries()
  logging.getLogger("tensorboardX.x2num").warning("NaN or Inf found in input tensor.")
  logging.getLogger("nibabel.global").warning("sizeof_hdr should be 540; set to 540")
  absl_logging.warning("a warning of ours")
cli.run(main)
"""
  proc = subprocess.run([sys.executable, "-c", program, *verbosity], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "a warning of ours" in proc.stderr
  for line in ("NaN or Inf found in input tensor", "sizeof_hdr should be 540"):
    assert (line in proc.stderr) == bool(verbosity), proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_shutdown_that_waits_with_the_command_s_status(env, signum):
  # A thread the shutdown joins, still busy for 600 s: ignoring the signal
  # after main would make Ctrl-C (and a scheduler's SIGTERM) wait for it.
  program = """
import sys, threading, time
sys.path.insert(0, "experiments")
import cli
def busy():
  while threading.main_thread().is_alive():  # until main has returned
    time.sleep(0.01)
  print("shutting down", flush=True)
  time.sleep(600)
def main(argv):
  threading.Thread(target=busy).start()
  return 3
cli.run(main)
"""
  proc = subprocess.Popen([sys.executable, "-c", program], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  said = []
  stderr = loop_support.signal_when(proc, lambda: said.append(proc.stdout.readline()) or True,
                                    signum, timeout=60)
  assert said == ["shutting down\n"]
  assert proc.returncode == 3, (proc.returncode, stderr[-3000:])


def test_exit_now_inside_a_lock_leaves_no_workdir_it_made(env, tmp_path):
  # How a process of a multi-process run ends when another one does: its
  # stack does not unwind, and its lock block's cleanup never ran.
  program = f"""
import sys
sys.path.insert(0, "experiments")
import cli
from hyperrecon_jax import workdir_lock
with workdir_lock.lock({str(tmp_path / "new" / "run")!r}):
  cli.exit_now(2)
"""
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("raised, one_line", [
    (lambda errors: errors.InputError("λ = 2 is outside [0, 1]"), "error: λ = 2 is outside [0, 1]"),
    (lambda errors: FileNotFoundError("scan.nii: no such file"), "error: scan.nii: no such file"),
    (lambda errors: MemoryError("Unable to allocate 180. MiB for an array with shape "
                                "(512, 512, 180)"),
     "error: out of memory: Unable to allocate 180. MiB for an array with shape (512, 512, 180)"),
    # An allocation that failed without a message (e.g. in a C extension).
    (lambda errors: MemoryError(), "error: out of memory: an allocation failed"),
    (lambda errors: ValueError("a bug in a library call"), None),
    (lambda errors: KeyError("a bug"), None),
])
def test_only_the_projects_errors_become_one_line(raised, one_line, capsys):
  # A ValueError that the project did not raise on purpose is a bug: it must
  # keep its traceback instead of being dressed up as the user's mistake.
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import cli

  from hyperrecon_jax import errors
  error = raised(errors)
  if one_line is None:
    with pytest.raises(type(error)):
      with cli.user_errors():
        raise error
    assert capsys.readouterr().err == ""
  else:
    with pytest.raises(SystemExit) as stop:
      with cli.user_errors():
        raise error
    assert stop.value.code == 2
    assert capsys.readouterr().err == one_line + "\n"
