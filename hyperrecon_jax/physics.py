"""Forward operators: CS-MRI, denoising and super-resolution.

Each operator is a `flax.struct.dataclass`, hence a pytree that can be passed
through `jax.jit`; array data (the mask) are pytree leaves, settings that
change shapes or control flow (noise levels, the SR factor) are static. All
methods are batch-first and pure:

* ``forward(x)``: the noise-free forward map ``A``;
* ``adjoint(y)``: its adjoint ``A^H`` (``<A x, y> = <x, A^H y>``);
* ``measure(x, key) -> y``: simulate a measurement of real images
  ``x`` of shape (B, H, W) in [0, 1], ``y = A(x) + n`` (`Operator.measure`);
* ``zero_filled(y) -> (B, H, W, 2)`` float32: the network input, real and
  imaginary channels of the naive inverse;
* ``data_consistency(recon, y) -> (B,)``: ``||A(recon) - y||^2`` per example
  (`Operator.data_consistency`).

`make_operator` builds one from a task config.
"""

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import filters
from hyperrecon_jax import masks as masks_lib

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_images(name: str, x, image_shape: tuple[int, int] | None = None):
  shape = tuple(getattr(x, "shape", ()))
  if len(shape) != 3:
    raise errors.InputError(f"{name} must have shape (B, H, W), got shape {shape}.")
  if image_shape is not None and shape[1:] != tuple(image_shape):
    raise errors.InputError(
        f"{name} has images of shape {shape[1:]}, expected {tuple(image_shape)} "
        f"(full shape {shape}).")


def _check_kspace(y):
  """CS-MRI measures complex k-space: real values are an image given in its place."""
  dtype = getattr(y, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.complexfloating):
    raise errors.InputError(
        f"y must be complex k-space (CSMRI.measure(x) gives it), got values of type {dtype}: "
        "an image was given in place of its measurement?")


def _check_batches(y, recon):
  """A measurement row per reconstruction: a batch of 1 would broadcast silently."""
  if y.shape[0] != recon.shape[0]:
    raise errors.InputError(
        f"y holds {y.shape[0]} measurements but recon {recon.shape[0]} images (shapes "
        f"{tuple(y.shape)} and {tuple(recon.shape)}): one measurement per image.")


def _check_key(key, name: str):
  if key is None:
    raise errors.InputError(f"{name}.measure adds noise and needs a PRNG key, got key=None.")


def _sum_sq(z):
  """Per-example sum of squared magnitudes over the image axes."""
  if jnp.iscomplexobj(z):
    z = z.real ** 2 + z.imag ** 2
  else:
    z = z ** 2
  return jnp.sum(z, axis=(-2, -1))


def _with_zero_imag(x):
  x = x.astype(jnp.float32)
  return jnp.stack([x, jnp.zeros_like(x)], axis=-1)


class Operator:
  """What every operator shares: the measurement and the data consistency.

  A subclass defines ``forward`` (``A``), ``adjoint``, ``noise(y, key)`` (a
  draw of its noise model, shaped like ``y``), ``noisy`` (whether it adds
  noise at all, static) and ``check_measurement(y, recon)``.
  """

  def measure(self, x, key=None):
    """``y = A(x) + n``; ``key`` is needed only when the operator adds noise."""
    y = self.forward(x)
    if not self.noisy:
      return y
    _check_key(key, type(self).__name__)
    return y + self.noise(y, key)

  def data_consistency(self, recon, y):
    """``||A(recon) - y||^2`` per example: (B,)."""
    self.check_measurement(y, recon)
    return _sum_sq(self.forward(recon) - y)


def _check_mask_values(mask: np.ndarray) -> None:
  """A sampling mask holds 0s and 1s and samples something (a user's array is looked at once)."""
  values = np.unique(mask)
  if not np.all(np.isin(values, (0, 1))):
    raise errors.InputError(f"mask must hold 0s and 1s (1: a sampled k-space point), got the "
                            f"values {values[:6].tolist()}{' …' if values.size > 6 else ''}.")
  if not np.any(values == 1):
    raise errors.InputError("mask samples no k-space point (all 0s): every measurement would "
                            "be 0.")


def _is_concrete(value) -> bool:
  """Whether ``value`` is a JAX array whose values this process can read (not a tracer)."""
  return (isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer)
          and value.is_fully_addressable)


@struct.dataclass
class CSMRI(Operator):
  """Single-coil Cartesian compressed-sensing MRI: ``y = M * (F x + n)``.

  ``F`` is the orthonormal 2-D FFT applied to the image without any fftshift,
  so k-space has DC at index (0, 0). The mask is stored **centred** (DC in the
  middle, as `hyperrecon_jax.masks` returns it); `sampling` shifts it once
  with ``ifftshift`` to line up with that unshifted k-space. Noise ``n`` is
  complex Gaussian whose real and imaginary parts each have standard
  deviation ``noise_sigma``; it is added before masking, so unsampled entries
  of ``y`` are exactly zero.

  Attributes:
    mask: (H, W) array of 0s and 1s, k-space centre at (H // 2, W // 2).
    noise_sigma: standard deviation of each of the real and imaginary parts of
      the k-space noise (static), >= 0.
  """

  mask: Any
  noise_sigma: float = struct.field(pytree_node=False, default=0.0)

  def __post_init__(self):
    # Runs on every unflatten too; leaves may then be tracers or placeholders,
    # so only look at what they certainly have.
    if not float(self.noise_sigma) >= 0:
      raise errors.InputError(f"noise_sigma must be >= 0, got {self.noise_sigma!r}.")
    if isinstance(self.mask, (np.ndarray, list, tuple)) or _is_concrete(self.mask):
      _check_mask_values(np.asarray(self.mask))
      object.__setattr__(self, "mask", jnp.asarray(self.mask, jnp.float32))
    shape = getattr(self.mask, "shape", None)
    if shape is not None and len(shape) != 2:
      raise errors.InputError(f"mask must have shape (H, W), got shape {tuple(shape)}.")

  @property
  def sampling(self):
    """The mask shifted with ``ifftshift`` into unshifted-FFT order, (H, W)."""
    return jnp.fft.ifftshift(jnp.asarray(self.mask, jnp.float32))

  @property
  def acceleration(self):
    """Real acceleration ``H * W / number of sampled entries`` (a JAX scalar)."""
    return self.mask.size / jnp.sum(self.mask != 0)

  def forward(self, x):
    """Noise-free ``M * F(x)`` for real or complex images x: (B, H, W) -> complex64."""
    _check_images("x", x, self.mask.shape)
    k = jnp.fft.fft2(x.astype(jnp.complex64), norm="ortho")
    return self.sampling * k

  def adjoint(self, y):
    """``F^-1(M * y)``: (B, H, W) k-space -> complex64 images."""
    _check_images("y", y, self.mask.shape)
    _check_kspace(y)
    return jnp.fft.ifft2(self.sampling * y.astype(jnp.complex64), norm="ortho")

  @property
  def noisy(self) -> bool:
    return self.noise_sigma > 0

  def noise(self, y, key):
    """``M * n``: complex Gaussian, each part of std ``noise_sigma``, masked."""
    re, im = jax.random.normal(key, (2,) + y.shape, jnp.float32)
    return self.sampling * (self.noise_sigma * jax.lax.complex(re, im))

  def check_measurement(self, y, recon):
    _check_images("recon", recon, self.mask.shape)
    _check_images("y", y, self.mask.shape)
    _check_kspace(y)
    _check_batches(y, recon)

  def zero_filled(self, y):
    """``F^-1(y)`` as (B, H, W, 2) float32 (real, imaginary)."""
    _check_images("y", y, self.mask.shape)
    _check_kspace(y)
    img = jnp.fft.ifft2(y.astype(jnp.complex64), norm="ortho")
    return jnp.stack([img.real, img.imag], axis=-1).astype(jnp.float32)


@struct.dataclass
class Denoise(Operator):
  """Additive white Gaussian noise: ``y = x + n``, ``n ~ N(0, sigma^2)``.

  Attributes:
    sigma: noise standard deviation (static), >= 0.
  """

  sigma: float = struct.field(pytree_node=False, default=0.1)

  def __post_init__(self):
    if not float(self.sigma) >= 0:
      raise errors.InputError(f"sigma must be >= 0, got {self.sigma!r}.")

  def forward(self, x):
    """The identity: (B, H, W) -> float32."""
    _check_images("x", x)
    return x.astype(jnp.float32)

  def adjoint(self, y):
    """The identity."""
    return self.forward(y)

  @property
  def noisy(self) -> bool:
    return self.sigma > 0

  def noise(self, y, key):
    """Real Gaussian noise of std ``sigma``."""
    return self.sigma * jax.random.normal(key, y.shape, jnp.float32)

  def check_measurement(self, y, recon):
    _check_images("recon", recon)
    _check_images("y", y, recon.shape[1:])
    _check_batches(y, recon)

  def zero_filled(self, y):
    """The noisy image with a zero imaginary channel, (B, H, W, 2) float32."""
    _check_images("y", y)
    return _with_zero_imag(y)



@struct.dataclass
class SuperResolution(Operator):
  """Bicubic downsampling by an integer factor: ``y = D(x)``, (B, H, W) -> (B, H/f, W/f).

  ``D`` is PyTorch's ``F.interpolate(mode='bicubic', align_corners=False,
  antialias=False)`` (see `filters.bicubic_downsample_matrix`), applied separably as
  ``D_H x D_W^T``. The network input is the nearest-neighbour x``factor``
  upsampling of ``y``.

  Attributes:
    factor: integer downsampling factor >= 2 (static); it must divide H and W.
  """

  factor: int = struct.field(pytree_node=False, default=4)

  def __post_init__(self):
    f = self.factor
    if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)) \
        or not float(f).is_integer() or f < 2:
      raise errors.InputError(f"factor must be an integer >= 2, got {f!r}.")
    object.__setattr__(self, "factor", int(f))

  def _check_divisible(self, name, shape):
    if shape[1] % self.factor or shape[2] % self.factor:
      raise errors.InputError(
          f"{name} has images of shape {tuple(shape[1:])}, not divisible by "
          f"factor={self.factor}.")

  def downsample(self, x):
    """``D(x)``: (B, H, W) -> (B, H/f, W/f) float32."""
    _check_images("x", x)
    self._check_divisible("x", x.shape)
    dh = jnp.asarray(filters.bicubic_downsample_matrix(x.shape[1], self.factor), jnp.float32)
    dw = jnp.asarray(filters.bicubic_downsample_matrix(x.shape[2], self.factor), jnp.float32)
    return jnp.einsum("ih,bhw,jw->bij", dh, x.astype(jnp.float32), dw, precision=_HIGHEST)

  def forward(self, x):
    """``D(x)``, see `downsample`."""
    return self.downsample(x)

  def adjoint(self, y):
    """``D_H^T y D_W``: (B, H/f, W/f) -> (B, H, W) float32."""
    _check_images("y", y)
    f = self.factor
    dh = jnp.asarray(filters.bicubic_downsample_matrix(y.shape[1] * f, f), jnp.float32)
    dw = jnp.asarray(filters.bicubic_downsample_matrix(y.shape[2] * f, f), jnp.float32)
    return jnp.einsum("ih,bij,jw->bhw", dh, y.astype(jnp.float32), dw, precision=_HIGHEST)

  noisy = False  # noise-free: ``key`` is ignored

  def noise(self, y, key):
    raise NotImplementedError("SuperResolution adds no noise")

  def zero_filled(self, y):
    """Nearest-neighbour x``factor`` upsampling with a zero imaginary channel, (B, H, W, 2)."""
    _check_images("y", y)
    up = jnp.repeat(jnp.repeat(y, self.factor, axis=1), self.factor, axis=2)
    return _with_zero_imag(up)

  def check_measurement(self, y, recon):
    _check_images("recon", recon)
    self._check_divisible("recon", recon.shape)
    f = self.factor
    _check_images("y", y, (recon.shape[1] // f, recon.shape[2] // f))
    _check_batches(y, recon)


def magnitude(zf):
  """The image of a network input: |zero-filled image| over its (real,
  imaginary) channels, (..., 2) → (...) float32. The Unet's residual adds it;
  the metrics of the input (e.g. rPSNR, the zero-filled scores) read it."""
  shape = tuple(getattr(zf, "shape", ()))
  if not shape or shape[-1] != 2:
    # A (B, H, W) image would be summed over W.
    raise errors.InputError(f"magnitude needs (..., 2) images (real, imaginary), got "
                            f"shape {shape}.")
  return jnp.sqrt(jnp.sum(jnp.square(zf.astype(jnp.float32)), axis=-1))


OPERATOR_NAMES = ("csmri", "denoise", "superres")
MASK_NAMES = ("poisson", "cartesian_random", "cartesian_equispaced")

# What each task's network input (`Operator.zero_filled`) is, in figures and
# summaries: the paper's "zero-filled" is the CS-MRI one.
INPUT_NAMES = {"csmri": "zero-filled", "denoise": "noisy input",
               "superres": "upsampled input"}


def input_name(task_name: str) -> str:
  """The name of a task's network input for people: ``'zero-filled'`` for CS-MRI.

  Args:
    task_name: ``'csmri'``, ``'denoise'`` or ``'superres'``.

  Returns:
    ``'zero-filled'``, ``'noisy input'`` or ``'upsampled input'``.
  """
  if task_name not in INPUT_NAMES:
    raise errors.InputError(f"task must be one of {tuple(INPUT_NAMES)}, got {task_name!r}.")
  return INPUT_NAMES[task_name]


def _field(task_config, name: str):
  """A field the task reads; a missing one is an `InputError` that names it."""
  try:
    if isinstance(task_config, Mapping):
      return task_config[name]
    return getattr(task_config, name)
  except (KeyError, AttributeError):
    raise errors.InputError(f"task config lacks field {name!r}.") from None


def task_fields(task: dict) -> tuple[str, ...]:
  """The fields of a task config that `make_operator` reads for its task.

  Args:
    task: the task config as a dict (``name`` and its fields).

  Returns:
    ``'name'`` and the task's own fields (``center_fraction`` only for a
    Cartesian mask); for an unknown task, every field of ``task``.
  """
  name = task.get("name")
  if name == "csmri":
    cartesian = str(task.get("mask", "")).startswith("cartesian")
    return ("name", "acceleration", "mask", "mask_seed", "noise_sigma") + (
        ("center_fraction",) if cartesian else ())
  if name == "denoise":
    return ("name", "sigma")
  if name == "superres":
    return ("name", "factor")
  return tuple(task)


def make_operator(task_config, image_shape: Sequence[int]):
  """Builds the forward operator of a task config.

  The config has no defaults here: every field the task reads is required
  (``experiments/configs/default.py`` writes them all out).

  Args:
    task_config: ml_collections ConfigDict, dict or any object with the field
      ``name`` ('csmri' | 'denoise' | 'superres') and those of its task:
      csmri ``acceleration`` (float), ``mask`` ('poisson' |
      'cartesian_random' | 'cartesian_equispaced'), ``mask_seed`` (int),
      ``noise_sigma`` (k-space noise) and, for a Cartesian mask,
      ``center_fraction``; denoise ``sigma``; superres ``factor``.
    image_shape: (H, W) of the images.

  Returns:
    A `CSMRI`, `Denoise` or `SuperResolution` operator.

  Raises:
    ValueError: for a missing field, an unknown task or mask name, or invalid
      values.
  """
  name = _field(task_config, "name")
  try:
    h, w = (int(s) for s in image_shape)
  except (TypeError, ValueError):
    raise errors.InputError(f"image_shape must be (H, W), got {image_shape!r}.") from None
  if name == "csmri":
    accel = _field(task_config, "acceleration")
    kind = _field(task_config, "mask")
    seed = _field(task_config, "mask_seed")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
      # int() cut 1.5 to 1: the mask of another seed than the run's.
      raise errors.InputError(f"task_config.mask_seed must be an integer ≥ 0, got {seed!r}.")
    noise_sigma = float(_field(task_config, "noise_sigma"))
    if kind == "poisson":
      try:
        mask = masks_lib.poisson_disc((h, w), accel, seed=seed)
      except errors.InputError as e:  # it may name calib, which configs do not set
        raise errors.InputError(f"task_config.acceleration={accel!r} cannot be reached by a "
                                f"{h}×{w} Poisson-disc mask: {e}") from None
    elif kind in ("cartesian_random", "cartesian_equispaced"):
      mask = masks_lib.cartesian(
          (h, w), accel, center_fraction=_field(task_config, "center_fraction"),
          kind=kind.split("_", 1)[1], seed=seed)
    else:
      raise errors.InputError(f"task_config.mask must be one of {MASK_NAMES}, got {kind!r}.")
    return CSMRI(jnp.asarray(mask), noise_sigma=noise_sigma)
  if name == "denoise":
    return Denoise(sigma=float(_field(task_config, "sigma")))
  if name == "superres":
    op = SuperResolution(factor=_field(task_config, "factor"))
    if h % op.factor or w % op.factor:
      raise errors.InputError(
          f"image_shape {(h, w)} is not divisible by factor={op.factor}.")
    return op
  raise errors.InputError(f"task_config.name must be one of {OPERATOR_NAMES}, got {name!r}.")
