"""What the training-loop tests share: the tiny run, its dataset, helpers.

Every run trains the same tiny configuration (mni152 at 32×32, 4 channels,
hypernetwork width 4, batch 4) in its own workdir; the embedded dataset is
built once per module in a temporary folder. The loop builds a fresh
``jax.jit`` per run, so XLA executables go to the persistent compilation cache
of conftest.py: the first run of the session compiles, the others (and the
subprocesses on one device) load the executables.

Run A (6 steps, uninterrupted) is the reference of the resume, workdir,
data-parallel and SIGTERM tests. conftest.py turns `build_data_dir` and
`train_run_a` into the module-scoped fixtures ``data_dir`` and ``run_a``.
"""

import json
import os
import socket
import time

import configs
import jax
import numpy as np

from hyperrecon_jax import checkpoints
from hyperrecon_jax import data
from hyperrecon_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
BATCH = 4
STEPS = 6
EVAL_STEPS = (3, 6)
CHECKPOINT_STEPS = (2, 4, 6)
# Adam's step is bounded by lr·(1 − β1)/√(1 − β2) = 3.16·lr per update for
# optax's defaults (Kingma & Ba 2015, §2.1), whatever the gradient.
ADAM_STEP_BOUND = 0.1 / np.sqrt(1e-3)
# Two runs of one configuration whose sums over the batch are reduced in
# another order (devices, processes) agree to float32 reduction error only
# at step 1, from identical parameters. After it, Adam turns the rounding
# noise of gradients that are zero in exact arithmetic (the bias-head biases
# cancelled by training-mode BatchNorm, any momentarily flat parameter) into
# steps of up to ADAM_STEP_BOUND·lr whose sign is that noise's, so the runs
# follow nearby trajectories: a loss is insensitive to those parameters to
# first order, the gradient norm is not. The losses measured up to 8e-5
# relative; the gradient norm at step 5 of the two-device run up to 8e-5 with
# jax 0.10 and 7.0e-3 with jax 0.6.1 (whose XLA reduces in another order).
# BatchNorm statistics of part of the batch, what these comparisons exist to
# catch, change the loss by percents, and step 1 (compared to 1e-5) outright.
TRAJECTORY_RTOL = {"loss": 1e-3, "loss_mae": 1e-3, "loss_ssim": 1e-3, "grad_norm": 2e-2}


def build_data_dir(tmp_path_factory):
  """The embedded mni152 dataset at 32×32, built in a temporary folder."""
  path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
  config = make_config(path)
  next(data.batches(config.data, "train", batch_size=BATCH))
  return path


def train_run_a(data_dir, tmp_path_factory):
  """The reference: 6 uninterrupted steps."""
  workdir = str(tmp_path_factory.mktemp("run_a"))
  config = make_config(data_dir)
  state = train.train_and_evaluate(config, workdir)
  return dict(workdir=workdir, config=config, state=host(state))


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now, for a run's coordinator."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(cache_dir, devices=1):
  """The environment of a training subprocess: CPU, ``devices`` devices, the cache.

  Args:
    cache_dir: the persistent compilation cache (conftest.py's
      ``compilation_cache``), shared with the test process.
    devices: simulated CPU devices of the process.
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def make_config(data_dir, **train_overrides):
  config = configs.default()
  config.data.data_dir = data_dir
  config.data.image_size = SIZE
  config.data.num_threads = 0
  config.model.channels = 4
  config.model.hyper_dim = 4
  # 'vmap' compiles ~3× faster on CPU than the CPU default 'loop' (as in the
  # :quick experiment variants); tests/test_models.py covers 'loop'.
  config.model.strategy = "vmap"
  config.train.update(dict(
      batch_size=BATCH, num_steps=STEPS, log_every=1, eval_every=3,
      checkpoint_every=2, eval_batches=1, max_to_keep=3))
  config.train.update(train_overrides)
  return config


def host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def assert_trees_close(a, b, rtol=1e-6, atol=0.0):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def restore(workdir, like, step=None):
  """(step, state, data_state, config_dict) of a workdir's checkpoint.

  Args:
    workdir: a run's folder.
    like: a state of the same structure (e.g. run A's final state).
    step: which checkpoint; the latest when None.
  """
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                     sharding=device), like)
  mngr = checkpoints.manager(workdir)
  try:
    return checkpoints.restore(mngr, abstract, step)
  finally:
    mngr.close()


def snapshot(workdir):
  """{relative path: bytes} of every file of a workdir."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


class NanAfter:
  """A training iterator whose batches from the ``first``-th on hold NaN."""

  def __init__(self, it, first):
    self._it, self._first, self._count = it, first, 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self._it))
    self._count += 1
    if self._count >= self._first:
      batch["image"] = np.full_like(batch["image"], np.nan)
    return batch

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def save_untrained(config, path):
  """A workdir whose checkpoint is the initialized model of ``config`` (no training)."""
  from hyperrecon_jax import atomic_writes
  state = train.create_state(config, train.build_model(config), jax.random.key(0))
  mngr = checkpoints.manager(path)
  checkpoints.save(mngr, 1, state, {}, config)
  mngr.close()
  atomic_writes.write_text(os.path.join(path, "config.json"), config.to_json())
  return path


def write_site(folder, seeds, shape=(20, 24, 16), labels=None):
  """A folder of NIfTI volumes no model saw: noisy ellipsoids with brain on 10 axial slices.

  Args:
    folder: a ``pathlib.Path`` that does not exist yet.
    seeds: one volume ``sub-<seed>.nii.gz`` per seed.
    shape: the volumes' RAS shape.
    labels: label values of the inner, middle and outer shells of the brain
      (e.g. ``(3, 2, 1)``), written as ``sub-<seed>_seg.nii.gz``; a dict
      ``{seed: values}`` gives a volume its own; None writes no labels.

  Returns:
    The folder, as a string.
  """
  import nibabel as nib
  folder.mkdir()
  for seed in seeds:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r2 = x ** 2 / 0.8 + y ** 2 / 0.9 + z ** 2
    inside = r2 < 0.8
    inside[..., :3] = inside[..., 13:] = False
    image = np.where(inside, 100.0 + rng.normal(0, 5, shape), 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"sub-{seed:02d}.nii.gz"))
    if labels is not None:
      inner, middle, outer = labels.get(seed, labels.get(None)) if isinstance(
          labels, dict) else labels
      label = np.select([r2 < 0.2, r2 < 0.45], [inner, middle], outer) * inside
      nib.save(nib.Nifti1Image(label.astype(np.int16), np.eye(4)),
               str(folder / f"sub-{seed:02d}_seg.nii.gz"))
  return str(folder)


def signal_when(proc, ready, signum, timeout: float = 300) -> str:
  """Sends ``signum`` to ``proc`` once ``ready()`` (or once it ended); its stderr at its end.

  Args:
    proc: a ``subprocess.Popen`` with ``stderr=PIPE`` and ``text=True``.
    ready: polled every 20 ms until it returns true.
    signum: the signal.
    timeout: seconds to wait for ``proc`` to end after the signal (then
      ``subprocess.TimeoutExpired``, and ``proc`` is killed).
  """
  try:
    deadline = time.time() + 300
    while not ready() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)
    proc.send_signal(signum)
    return proc.communicate(timeout=timeout)[1]
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
