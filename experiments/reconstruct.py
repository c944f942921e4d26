r"""Reconstructs your own scan with a trained model at one or more λ.

  python experiments/reconstruct.py --pretrained=mni152_csmri8x_dc_tv_256 \
      --input=sub-01_T1w.nii.gz --lam=0.3 --output=sub-01_recon.nii.gz
  python experiments/reconstruct.py --workdir=workdirs/demo --input=file1000001.h5 \
      --lam=grid:11 --output=file1000001_recon.h5 --save_input
  python experiments/reconstruct.py --workdir=workdirs/demo_k4 --input=sub-01_T1w.nii.gz \
      --samples=20 --output=sub-01_design.nii.gz

A NIfTI volume is degraded with the model's own task (its k-space mask and
noise, its noise, or its downsampling). A fastMRI ``.h5`` file is read as a
fastMRI folder's build reads it (`data.fastmri.read_target`): its
``reconstruction_esc``, else ``reconstruction_rss``, else the image of its
fully sampled k-space, divided by the file's ``max`` attribute (else its
largest value), brought to the model's grid and degraded with the model's
task; undersampled k-space is refused when the file has no reconstruction (it
would be undersampled twice). See `hyperrecon_jax.reconstruct`. Several λ give
a 4-D NIfTI (λ last) or an (L, S, H, W) dataset. λ is given one of three ways,
for a model of K loss terms:

* ``--lam``: ``0.3``; ``0,0.5,1``; ``grid:N`` (K ≤ 3); for K ≥ 3 vectors of
  K − 1 values, ``a:b`` pairs, ``a:b:c`` triples, e.g. ``0.2:0.5:0.1,1:0:0``.
* ``--coeffs``: loss coefficients on the simplex, ``c1:c2:…:cK`` vectors of
  non-negative numbers summing to 1, e.g. ``0.25:0.25:0.25:0.25,1:0:0:0``.
* ``--samples=N``: N points of a low-discrepancy design on the simplex, the K
  vertices (each loss term alone) first.

Beside the output a JSON sidecar (same name, ``.json``) records the model, the
seed, and each output volume's λ and loss coefficients, in order. Existing
files are refused unless ``--overwrite``, and so are an output folder that
cannot be written in and an output that would not fit in memory, before any
model work.

The script says which plane it slices (the model's, or the volume's thin axis
when the model's planes would be strips: ``--axis`` chooses), at what
resolution the model works, and when the output's intensity cannot be
trusted. ``--dtype``: float32 (the default: the model's own precision, which
every tool reads), ``input`` (the input's type, e.g. int16 scaled to the
output's range: the size of the input), ``int16`` (NIfTI) or ``float16``
(``.h5``).
"""

import os
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli

from hyperrecon_jax import errors

_WORKDIR, _PRETRAINED, _STEP = cli.define_model_flags()
_INPUT = cli.define_path("input", None, "A NIfTI volume (.nii, .nii.gz) or a "
                         "fastMRI file (.h5).")
_OUTPUT = cli.define_path("output", None, "The reconstruction: .nii/.nii.gz for "
                          "NIfTI input, .h5 for fastMRI input.")
_LAM = flags.DEFINE_string("lam", None, "λ: 0.3 | 0,0.5,1 | grid:N | vectors of K-1 "
                           "values a:b:c,… for a model of K loss terms.")
_COEFFS = flags.DEFINE_string("coeffs", None, "Instead of --lam: loss coefficients "
                              "c1:c2:…:cK,… (≥ 0, summing to 1).")
_SAMPLES = flags.DEFINE_string("samples", None, "Instead of --lam: N points of a design "
                               "on the simplex, the K vertices first.")
_SAVE_INPUT = flags.DEFINE_bool("save_input", False, "Also write the zero-filled "
                                "input (magnitude) on the same grid.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing outputs.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulated measurement noise.",
                             lower_bound=0, upper_bound=2**63 - 1)  # a jax.random.key
_BATCH = flags.DEFINE_integer("batch", None, "Slices per model call (default: the "
                              "config's eval.chunk).", lower_bound=1)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["input", "int16", "float16", "float32"],
                           "Value type of the output: float32; input (the input's own "
                           "type); int16 (NIfTI, scaled); float16 (.h5).")
_AXIS = flags.DEFINE_enum("axis", None, ["sagittal", "coronal", "axial"],
                          "NIfTI: the plane to slice (default: the model's, or the "
                          "volume's thin axis when the model's planes are strips).")
flags.mark_flags_as_required(["input", "output"])
flags.register_multi_flags_validator(
    ["lam", "coeffs", "samples"], lambda f: sum(f[n] is not None for n in f) == 1,
    message="give exactly one of --lam (λ values), --coeffs (coefficient vectors) and "
    "--samples (a design on the simplex)")


def _lambda_flag() -> tuple[str, str]:
  """The λ flag given (the validator admits exactly one): its name and value."""
  for flag in (_LAM, _COEFFS, _SAMPLES):
    if flag.value is not None:
      return flag.name, str(flag.value)
  raise AssertionError("the flag validator admits exactly one λ flag")


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import memory
  from hyperrecon_jax import outputs
  from hyperrecon_jax import progress
  from hyperrecon_jax import reconstruct
  from hyperrecon_jax import scans
  from hyperrecon_jax import train
  from hyperrecon_jax import volume_memory
  from hyperrecon_jax.data import config_fields
  with cli.user_errors():
    kind = scans.input_kind(_INPUT.value)
    paths = outputs.output_paths(kind, _OUTPUT.value, _SAVE_INPUT.value)
    scans.check_file(_INPUT.value)
    outputs.check_outputs(paths, _OVERWRITE.value, source=_INPUT.value)  # before any work
    config, model, variables, step, name = cli.load_model(
        _WORKDIR.value, _PRETRAINED.value, _STEP.value)
    if not config.model.hyper_dim:
      raise errors.InputError(f"{name} is {train.describe_model(config)}: reconstruct needs "
                              "a HyperRecon model")
    flag, text = _lambda_flag()
    lambdas = reconstruct.parse_lambdas(text, train.num_lambdas(config), flag=flag)
    scan = scans.read_input(_INPUT.value, config, axis=_AXIS.value)
    dtype = outputs.output_dtype(scan, _DTYPE.value, _OUTPUT.value)
    need = volume_memory.check_memory(
        scan, len(lambdas), dtype, save_input=_SAVE_INPUT.value,
        working=volume_memory.working_memory(config, scan, _BATCH.value))
    count = len(scan.slices)
    noun = "slice" if count == 1 else "slices"
    plane = f"{config_fields.axis_name(scan.axis)} {noun}" if kind == "nifti" else noun
    print(f"{_INPUT.value}: {count} {plane} ({int(scan.kept.sum())} with "
          f"foreground), {len(lambdas)} λ {'value' if len(lambdas) == 1 else 'values'} of the loss "
          f"{' + '.join(config.losses)}; model {name} (step {step})", file=sys.stderr)
    for note in [reconstruct.repeated_weightings(lambdas), *scan.notes]:
      if note:
        print(f"note: {note}", file=sys.stderr)
    shape = scan.output_shape
    if len(lambdas) > 1:
      shape = shape + (len(lambdas),) if kind == "nifti" else (len(lambdas),) + shape
    print(f"output: {'×'.join(str(n) for n in shape)} {dtype.name} "
          f"({memory.byte_size(len(lambdas) * dtype.itemsize * int(np.prod(scan.output_shape)))}"
          f" uncompressed; {memory.byte_size(need)} of memory)", file=sys.stderr)
    bar = progress.Progress(len(scan.slices) * len(lambdas), "slice",
                            lambda done, total, _: f"reconstructed {done:,}/{total:,} slices")
    try:
      result = reconstruct.volume(config, model, variables, scan, lambdas,
                                  seed=_SEED.value, batch=_BATCH.value,
                                  save_input=_SAVE_INPUT.value, progress=bar,
                                  dtype=_DTYPE.value)
    finally:
      bar.close()
    from hyperrecon_jax import physics
    from hyperrecon_jax import scan_scores
    print(scan_scores.describe(result["scores"], int(config.data.image_size),
                               physics.input_name(config.task.name)), file=sys.stderr)
    for warning in result["warnings"]:
      print(f"warning: {warning}", file=sys.stderr)
    written = outputs.write(result, _OUTPUT.value, model=f"{name} (step {step})",
                            overwrite=_OVERWRITE.value)
  for path in written:
    print(f"written: {path}")
  for path in outputs.stale_files(scan.kind, _OUTPUT.value, _SAVE_INPUT.value,
                                   source=scan.path):
    print(f"note: {path} is from an earlier run: this one wrote no zero-filled input "
          "(--save_input), as its sidecar says", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
