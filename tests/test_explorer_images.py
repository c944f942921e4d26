"""hyperrecon_jax.explorer.images: the explorer's 8-bit grayscale PNG files.

Each file is decoded by Pillow, an implementation independent of the writer.
"""

import base64
import io

import numpy as np
from PIL import Image
import pytest

from hyperrecon_jax.explorer import images

# The explorer answers a model gone past float32 (±inf, NaN) without NumPy's
# warnings on the server's terminal.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def decoded(data):
  """(H, W) uint8 levels of a PNG file, read by Pillow."""
  with Image.open(io.BytesIO(data)) as image:
    assert image.mode == "L"
    return np.asarray(image)


def test_a_png_has_the_images_rows_and_columns():
  # A 3 × 5 image: width and height swapped in the header make another
  # picture (or an unreadable file) that a square image would not show.
  image = np.linspace(0.0, 1.0, 15, dtype=np.float32).reshape(3, 5)
  levels = decoded(images.png_bytes(image))
  assert levels.shape == (3, 5)
  # i / 14 × 255 is never within float64 roundoff of a half level.
  np.testing.assert_array_equal(levels, np.round(np.arange(15).reshape(3, 5) / 14 * 255))


def test_vmax_is_drawn_white_and_values_beyond_it_saturate():
  image = np.array([[0.0, 0.25, 0.5, 1.0, np.nan, -1.0]], np.float32)
  levels = decoded(images.png_bytes(image, vmax=0.5))
  assert levels.tolist() == [[0, 128, 255, 255, 0, 0]]  # 0.25 / 0.5 · 255 = 127.5 → 128
  url = images.data_url(image, 0.5)
  assert decoded(base64.b64decode(url.removeprefix("data:image/png;base64,"))).tolist() == (
      levels.tolist())


@pytest.mark.parametrize("vmax", [0.0, -1.0, np.nan, np.inf])
def test_a_white_level_that_is_not_a_positive_number_is_refused(vmax):
  # vmax = 0 divided by zero: a black or garbage picture instead of an error.
  with pytest.raises(ValueError, match="vmax must be a finite number > 0"):
    images.png_bytes(np.zeros((2, 2), np.float32), vmax)


def test_the_white_level_is_the_largest_finite_value_or_1():
  assert images.white_level(np.array([0.2, np.nan, np.inf, 0.7])) == 0.7
  assert images.white_level(np.zeros((2, 2))) == 1.0
  assert images.white_level(np.full((2, 2), np.nan)) == 1.0
  # An image below zero everywhere had a white level of -0.5, against the
  # docstring, and `png_bytes` refuses it. (The explorer's range maps are
  # spreads, ≥ 0; a library user's image need not be.)
  negative = np.array([[-0.5, -2.0], [np.nan, -1.0]])
  assert images.white_level(negative) == 1.0
  assert images.png_bytes(negative, images.white_level(negative))
