"""Data parallelism over processes and devices: the mesh, and each process's rows of a batch.

Every process reads the one stream of batches a single process would read and
keeps the rows its devices hold; `global_batch` assembles them into one array
sharded over the mesh, so a run trains on the same batches whatever the number
of processes.
"""

from collections.abc import Callable
import hashlib
import itertools
import json
import os

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from hyperrecon_jax.train import configuration

# Settings of one machine, which the processes of a run may set differently: where
# its dataset cache lives (`HYPERRECON_DATA_DIR`), its reader threads, and
# whether it joined through the config or through the flags.
MACHINE_FIELDS = ("data.data_dir", "data.num_threads", "train.distributed")
# Where each process puts its splits in the coordination service's key-value
# store, a folder per check: a key is set once, and a script may train several
# runs on one service (every process makes the same calls, so counts alike).
_DATA_KEY = "hyperrecon/data_splits/"
_data_checks = itertools.count()


def _digest(text: str) -> int:
  """32 bits of the SHA-256 of ``text``: what the processes all-gather to compare texts."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _fields(tree, prefix=""):
  """Every leaf of a config's JSON as ``(dotted name, JSON text)``, sorted by name."""
  if isinstance(tree, dict):
    return [item for key in sorted(tree) for item in _fields(tree[key], f"{prefix}{key}.")]
  return [(prefix[:-1], json.dumps(tree, sort_keys=True))]


def check_same_run(config, workdir: str) -> None:
  """Refuses a run whose processes were given different configs or workdirs.

  Each process trains with its own copy of the config: processes started with
  different overrides (another ``train.lr``) would keep diverging copies of the
  parameters, and with another ``train.num_steps`` one would wait forever for
  the other at its next collective. Every process calls this at the same point,
  so the comparison, one all-gather of a hash per config field, cannot hang.
  `MACHINE_FIELDS` may differ.

  Args:
    config: this process's config.
    workdir: this process's workdir, as given: compared as an absolute path,
      since one relative name from two working folders names two folders
      (each process's checkpoint shards in its own, the first save waiting
      forever for the other's).

  Raises:
    ConfigError: on every process, naming the fields that differ from process
      0's and the processes that differ.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  fields = [(name, text) for name, text in _fields(json.loads(config.to_json()))
            if name not in MACHINE_FIELDS] + [("--workdir", os.path.abspath(workdir))]
  counts = np.asarray(multihost_utils.process_allgather(np.array([len(fields)], np.int32)))
  # The counts first: an all-gather of arrays of other lengths would not return.
  if (counts != len(fields)).any():
    raise configuration.ConfigError(
        "the processes of this run were given configs with other fields: start every "
        "process with the same command (--config and its overrides)")
  digests = np.array([_digest(f"{n}={t}") for n, t in fields], np.uint32)
  gathered = np.asarray(multihost_utils.process_allgather(digests))
  differ = (gathered != gathered[0]).any(axis=0)
  if differ.any():
    names = [name for (name, _), d in zip(fields, differ) if d]
    others = [i for i, row in enumerate(gathered) if (row != gathered[0]).any()]
    raise configuration.ConfigError(
        f"the processes of this run were given different settings: {', '.join(names)} "
        f"of process{'es' if len(others) > 1 else ''} {', '.join(map(str, others))} "
        f"{'differ' if len(names) > 1 else 'differs'} from process 0's; start every "
        "process with the same command (--config, its overrides and --workdir)")


def coordination_client():
  """The client of JAX's coordination service of this multi-process run, or None.

  Its key-value store carries what an all-gather of numbers cannot: a
  record, a message. JAX keeps the client in a private module (orbax reads
  it the same way).
  """
  from jax._src import distributed
  return distributed.global_state.client


def check_same_data(record: dict | None) -> None:
  """Refuses a run whose processes read different volumes in the one data folder.

  `check_same_run` compares the configs, so every process names the same
  ``data.manual_dir``; but each builds its dataset from the files it sees
  there. Two hosts whose copies of the folder differ, or a folder changed
  between the processes' builds, would train on batches drawn from different
  splits, and ``data_splits.json`` (process 0's) would not say what the run
  learned from. Every process calls this at the same point with its own
  `split_record.current`.

  Args:
    record: this process's `split_record.current` (None for a dataset not
      split by volume, the same on every process of a run whose configs agree).

  Raises:
    DataError: on every process, naming a process whose splits differ from
      process 0's and some of the volumes that differ.
  """
  if jax.process_count() == 1 or record is None:
    return
  from jax.experimental import multihost_utils

  from hyperrecon_jax.data import config_fields
  from hyperrecon_jax.data import data_errors
  from hyperrecon_jax.data import split_record
  # The resolved folder may differ from host to host; the volumes may not.
  text = json.dumps({key: record[key] for key in ("splits", "sha256") if key in record},
                    sort_keys=True)
  me = jax.process_index()
  client = coordination_client()
  folder = f"{_DATA_KEY}{next(_data_checks)}/"
  client.key_value_set(f"{folder}{me}", text)
  gathered = np.asarray(multihost_utils.process_allgather(np.array([_digest(text)], np.uint32)))
  gathered = gathered.reshape(-1)
  others = [i for i, d in enumerate(gathered) if d != gathered[0]]
  if not others:
    return
  other = me if me in others else others[0]

  def read(index):
    return json.loads(client.blocking_key_value_get(f"{folder}{index}", 60_000))

  first, differing = read(0), read(other)
  found = [f"its {split} split is not process 0's: {change}" for split in config_fields.SPLITS
           if (change := split_record.changes(first, differing, split))]
  raise data_errors.DataError(
      f"the processes of this run read different volumes in {record['manual_dir']}: "
      f"process {other} built another dataset ({found[0] if found else 'other digests'})"
      + (f", and so did process{'es' if len(others) > 2 else ''} "
         f"{', '.join(str(i) for i in others if i != other)}" if len(others) > 1 else "")
      + ": every process must read the same files (one folder shared by every host, or "
      "identical copies)")


def data_mesh() -> Mesh:
  """A 1-D mesh over every device: the batch is split along ``'data'``."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def process_shard(sharding, batch_size: int):
  """This process's rows of every global batch, as grain shard options.

  The rows are those that ``sharding`` puts on this process's devices (a
  ``P('data')`` sharding of a 1-D mesh gives each process one contiguous
  block), so the data pipeline reads exactly the rows that
  `global_batch` places there. Taken from the sharding rather than from
  ``jax.process_index()``: the two agree only when ``jax.devices()`` lists the
  devices process by process.

  Args:
    sharding: the batch's sharding (split along its first axis).
    batch_size: rows of the global batch.

  Returns:
    A ``grain.sharding.ShardOptions`` for `data.batches` (one shard: the whole batch).

  Raises:
    ConfigError: this process's rows are not one block of ``batch_size / n``
      rows (a mesh that interleaves the processes' devices).
  """
  from hyperrecon_jax.data import dependencies
  grain = dependencies.require("grain")
  index_map = sharding.addressable_devices_indices_map((batch_size,))
  blocks = sorted({index[0].indices(batch_size)[:2] for index in index_map.values()})
  start, stop = blocks[0][0], blocks[-1][1]
  rows = stop - start
  contiguous = all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
  if not contiguous or batch_size % rows or start % rows:
    raise configuration.ConfigError(
        f"process {jax.process_index()} holds rows {blocks} of a batch of {batch_size}: "
        "the device mesh must give each process one block of rows")
  return grain.sharding.ShardOptions(shard_index=start // rows, shard_count=batch_size // rows)


def global_batch(batch, sharding, batch_size: int):
  """This process's rows of a batch → one global array per field the step uses.

  Args:
    batch: a batch dict of `data.batches` with this process's shard
      (`process_shard`) of the rows.
    sharding: the batch's sharding.
    batch_size: rows of the global batch.

  Returns:
    ``{'image': jax.Array}`` of ``batch_size`` rows, sharded by ``sharding``.
  """
  out = {}
  for k in ("image",):
    local = np.asarray(batch[k])
    out[k] = jax.make_array_from_process_local_data(
        sharding, local, (batch_size, *local.shape[1:]))
  return out


def train_batches(config, sharding, start: int = 0):
  """The training iterator of this process: its shard of every global batch.

  Every process reads the one stream of batches a single process would read
  (same seed, same shuffle, same augmentation), and from each batch only the
  rows its devices hold, so the run trains on the same batches whatever the
  number of processes.

  Args:
    config: the run's config.
    sharding: the batch's sharding.
    start: examples of the training stream read before (a resumed run's).

  Returns:
    A grain iterator of batch dicts (see `data.batches`), without labels:
    the step reads the images only.
  """
  from hyperrecon_jax import data
  batch_size = int(config.train.batch_size)
  return data.batches(config.data, "train", batch_size=batch_size, seed=int(config.train.seed),
                      shard=process_shard(sharding, batch_size), labels=False, start=start)


def stop_agreement(mesh: Mesh) -> Callable[[bool], bool]:
  """How the processes of a run agree to stop on a signal, e.g. a scheduler's SIGTERM.

  The processes must save the same checkpoint and stop at the same step (a
  save is a collective), but a signal reaches each of them at its own moment.
  One process alone needs no agreement: it stops at the step its signal
  arrived in. Several vote every step (`LaggedVote`) and stop one step later.

  Args:
    mesh: the run's device mesh.

  Returns:
    A function called once per step with whether this process has received a
    signal; it returns whether the run stops at this step, the same on every
    process.
  """
  return bool if jax.process_count() == 1 else LaggedVote(mesh)


class LaggedVote:
  """Whether any process has received a signal, agreed one step late.

  Each step, every process casts its flag into a small all-reduce, and reads
  the outcome of the previous step's. Reading this step's outcome would wait
  for the step just dispatched (the collective runs after it on the device),
  so the host could no longer read the next batch and dispatch the next step
  while the devices compute. Read one step late, the outcome is already there.
  A signal thus stops the run at the step after the one it arrived in: at
  most one more step's work.
  """

  def __init__(self, mesh: Mesh):
    self._flags = NamedSharding(mesh, P("data"))
    self._size, self._local = mesh.size, len(mesh.local_devices)
    # int32 rather than bool: CPU collectives (gloo) reduce numbers.
    self._any = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
    self._cast = None

  def __call__(self, received: bool) -> bool:
    """Casts this step's flag; returns the previous step's outcome (False at the first)."""
    local = np.full((self._local,), int(bool(received)), np.int32)
    cast = self._any(jax.make_array_from_process_local_data(self._flags, local, (self._size,)))
    previous, self._cast = self._cast, cast
    return previous is not None and bool(previous)
