"""The embedded default dataset: the MNI152 2009c template shipped with nilearn.

Source: `nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted
.nii.gz` inside the installed nilearn wheel (197 x 233 x 189 voxels of 1 mm,
RAS). Nothing is downloaded and no nilearn fetcher is called.

Image: the skull-stripped T1 template divided by the 99.5th percentile of its
brain voxels (`percentile`) and clipped to [0, 1].

Labels (uint8, a 4-class segmentation):
  0 background: outside the brain mask (T1 == 0).
  1 other brain: inside the mask, where 1 - p_gm - p_wm (mostly
    cerebrospinal fluid) is the largest of the three probabilities.
  2 gray matter: p_gm is the largest.
  3 white matter: p_wm is the largest.
The probabilities are the template's GM and WM maps, stored as 0..255, and
the other class's is 255 - gm - wm (clipped at 0); ties go to the lower class.

Slices: a slice is background (dropped) when less than `min_foreground` of its
area lies in the brain mask. One brain only, so the splits are contiguous
blocks of slices separated by gaps of `gap_slices` unused slices (1 mm each):

  train (lower) | gap | validation | gap | test | gap | train (upper)

The validation+test block sits in the middle of the brain's extent along the
axis, so both ends of the anatomy are seen in training and the held-out slices
lie between them. Validation and test get round(fraction * usable) slices,
where usable = extent - 3 * gap_slices, and training the rest.
`split_ranges()` returns the exact ranges. With the defaults (gap 8,
fractions 0.7/0.1/0.2, min_foreground 0.01) the brain spans slices [7, 153)
axially, and the half-open ranges are (checked by the tests):

  axis      train                      validation   test
  axial     [7, 50) + [110, 153)  86   [58, 70) 12  [78, 102) 24
  coronal   [28, 82) + [153, 207) 108  [90, 106) 16 [114, 145) 31
  sagittal  [27, 68) + [128, 170) 83   [76, 88) 12  [96, 120) 24

These are slice indices of the 1 mm template, independent of `image_size`.
"""

from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import functools
import os

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.data import builder as builder_lib
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import slicing

CLASS_NAMES = ("background", "other_brain", "gray_matter", "white_matter")
VOLUME_NAME = "mni_icbm152_2009c_t1"


def template_paths() -> dict[str, str]:
  """Paths of the T1, GM and WM files inside the installed nilearn package."""
  nilearn = dependencies.require("nilearn")
  folder = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
  paths = {k: os.path.join(folder, f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz")
           for k in ("t1", "gm", "wm")}
  missing = [p for p in paths.values() if not os.path.exists(p)]
  if missing:
    raise data_errors.DataError(
        f"The MNI152 template files are missing from nilearn ({missing}); "
        "reinstall nilearn: pip install --force-reinstall nilearn")
  return paths


@functools.lru_cache(maxsize=1)
def _load_raw():
  """(t1, labels, mask) of the template; labels as in the module docstring."""
  nib = dependencies.require("nibabel")
  arrays = {}
  for key, path in template_paths().items():
    img = nib.as_closest_canonical(nib.load(path))
    arrays[key] = np.asarray(img.dataobj, dtype=np.float32)
  t1 = arrays["t1"]
  mask = t1 > 0
  # Probabilities are stored as whole numbers 0..255 and compared as such,
  # so that exact ties are ties (1 - gm/255 - wm/255 in floating point rounds
  # below gm/255 at some). Only brain voxels need a class.
  gm = np.rint(arrays["gm"][mask]).astype(np.int32)
  wm = np.rint(arrays["wm"][mask]).astype(np.int32)
  other = np.clip(255 - gm - wm, 0, 255)
  label = np.zeros(t1.shape, np.uint8)
  label[mask] = 1 + np.argmax(np.stack([other, gm, wm]), axis=0)
  for a in (t1, label, mask):
    a.setflags(write=False)  # Shared by the cache.
  return t1, label, mask


def load_template(percentile: float = 99.5):
  """Loads the template.

  Args:
    percentile: intensity percentile of the brain voxels mapped to 1.

  Returns:
    (image, label, mask): float32 image in [0, 1], uint8 labels (see the module
    docstring) and the boolean brain mask, each (197, 233, 189) in RAS.
  """
  t1, label, mask = _load_raw()
  return slicing.normalize_percentile(t1, percentile), label, mask


def split_ranges(axis="axial", gap_slices: int = 8,
                 split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
                 min_foreground: float = 0.01) -> dict[str, list[tuple[int, int]]]:
  """The slice blocks of each split (see the module docstring).

  Args:
    axis: 'axial' (default), 'coronal' or 'sagittal'.
    gap_slices: unused slices between neighbouring blocks of different splits.
    split_fractions: (train, validation, test) fractions of the usable slices.
    min_foreground: a slice with a smaller brain fraction is background.

  Returns:
    Split name -> list of half-open [start, stop) slice-index ranges, in
    increasing order. Train has two ranges, validation and test one each.

  Raises:
    ValueError: when the gaps leave too few slices for three splits.
  """
  _, f_val, f_test = config_fields.check_fractions(split_fractions)
  ax = config_fields.axis_index(axis)
  _, _, mask = _load_raw()
  fractions = slicing.foreground_fractions(mask, ax)
  keep = np.flatnonzero(fractions >= min_foreground)
  if not keep.size:
    raise errors.InputError(
        f"min_foreground={min_foreground} keeps no slice of the template along the "
        f"{config_fields.axis_name(ax)} axis: its largest brain fraction is {fractions.max():.3f}")
  lo, hi = int(keep[0]), int(keep[-1]) + 1
  extent, gap = hi - lo, int(gap_slices)
  usable = extent - 3 * gap
  # At least one slice each: a small positive fraction can round to none.
  n_val = max(1, int(round(usable * f_val)))
  n_test = max(1, int(round(usable * f_test)))
  if gap < 0 or usable - n_val - n_test < 2:
    raise errors.InputError(
        f"gap_slices={gap_slices} leaves too few of the {extent} brain slices "
        f"(min_foreground={min_foreground}) along the {config_fields.axis_name(ax)} axis for "
        "three splits.")
  block = n_val + gap + n_test
  start = lo + (extent - block) // 2
  return {
      "train": [(lo, start - gap), (start + block + gap, hi)],
      "validation": [(start, start + n_val)],
      "test": [(start + n_val + gap, start + block)],
  }


def split_slices(ranges: Sequence[tuple[int, int]]) -> list[int]:
  return [k for a, b in ranges for k in range(a, b)]


@functools.lru_cache(maxsize=4)
def _template_digest(files: tuple) -> str:
  """A short hash of the template files' SHA-256 digests.

  ``files`` holds (path, size, modification time): the cache's key, so that
  the files are read once per process unless they change.
  """
  from hyperrecon_jax import checksums
  return config_fields.digest({os.path.basename(path): checksums.file_digest(path)
                               for path, _, _ in files})


def template_digest() -> str:
  """What names the template's content: another nilearn's files build the data again."""
  files = []
  for path in sorted(template_paths().values()):
    info = os.stat(path)
    files.append((path, info.st_size, info.st_mtime_ns))
  return _template_digest(tuple(files))


def settings(data_config) -> dict:
  """The settings that change the written data, the template's content among them."""
  get = functools.partial(config_fields.field, data_config)
  return {
      "dataset": "mni152",
      "template": template_digest(),
      "image_size": config_fields.check_image_size(get("image_size")),
      "axis": config_fields.axis_name(get("axis")),
      "gap_slices": int(get("gap_slices")),
      "split_fractions": list(config_fields.check_fractions(get("split_fractions"))),
      "min_foreground": float(get("min_foreground")),
      "percentile": float(get("percentile")),
  }


def builder_config(data_config) -> builder_lib.SliceConfig:
  s = settings(data_config)
  return builder_lib.SliceConfig(
      name=builder_lib.settings_name(f"s{s['image_size']}_{s['axis']}", s),
      description=f"MNI152 2009c, {s['axis']} slices at {s['image_size']} px.",
      image_size=s["image_size"], label_dtype="uint8", settings=s)


class Mni152(builder_lib.SliceBuilder, skip_registration=True):
  """MNI152 2009c T1 template slices with 4-class tissue labels."""

  # A new version is a new build folder: one built by an older release is
  # cut again, not read with the labels that release gave.
  VERSION = builder_lib.tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Labels: exact ties of the 0..255 probabilities go to the lower class.",
  }

  HOMEPAGE = "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009"
  DESCRIPTION = __doc__

  def _plan(self) -> Mapping[str, list[builder_lib.VolumeSpec]]:
    s = self.builder_config.settings
    ranges = split_ranges(s["axis"], s["gap_slices"], s["split_fractions"],
                          s["min_foreground"])
    return {split: [builder_lib.VolumeSpec(0, VOLUME_NAME, split_slices(r))]
            for split, r in ranges.items()}

  def _slices(self, spec) -> Iterator[slicing.Slice]:
    s = self.builder_config.settings
    image, label, mask = load_template(s["percentile"])
    yield from slicing.volume_slices(
        image, axis=s["axis"], size=s["image_size"],
        min_foreground=s["min_foreground"], foreground=mask, label=label,
        indices=spec.source)
