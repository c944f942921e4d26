"""hyperrecon_jax.explorer.task_info: the degradation a model undoes, for the page."""

import base64
import io

import ml_collections
import numpy as np
from PIL import Image
import pytest

from hyperrecon_jax import physics
from hyperrecon_jax.explorer import task_info


@pytest.mark.parametrize("task, text, fields", [
    ({"name": "denoise", "sigma": 0.05}, "denoising, Gaussian noise σ = 0.05",
     {"name": "denoise", "input_name": "noisy input", "sigma": 0.05}),
    ({"name": "superres", "factor": 4}, "super-resolution 4×",
     {"name": "superres", "input_name": "upsampled input", "factor": 4}),
])
def test_denoising_and_super_resolution_are_described_with_their_setting(task, text, fields):
  task = ml_collections.ConfigDict(task)
  out = task_info.task_info(task, physics.make_operator(task, (8, 8)))
  assert out == {**fields, "text": text}


def test_a_csmri_task_shows_its_acceleration_and_its_mask():
  task = ml_collections.ConfigDict({"name": "csmri", "acceleration": 4.0, "mask": "poisson",
                                    "mask_seed": 0, "noise_sigma": 0.0})
  operator = physics.make_operator(task, (16, 16))
  out = task_info.task_info(task, operator)
  assert out["text"] == "CS-MRI 4× acceleration, poisson mask"
  assert (out["acceleration"], out["mask"], out["input_name"]) == (4.0, "poisson", "zero-filled")
  png = base64.b64decode(out["mask_image"].removeprefix("data:image/png;base64,"))
  with Image.open(io.BytesIO(png)) as image:
    np.testing.assert_array_equal(np.asarray(image), np.asarray(operator.mask) * 255)
