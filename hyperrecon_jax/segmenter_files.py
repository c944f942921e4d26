"""A trained segmenter's folder, and the data it may label.

A segmenter (`hyperrecon_jax.segmentation`) is saved as a folder with
``segmenter.msgpack`` (its variables) and ``segmenter.json`` (its settings,
the data it was trained on, its validation Dice and the SHA-256 of the
weights), written last, so a folder with ``segmenter.json`` is complete.
`train_into` trains one into a folder it owns meanwhile; `check_data` refuses
to score with a segmenter trained on other images or on the volumes it would
label.
"""

import hashlib
import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import checksums
from hyperrecon_jax import errors
from hyperrecon_jax import segmentation
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.data import locations
from hyperrecon_jax.data import split_record

WEIGHTS_FILE = "segmenter.msgpack"
INFO_FILE = "segmenter.json"
FORMAT = "hyperrecon_jax.segmenter/1"
# The digest of segmenter.json's own content: the settings, the data record and
# the weights' SHA-256 travel in it, so an edit would silently change them.
INFO_DIGEST = "info_sha256"
# The data fields a segmenter and the model it scores must share.
IMAGE_FIELDS = ("name", "manual_dir", "image_size", "axis", "percentile",
                "min_foreground", "split_fractions", "split_seed", "gap_slices")


def check_folder(directory: str) -> None:
  """Refuses a folder a new segmenter cannot be written into (see `train_into`)."""
  workdir_lib.check_folder(directory, "segmenter", workdir_lib.SEGMENTER_ENTRIES)
  if os.path.exists(os.path.join(directory, INFO_FILE)):
    raise errors.InputError(f"{directory} already holds a trained segmenter; delete it "
                            "or use another --workdir")


def train_into(directory: str, data_config, **settings) -> segmentation.Trained:
  """`segmentation.train` a segmenter and `save` it in ``directory``, which it owns meanwhile.

  Refuses, before any work, a folder that already holds a segmenter (nothing
  written is replaced), holds anything a segmenter does not write (a training
  run, a user's files), or that another process is writing into.

  Args:
    directory: the segmenter's folder (created).
    data_config: see `segmentation.train`.
    **settings: keyword arguments of `segmentation.train`.

  Returns:
    The saved segmenter.
  """
  check_folder(directory)
  segmentation.check_settings(settings.get("num_classes"), settings.get("channels"),
                              settings.get("steps"), settings.get("batch_size"),
                              settings.get("lr"))
  with workdir_lock.lock(directory):
    trained = segmentation.train(data_config, **settings)
    save(trained, directory)
  return trained


def save(segmenter: segmentation.Trained, directory: str) -> None:
  """Writes ``segmenter.msgpack`` then ``segmenter.json`` (each atomically)."""
  os.makedirs(directory, exist_ok=True)
  blob = flax.serialization.msgpack_serialize(
      jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(
          segmenter.variables)))
  atomic_writes.write_bytes(os.path.join(directory, WEIGHTS_FILE), blob)
  info = dict(segmenter.info, format=FORMAT, sha256=hashlib.sha256(blob).hexdigest())
  info[INFO_DIGEST] = checksums.json_digest(info)
  atomic_writes.write_text(os.path.join(directory, INFO_FILE),
                           json.dumps(info, indent=1, sort_keys=True) + "\n")


def load(directory: str) -> segmentation.Trained:
  """Reads a segmenter saved by `save`.

  Raises:
    InputError: no ``segmenter.json``, or one that is not this format, was
      edited (its own digest, ``info_sha256``), or lacks a setting; weights
      that are missing, damaged (their SHA-256) or of other shapes.
  """
  info_path = os.path.join(directory, INFO_FILE)
  weights_path = os.path.join(directory, WEIGHTS_FILE)
  if os.path.isfile(directory):
    raise errors.InputError(f"{directory} is a file: a segmenter is the folder "
                            f"experiments/segmenter.py writes ({INFO_FILE}, {WEIGHTS_FILE})")
  if not os.path.isfile(info_path):
    raise errors.InputError(f"{directory} holds no trained segmenter (no {INFO_FILE}; "
                            "train one with experiments/segmenter.py, or "
                            "hyperrecon_jax.segmenter_files.train_into)")
  try:
    with open(info_path) as f:
      info = json.load(f)
    if not isinstance(info, dict):
      raise ValueError(f"a JSON {type(info).__name__}, not an object")
    if info.get("format") != FORMAT:
      raise ValueError(f"format {info.get('format')!r}, expected {FORMAT!r}")
    stored = info.pop(INFO_DIGEST, None)
    # Without it, deleting the key would switch the check off.
    if stored is None:
      raise ValueError(f"it holds no digest of its content ({INFO_DIGEST}): it was edited. "
                       "Train the segmenter again")
    if stored != checksums.json_digest(info):
      raise ValueError("its content differs from the digest it was written with "
                       f"({INFO_DIGEST}): it was edited or damaged. Train the segmenter again")
    module = segmentation.Segmenter(int(info["num_classes"]), int(info["channels"]))
    size = int(info["data"]["image_size"])
  except (OSError, KeyError, TypeError, ValueError) as e:
    raise errors.InputError(f"{info_path}: not a readable segmenter ({e})") from None
  try:
    with open(weights_path, "rb") as f:
      blob = f.read()
  except OSError as e:
    raise errors.InputError(f"{weights_path}, the segmenter's weights, cannot be read "
                            f"({e.strerror}): train the segmenter again") from None
  if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
    raise errors.InputError(f"{weights_path} is damaged: its "
                            f"SHA-256 differs from the one in {INFO_FILE}")
  template = jax.eval_shape(module.init, jax.random.key(0),
                            jnp.zeros((1, size, size), jnp.float32))
  try:
    variables = flax.serialization.from_state_dict(
        template, flax.serialization.msgpack_restore(blob))
    shapes = jax.tree_util.tree_map(np.shape, variables)
    if shapes != jax.tree_util.tree_map(np.shape, template):
      raise ValueError("the weights' shapes differ from those of the settings")
  except (ValueError, KeyError, TypeError) as e:
    raise errors.InputError(f"{weights_path} does not fit the settings in {INFO_FILE} "
                            f"({str(e).splitlines()[0]})") from None
  return segmentation.Trained(module, jax.tree_util.tree_map(jnp.asarray, variables), info)


def check_data(segmenter: segmentation.Trained, data_config, where: str,
               split: str | None = None) -> None:
  """Refuses a segmenter trained on other images or labels, or on volumes of ``split``.

  Args:
    segmenter: a loaded segmenter.
    data_config: the data config of the slices it is to label.
    where: the model the Dice scores belong to, for the message.
    split: the split it is to label; its volumes must not be ones the
      segmenter trained on (`split_record`: a folder that grew since).

  Raises:
    InputError: naming the differing data fields, or the label files changed
      since (their SHA-256, ``label_files``).
    DataError: naming the volumes of ``split`` it learned (`check_split`).
  """
  mine = dict(segmenter.info["data"])
  theirs = json.loads(data_config.to_json())
  for fields in (mine, theirs):  # one written before folders were recorded absolute
    folder = locations.absolute_folder(fields.get("manual_dir"))
    # One folder reached through a link is one folder (`split_record` compares so too).
    fields["manual_dir"] = os.path.realpath(folder) if folder else folder
  # The images' kind and scale, and the splits: a segmenter trained on other
  # splits may have seen the test slices.
  diffs = [f"data.{k}: {mine.get(k)!r} vs {theirs.get(k)!r}" for k in IMAGE_FIELDS
           if mine.get(k) != theirs.get(k)]
  if diffs:
    raise errors.InputError(f"the segmenter was trained on other images than {where}: "
                            + "; ".join(diffs))
  recorded = segmenter.info.get("label_files")
  if data_config.name == "mni152":
    _check_mni152_labels(recorded, segmentation.label_files(data_config))
  elif recorded:
    now = segmentation.label_files(data_config) or {}
    changed = sorted(n for n in recorded.keys() & now.keys() if recorded[n] != now[n])
    if changed:
      shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3
                                         else "")
      raise errors.InputError(
          f"the label files of {shown} in {mine['manual_dir']} changed after the segmenter "
          "learned them: its classes would be compared with labels that may number the "
          "tissues otherwise. Train the segmenter again (experiments/segmenter.py, or "
          "hyperrecon_jax.segmenter_files.train_into)")
  if split is not None:
    check_split(segmenter, data_config, split)


def _check_mni152_labels(recorded: dict | None, now: dict) -> None:
  """Refuses a segmenter of the embedded data's labels of another release or template.

  One that records none learned them before they were recorded: a note says
  that its labels may be an earlier release's.
  """
  import sys
  key = segmentation.MNI152_LABELS
  if not recorded or key not in recorded:
    print("note: the segmenter records no release of the MNI152 labels (it was trained "
          f"before they were recorded); this package's are {now[key]!r}: if it learned "
          "another release's, its Dice may differ slightly (train it again to be sure)",
          file=sys.stderr)
  elif recorded[key] != now[key]:
    raise errors.InputError(
        f"the segmenter learned the MNI152 labels of release and template {recorded[key]!r}, "
        f"this package's are {now[key]!r}: its classes would be compared with labels cut "
        "otherwise. Train the segmenter again (experiments/segmenter.py, or "
        "hyperrecon_jax.segmenter_files.train_into)")


def check_split(segmenter: segmentation.Trained, data_config, split: str) -> None:
  """The split part of `check_data`: refuses a split holding volumes the segmenter learned.

  Reads the split's volumes, so the dataset is built first if it is not.

  Args:
    segmenter: a loaded segmenter.
    data_config: the data config of the slices it is to label.
    split: the split it is to label.

  Raises:
    DataError: naming the volumes (`split_record.check_record`).
  """
  split_record.check_record(segmenter.info.get("data_splits"), data_config, split,
                            learner="the segmenter", listed_in=f"the segmenter's {INFO_FILE}")
