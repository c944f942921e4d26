"""HyperRecon and each per-λ Unet on the objective that Unet was trained for.

The paper's §6.1 question (`train.baselines.compare_objectives`): at each
Unet's λ, does HyperRecon solve that Unet's problem as well as it does? Runs
when the ``baselines`` evaluator has a stack and the model is HyperRecon; on
the validation split, or on the whole folder of a report on another folder
(``report.run(data=...)``), which has no validation split and none of whose
volumes either model learned from.
"""


def run(context, settings) -> None:
  del settings
  if context.stack is None or not context.config.model.hyper_dim:
    return
  from hyperrecon_jax.train import baselines
  model, variables, _ = context.stack
  context.result["objective"] = baselines.compare_objectives(
      context.config, context.model, context.variables, model, variables,
      split="test" if "data" in context.result else "validation")
