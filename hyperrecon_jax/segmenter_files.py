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

from hyperrecon_jax import errors
from hyperrecon_jax import segmentation
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax.data import common
from hyperrecon_jax.data import split_record

WEIGHTS_FILE = "segmenter.msgpack"
INFO_FILE = "segmenter.json"
FORMAT = "hyperrecon_jax.segmenter/1"
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
  with workdir_lib.lock(directory):
    trained = segmentation.train(data_config, **settings)
    save(trained, directory)
  return trained


def save(segmenter: segmentation.Trained, directory: str) -> None:
  """Writes ``segmenter.msgpack`` then ``segmenter.json`` (each atomically)."""
  os.makedirs(directory, exist_ok=True)
  blob = flax.serialization.msgpack_serialize(
      jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(
          segmenter.variables)))
  workdir_lib.write_bytes(os.path.join(directory, WEIGHTS_FILE), blob)
  info = dict(segmenter.info, format=FORMAT, sha256=hashlib.sha256(blob).hexdigest())
  workdir_lib.write_text(os.path.join(directory, INFO_FILE),
                         json.dumps(info, indent=1, sort_keys=True) + "\n")


def load(directory: str) -> segmentation.Trained:
  """Reads a segmenter saved by `save`; ValueError names what is wrong."""
  info_path = os.path.join(directory, INFO_FILE)
  if not os.path.isfile(info_path):
    raise errors.InputError(f"{directory} holds no trained segmenter (no {INFO_FILE}; "
                            "train one with experiments/segmenter.py)")
  try:
    with open(info_path) as f:
      info = json.load(f)
    if info.get("format") != FORMAT:
      raise errors.InputError(f"format {info.get('format')!r}, expected {FORMAT!r}")
    module = segmentation.Segmenter(int(info["num_classes"]), int(info["channels"]))
    with open(os.path.join(directory, WEIGHTS_FILE), "rb") as f:
      blob = f.read()
  except (OSError, KeyError, TypeError, ValueError) as e:
    raise errors.InputError(f"{info_path}: not a readable segmenter ({e})") from None
  if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
    raise errors.InputError(f"{os.path.join(directory, WEIGHTS_FILE)} is damaged: its "
                            f"SHA-256 differs from the one in {INFO_FILE}")
  size = int(info["data"]["image_size"])
  template = jax.eval_shape(module.init, jax.random.key(0),
                            jnp.zeros((1, size, size), jnp.float32))
  variables = flax.serialization.from_state_dict(
      template, flax.serialization.msgpack_restore(blob))
  return segmentation.Trained(module, jax.tree_util.tree_map(jnp.asarray, variables), info)


def check_data(segmenter: segmentation.Trained, data_config, where: str,
               split: str | None = None) -> None:
  """Refuses a segmenter trained on other images, or on volumes of ``split``.

  Args:
    segmenter: a loaded segmenter.
    data_config: the data config of the slices it is to label.
    where: the model the Dice scores belong to, for the message.
    split: the split it is to label; its volumes must not be ones the
      segmenter trained on (`split_record`: a folder that grew since).

  Raises:
    InputError: naming the differing data fields, or the volumes.
  """
  mine = dict(segmenter.info["data"])
  theirs = json.loads(data_config.to_json())
  for fields in (mine, theirs):  # one written before folders were recorded absolute
    fields["manual_dir"] = common.absolute_folder(fields.get("manual_dir"))
  # The images' kind and scale, and the splits: a segmenter trained on other
  # splits may have seen the test slices.
  diffs = [f"data.{k}: {mine.get(k)!r} vs {theirs.get(k)!r}" for k in IMAGE_FIELDS
           if mine.get(k) != theirs.get(k)]
  if diffs:
    raise errors.InputError(f"the segmenter was trained on other images than {where}: "
                            + "; ".join(diffs))
  if split is not None:
    split_record.check_record(segmenter.info.get("data_splits"), data_config, split,
                              learner="the segmenter",
                              listed_in=f"the segmenter's {INFO_FILE}")
