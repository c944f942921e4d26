r"""Memory of `reconstruct.py`'s work against what its check counts; one JSON line.

  python benchmarks/reconstruct_memory.py [--pretrained=mni152_csmri8x_dc_tv] \
      [--shape=256x256x180] [--lambdas=1] [--save_input]

Writes a synthetic NIfTI volume of ``--shape`` (an ellipsoid of intensity
100 over uniform noise, 1 mm voxels, RAS) in a temporary folder and runs the
path of ``experiments/reconstruct.py`` in this process: `scans.read_input`,
`volume_memory.check_memory` with `volume_memory.working_memory`, `reconstruct.volume`
and `reconstruct.write`. The process's peak resident memory is reset
(``/proc/self/clear_refs``) at the check and read (``VmHWM``) after
`volume` and after `write`. ``need_over_peak`` ≥ 1 means the check counted
at least what the work took. Linux only.
"""

import json
import os
import sys
import tempfile

from absl import flags
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "experiments"))
import cli  # noqa: E402
import provenance  # noqa: E402

_PRETRAINED = flags.DEFINE_string("pretrained", "mni152_csmri8x_dc_tv", "Shipped model.")
_SHAPE = flags.DEFINE_string("shape", "256x256x180", "The volume's voxels, XxYxZ.")
_LAMBDAS = flags.DEFINE_integer("lambdas", 1, "λ values (evenly spaced in [0, 1]).",
                                lower_bound=1)
_SAVE_INPUT = flags.DEFINE_bool("save_input", False, "Also keep the zero-filled input.")


def _status(field: str) -> int:
  """A memory line of /proc/self/status, in bytes."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise OSError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM back to the current VmRSS


def _volume(shape, path):
  import nibabel as nib
  axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
  inside = sum(np.square(a) for a in axes) < 0.8
  noise = np.random.default_rng(0).random(shape, np.float32) * 10
  nib.save(nib.Nifti1Image(inside.astype(np.float32) * 100 + noise, np.eye(4)), path)


def _shape(text: str) -> tuple[int, int, int]:
  """``XxYxZ`` as three positive sizes, or an InputError naming the flag."""
  from hyperrecon_jax import errors
  parts = text.split("x")
  if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise errors.InputError(f"--shape={text}: expected three positive sizes, XxYxZ "
                            "(e.g. 256x256x180)")
  return tuple(int(p) for p in parts)


def main(argv):
  del argv
  provenance.quiet_logs()
  from hyperrecon_jax import pretrained
  from hyperrecon_jax import reconstruct
  from hyperrecon_jax import volume_memory
  with cli.user_errors():
    shape = _shape(_SHAPE.value)
    config, model, variables, _ = pretrained.load(_PRETRAINED.value)
  lambdas = np.linspace(0.0, 1.0, _LAMBDAS.value)[:, None]
  with tempfile.TemporaryDirectory() as scratch:
    path = os.path.join(scratch, "volume.nii")
    _volume(shape, path)
    scan = reconstruct.read_input(path, config)
    working = volume_memory.working_memory(config, scan)
    need = volume_memory.check_memory(scan, len(lambdas), "float32",
                                      save_input=_SAVE_INPUT.value, working=working,
                                      available=None)
    _reset_peak()
    base = _status("VmRSS")
    result = reconstruct.volume(config, model, variables, scan, lambdas,
                                save_input=_SAVE_INPUT.value)
    after_volume = _status("VmHWM") - base
    reconstruct.write(result, os.path.join(scratch, "recon.nii.gz"))
    peak = _status("VmHWM") - base
  mib = lambda n: round(n / 2**20, 1)
  print(json.dumps({
      "benchmark": "reconstruct_memory", "model": _PRETRAINED.value,
      "image_size": int(config.data.image_size), "shape": list(shape),
      "slices": len(scan.slices), "lambdas": len(lambdas), "save_input": _SAVE_INPUT.value,
      "volume_mib": mib(np.prod(shape) * 4), "need_mib": mib(need),
      "working_mib": mib(working), "peak_in_volume_mib": mib(after_volume),
      "peak_mib": mib(peak), "need_over_peak": round(need / peak, 2),
      **provenance.fields()}))


if __name__ == "__main__":
  cli.run(main)
