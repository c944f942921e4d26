"""A folder of a user's volumes, read without building a dataset.

What a model needs to know of a folder before any build: its kind, told by
its files (`folder_dataset`), its volumes' files (`volume_files`), a volume's
voxel digest (`content_digest`, the split record's check that a scored volume
is not one the model trained on), and the data config that scores every
volume in it as a model's own data are sliced (`folder_config`).
"""

import os

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import file_lists


def folder_dataset(folder: str) -> str:
  """The dataset of a folder of a user's files, by the files it holds.

  Args:
    folder: a folder of NIfTI volumes or of fastMRI `.h5` files; a leading
      ``~`` is the user's home (a shell leaves it as it is after ``--data=``).

  Returns:
    'nifti' or 'fastmri_knee'.

  Raises:
    DataError: not a folder, or a folder with both kinds of files or neither.
  """
  from hyperrecon_jax.data import nifti_files
  folder = os.path.expanduser(folder)
  if not os.path.isdir(folder):
    raise data_errors.DataError(
        f"{folder}: {'a file' if os.path.exists(folder) else 'no such folder'}"
        "; give a folder of NIfTI volumes or of fastMRI .h5 files")
  kinds = {name: len(file_lists.list_files(folder, suffixes)) for name, suffixes in
           (("nifti", nifti_files.SUFFIXES), ("fastmri_knee", (".h5",)))}
  found = [name for name, count in kinds.items() if count]
  if not found:
    raise data_errors.DataError(f"{folder} holds no NIfTI volume (.nii, .nii.gz) and no fastMRI "
                                "file (.h5)")
  if len(found) > 1:
    raise data_errors.DataError(
        f"{folder} holds both NIfTI volumes and fastMRI files (.nii or .nii.gz: "
        f"{kinds['nifti']}, .h5: {kinds['fastmri_knee']}): give a folder of one kind")
  return found[0]


def volume_files(data_config) -> list[str]:
  """The volumes' files of a folder dataset (`nifti`, `fastmri_knee`), in volume-id order.

  Paths relative to ``manual_dir``, read from the folder without building
  (a NIfTI volume's own file, not its labels').
  """
  name = config_fields.check_name(config_fields.field(data_config, "name"))
  manual_dir = os.path.expanduser(str(config_fields.field(data_config, "manual_dir")))
  if name == "nifti":
    from hyperrecon_jax.data import nifti_files
    return [image for image, _ in nifti_files.find_files(manual_dir, labels=False)]
  if name == "fastmri_knee":
    from hyperrecon_jax.data import fastmri
    return fastmri.find_files(manual_dir)
  raise data_errors.DataError(f"{name} is not a folder of volumes")


def content_digest(data_config, name: str) -> str:
  """The SHA-256 of a folder volume's normalized voxels (`Volume.content_sha256`).

  Args:
    data_config: a data config of a folder dataset (`nifti`, `fastmri_knee`).
    name: the volume's file, relative to ``manual_dir``.
  """
  manual_dir = os.path.expanduser(str(config_fields.field(data_config, "manual_dir")))
  if config_fields.field(data_config, "name") == "nifti":
    from hyperrecon_jax.data import nifti
    return nifti.content_digest(manual_dir, name,
                                float(config_fields.field(data_config, "percentile")))
  from hyperrecon_jax.data import fastmri
  return fastmri.content_digest(os.path.join(manual_dir, name))


def folder_config(data_config, folder: str):
  """The data config that scores every volume of ``folder`` as ``data_config`` slices its data.

  Args:
    data_config: the data config a model was trained with (a ConfigDict).
    folder: a folder of NIfTI volumes or of fastMRI `.h5` files; a leading
      ``~`` is the user's home.

  Returns:
    A copy of ``data_config`` with the folder's dataset (`folder_dataset`),
    the folder's absolute path as ``manual_dir`` and `config_fields.EVALUATION_ONLY`
    fractions: one test split of every volume, cut with the model's image
    size, axis, intensity percentile and foreground threshold.

  Raises:
    DataError: a folder of another kind than the model's data (NIfTI volumes
      for a model of NIfTI volumes or of the embedded MNI152, `.h5` files for
      a fastMRI model), a folder holding the MNI152 template an mni152 model
      learned from (`split_record.check_template`), or see `folder_dataset`.
  """
  folder = os.path.expanduser(folder)
  kind = folder_dataset(folder)
  trained = config_fields.field(data_config, "name")
  if (kind == "fastmri_knee") != (trained == "fastmri_knee"):
    learned = ("fastMRI .h5 files" if trained == "fastmri_knee"
               else f"NIfTI brain volumes ({trained})")
    holds = "fastMRI .h5 files" if kind == "fastmri_knee" else "NIfTI volumes"
    raise data_errors.DataError(
        f"the model learned from {learned} and {folder} holds {holds}, which are read and "
        "scaled otherwise: score a folder of the kind it learned from")
  out = data_config.copy_and_resolve_references()
  with out.unlocked():
    out.name = kind
    out.manual_dir = os.path.abspath(folder)
    out.split_fractions = config_fields.EVALUATION_ONLY
  from hyperrecon_jax.data import split_record
  split_record.check_template(data_config, out)
  return out
