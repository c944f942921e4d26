"""Downstream segmentation (paper §5.5.1): how useful is the reconstruction at λ?

A segmentation Unet is trained once on ground-truth images and their tissue
labels, then applied to the reconstructions at every λ: the hard Dice of its
labels against the true ones scores each reconstruction for a task, not only
for pixel fidelity (the paper finds the Dice optimum near λ = 0.25, away from
the PSNR optimum).

The network is the reconstruction Unet's body (`models.UnetBody`: the same 4
levels, blocks and BatchNorm) reading one channel, the image, with a 1×1 head
that gives one logit per class and no residual. Training minimizes the soft
Dice loss of `soft_dice_loss` with Adam.

A trained segmenter is a folder with ``segmenter.msgpack`` (its variables)
and ``segmenter.json`` (its settings, the data it was trained on, its
validation Dice and the SHA-256 of the weights), written last, so a folder
with ``segmenter.json`` is complete.
"""

from collections.abc import Callable
import hashlib
import json
import os
import sys
from typing import Any
from typing import NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperrecon_jax import compilation
from hyperrecon_jax import errors
from hyperrecon_jax import metrics
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax.data import split_record
from hyperrecon_jax.models import layers
from hyperrecon_jax.models.unet import UnetBody
from hyperrecon_jax.models.unet import conv_specs

WEIGHTS_FILE = "segmenter.msgpack"
INFO_FILE = "segmenter.json"
FORMAT = "hyperrecon_jax.segmenter/1"
# Soft Dice smoothing, in pixels: keeps a class absent from both the labels
# and the prediction at a Dice near 1 instead of 0/0.
DICE_SMOOTHING = 1.0
# The most classes a labelled folder may give a segmenter: its logits are one
# channel per class at the image size, and a parcellation's hundreds of
# sparse values (FreeSurfer's up to 2035) would be mostly empty channels.
MAX_CLASSES = 32
# The data fields a segmenter and the model it scores must share.
IMAGE_FIELDS = ("name", "manual_dir", "image_size", "axis", "percentile",
                "min_foreground", "split_fractions", "split_seed", "gap_slices")


class Segmenter(nn.Module):
  """Segmentation Unet: image (B, H, W) → class logits (B, H, W, C).

  Attributes:
    num_classes: C, background included.
    channels: features at every level.
    batch_norm: BatchNorm after every 3×3 convolution.
  """
  num_classes: int
  channels: int = 32
  batch_norm: bool = True

  @nn.compact
  def __call__(self, image, train: bool = False):
    """Class logits of a batch of images.

    Args:
      image: (B, H, W) images in [0, 1] (ground truth or reconstructions).
      train: use and update batch statistics (pass ``mutable=['batch_stats']``).

    Returns:
      (B, H, W, C) float32 logits.
    """
    if image.ndim != 3:
      raise errors.InputError(f"image must have shape (B, H, W), got shape {image.shape}")
    weights = {}
    for spec in conv_specs(self.channels, in_channels=1, out_channels=self.num_classes):
      kinit, binit = layers.initializers("torch", spec.size ** 2 * spec.cin)
      weights[spec.name] = {
          "kernel": self.param(f"{spec.name}_kernel", kinit, spec.kernel_shape),
          "bias": self.param(f"{spec.name}_bias", binit, (spec.cout,)),
      }
    body = UnetBody(self.channels, self.batch_norm, residual=False, name="body")
    return body(weights, image[..., None].astype(jnp.float32), per_sample=False,
                train=train)


def soft_dice_loss(logits, labels, num_classes: int):
  """Per-example soft Dice loss over the foreground classes.

  With p = softmax(logits) and t = one_hot(labels), per example and class c,
  ``D_c = (2 Σ p_c t_c + ε) / (Σ p_c + Σ t_c + ε)`` summed over pixels, ε =
  `DICE_SMOOTHING`; the loss is ``1 − mean_{c ≥ 1} D_c`` (class 0, the
  background, is left out: it covers most of the image and would dominate).

  Args:
    logits: (B, H, W, C) class logits.
    labels: (B, H, W) integer labels in [0, C).
    num_classes: C ≥ 2.

  Returns:
    (B,) losses in [0, 1).
  """
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  t = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  inter = jnp.sum(p * t, axis=(1, 2))
  total = jnp.sum(p, axis=(1, 2)) + jnp.sum(t, axis=(1, 2))
  d = (2 * inter + DICE_SMOOTHING) / (total + DICE_SMOOTHING)
  return 1.0 - jnp.mean(d[:, 1:], axis=-1)


def foreground_dice(pred_labels, true_labels, num_classes: int):
  """Per-slice hard Dice, the mean over the foreground classes 1 … C − 1.

  Each class scores `metrics.dice` (1.0 when absent from both label maps).

  Args:
    pred_labels: (B, H, W) integer labels.
    true_labels: (B, H, W) integer labels.
    num_classes: C ≥ 2.

  Returns:
    (B,) Dice in [0, 1].
  """
  return jnp.mean(metrics.dice(pred_labels, true_labels, num_classes)[:, 1:], axis=-1)


class Trained(NamedTuple):
  """A trained segmenter: its module, variables and settings (``segmenter.json``)."""
  module: Segmenter
  variables: Any
  info: dict

  @property
  def apply_fn(self) -> Callable:
    """``apply_fn(variables, images) -> (B, H, W, C)`` logits, evaluation mode."""
    return self.module.apply

  @property
  def num_classes(self) -> int:
    return self.module.num_classes


def labels(segmenter: Trained, images):
  """Hard labels (B, H, W) int32 of a batch of images."""
  return _labels(segmenter.variables, jnp.asarray(images, jnp.float32),
                 apply_fn=segmenter.apply_fn)


@compilation.inference_jit(static_argnames="apply_fn")
def _labels(variables, images, *, apply_fn):
  return jnp.argmax(apply_fn(variables, images), axis=-1).astype(jnp.int32)


def _train_step(module, optimizer, num_classes):
  @jax.jit
  def step(state, image, label):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      logits, updates = module.apply({"params": p, "batch_stats": batch_stats}, image,
                                     train=True, mutable=["batch_stats"])
      return jnp.mean(soft_dice_loss(logits, label, num_classes)), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    changes, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, changes)
    return (params, updates["batch_stats"], opt_state), loss
  return step


def _check_integer(name: str, value, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise errors.InputError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _check_rate(name: str, value) -> None:
  if isinstance(value, bool) or not (isinstance(value, (int, float)) and np.isfinite(value)
                                     and value > 0):
    raise errors.InputError(f"{name} must be a positive finite number, got {value!r}")


def _check_settings(num_classes, channels, steps, batch_size, lr):
  for name, value, low in (("num_classes", num_classes, 2), ("channels", channels, 1),
                           ("steps", steps, 1), ("batch_size", batch_size, 1)):
    _check_integer(name, value, low)
  _check_rate("lr", lr)


def validation_dice(segmenter: Trained, data_config, split: str = "validation",
                    batch_size: int = 8) -> float:
  """Mean foreground Dice of the segmenter on the ground-truth slices of a split."""
  from hyperrecon_jax import data
  scores = []
  for batch in data.batches(data_config, split, batch_size=batch_size, training=False):
    valid = np.asarray(batch["valid"], bool)
    pred = labels(segmenter, batch["image"])
    d = foreground_dice(pred, jnp.asarray(batch["label"]), segmenter.num_classes)
    scores.append(np.asarray(d)[valid])
  return float(np.mean(np.concatenate(scores)))


def train(data_config, *, num_classes: int, channels: int, steps: int, batch_size: int,
          lr: float, seed: int, log: Callable[[int, float], None] | None = None) -> Trained:
  """Trains a segmenter on the ground-truth slices and labels of the train split.

  Args:
    data_config: a data config whose dataset has labels (`data.has_labels`).
    num_classes: C, background included (e.g. ``len(data.MNI152_CLASSES)``).
    channels: features at every level (an experiment's
      ``config.segmenter.channels``, `settings` gives them all).
    steps: Adam steps.
    batch_size: slices per step.
    lr: Adam learning rate.
    seed: initialization, shuffling and augmentation seed.
    log: called as ``log(step, mean_loss)`` about 10 times.

  Returns:
    The trained segmenter, with its validation Dice in ``info``.
  """
  from hyperrecon_jax import data
  _check_settings(num_classes, channels, steps, batch_size, lr)
  if not data.has_labels(data_config):
    raise errors.InputError(f"config.data.name={data_config.name!r} has no label volumes "
                            "to train a segmenter on")
  module = Segmenter(num_classes, channels)
  size = int(data_config.image_size)
  variables = module.init(jax.random.key(seed), jnp.zeros((1, size, size), jnp.float32))
  optimizer = optax.adam(lr)
  state = (variables["params"], variables["batch_stats"],
           optimizer.init(variables["params"]))
  step = _train_step(module, optimizer, num_classes)
  batches = data.batches(data_config, "train", batch_size=batch_size, seed=seed)
  losses = []
  for i in range(1, steps + 1):
    batch = next(batches)
    state, loss = step(state, jnp.asarray(batch["image"]), jnp.asarray(batch["label"]))
    losses.append(loss)
    if log is not None and (i % max(1, steps // 10) == 0 or i == steps):
      log(i, float(np.mean(jax.device_get(losses))))
      losses = []
  if not all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(
      jax.device_get(state[:2]))):
    raise errors.InputError("the segmenter's parameters became non-finite; lower lr")
  trained = Trained(module, {"params": state[0], "batch_stats": state[1]}, {})
  info = {"format": FORMAT, "num_classes": num_classes, "channels": channels,
          "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
          "data": json.loads(data_config.to_json()),
          "data_splits": split_record.current(data_config),
          "validation_dice": validation_dice(trained, data_config)}
  return trained._replace(info=info)


def label_classes(data_config) -> int:
  """C, the classes of a labelled dataset, background 0 included.

  The embedded MNI152's are its tissue classes (`data.MNI152_CLASSES`); a
  labelled folder's are its label values, which must be 0, 1, …, C − 1 over
  every split: a class the segmenter cannot predict would score nothing, and
  one that never occurs would score a perfect Dice of 1 on every slice
  (`foreground_dice`) and inflate the mean.

  Args:
    data_config: a data config whose dataset has labels, with training
      split fractions.

  Returns:
    C ≥ 2.

  Raises:
    InputError: a dataset without labels or built for evaluation only, or
      label values that are negative, all background, more than
      `MAX_CLASSES`, or with gaps (naming the values and a file holding them).
  """
  from hyperrecon_jax import data
  from hyperrecon_jax.data import common
  common.check_fractions(data_config.split_fractions)
  if not data.has_labels(data_config):
    raise errors.InputError(f"config.data.name={data_config.name!r} has no label volumes "
                            "to train a segmenter on")
  if data_config.name == "mni152":
    return len(data.MNI152_CLASSES)
  from hyperrecon_jax.data import nifti
  label_file = dict(nifti.find_files(os.path.expanduser(data_config.manual_dir)))
  where = {}  # label value -> the label file of a volume holding it
  for split in data.SPLITS:
    names = {v.id: label_file.get(v.name) or v.name for v in data.volumes(data_config, split)}
    for batch in data.batches(data_config, split, batch_size=32, training=False,
                              num_threads=0):
      valid = batch["valid"]
      for volume, label in zip(batch["volume"][valid], batch["label"][valid]):
        for value in np.unique(label):
          where.setdefault(int(value), names[int(volume)])
  folder = f"{data_config.name} {data_config.manual_dir}"
  values = sorted(where)
  if values[0] < 0:
    raise errors.InputError(f"the label volumes of {folder} hold the negative value "
                            f"{values[0]} ({where[values[0]]}): labels are classes 0 "
                            "(background), 1, 2, …")
  if values[-1] < 1:
    raise errors.InputError(f"the label volumes of {folder} hold background (0) only, on "
                            "the kept slices: nothing to segment")
  high = values[-1]
  if high >= MAX_CLASSES:
    raise errors.InputError(
        f"the label volumes of {folder} go up to {high} ({where[high]}), which makes "
        f"{high + 1} classes, more than {MAX_CLASSES}: a segmenter predicts one channel "
        "per value. Merge the labels into classes 0, 1, …, e.g. tissue classes")
  missing = sorted(set(range(high + 1)) - set(values))
  if missing:
    shown = ", ".join(map(str, missing[:8])) + (", …" if len(missing) > 8 else "")
    raise errors.InputError(
        f"the label values of {folder} skip {shown} (they run up to {high}, in "
        f"{where[high]}): a class that never occurs would score a perfect Dice on every "
        "slice and inflate the mean. Renumber the labels 0, 1, …, C − 1")
  return high + 1


def settings(config) -> dict:
  """`train`'s settings from an experiment config: its ``segmenter`` section,
  ``train.batch_size`` and ``train.seed``; ``segmenter.channels`` 0 means the
  model's ``model.channels``.

  Raises:
    InputError: a ``segmenter`` field out of range, named as the config field.
  """
  s = config.segmenter
  _check_integer("config.segmenter.channels", s.channels, 0)  # 0: the model's
  _check_integer("config.segmenter.steps", s.steps, 1)
  _check_rate("config.segmenter.lr", s.lr)
  return {"channels": int(s.channels or config.model.channels), "steps": int(s.steps),
          "lr": float(s.lr), "batch_size": int(config.train.batch_size),
          "seed": int(config.train.seed)}


def check_folder(directory: str) -> None:
  """Refuses a folder a new segmenter cannot be written into (see `train_into`)."""
  workdir_lib.check_folder(directory, "segmenter", workdir_lib.SEGMENTER_ENTRIES)
  if os.path.exists(os.path.join(directory, INFO_FILE)):
    raise errors.InputError(f"{directory} already holds a trained segmenter; delete it "
                            "or use another --workdir")


def train_into(directory: str, data_config, **settings) -> Trained:
  """`train` a segmenter and `save` it in ``directory``, which it owns meanwhile.

  Refuses, before any work, a folder that already holds a segmenter (nothing
  written is replaced), holds anything a segmenter does not write (a training
  run, a user's files), or that another process is writing into.

  Args:
    directory: the segmenter's folder (created).
    data_config: see `train`.
    **settings: keyword arguments of `train`.

  Returns:
    The saved segmenter.
  """
  check_folder(directory)
  _check_settings(settings.get("num_classes"), settings.get("channels"),
                  settings.get("steps"), settings.get("batch_size"), settings.get("lr"))
  with workdir_lib.lock(directory):
    trained = train(data_config, **settings)
    save(trained, directory)
  return trained


def save(segmenter: Trained, directory: str) -> None:
  """Writes ``segmenter.msgpack`` then ``segmenter.json`` (each atomically)."""
  os.makedirs(directory, exist_ok=True)
  blob = flax.serialization.msgpack_serialize(
      jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(
          segmenter.variables)))
  workdir_lib.write_bytes(os.path.join(directory, WEIGHTS_FILE), blob)
  info = dict(segmenter.info, sha256=hashlib.sha256(blob).hexdigest())
  workdir_lib.write_text(os.path.join(directory, INFO_FILE),
                         json.dumps(info, indent=1, sort_keys=True) + "\n")


def load(directory: str) -> Trained:
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
    module = Segmenter(int(info["num_classes"]), int(info["channels"]))
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
  return Trained(module, jax.tree_util.tree_map(jnp.asarray, variables), info)


def check_data(segmenter: Trained, data_config, where: str, split: str | None = None) -> None:
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
  mine = segmenter.info["data"]
  theirs = json.loads(data_config.to_json())
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


def log_to_stderr(step: int, loss: float) -> None:
  print(f"segmenter step {step}: soft Dice loss {loss:.4f}", file=sys.stderr, flush=True)
