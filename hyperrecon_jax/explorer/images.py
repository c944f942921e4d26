"""The explorer's images: 8-bit grayscale PNG files without an imaging library."""

import base64
import struct
import zlib

import numpy as np

from hyperrecon_jax.plots import finite_top


def png_bytes(image, vmax: float = 1.0) -> bytes:
  """An 8-bit grayscale PNG (filter 0) of a 2-D image; [0, vmax] maps to 0–255.

  Args:
    image: (H, W) real values; clipped to [0, vmax].
    vmax: the value drawn white (> 0).

  Returns:
    The PNG file's bytes.
  """
  if not (np.isfinite(vmax) and vmax > 0):
    raise ValueError(f"vmax must be a finite number > 0, got {vmax}")
  x = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
  with np.errstate(over="ignore"):  # a value past float64's range over vmax: white
    u8 = np.round(np.clip(x / vmax, 0.0, 1.0) * 255).astype(np.uint8)
  h, w = u8.shape
  raw = np.concatenate([np.zeros((h, 1), np.uint8), u8], axis=1).tobytes()

  def chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def white_level(image) -> float:
  """The level a PNG of ``image`` draws white: its largest finite value (`plots.finite_top`),
  1.0 if none is > 0."""
  top = finite_top(image)
  # An image below zero everywhere has no white.
  return top if top > 0 else 1.0


def data_url(image, vmax: float = 1.0) -> str:
  """`png_bytes` as a ``data:image/png;base64,…`` URL for an ``<img>``."""
  return "data:image/png;base64," + base64.b64encode(png_bytes(image, vmax)).decode()
