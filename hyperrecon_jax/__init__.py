"""HyperRecon in JAX: one hypernetwork-conditioned Unet for every loss weighting.

Submodules are imported on first access (``hr.models``, ``hr.data``, ...) so that
``import hyperrecon_jax`` stays cheap and optional dependencies (data, plotting)
are only needed by the parts that use them.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "atomic_writes",
    "checkpoints",
    "checksums",
    "compilation",
    "data",
    "errors",
    "evaluate",
    "evaluators",
    "explorer",
    "extras",
    "filters",
    "gallery",
    "grid",
    "hparams",
    "interrupts",
    "losses",
    "masks",
    "memory",
    "metrics",
    "models",
    "outputs",
    "pareto",
    "physics",
    "plots",
    "plots_simplex",
    "pretrained",
    "progress",
    "reconstruct",
    "report",
    "results",
    "run_paths",
    "sampling",
    "scan_notes",
    "scan_scores",
    "scans",
    "segmentation",
    "segmenter_files",
    "streams",
    "tradeoffs",
    "train",
    "volume_memory",
    "wavelets",
    "workdir",
    "workdir_lock",
)


def __getattr__(name):
  if name in _SUBMODULES:
    module = importlib.import_module(f"{__name__}.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
