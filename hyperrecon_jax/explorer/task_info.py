"""The degradation a model undoes, described for the explorer's page (``/api/info``'s ``task``)."""

import numpy as np

from hyperrecon_jax import physics
from hyperrecon_jax.explorer.images import data_url


def task_text(task) -> str:
  """The degradation a config's task describes, in words."""
  if task.name == "csmri":
    return f"CS-MRI {float(task.acceleration):g}× acceleration, {task.mask} mask"
  if task.name == "denoise":
    return f"denoising, Gaussian noise σ = {float(task.sigma):g}"
  if task.name == "superres":
    return f"super-resolution {int(task.factor)}×"
  return str(task.name)


def task_info(task, operator) -> dict:
  """A config's task for JSON: its name, text, input's name and settings.

  Args:
    task: the config's ``task`` section.
    operator: its forward operator (`physics.make_operator`); for CS-MRI its
      mask is drawn (``mask_image``, a PNG data URL).
  """
  out = {"name": task.name, "text": task_text(task), "input_name": physics.input_name(task.name)}
  if task.name == "csmri":
    out.update(acceleration=float(task.acceleration), mask=str(task.mask),
               mask_image=data_url(np.asarray(operator.mask)))
  elif task.name == "denoise":
    out["sigma"] = float(task.sigma)
  elif task.name == "superres":
    out["factor"] = int(task.factor)
  return out
