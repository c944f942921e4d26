"""The slices the explorer shows, a dataset split's or a user's, and their network inputs."""

import jax
import numpy as np

from hyperrecon_jax import evaluate as ev
from hyperrecon_jax import streams
from hyperrecon_jax.errors import InputError


def load_split(config, split, with_labels=False):
  """Every valid slice of a split.

  Args:
    config: the model's experiment config (its ``data`` section is read).
    split: the split's name.
    with_labels: also return the slices' true labels.

  Returns:
    ``(images (S, H, W) float32, volume ids, slice indices, labels)``; the
    labels are (S, H, W) int32 with ``with_labels``, else None.

  Raises:
    InputError: the split has no slices, or no labels where they are asked for.
  """
  from hyperrecon_jax import data
  images, volumes, slices, labels = [], [], [], []
  for batch in data.batches(config.data, split, batch_size=32, training=False):
    valid = np.asarray(batch["valid"], bool)
    images.append(np.asarray(batch["image"], np.float32)[valid])
    if with_labels:
      if "label" not in batch:
        raise InputError(f"the {config.data.name} dataset has no labels: Dice cannot be "
                         "scored")
      labels.append(np.asarray(batch["label"], np.int32)[valid])
    volumes += list(np.asarray(batch["volume"])[valid])
    slices += list(np.asarray(batch["slice"])[valid])
  if not images:
    raise InputError(f"the {split} split has no slices")
  return (np.concatenate(images), volumes, slices,
          np.concatenate(labels) if with_labels else None)


def user_slices(images, size: int, slices=None):
  """A user's images as slices of one volume, volume 0.

  Args:
    images: (S, size, size) values in [0, 1].
    size: the model's image size.
    slices: the slice indices of ``images`` (default 0…S−1).

  Returns:
    ``(images (S, size, size) float32, volume ids (S,), slice indices (S,))``.

  Raises:
    InputError: ``images`` of another shape, none, or values outside [0, 1].
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 3 or images.shape[1:] != (size, size) or not len(images):
    raise InputError(f"images must have shape (S, {size}, {size}) with S ≥ 1, got "
                     f"{images.shape}")
  # Refused here, not at the first curve: its scoring (grid.grid_metrics)
  # takes a peak of 1, as PSNR and SSIM do.
  lo, hi = float(images.min()), float(images.max())
  if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
    raise InputError(f"images must hold values in [0, 1] (PSNR and SSIM take a peak of 1), "
                     f"got values in [{lo:.6g}, {hi:.6g}]")
  volumes = np.zeros(len(images), np.int64)
  slices = np.arange(len(images)) if slices is None else np.asarray(slices)
  return images, volumes, slices


def measure(config, operator, images, volumes, slices, *, seed=None, from_split=True):
  """(S, H, W, 2) the slices' network inputs, measured with per-slice noise keys.

  Args:
    config: the model's experiment config.
    operator: its forward operator.
    images: (S, H, W) the slices.
    volumes: their volume ids.
    slices: their slice indices.
    seed: seed of the measurement noise; default: the ``'evaluation'``
      stream (`streams.key`, the evaluation report's) for a split's slices,
      0 (``experiments/reconstruct.py``'s default ``--seed``) for a user's.
    from_split: whether the slices are a dataset split's.
  """
  if seed is not None:
    key = jax.random.key(int(seed))
  else:
    key = streams.key(config, "evaluation") if from_split else jax.random.key(0)
  return ev.measure_slices(operator, jax.numpy.asarray(images), ev.slice_keys(key, volumes, slices))


def volume_id(v):
  """A volume id for JSON: an int, or the text of a string or bytes id."""
  v = np.asarray(v)
  return int(v) if np.issubdtype(v.dtype, np.integer) else str(v.astype(str))
