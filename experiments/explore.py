r"""Serves the interactive λ explorer: move λ, watch the reconstruction change.

  python experiments/explore.py                      (the shipped 256×256 model)
  python experiments/explore.py --pretrained=mni152_csmri8x_dc_tv [--port=8765]
  python experiments/explore.py --workdir=workdirs/demo [--split=test] [--host=0.0.0.0]
  python experiments/explore.py --workdir=DIR --input=scan.nii.gz   (a volume of your own)
  python experiments/explore.py --workdir=DIR --data=FOLDER          (every volume of a folder)
  python experiments/explore.py --segmenter=SEGDIR                  (also Dice, best λ for Dice)
  python experiments/explore.py --workdir=DIR --samples=128         (K ≥ 4 terms: a bigger design)

Binds 127.0.0.1 (this machine only) unless --host is given, prints the URL,
and serves until Ctrl-C. The page and its JSON API are described in
`hyperrecon_jax.explorer`. Reads the workdir only.
"""

import errno
import os
import socket
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli

DEFAULT_MODEL = "mni152_csmri8x_dc_tv_256"

_WORKDIR, _PRETRAINED, _STEP = cli.define_model_flags(default_pretrained=DEFAULT_MODEL)
_PORT = flags.DEFINE_integer("port", 8765, "Port to serve on (0: a free one).",
                             lower_bound=0, upper_bound=65535)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every "
                            "interface, reachable from other machines).")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"],
                           "Split whose slices are shown.")
_INPUT = cli.define_path("input", None, "Instead of the split: a NIfTI volume or a "
                         "fastMRI .h5 file of your own.")
_DATA = cli.define_path("data", None, "Instead of the split: every volume of this "
                        "folder of NIfTI volumes or fastMRI .h5 files, sliced as the "
                        "model's data (evaluate.py --data).")
_SEGMENTER = cli.define_path(
    "segmenter", None, "Folder of a segmenter (experiments/segmenter.py) trained on this "
    "data: also show the Dice of every reconstruction and a 'best λ for Dice' button.")
_GRID = flags.DEFINE_integer("grid", None, "λ values per hyperparameter of the curves, for "
                             "models of 2 or 3 loss terms (default: the config's eval.grid).",
                             lower_bound=2)
_SAMPLES = flags.DEFINE_integer(
    "samples", None, "Points of the design on the simplex that the curves, the best λ and the "
    "gallery score, for models of 4 or more loss terms (default: "
    "hyperrecon_jax.explorer.DESIGN_SIZE, 64).", lower_bound=1)
_CHUNK = flags.DEFINE_integer("chunk", None, "Model batch of the λ-grid reconstruction "
                              "(default: 8 on CPU, 32 on GPU).", lower_bound=1)
_SEED = flags.DEFINE_integer(
    "seed", None, "Seed of the simulated measurement noise of a noisy task (denoising, "
    "k-space noise); default: the evaluation report's noise for a split or --data, 0 for "
    "--input (reconstruct.py's default --seed).", lower_bound=0, upper_bound=2**63 - 1)


def _bind_error(e: OSError, host: str, port: int):
  """An `errors.InputError` saying why ``host:port`` cannot be served, and what to do."""
  from hyperrecon_jax import errors
  if e.errno == errno.EADDRINUSE:
    return errors.InputError(f"port {port} on {host} is already in use (another explorer?): "
                             "choose another with --port=N, or --port=0 for a free one")
  return errors.InputError(f"cannot serve on {host}:{port}: {e.strerror or e}; choose another "
                           "address with --host or port with --port")


def _check_address(host: str, port: int):
  """Fails now, before the model loads, if ``host:port`` cannot be bound.

  Binds as the server will (``SO_REUSEADDR``, which a port held by a
  listening socket still refuses) and lets go at once. Port 0 (a free port,
  chosen when the server starts) checks the host alone.
  """
  with socket.socket(socket.AF_INET) as probe:  # the server's family
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind((host, port))
    except OSError as e:
      raise _bind_error(e, host, port) from None


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import errors
  from hyperrecon_jax import explorer
  with cli.user_errors():
    _check_address(_HOST.value, _PORT.value)
    pretrained = _PRETRAINED.value or (None if _WORKDIR.value else DEFAULT_MODEL)
    config, model, variables, step, name = cli.load_model(_WORKDIR.value, pretrained,
                                                          _STEP.value)
    images = slices = numbers = source = None
    split = _SPLIT.value
    if _INPUT.value is not None and _DATA.value is not None:
      raise errors.InputError("give --input (one scan) or --data (a folder), not both")
    if _DATA.value is not None:
      if _SEGMENTER.value is not None:
        raise errors.InputError(f"--segmenter: Dice is scored on the data the segmenter was "
                                f"trained for, not on another folder ({_DATA.value})")
      if _SPLIT.present:
        raise errors.InputError(f"--data={_DATA.value} is shown whole, as the test split of "
                                f"its evaluation-only build: --split={split} does not apply")
      from hyperrecon_jax import data
      from hyperrecon_jax.data import split_record
      scored = data.folder_config(config.data, _DATA.value)
      split_record.check_slices(config.data, scored, f"the model {name}")
      with config.unlocked():
        config.data = scored
      source = f"every volume of {config.data.manual_dir}"
    if _INPUT.value is not None:
      if _SPLIT.present:
        raise errors.InputError(f"--input={_INPUT.value} is shown whole, one scan: "
                                f"--split={split} does not apply")
      if not config.model.hyper_dim:  # refused before reading a volume
        raise errors.InputError(f"{name} is a plain Unet (hyper_dim 0) trained at one λ: "
                                "the explorer needs a HyperRecon model")
      from hyperrecon_jax import reconstruct
      scan = reconstruct.read_input(_INPUT.value, config)
      # What reconstruct.py says of this file: the plane, the working
      # resolution, and what the clip to the model's range takes from it.
      for note in scan.notes:
        print(f"note: {note}", file=sys.stderr)
      for warning in scan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
      images, slices = scan.images, np.asarray(scan.slices)
      # The page numbers the file's own voxels, as a viewer does.
      numbers, file_axis = scan.input_slices
      source = (f"{_INPUT.value}, slices numbered along its voxel axis {file_axis}"
                if scan.kind == "nifti" else _INPUT.value)
      if np.any(scan.kept):  # the slices with enough foreground
        images, slices, numbers = images[scan.kept], slices[scan.kept], numbers[scan.kept]
    if images is None and _DATA.value is None:
      from hyperrecon_jax import train
      train.check_data_folder(config, f"the model {name}")
    segmenter = None
    if _SEGMENTER.value is not None:
      from hyperrecon_jax import segmenter_files
      segmenter = segmenter_files.load(_SEGMENTER.value)
      if images is None:  # a user's images have no labels: the explorer refuses Dice
        # Its images and label files before the split check below, which
        # builds a changed folder's dataset anew.
        segmenter_files.check_data(segmenter, config.data, name)
    if images is None and _WORKDIR.value:
      from hyperrecon_jax.data import split_record
      split_record.check_unseen(_WORKDIR.value, config.data, split)
    ex = explorer.Explorer(config, model, variables, name=name, step=step,
                           split=split, images=images, slices=slices, slice_numbers=numbers,
                           source=source,
                           chunk=_CHUNK.value, segmenter=segmenter, grid=_GRID.value,
                           design=_SAMPLES.value, seed=_SEED.value,
                           volume_name=(None if _INPUT.value is None
                                        else os.path.basename(_INPUT.value)))
    if images is None and _DATA.value is None and split == "train":
      # Allowed (a look at the fit), as evaluate.py allows it, and said as it says it.
      print("note: the train split is the one the model learned from"
            + (" and so did the segmenter" if segmenter is not None else "")
            + ": its scores are not held out", file=sys.stderr)
    # Also compiles the first slider move's program before the page is served.
    bad = ex.not_finite_points(0)
    if bad:
      probed = ex.num_coeffs + 1
      print(f"warning: {name}'s reconstructions of the first slice are not finite (NaN or "
            f"±inf) at {len(bad)} of the {probed} points probed, each loss term alone and "
            f"the centre (coefficients {', '.join(map(str, bad))}): the model diverged or "
            "overflows on these inputs; its images there are black and its metrics n/a",
            file=sys.stderr)
    try:  # the port may have been taken while the model loaded
      server = explorer.make_server(ex, _HOST.value, _PORT.value)
    except OSError as e:
      raise _bind_error(e, _HOST.value, _PORT.value) from None
  host, port = server.server_address[:2]
  shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
  size = int(ex.images.shape[1])
  print(f"serving the λ explorer of {name} (step {step}, {len(ex.images)} slices of "
        f"{size}×{size} px) "
        f"at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
  try:
    server.serve_forever()
  finally:
    server.server_close()


if __name__ == "__main__":
  cli.run(main)
