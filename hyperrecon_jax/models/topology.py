"""The Unet's topology: its convolutions by name and shape, and what training keeps.

`conv_specs` is the one list of the 15 convolutions (REFERENCE.md's topology)
that every model, the hypernetwork's heads and the memory bound read.
"""

from typing import NamedTuple

import numpy as np

from hyperrecon_jax import errors

IN_CHANNELS = 2
NUM_LEVELS = 4  # resolution levels; the image is max-pooled NUM_LEVELS - 1 times


class ConvSpec(NamedTuple):
  """One convolution of the Unet: its name, kernel size and channel counts."""
  name: str
  size: int
  cin: int
  cout: int

  @property
  def kernel_shape(self):
    return (self.size, self.size, self.cin, self.cout)

  @property
  def num_weights(self):
    return self.size * self.size * self.cin * self.cout + self.cout


def conv_specs(channels: int = 32, in_channels: int = IN_CHANNELS,
               out_channels: int = 1) -> tuple[ConvSpec, ...]:
  """The Unet's 15 convolutions in execution order.

  Encoder blocks ``enc0``–``enc3`` (2→c, then c→c), decoder blocks
  ``dec0``–``dec2`` (2c→c after concatenation), and the 1×1 ``head`` (c→1).

  Args:
    channels: features at every level (32 in the paper).
    in_channels: input channels (2 for a zero-filled image; the segmentation
      Unet of `hyperrecon_jax.segmentation` reads 1).
    out_channels: head outputs (1 for a reconstruction; one per class for
      segmentation).

  Returns:
    A tuple of ``ConvSpec``.
  """
  c = channels
  specs = []
  for level in range(NUM_LEVELS):
    cin = in_channels if level == 0 else c
    specs += [ConvSpec(f"enc{level}_a", 3, cin, c),
              ConvSpec(f"enc{level}_b", 3, c, c)]
  for level in range(NUM_LEVELS - 1):
    specs += [ConvSpec(f"dec{level}_a", 3, 2 * c, c),
              ConvSpec(f"dec{level}_b", 3, c, c)]
  specs.append(ConvSpec("head", 1, c, out_channels))
  return tuple(specs)


def kept_activations(channels: int, size: int, in_channels: int = IN_CHANNELS) -> int:
  """Values per image that a training step's backward pass keeps: every convolution's input.

  A convolution's weight gradient needs its input, so the forward pass keeps
  the input of each of the `conv_specs` (BatchNorm's and ReLU's are not
  counted): a lower bound on the activations of one Unet, per image.

  Args:
    channels: features at every level.
    size: the image's height and width (a multiple of 8).
    in_channels: the Unet's input channels.

  Returns:
    The count of values.
  """
  total = 0
  for spec in conv_specs(channels, in_channels):
    block, index = spec.name[:3], int(spec.name[3]) if spec.name[3:4].isdigit() else 0
    # enc<l> runs at level l, dec<l> at level NUM_LEVELS - 2 - l, the head at full size.
    level = index if block == "enc" else NUM_LEVELS - 2 - index if block == "dec" else 0
    total += (size >> level) ** 2 * spec.cin
  return total


def check_width(**widths) -> None:
  """Refuses a width (``channels=0``, ``hyper_dim=2.5``) that is not a whole number ≥ 1.

  Flax builds a layer of 0 features without complaint (a Unet of 0 channels
  is its biases alone), and fails on a negative or fractional one deep in
  XLA, naming no argument.
  """
  for name, value in widths.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise errors.InputError(f"{name} must be a whole number ≥ 1, got {value!r}")
