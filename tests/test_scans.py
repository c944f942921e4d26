"""hyperrecon_jax.scans: a user's NIfTI or fastMRI file cut into the model's slices.

The volumes are small synthetic ones written here, and the MNI152 template for
the check against the data pipeline. Putting slices back on the input's grid
(`reconstruct.put_back`) checks that the cut loses nothing.
"""

import re

import configs
import ml_collections
import nibabel as nib
import numpy as np
import pytest

from hyperrecon_jax import reconstruct
from hyperrecon_jax import scans
from hyperrecon_jax.data import mni152


def data_config(size, **extra):
  """The ``data`` section of a model's config, all `scans.read_input` reads."""
  return ml_collections.ConfigDict({"data": {
      "image_size": size, "axis": "axial", "percentile": 99.5, "min_foreground": 0.01,
      **extra}})


def non_ras_nifti(path, ras):
  """Saves a RAS volume stored as (S, L, P) axes: every axis moved and two flipped."""
  data = np.flip(np.transpose(ras, (2, 0, 1)), axis=(1, 2)).copy()
  affine = np.zeros((4, 4))
  affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 1.0, -1.0, -1.0, 1.0
  nib.save(nib.Nifti1Image(data, affine), path)
  return data, affine


def head(shape=(40, 40, 12), seed=0):
  """A RAS volume with a foreground block whose crop box is the whole plane."""
  ras = np.zeros(shape, np.float32)
  ras[4:-4, 4:-4, :] = np.random.default_rng(seed).uniform(
      0.2, 1.0, (shape[0] - 8, shape[1] - 8, shape[2]))
  return ras


def test_slices_are_numbered_as_the_file_numbers_its_voxels(tmp_path):
  # The same brain stored RAS, and as (I, R, A): its axial slices along the
  # file's first axis, from head to foot. A viewer numbers the file's voxels.
  ras = head((40, 36, 12))
  nib.save(nib.Nifti1Image(ras, np.eye(4)), str(tmp_path / "ras.nii.gz"))
  stored = np.flip(np.transpose(ras, (2, 0, 1)), axis=0).copy()  # (I, R, A)
  affine = np.zeros((4, 4))
  affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = -1.0, 1.0, 1.0, 1.0
  nib.save(nib.Nifti1Image(stored, affine), str(tmp_path / "ira.nii.gz"))
  a = scans.read_input(str(tmp_path / "ras.nii.gz"), data_config(32))
  b = scans.read_input(str(tmp_path / "ira.nii.gz"), data_config(32))
  np.testing.assert_array_equal(a.images, b.images)  # the same RAS slices
  indices, axis = a.input_slices
  assert axis == 2 and indices.tolist() == list(range(12))
  indices, axis = b.input_slices
  assert axis == 0 and indices.tolist() == list(range(11, -1, -1))
  for k, index in enumerate(indices):  # the file's own plane holds RAS slice k
    np.testing.assert_array_equal(stored[index], ras[:, :, k])


def _pixdim_apart_from_sform(path, data, affine):
  """Saves with the sform ``affine``, no qform, and pixdim left at 1 mm: the two disagree."""
  img = nib.Nifti1Image(data, affine)
  img.header.set_qform(None, code=0)
  img.header["pixdim"][1:4] = 1.0
  nib.save(img, str(path))
  return nib.load(str(path))


def test_voxel_sizes_are_the_affine_s_however_the_file_is_stored(tmp_path):
  # One brain, 3 mm slices by its sform, stored RAS and with its first axis
  # flipped (LAS). nibabel keeps a RAS file's header (pixdim: 1 mm) and derives
  # a reoriented one's from the affine (3 mm): the coronal slices were cut
  # with a slice aspect of 1 and of 3, by storage alone.
  ras = head((20, 24, 16))
  flip = np.array([[-1.0, 0, 0, 19], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
  a = _pixdim_apart_from_sform(tmp_path / "ras.nii", ras, np.diag([1.0, 1.0, 3.0, 1.0]))
  b = _pixdim_apart_from_sform(tmp_path / "las.nii", ras[::-1].copy(),
                               np.diag([1.0, 1.0, 3.0, 1.0]) @ flip)
  np.testing.assert_allclose(a.affine @ [0, 0, 0, 1], b.affine @ [19, 0, 0, 1])
  assert a.header.get_zooms() == b.header.get_zooms() == (1.0, 1.0, 1.0)
  config = data_config(32, axis="coronal")
  scan_a = scans.read_input(str(tmp_path / "ras.nii"), config)
  scan_b = scans.read_input(str(tmp_path / "las.nii"), config)
  assert scan_a.plane_spacing == scan_b.plane_spacing
  assert sorted(scan_a.plane_spacing) == [1.0, 3.0]  # a coronal plane: x at 1 mm, z at 3
  np.testing.assert_array_equal(scan_a.images, scan_b.images)


def test_the_input_kind_is_the_file_name_s():
  assert scans.input_kind("a.nii.gz") == "nifti" and scans.input_kind("a.h5") == "h5"
  with pytest.raises(ValueError, match="scan.mha: not a NIfTI .* or fastMRI"):
    scans.input_kind("scan.mha")


def test_a_folder_or_a_missing_file_is_named_as_such(tmp_path):
  """A folder named like a scan had been "no such file" for the explorer."""
  (tmp_path / "scan.nii.gz").mkdir()
  with pytest.raises(ValueError, match=r"scan\.nii\.gz is a folder; give one scan file"):
    scans.read_input(str(tmp_path / "scan.nii.gz"), data_config(32))
  with pytest.raises(ValueError, match=r"gone\.h5: no such file"):
    scans.read_input(str(tmp_path / "gone.h5"), data_config(32))
  # A folder of scans, named without a scan's suffix, had been "not a NIfTI
  # (.nii, .nii.gz) or fastMRI (.h5) file".
  (tmp_path / "scans").mkdir()
  with pytest.raises(ValueError, match=r"scans is a folder; give one scan file"):
    scans.read_input(str(tmp_path / "scans"), data_config(32))


def test_a_background_stored_through_an_intercept_is_not_positive(tmp_path):
  """raw·slope + intercept reads the zero background back as ~1e-7 (float32).

  Counted as positive voxels, those had lowered the 99.5th percentile by
  1.7 % for a head in a zero-padded field. Here the int16 file, quantized to
  steps of 0.01 on intensities up to 200, must give the float file's scale
  within that rounding: 0.005 / 100 relative, against the 0.5 % the
  background moved it by.
  """
  rng = np.random.default_rng(0)
  volume = np.zeros((48, 48, 4), np.float32)
  volume[12:36, 12:36] = rng.uniform(50, 200, (24, 24, 4))
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "float.nii"))
  raw = np.round((volume - 5.0) / 0.01).astype(np.int16)
  image = nib.Nifti1Image(raw, np.eye(4))
  image.header.set_slope_inter(0.01, 5.0)
  nib.save(image, str(tmp_path / "inter.nii"))
  stored = np.asarray(nib.load(str(tmp_path / "inter.nii")).get_fdata(dtype=np.float32))
  # The rounding this is about: nibabel 5.3 and later read ~1e-7 here, 5.2
  # exactly 0 (its arithmetic differs).
  assert np.abs(stored[0, 0, 0]) < 1e-5
  want = scans.read_input(str(tmp_path / "float.nii"), data_config(32)).scale
  got = scans.read_input(str(tmp_path / "inter.nii"), data_config(32)).scale
  np.testing.assert_allclose(got, want, rtol=5e-5)
  # The same background stored as floats, for every nibabel.
  noisy = np.where(volume > 0, volume, np.float32(1.2e-7))
  nib.save(nib.Nifti1Image(noisy, np.eye(4)), str(tmp_path / "noisy.nii"))
  got = scans.read_input(str(tmp_path / "noisy.nii"), data_config(32)).scale
  np.testing.assert_allclose(got, want, rtol=5e-5)


def test_read_input_cuts_the_template_as_the_data_pipeline(data_dir):
  from hyperrecon_jax import data
  config = data_config(32, name="mni152", data_dir=data_dir)
  want = {}
  full = configs.default().data
  full.image_size, full.data_dir = 32, data_dir
  for batch in data.batches(full, "test", batch_size=8, training=False):
    for image, s, valid in zip(batch["image"], batch["slice"], batch["valid"]):
      if valid:
        want[int(s)] = image
  scan = scans.read_input(mni152.template_paths()["t1"], config)
  got = np.stack([scan.images[s] for s in want])
  # The dataset's foreground is the brain mask (T1 > 0), ours T1 above 5 % of
  # the 99.5th percentile; on the skull-stripped template both give one box.
  np.testing.assert_allclose(got, np.stack(list(want.values())), atol=1e-6)
  assert scan.kept[list(want)].all()


@pytest.mark.parametrize("shape, pattern", [
    ((20, 20), r"shape \(20, 20\); expected a 3-D volume"),
    ((20, 20, 8, 3), r"shape \(20, 20, 8, 3\); expected a 3-D volume"),
])
def test_a_2d_or_4d_nifti_is_refused(tmp_path, shape, pattern):
  path = str(tmp_path / "bad.nii.gz")
  nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
  with pytest.raises(ValueError, match=pattern):
    scans.read_input(path, data_config(32))


@pytest.mark.parametrize("extra", [(1,), (1, 1)])
def test_a_volume_stored_with_trailing_axes_of_one_is_read_as_3d(tmp_path, extra):
  # (X, Y, Z, 1) from a series tool, (X, Y, Z, 1, 1) from ITK-style writers:
  # both hold one volume, read (and put back) as the 3-D file is.
  volume = head()
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "flat.nii.gz"))
  nib.save(nib.Nifti1Image(volume.reshape(volume.shape + extra), np.eye(4)),
           str(tmp_path / "extra.nii.gz"))
  flat = scans.read_input(str(tmp_path / "flat.nii.gz"), data_config(32))
  got = scans.read_input(str(tmp_path / "extra.nii.gz"), data_config(32))
  np.testing.assert_array_equal(got.images, flat.images)
  assert got.output_shape == volume.shape
  assert reconstruct.put_back(got, got.images).shape == volume.shape


def test_nan_voxels_and_empty_volumes_are_refused(tmp_path):
  volume = head()
  volume[5, 5, 5] = np.nan
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "nan.nii.gz"))
  with pytest.raises(ValueError, match="nan.nii.gz.*NaN"):
    scans.read_input(str(tmp_path / "nan.nii.gz"), data_config(32))
  nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)),
           str(tmp_path / "zero.nii.gz"))
  with pytest.raises(ValueError, match="zero.nii.gz.*no positive voxel"):
    scans.read_input(str(tmp_path / "zero.nii.gz"), data_config(32))


def test_voxels_beyond_float32_are_named_as_such(tmp_path):
  volume = head().astype(np.float64)
  volume[5, 5, 5] = 1e39  # finite in float64, inf in float32
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "big.nii.gz"))
  with pytest.raises(ValueError, match=r"big.nii.gz: 1 of 19,200 voxels are finite in its "
                                       r"float64 but beyond float32's range \(largest "
                                       r"magnitude 1e\+39"):
    scans.read_input(str(tmp_path / "big.nii.gz"), data_config(32))


@pytest.mark.parametrize("dtype, peak", [(np.float32, 1e-44), (np.float64, 1e-300)])
def test_a_volume_too_faint_for_float32_is_named_as_such(tmp_path, dtype, peak):
  # float32 holds 1e-44 as a subnormal of a few levels, and 1e-300 as 0.
  path = str(tmp_path / "faint.nii.gz")
  nib.save(nib.Nifti1Image(head().astype(dtype) * dtype(peak), np.eye(4)), path)
  with pytest.raises(ValueError, match=r"faint.nii.gz: the largest magnitude of its voxels, "
                                       r".* is below float32's smallest normal number"):
    scans.read_input(path, data_config(32))


def test_a_scale_resting_on_a_few_voxels_is_said(tmp_path):
  # 200 positive voxels, 1 above the 99.5th percentile.
  volume = np.zeros((20, 20, 2), np.float32)
  volume[5:15, 5:15, :] = np.random.default_rng(0).uniform(1, 2, (10, 10, 2))
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "few.nii.gz"))
  (line,) = scans.read_input(str(tmp_path / "few.nii.gz"), data_config(16)).warnings
  assert "rests on 1 of the scan's 200 positive voxels" in line
  nib.save(nib.Nifti1Image(head() * 1000, np.eye(4)), str(tmp_path / "many.nii.gz"))
  scan = scans.read_input(str(tmp_path / "many.nii.gz"), data_config(32))
  assert scan.warnings == () and scan.reference > 0
  # A brain mask given in place of the scan: reconstructed, and said to be one.
  nib.save(nib.Nifti1Image((head() > 0).astype(np.uint8), np.eye(4)),
           str(tmp_path / "mask.nii.gz"))
  warnings = scans.read_input(str(tmp_path / "mask.nii.gz"), data_config(32)).warnings
  assert any("holds only 2 distinct values (0, 1)" in w for w in warnings), warnings


def test_what_the_clip_to_the_scale_takes_is_said(tmp_path):
  # A z-scored or offset scan lost its negative half, and a bright lesion its
  # contrast, without a word (exit 0). The head: values in [0, 1000].
  vol = (head() * 1000).astype(np.float32)
  brain = vol > 50
  cases = {
      "zscore": np.where(brain, (vol - vol[brain].mean()) / vol[brain].std(), 0),
      "offset": vol - 100,
  }
  lesion = vol.copy()
  # 16 voxels, fewer than the 61 above the 99.5th percentile: the scale stays.
  lesion[18:20, 18:20, 4:8] = 3 * np.percentile(vol[vol > 0], 99.5)
  cases["lesion"] = lesion
  warned = {}
  for name, data in cases.items():
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(tmp_path / f"{name}.nii"))
    warned[name] = scans.read_input(str(tmp_path / f"{name}.nii"), data_config(32)).warnings
  # Hand-counted from the volumes themselves.
  for name in ("zscore", "offset"):
    data = cases[name]
    scale = np.percentile(data[data > 0], 99.5)
    level = 0.05 * scale
    negative = int(np.sum(data < -level))
    (line,) = warned[name]
    assert line.startswith(f"{negative:,} voxels ({negative / np.sum(np.abs(data) > level):.0%} "
                           "of those above the background) are negative")
  (line,) = warned["lesion"]
  assert re.match(r"16 voxels are brighter than 2× the intensity scale \(.*\), up to 3", line)
  nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "plain.nii"))
  assert scans.read_input(str(tmp_path / "plain.nii"), data_config(32)).warnings == ()


def test_foreground_the_crop_box_leaves_out_is_said(tmp_path):
  # A brain in slices 0–11 and, in two slices too empty to be kept (9 of 3,600
  # voxels each, under min_foreground's 1 %), a bright spot at a corner far
  # outside the brain's crop box: the output put it back as 0 without a word.
  from hyperrecon_jax import reconstruct
  volume = np.zeros((60, 60, 14), np.float32)
  volume[20:40, 20:40, :12] = np.random.default_rng(0).uniform(200, 1000, (20, 20, 12))
  volume[0:3, 0:3, 12:14] = 800
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "spot.nii.gz"))
  scan = scans.read_input(str(tmp_path / "spot.nii.gz"), data_config(32))
  (line,) = scan.warnings
  assert line.startswith("18 foreground voxels in 2 slice(s) (RAS slices 12–13) lie outside "
                         "the crop box"), line
  # What the warning says: the voxels come back as 0 even from a reconstruction of 1s.
  back = reconstruct.put_back(scan, np.ones_like(scan.images))
  assert np.all(back[0:3, 0:3, 12:14] == 0) and np.all(back[20:40, 20:40, :12] > 0)
  # A speck of noise (1 voxel, fewer than 5) is not worth a warning.
  volume[0:3, 0:3, 12:14] = 0
  volume[0, 0, 13] = 800
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "speck.nii.gz"))
  assert scans.read_input(str(tmp_path / "speck.nii.gz"), data_config(32)).warnings == ()


# --- volumes the configured plane does not suit ----------------------------------------


def test_a_thin_volume_is_sliced_along_its_thin_axis(tmp_path):
  # Three slices along R-L: the model's axial planes would be 3×40 strips, so
  # the three 40×40 sagittal planes are reconstructed, and the note says so.
  path = str(tmp_path / "thin.nii.gz")
  ras = head((40, 40, 3)).transpose(2, 0, 1).copy()  # (3, 40, 40), RAS
  nib.save(nib.Nifti1Image(ras, np.eye(4)), path)
  scan = scans.read_input(path, data_config(40))
  assert scan.axis == 0 and scan.images.shape == (3, 40, 40)
  assert any(re.search(r"slicing sagittal .*not the model's axial.*3×40-voxel strips", note)
             for note in scan.notes), scan.notes
  np.testing.assert_allclose(reconstruct.put_back(scan, scan.images),
                             np.clip(ras, 0, scan.scale), atol=1e-6)
  with pytest.raises(ValueError, match=r"axial planes are 3×40 voxels.*--axis=sagittal"):
    scans.read_input(path, data_config(40), axis="axial")
  assert scans.read_input(path, data_config(40), axis="sagittal").axis == 0


def test_a_single_slice_volume_is_one_slice_and_a_strip_is_refused(tmp_path):
  path = str(tmp_path / "one.nii.gz")
  nib.save(nib.Nifti1Image(head((40, 48, 1)), np.eye(4)), path)
  scan = scans.read_input(path, data_config(32))
  assert scan.axis == 2 and scan.images.shape == (1, 32, 32) and scan.kept.all()
  assert reconstruct.put_back(scan, scan.images).shape == (40, 48, 1)
  nib.save(nib.Nifti1Image(head((40, 48, 3))[:, :4], np.eye(4)), str(tmp_path / "strip.nii"))
  with pytest.raises(ValueError, match=r"RAS shape \(40, 4, 3\), so every plane is narrower"):
    scans.read_input(str(tmp_path / "strip.nii"), data_config(32))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_an_affine_without_orientation_is_refused(tmp_path, value):
  # nibabel cannot build such an image: the header is written as a broken
  # converter would, the sform's first row changed in place.
  path = str(tmp_path / "a.nii")
  nib.save(nib.Nifti1Image(head(), np.eye(4)), path)
  assert nib.load(path).header.endianness == "<"
  with open(path, "r+b") as f:
    f.seek(252)  # qform_code, sform_code
    f.write(np.array([0, 2], "<i2").tobytes())
    f.seek(280)  # srow_x
    f.write(np.array([value, 0, 0, 0], "<f4").tobytes())
  with pytest.raises(ValueError, match=r"a\.nii: its affine .* holds NaN or ±Inf"):
    scans.read_input(path, data_config(32))


def test_a_singular_affine_is_refused(tmp_path):
  # A zero column gave io_orientation NaN axes: "cannot convert float NaN to integer".
  affine = np.diag([2.0, 2.0, 0.0, 1.0])
  img = nib.Nifti1Image(head(), None)
  img.header.set_sform(affine, 2)
  img.header.set_qform(None, 0)
  nib.save(img, str(tmp_path / "flat.nii"))
  with pytest.raises(ValueError, match=r"flat\.nii: its affine .* is singular"):
    scans.read_input(str(tmp_path / "flat.nii"), data_config(32))


def h5_file(path, **datasets):
  """Writes an HDF5 file of the given datasets (None: an empty group); its path as text."""
  h5py = pytest.importorskip("h5py")
  with h5py.File(path, "w") as f:
    for key, value in datasets.items():
      if value is None:
        f.create_group(key)
      else:
        f[key] = value
  return str(path)


def _kspace(image):
  """Centred k-space (S, H, W) whose `fastmri.kspace_to_image` is ``image``."""
  return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)), norm="ortho"),
                         axes=(-2, -1))


def _undersampled_kspace():
  """Centred k-space of a random (2, 32, 32) volume with every 4th column from 1 skipped."""
  kspace = _kspace(np.random.default_rng(0).uniform(0.1, 1.0, (2, 32, 32)))
  kspace[..., 1::4] = 0  # columns 1, 5, ..., 29: 8 of the 32
  return kspace.astype(np.complex64)


@pytest.mark.parametrize("datasets, pattern", [
    (dict(kspace=None), r"'kspace' is an HDF5 group, not an array"),
    (dict(reconstruction_esc=None), r"'reconstruction_esc' is an HDF5 group, not an array"),
    # A fastMRI test-set file: its measurements would be undersampled twice.
    (dict(kspace=_undersampled_kspace()),
     r"scan.h5: its 'kspace' is already undersampled: 8 of the 32 columns between its first "
     r"and last measured one are zero .* would be undersampled twice"),
    (dict(kspace=np.bytes_(b"hello")), r"'kspace' has shape \(\) and dtype \|S5"),
    (dict(kspace=np.zeros((0, 32, 32), np.complex64)), r"shape \(0, 32, 32\): it holds no slice"),
    (dict(reconstruction_rss=np.zeros((0, 32, 32), np.float32)), "it holds no slice"),
    (dict(reconstruction_rss=np.ones((2, 32, 32), np.complex64)),
     r"values of 'reconstruction_rss' are of type complex64; expected real"),
    # Finite in float64, infinite in the float32 the model computes in.
    (dict(reconstruction_rss=np.full((2, 32, 32), 1e300)),
     r"2,048 of 2,048 values of 'reconstruction_rss' are finite in its float64 but beyond "
     r"float32's range"),
    (dict(kspace=_kspace(np.full((2, 32, 32), 1e39))),
     r"2,048 of 2,048 pixels of the image of 'kspace' are finite in its float64 but beyond"),
])
def test_a_fastmri_file_that_holds_no_usable_volume_is_refused(tmp_path, datasets, pattern):
  path = h5_file(tmp_path / "scan.h5", **datasets)
  with pytest.raises(ValueError, match=pattern):
    scans.read_input(path, data_config(32))


def test_a_fastmri_file_is_read_as_the_dataset_build_reads_it(tmp_path):
  # A target beside undersampled k-space (a file whose k-space was cut after
  # its target was stored): the build uses the target, and so does a scan.
  h5py = pytest.importorskip("h5py")
  from hyperrecon_jax.data import fastmri
  target = np.random.default_rng(1).uniform(0.0, 0.5, (2, 32, 32)).astype(np.float32)
  path = h5_file(tmp_path / "scan.h5", kspace=_undersampled_kspace(), reconstruction_esc=target)
  with h5py.File(path, "r+") as f:
    f.attrs["max"] = 0.6  # fastMRI's stored maximum scales the target
  scan = scans.read_input(path, data_config(32))
  np.testing.assert_array_equal(scan.images, np.clip(target / np.float32(0.6), 0, 1))
  np.testing.assert_array_equal(scan.images, fastmri.read_volume(path))
  assert scan.scale == pytest.approx(0.6)


def test_what_the_clip_takes_from_an_fastmri_target_is_said(tmp_path):
  # An offset reconstruction lost its negative background without a word,
  # where the same offset NIfTI warned.
  target = np.zeros((2, 32, 32), np.float32)
  target[:, 8:24, 8:24] = np.random.default_rng(1).uniform(0.2, 1.0, (2, 16, 16))
  offset = target - 0.5
  scan = scans.read_input(h5_file(tmp_path / "offset.h5", reconstruction_esc=offset),
                          data_config(32))
  # Hand-counted: the scale is the largest value, 'above the background' is
  # beyond 0.05 of it.
  scale = float(offset.max())
  level = 0.05 * scale
  negative = int(np.sum(offset < -level))
  (line,) = scan.warnings
  assert line.startswith(f"{negative:,} voxels ({negative / np.sum(np.abs(offset) > level):.0%} "
                         "of those above the background) are negative"), line
  assert scans.read_input(h5_file(tmp_path / "plain.h5", reconstruction_esc=target),
                          data_config(32)).warnings == ()


def test_zero_padded_kspace_edges_are_not_undersampling(tmp_path):
  # fastMRI's fully sampled files pad k-space with zero columns at both edges.
  image = np.random.default_rng(1).uniform(0.1, 1.0, (2, 32, 32))
  kspace = _kspace(image).astype(np.complex64)
  kspace[..., :3] = 0
  kspace[..., -2:] = 0
  scan = scans.read_input(h5_file(tmp_path / "padded.h5", kspace=kspace), data_config(32))
  assert scan.images.shape == (2, 32, 32) and scan.images.max() == 1.0
