"""hyperrecon_jax.outputs: the output's type, its size in memory and its files.

What is refused before any model work (an existing output, a folder that
cannot be written in, an output too large for memory, a type the format
cannot hold), and a failed write. Writing real reconstructions is tested
with them, in tests/test_reconstruct.py.
"""

import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
import tempfile

import h5py
import nibabel as nib
import numpy as np
import pytest
from test_scans import data_config
from test_scans import head

from hyperrecon_jax import outputs
from hyperrecon_jax import scans


def small_scan(tmp_path, dtype=np.float32, shape=(40, 40, 12)):
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image((head(shape) * 1000).astype(dtype), np.eye(4)), path)
  return scans.read_input(path, data_config(32))


def test_outputs_are_checked_before_any_work(tmp_path):
  out = tmp_path / "recon.nii.gz"
  out.write_bytes(b"keep")
  with pytest.raises(ValueError, match="exists; give --overwrite"):
    outputs.check_outputs(outputs.output_paths("nifti", str(out), False), overwrite=False)
  with pytest.raises(ValueError, match="NIfTI input gives a NIfTI output"):
    outputs.output_paths("nifti", str(tmp_path / "x.h5"), False)
  with pytest.raises(ValueError, match="does not exist"):
    outputs.check_outputs([str(tmp_path / "missing" / "x.nii")], overwrite=False)
  with pytest.raises(ValueError, match=r"the folder .*recon\.nii\.gz is a file, not a folder"):
    outputs.check_outputs([str(out / "x.nii")], overwrite=False)  # it said "does not exist"
  assert out.read_bytes() == b"keep"
  assert outputs.output_paths("nifti", str(out), True) == [
      str(out), str(tmp_path / "recon.json"), str(tmp_path / "recon_zero_filled.nii.gz")]


def test_every_file_of_the_set_is_checked_not_the_output_alone(tmp_path):
  # The sidecar and the zero-filled volume are replaced by a write as much as
  # the reconstruction: each one existing refuses the set, and stays as it was.
  scan = small_scan(tmp_path)
  out = str(tmp_path / "recon.nii.gz")
  paths = outputs.output_paths("nifti", out, True)
  for existing in (tmp_path / "recon.json", tmp_path / "recon_zero_filled.nii.gz"):
    existing.write_bytes(b"an earlier run's")
    pattern = (rf"{re.escape(str(existing))} exists; give --overwrite \(in Python, "
               r"overwrite=True\) to replace it")
    with pytest.raises(ValueError, match=pattern):
      outputs.check_outputs(paths, overwrite=False)
    with pytest.raises(ValueError, match=pattern):
      outputs.write(reconstruction(scan), out)
    assert existing.read_bytes() == b"an earlier run's"
    assert sorted(os.listdir(tmp_path)) == sorted(["scan.nii.gz", existing.name])
    existing.unlink()


def test_the_input_scans_own_sidecar_is_never_replaced(tmp_path):
  # --overwrite replaced a BIDS scan's metadata with the reconstruction's sidecar.
  scan = tmp_path / "sub-01_T1w.nii.gz"
  scan.write_bytes(b"scan")
  (tmp_path / "sub-01_T1w.json").write_text('{"RepetitionTime": 2.3}')
  paths = outputs.output_paths("nifti", str(tmp_path / "sub-01_T1w.nii"), False)
  with pytest.raises(ValueError, match=r"sub-01_T1w\.json is the input scan's own sidecar"):
    outputs.check_outputs(paths, overwrite=True, source=str(scan))
  assert (tmp_path / "sub-01_T1w.json").read_text() == '{"RepetitionTime": 2.3}'
  outputs.check_outputs(outputs.output_paths("nifti", str(tmp_path / "recon.nii"), False),
                        overwrite=True, source=str(scan))


def test_an_earlier_zero_filled_volume_is_named_but_never_the_input_scan(tmp_path):
  partner = tmp_path / "sub_zero_filled.nii.gz"
  output = str(tmp_path / "sub.nii.gz")
  assert outputs.stale_files("nifti", output, False) == []
  partner.write_bytes(b"an earlier run's")
  assert outputs.stale_files("nifti", output, False) == [str(partner)]
  assert outputs.stale_files("nifti", output, True) == []
  assert outputs.stale_files("h5", str(tmp_path / "sub.h5"), False) == []
  # The input itself has the name an earlier run would give its zero-filled
  # volume: it was named as left over from that run, for the user to delete.
  assert outputs.stale_files("nifti", output, False, source=str(partner)) == []
  assert outputs.stale_files("nifti", output, False, source=str(tmp_path / "other.nii")) == [
      str(partner)]


def test_the_input_scan_and_a_folder_are_never_outputs(tmp_path):
  scan = tmp_path / "scan.nii.gz"
  scan.write_bytes(b"keep")
  os.symlink(scan, tmp_path / "link.nii.gz")
  for out in (scan, tmp_path / "link.nii.gz"):
    with pytest.raises(ValueError, match=r"is the input scan; write the reconstruction to "):
      outputs.check_outputs([str(out)], overwrite=True, source=str(scan))
  (tmp_path / "dir.nii.gz").mkdir()
  with pytest.raises(ValueError, match=r"dir\.nii\.gz is a folder; give a file name"):
    outputs.check_outputs([str(tmp_path / "dir.nii.gz")], overwrite=True)
  assert scan.read_bytes() == b"keep"


def test_no_output_is_written_inside_a_training_run(tmp_path):
  # A file in a run's folder (or its report folder) made its next train.py refuse it.
  run = tmp_path / "run"
  (run / "eval").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"task": {}, "data": {}, "model": {}}))
  for out in (run / "x.nii.gz", run / "eval" / "x.nii.gz"):
    with pytest.raises(ValueError, match=rf"^the output {out} lies inside the training run "
                                         rf"{run}, .*: give --output outside the run$"):
      outputs.check_outputs(outputs.output_paths("nifti", str(out), True), overwrite=True)
  assert sorted(os.listdir(run)) == ["config.json", "eval"] and not os.listdir(run / "eval")


def unwritable_folder(tmp_path):
  """A folder this user cannot create files in, or skips the test."""
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(0o555)
  for candidate in (str(folder), "/sys"):
    try:
      fd, probe = tempfile.mkstemp(dir=candidate)
    except OSError:
      return candidate
    os.close(fd)
    os.remove(probe)  # root ignores the permission bits
  pytest.skip("no folder here is read-only for this user")


def test_an_unwritable_output_folder_is_refused_up_front(tmp_path):
  folder = unwritable_folder(tmp_path)
  out = os.path.join(folder, "recon.nii.gz")
  with pytest.raises(ValueError, match=rf"recon.nii.gz: cannot write in the folder {folder} \("):
    outputs.check_outputs(outputs.output_paths("nifti", out, False), overwrite=False)


def test_a_failed_write_names_the_output_not_its_temporary_file(tmp_path):
  path = str(tmp_path / "recon.nii.gz")

  def full_disk(tmp):
    open(tmp, "wb").close()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

  with pytest.raises(OSError, match=rf"^{path}: cannot be written in {tmp_path} \(No space") as e:
    outputs._write_all([(path, full_disk)])
  assert ".partial" not in str(e.value) and os.listdir(tmp_path) == []


def test_a_write_removes_what_a_killed_writer_left(tmp_path):
  # kill -9 runs no `finally`: a reconstruction killed while writing left its
  # hidden temporary (25 MB for a 256×256×48 volume at 8 λ) for good unless
  # the same output was written again.
  import socket
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
  left = tmp_path / f".other.nii.gz.partial-{host}-{dead.pid}-.nii.gz"
  left.write_bytes(b"half a volume")
  alive = tmp_path / f".busy.nii.partial-{host}-{os.getpid()}-.nii"
  alive.write_bytes(b"being written")  # this process's own: never swept
  elsewhere = tmp_path / f".x.nii.partial-anotherhost-{dead.pid}-.nii"
  elsewhere.write_bytes(b"another host's")  # whose processes cannot be asked
  path = str(tmp_path / "recon.nii")
  outputs._write_all([(path, lambda tmp: open(tmp, "wb").write(b"new"))])
  assert sorted(os.listdir(tmp_path)) == sorted([alive.name, elsewhere.name, "recon.nii"])


def reconstruction(scan, num_lambdas=2, save_input=True):
  """A `reconstruct.volume` result of ``scan`` (values of no meaning), for `outputs.write`."""
  lambdas = np.linspace(0, 1, num_lambdas, dtype=np.float32)[:, None]
  volume = np.zeros(scan.output_shape, np.float32)
  return {"scan": scan, "lambdas": lambdas, "coeffs": np.hstack([1 - lambdas, lambdas]),
          "loss_terms": ("dc", "tv"), "recon": np.stack([volume + v for v in lambdas[:, 0]]),
          "zero_filled": volume if save_input else None, "seed": 0, "dtype": "float32"}


def test_writing_a_result_never_replaces_its_input_scan_or_sidecar(tmp_path):
  # `outputs.write(result, path, overwrite=True)`, the notebook's call, checked
  # its outputs without the input: given the scan's own name, it replaced the
  # scan and its BIDS sidecar, which reconstruct.py refuses.
  path = tmp_path / "sub-01_T1w.nii.gz"
  nib.save(nib.Nifti1Image((head((40, 40, 12)) * 1000).astype(np.float32), np.eye(4)),
           str(path))
  (tmp_path / "sub-01_T1w.json").write_text('{"RepetitionTime": 2.3}')
  scan = scans.read_input(str(path), data_config(32))
  before = path.read_bytes()
  for output, pattern in ((path, r"sub-01_T1w\.nii\.gz is the input scan"),
                          (tmp_path / "sub-01_T1w.nii", r"sub-01_T1w\.json is the input scan's "
                           "own sidecar")):
    with pytest.raises(ValueError, match=pattern):
      outputs.write(reconstruction(scan, save_input=False), str(output), overwrite=True)
  assert path.read_bytes() == before
  assert (tmp_path / "sub-01_T1w.json").read_text() == '{"RepetitionTime": 2.3}'
  assert sorted(os.listdir(tmp_path)) == ["sub-01_T1w.json", "sub-01_T1w.nii.gz"]


def test_the_lambda_axis_of_a_4d_output_is_not_time(tmp_path):
  # A scanner's 3-D volume often says mm and seconds with its repetition time:
  # copied to the 4-D output, viewers showed the λ volumes 2.3 s apart.
  path = str(tmp_path / "scan.nii.gz")
  img = nib.Nifti1Image((head((40, 40, 12)) * 1000).astype(np.float32), np.eye(4))
  img.header.set_xyzt_units("mm", "sec")
  img.header["pixdim"][4] = 2.3
  nib.save(img, path)
  scan = scans.read_input(path, data_config(32))
  out = str(tmp_path / "recon.nii.gz")
  outputs.write(reconstruction(scan, num_lambdas=3), out)
  header = nib.load(out).header
  assert header.get_xyzt_units() == ("mm", "unknown") and header["pixdim"][4] == 1.0
  assert nib.load(out).shape == (40, 40, 12, 3)
  # One λ: a 3-D volume keeps the input's units.
  outputs.write(reconstruction(scan, num_lambdas=1), str(tmp_path / "one.nii.gz"))
  assert nib.load(str(tmp_path / "one.nii.gz")).header.get_xyzt_units() == ("mm", "sec")


def test_the_outputs_carry_the_mark_that_a_folder_of_scans_refuses(tmp_path):
  # reconstruct.py --output beside its scan: the folder's next build must
  # not take the output (or the zero-filled input) for a scan
  # (test_data_nifti_headers.py builds such a folder; this is the writer's side).
  from hyperrecon_jax import data
  from hyperrecon_jax.data import nifti_headers
  scan = small_scan(tmp_path)
  outputs.write(reconstruction(scan, num_lambdas=1), str(tmp_path / "recon.nii.gz"))
  for name in ("recon.nii.gz", "recon_zero_filled.nii.gz"):
    with pytest.raises(data.DataError, match=rf"{name}: reconstruct\.py's output \(its header "
                                             r"says 'hyperrecon "):
      nifti_headers.check_header(str(tmp_path), name, None, 2)
  nifti_headers.check_header(str(tmp_path), "scan.nii.gz", None, 2)  # the scan itself passes


def test_the_sidecar_names_a_lambda_axis_for_several_lambdas_only(tmp_path):
  scan = small_scan(tmp_path)
  one = reconstruction(scan, num_lambdas=1, save_input=False)
  one["lambdas"] = np.array([[0.123456]], np.float32)
  one["coeffs"] = np.hstack([1 - one["lambdas"], one["lambdas"]])
  outputs.write(one, str(tmp_path / "one.nii.gz"))
  sidecar = json.loads((tmp_path / "one.json").read_text())
  assert nib.load(str(tmp_path / "one.nii.gz")).ndim == 3 and sidecar["lambda_axis"] is None
  # Six significant digits come back as typed (float32 holds seven): the
  # float32 λ is 0.12345600128…, its coefficient 1 − λ is 0.87654399871….
  assert sidecar["lambdas"] == [[0.123456]]
  assert sidecar["coefficients"] == [[0.876544, 0.123456]]
  outputs.write(reconstruction(scan, num_lambdas=2, save_input=False),
                str(tmp_path / "two.nii.gz"))
  sidecar = json.loads((tmp_path / "two.json").read_text())
  assert sidecar["lambda_axis"] == "last (4th) axis"


@pytest.mark.parametrize("stop", [OSError(errno.ENOSPC, "No space left on device"),
                                  KeyboardInterrupt()])
def test_a_write_stopped_part_way_leaves_no_part_of_the_set(tmp_path, monkeypatch, stop):
  # The reconstruction, its zero-filled input and its sidecar are one set: a
  # full disk or Ctrl-C at the last file used to leave the first two in place.
  scan = small_scan(tmp_path)
  out = str(tmp_path / "out" / "recon.nii.gz")
  os.mkdir(tmp_path / "out")
  paths = outputs.write(reconstruction(scan), out)
  assert sorted(os.listdir(tmp_path / "out")) == ["recon.json", "recon.nii.gz",
                                                  "recon_zero_filled.nii.gz"]
  before = {p: open(p, "rb").read() for p in paths}
  fresh = str(tmp_path / "out" / "fresh.nii.gz")

  def stopped(path, value):
    open(path, "w").close()
    raise stop

  monkeypatch.setattr(outputs, "_write_json", stopped)
  for destination, overwrite in ((fresh, False), (out, True)):
    with pytest.raises(type(stop)):
      outputs.write(reconstruction(scan, num_lambdas=3), destination, overwrite=overwrite)
    # Nothing of the new set, no temporary file, the earlier set untouched.
    assert sorted(os.listdir(tmp_path / "out")) == ["recon.json", "recon.nii.gz",
                                                    "recon_zero_filled.nii.gz"]
    assert {p: open(p, "rb").read() for p in paths} == before
  monkeypatch.undo()
  outputs.write(reconstruction(scan, num_lambdas=3), out, overwrite=True)
  assert nib.load(out).shape == scan.output_shape + (3,)


def test_output_types_the_format_cannot_hold_are_refused(tmp_path):
  scan = small_scan(tmp_path, np.int16)
  assert outputs.output_dtype(scan, "input") == np.int16
  assert outputs.storage_dtype(np.int16) == np.float32
  with pytest.raises(ValueError, match=r"NIfTI has no float16 type.*--dtype=int16"):
    outputs.output_dtype(scan, "float16")
  # int16 is stored with a float32 slope of about scale / 32767: a scale
  # below 32767 × float32's smallest normal (3.85e-34) leaves none.
  with pytest.raises(ValueError, match=r"up to 1e-40\) are too small for int16's float32 "
                                       r"scale factor .*give --dtype=float32"):
    outputs.output_dtype(dataclasses.replace(scan, scale=1e-40), "input")
  # Between float32's smallest normal (1.18e-38) and that floor: refused too.
  with pytest.raises(ValueError, match=r"up to 1e-36\) are too small for int16's float32 "
                                       r"scale factor \(at least 3\.85e-34"):
    outputs.output_dtype(dataclasses.replace(scan, scale=1e-36), "int16")
  assert outputs.output_dtype(dataclasses.replace(scan, scale=1e-30), "int16") == np.int16
  h5_path = str(tmp_path / "file.h5")
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 100
  h5_scan = scans.read_input(h5_path, data_config(64))
  assert outputs.output_dtype(h5_scan, "float16") == np.float16
  with pytest.raises(ValueError, match=r"an .h5 output holds no scale factor"):
    outputs.output_dtype(h5_scan, "int16")
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 1e5
  with pytest.raises(ValueError, match=r"float16 keeps 3 digits only .* span 1e\+03 to 2e\+05"):
    outputs.output_dtype(scans.read_input(h5_path, data_config(64)), "float16")
  # A scale float16 holds (4e4 < 65,504) whose outputs, up to twice the
  # scale, it does not.
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 4e4
  h5_scan = scans.read_input(h5_path, data_config(64))
  assert 32752 < h5_scan.scale < 65504
  with pytest.raises(ValueError, match=r"float16 keeps 3 digits only .* span 400 to 8e\+04"):
    outputs.output_dtype(h5_scan, "float16")
  # The largest scale whose doubled value float16 holds: 65,504 / 2.
  assert outputs.output_dtype(dataclasses.replace(h5_scan, scale=32752.0), "float16") == np.float16
  with pytest.raises(ValueError, match=r"float16 keeps 3 digits only"):
    outputs.output_dtype(dataclasses.replace(h5_scan, scale=32753.0), "float16")


def test_an_h5_output_holds_the_scans_scale_and_its_lambdas(tmp_path):
  h5_path = str(tmp_path / "file.h5")
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 100
  scan = scans.read_input(h5_path, data_config(64))
  assert 90 < scan.scale < 101  # the 99.5th percentile of values up to 100
  out = str(tmp_path / "recon.h5")
  outputs.write(reconstruction(scan, num_lambdas=3), out)
  with h5py.File(out, "r") as f:
    assert f.attrs["max"] == scan.scale
    assert f[outputs.H5_DATASET].shape == (3, *scan.output_shape)
  assert json.loads((tmp_path / "recon.json").read_text())["lambda_axis"] == "first axis"
  outputs.write(reconstruction(scan, num_lambdas=1), out, overwrite=True)
  with h5py.File(out, "r") as f:
    assert f[outputs.H5_DATASET].shape == scan.output_shape
  assert json.loads((tmp_path / "recon.json").read_text())["lambda_axis"] is None
