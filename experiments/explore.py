r"""Serves the interactive λ explorer: move λ, watch the reconstruction change.

  python experiments/explore.py                                   (the shipped model)
  python experiments/explore.py --pretrained=mni152_csmri8x_dc_tv [--port=8765]
  python experiments/explore.py --workdir=workdirs/demo [--split=test] [--host=0.0.0.0]
  python experiments/explore.py --workdir=DIR --input=scan.nii.gz   (a volume of your own)
  python experiments/explore.py --segmenter=SEGDIR                  (also Dice, best λ for Dice)

Binds 127.0.0.1 (this machine only) unless --host is given, prints the URL,
and serves until Ctrl-C. The page and its JSON API are described in
`hyperrecon_jax.explorer`. Reads the workdir only.
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli

DEFAULT_MODEL = "mni152_csmri8x_dc_tv"

_WORKDIR, _PRETRAINED, _STEP = cli.define_model_flags(default_pretrained=DEFAULT_MODEL)
_PORT = flags.DEFINE_integer("port", 8765, "Port to serve on (0: a free one).",
                             lower_bound=0, upper_bound=65535)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every "
                            "interface, reachable from other machines).")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"],
                           "Split whose slices are shown.")
_INPUT = flags.DEFINE_string("input", None, "Instead of the split: a NIfTI volume or a "
                             "fastMRI .h5 file of your own.")
_SEGMENTER = flags.DEFINE_string(
    "segmenter", None, "Folder of a segmenter (experiments/segmenter.py) trained on this "
    "data: also show the Dice of every reconstruction and a 'best λ for Dice' button.")
_GRID = flags.DEFINE_integer("grid", None, "λ values per hyperparameter of the curves "
                             "(default: the config's eval.grid).", lower_bound=2)
_CHUNK = flags.DEFINE_integer("chunk", None, "Model batch of the λ-grid reconstruction "
                              "(default: 8 on CPU, 32 on GPU).", lower_bound=1)

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  from hyperrecon_jax import errors
  from hyperrecon_jax import explorer
  with cli.user_errors():
    pretrained = _PRETRAINED.value or (None if _WORKDIR.value else DEFAULT_MODEL)
    config, model, variables, step, name = cli.load_model(_WORKDIR.value, pretrained,
                                                          _STEP.value)
    images = slices = source = None
    if _INPUT.value is not None:
      if not config.model.hyper_dim:  # refused before reading a volume
        raise errors.InputError(f"{name} is a plain Unet (hyper_dim 0) trained at one λ: "
                                "the explorer needs a HyperRecon model")
      from hyperrecon_jax import reconstruct
      scan = reconstruct.read_input(_INPUT.value, config)
      images, slices, source = scan.images, scan.slices, _INPUT.value
      if np.any(scan.kept):  # the slices with enough foreground
        images, slices = images[scan.kept], np.asarray(slices)[scan.kept]
    segmenter = None
    if _SEGMENTER.value is not None:
      from hyperrecon_jax import segmentation
      segmenter = segmentation.load(_SEGMENTER.value)
    ex = explorer.Explorer(config, model, variables, name=name, step=step,
                           split=_SPLIT.value, images=images, slices=slices, source=source,
                           chunk=_CHUNK.value, segmenter=segmenter, grid=_GRID.value)
    server = explorer.make_server(ex, _HOST.value, _PORT.value)
  host, port = server.server_address[:2]
  shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
  print(f"serving the λ explorer of {name} (step {step}, {len(ex.images)} slices) "
        f"at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
  try:
    server.serve_forever()
  finally:
    server.server_close()


if __name__ == "__main__":
  cli.run(main)
