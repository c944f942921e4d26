"""Which λ a DHS run keeps at this checkpoint, on the train split (the paper's Fig. 6).

Replays the training step's selection (`train.step.dhs_selected_lambdas`) on
``batches`` train batches: with the paper's 8 of 32 (or the demo's 2 of 8)
100 batches give 800 (200) kept λ, a few seconds of forward passes; 25 left
most cells of a 2-D histogram empty. Runs for a HyperRecon model trained
with DHS only.
"""

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import streams


def check(config, settings) -> None:
  """Refuses a ``config.evals.dhs_replay.batches`` that is not an integer ≥ 1."""
  del config
  batches = settings.get("batches")
  if isinstance(batches, bool) or not isinstance(batches, (int, np.integer)) or batches < 1:
    raise errors.InputError(f"config.evals.dhs_replay.batches must be an integer ≥ 1, got "
                            f"{batches!r}")


def run(context, settings) -> None:
  config = context.config
  if not (config.model.hyper_dim and config.sampling.method == "dhs"):
    return
  import jax

  from hyperrecon_jax import data
  from hyperrecon_jax.results import floats
  from hyperrecon_jax.train import step as step_lib
  num = int(settings["batches"])
  # The run's own training data, also when the report scores another folder.
  batches = data.batches(context.trained_on, "train", batch_size=int(config.train.batch_size),
                         seed=streams.seed(config, "replay"), training=True)
  key = jax.random.fold_in(streams.key(config, "evaluation"), 1 << 20)
  sampled, kept = step_lib.dhs_selected_lambdas(
      config, context.model, context.variables, context.operator, batches, key,
      num_batches=num, step=context.step)
  context.result["dhs"] = {"split": "train", "batches": num,
                           "top_b": int(config.sampling.top_b), "sampled": floats(sampled),
                           "kept": floats(kept)}
