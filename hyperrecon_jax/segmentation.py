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

A trained segmenter's folder (`save`, `load`, `train_into`) and the data it
may label (`check_data`) are `hyperrecon_jax.segmenter_files`.
"""

from collections.abc import Callable
import json
import os
import sys
from typing import Any
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperrecon_jax import compilation
from hyperrecon_jax import errors
from hyperrecon_jax import metrics
from hyperrecon_jax.data import split_record
from hyperrecon_jax.models import layers
from hyperrecon_jax.models.topology import check_width
from hyperrecon_jax.models.topology import conv_specs
from hyperrecon_jax.models.unet import UnetBody
from hyperrecon_jax.models.unet import check_input

# Soft Dice smoothing, in pixels: keeps a class absent from both the labels
# and the prediction at a Dice near 1 instead of 0/0.
DICE_SMOOTHING = 1.0
# The most classes a labelled folder may give a segmenter: its logits are one
# channel per class at the image size, and a parcellation's hundreds of
# sparse values (FreeSurfer's up to 2035) would be mostly empty channels.
MAX_CLASSES = 32


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
    check_width(channels=self.channels)
    check_input(image[..., None], "image", channels=1)  # sizes the pooling can halve
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


def _check_integer(name: str, value, low: int, why: str = "") -> None:
  """Refuses ``value`` unless it is an integer ≥ ``low``.

  Args:
    name: the setting, as the message names it.
    value: its value.
    low: the smallest value allowed.
    why: said after the refusal, e.g. why ``name`` is the setting read.

  Raises:
    InputError: naming ``name`` and ``value``.
  """
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise errors.InputError(f"{name} must be an integer ≥ {low}, got {value!r}{why}")


def _check_rate(name: str, value) -> None:
  """Refuses a learning rate that is not a positive number at most float32's largest.

  Adam's steps are float32, whose largest number bounds the rate as it bounds
  ``train.lr`` (`config_checks.FLOAT32_MAX`): 1e39 is ∞ there, and every
  parameter would be NaN after the first step.

  Args:
    name: the setting, as the message names it.
    value: its value.

  Raises:
    InputError: naming ``name`` and ``value``.
  """
  # Imported here: the train package imports this module (through grid).
  from hyperrecon_jax.train import config_checks
  if isinstance(value, bool) or not (isinstance(value, (int, float)) and np.isfinite(value)
                                     and value > 0):
    raise errors.InputError(f"{name} must be a positive finite number, got {value!r}")
  if value > config_checks.FLOAT32_MAX:
    raise errors.InputError(
        f"{name} must be a positive number at most float32's largest, "
        f"{config_checks.FLOAT32_MAX!r} (the training step computes in float32), got {value!r}")


def check_settings(num_classes, channels, steps, batch_size, lr) -> None:
  """Refuses `train`'s settings out of range, each named: integers, a positive rate.

  ``num_classes`` None (the data's) passes.
  """
  for name, value, low in (("num_classes", num_classes, 2), ("channels", channels, 1),
                           ("steps", steps, 1), ("batch_size", batch_size, 1)):
    if name != "num_classes" or value is not None:
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


def train(data_config, *, num_classes: int | None = None, channels: int, steps: int,
          batch_size: int, lr: float, seed: int,
          log: Callable[[int, float], None] | None = None) -> Trained:
  """Trains a segmenter on the ground-truth slices and labels of the train split.

  Args:
    data_config: a data config whose dataset has labels (`data.has_labels`).
    num_classes: C, background included; None: the data's (`label_classes`),
      which a number given must equal (a class the labels lack would score a
      perfect Dice on every slice; labels beyond C would belong to none).
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
  check_settings(num_classes, channels, steps, batch_size, lr)
  classes = label_classes(data_config)
  if num_classes is not None and num_classes != classes:
    raise errors.InputError(
        f"num_classes={num_classes}, but the labels of {data_config.name} hold {classes} "
        f"classes (0 … {classes - 1}): give num_classes={classes}, or leave it out")
  num_classes = classes
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
  info = {"num_classes": num_classes, "channels": channels,
          "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
          "data": json.loads(data_config.to_json()),
          "data_splits": split_record.current(data_config),
          "label_files": label_files(data_config),
          "validation_dice": validation_dice(trained, data_config)}
  return trained._replace(info=info)


# The key under which a segmenter of the embedded data records its labels' release.
MNI152_LABELS = "mni152 labels"


def label_files(data_config) -> dict[str, str] | None:
  """What the labels a segmenter learns are: recorded, and compared before it scores.

  A folder's label files can be renumbered or replaced after a segmenter
  learned them: {volume: SHA-256 of its label file}. The embedded MNI152's
  labels change with the builder's release and the template's files:
  {`MNI152_LABELS`: "<release> <template digest>"}. None for data without
  labels.
  """
  if data_config.name == "mni152":
    from hyperrecon_jax.data import mni152
    return {MNI152_LABELS: f"{mni152.Mni152.VERSION} {mni152.template_digest()}"}
  if data_config.name != "nifti":
    return None
  from hyperrecon_jax.data import nifti_files
  return nifti_files.label_digests(data_config.manual_dir)


def label_classes(data_config) -> int:
  """C, the classes of a labelled dataset, background 0 included.

  The embedded MNI152's are its tissue classes (`data.MNI152_CLASSES`); a
  labelled folder's are the values of its label files, which must be 0, 1,
  …, C − 1 over every split, each on some kept slice at the dataset's image
  size: a class the segmenter cannot predict would score nothing, and one
  that never occurs would score a perfect Dice of 1 on every slice
  (`foreground_dice`) and inflate the mean. Every class must also be on
  some kept slice of the train split, or the segmenter cannot learn it.

  Args:
    data_config: a data config whose dataset has labels, with training
      split fractions.

  Returns:
    C ≥ 2.

  Raises:
    InputError: a dataset without labels or built for evaluation only, or
      label values that are negative, all background, more than
      `MAX_CLASSES`, with gaps, on no kept slice, or on none of the train
      split's (naming the values and a file holding them).
  """
  from hyperrecon_jax import data
  from hyperrecon_jax.data import config_fields
  config_fields.check_fractions(data_config.split_fractions)
  if not data.has_labels(data_config):
    raise errors.InputError(f"config.data.name={data_config.name!r} has no label volumes "
                            "to train a segmenter on")
  if data_config.name == "mni152":
    return len(data.MNI152_CLASSES)
  from hyperrecon_jax.data import nifti
  from hyperrecon_jax.data import nifti_files
  manual_dir = os.path.expanduser(data_config.manual_dir)
  label_file = dict(nifti_files.find_files(manual_dir))
  in_files = {}  # label value -> the label file of a volume holding it
  on_slices = {}  # split -> label values on its kept slices, as the segmenter sees them
  for split in data.SPLITS:
    for v in data.volumes(data_config, split):
      name = label_file.get(v.name) or v.name
      for value in nifti.label_values(os.path.join(manual_dir, name)):
        in_files.setdefault(int(value), name)
    on_slices[split] = set()
    for batch in data.batches(data_config, split, batch_size=32, training=False,
                              num_threads=0):
      on_slices[split].update(int(v) for v in np.unique(batch["label"][batch["valid"]]))
  folder = f"{data_config.name} {data_config.manual_dir}"
  values = sorted(in_files)
  if values[0] < 0:
    raise errors.InputError(f"the label volumes of {folder} hold the negative value "
                            f"{values[0]} ({in_files[values[0]]}): labels are classes 0 "
                            "(background), 1, 2, …")
  high = values[-1]
  if high < 1:
    raise errors.InputError(f"the label volumes of {folder} hold background (0) only: "
                            "nothing to segment")
  if high >= MAX_CLASSES:
    raise errors.InputError(
        f"the label volumes of {folder} go up to {high} ({in_files[high]}), which makes "
        f"{high + 1} classes, more than {MAX_CLASSES}: a segmenter predicts one channel "
        "per value. Merge the labels into classes 0, 1, …, e.g. tissue classes")
  missing = sorted(set(range(high + 1)) - set(values))
  if missing:
    shown = ", ".join(map(str, missing[:8])) + (", …" if len(missing) > 8 else "")
    raise errors.InputError(
        f"the label values of {folder} skip {shown} (they run up to {high}, in "
        f"{in_files[high]}): a class that never occurs would score a perfect Dice on every "
        "slice and inflate the mean. Renumber the labels 0, 1, …, C − 1")
  lost = sorted(set(values) - set().union(*on_slices.values()))
  if lost:
    size = int(data_config.image_size)
    raise errors.InputError(
        f"class {lost[0]} of {folder} ({in_files[lost[0]]}"
        f"{f'; also {len(lost) - 1} more' if len(lost) > 1 else ''}) is on none of the "
        f"kept {size}×{size} slices: too small to survive the resizing to "
        f"config.data.image_size={size}, or only on slices dropped as background. A class "
        "that never occurs would score a perfect Dice on every slice and inflate the mean: "
        "merge it into another class, or use a larger image_size")
  unlearned = sorted(set(values) - on_slices["train"])
  if unlearned:
    where = [s for s in data.SPLITS if unlearned[0] in on_slices[s]]
    raise errors.InputError(
        f"class {unlearned[0]} of {folder}"
        f"{f' (and {len(unlearned) - 1} more)' if len(unlearned) > 1 else ''} is on the kept "
        f"slices of the {' and '.join(where)} split only, none of the train split's: the "
        "segmenter could not learn it, would never predict it, and a split without it "
        "would score it a perfect Dice. Merge it into another class, or put a volume "
        "holding it into training (another config.data.split_seed: runs trained on the "
        "present splits would then need training again)")
  return high + 1


def settings(config) -> dict:
  """`train`'s settings from an experiment config: its ``segmenter`` section,
  ``train.batch_size`` and ``train.seed``; ``segmenter.channels`` 0 means the
  model's ``model.channels``.

  Raises:
    InputError: a ``segmenter`` field out of range, named as the config field
      (``model.channels`` where it gives the width); then a ``data`` field or
      ``train.seed`` (as `train.check_config` names them).
  """
  from hyperrecon_jax.train import config_checks
  s = config.segmenter
  _check_integer("config.segmenter.channels", s.channels, 0)  # 0: the model's
  if not s.channels:
    _check_integer("config.model.channels", config.model.channels, 1,
                   " (the segmenter's width, since config.segmenter.channels is 0)")
  _check_integer("config.segmenter.steps", s.steps, 1)
  _check_rate("config.segmenter.lr", s.lr)
  _check_integer("config.train.batch_size", config.train.batch_size, 1)
  config_checks.check_data_config(config)
  return {"channels": int(s.channels or config.model.channels), "steps": int(s.steps),
          "lr": float(s.lr), "batch_size": int(config.train.batch_size),
          "seed": int(config.train.seed)}


def log_to_stderr(step: int, loss: float) -> None:
  print(f"segmenter step {step}: soft Dice loss {loss:.4f}", file=sys.stderr, flush=True)
