"""Tests for hyperrecon_jax.physics."""

import math
import re
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import masks
from hyperrecon_jax import physics

KEY = jax.random.PRNGKey(0)


def _images(b=2, h=32, w=24, seed=0):
  return np.random.default_rng(seed).random((b, h, w)).astype(np.float32)


# ----------------------------------------------------------------- CS-MRI


def test_csmri_all_ones_mask_is_identity():
  x = _images()
  op = physics.CSMRI(np.ones((32, 24), np.float32))
  y = op.measure(x, KEY)
  assert y.shape == x.shape and y.dtype == jnp.complex64
  zf = np.asarray(op.zero_filled(y))
  assert zf.shape == (2, 32, 24, 2) and zf.dtype == np.float32
  np.testing.assert_allclose(zf[..., 0], x, atol=1e-6)
  np.testing.assert_allclose(zf[..., 1], 0, atol=1e-6)
  # Parseval for the orthonormal FFT.
  np.testing.assert_allclose(np.sum(np.abs(np.asarray(y)) ** 2, axis=(1, 2)),
                             np.sum(x.astype(np.float64) ** 2, axis=(1, 2)), rtol=1e-5)
  assert float(op.acceleration) == 1.0


def test_csmri_matches_numpy_and_mask_is_centred():
  x = _images()
  mask = masks.poisson_disc((32, 24), 3, seed=0)
  op = physics.CSMRI(mask)
  ref = np.fft.ifftshift(mask) * np.fft.fft2(x.astype(np.float64), norm="ortho")
  np.testing.assert_allclose(np.asarray(op.measure(x)), ref, atol=1e-5)
  # Only the centre of a centred mask sampled -> only DC (index 0, 0) of y.
  dc_only = np.zeros((32, 24), np.float32)
  dc_only[16, 12] = 1
  y = np.asarray(physics.CSMRI(dc_only).measure(x))
  np.testing.assert_allclose(y[:, 0, 0], x.sum(axis=(1, 2)) / math.sqrt(32 * 24), rtol=1e-5)
  assert np.count_nonzero(y[0]) == 1
  np.testing.assert_allclose(float(op.acceleration), masks.acceleration(mask), rtol=1e-6)


@pytest.mark.parametrize("shape", [(63, 63), (15, 17)])
def test_csmri_centred_mask_lines_up_with_the_fft_on_odd_sides(shape):
  # ifftshift and fftshift differ only on an odd side, where the centre
  # (H // 2, W // 2) of a centred mask must land on DC (0, 0), not (H-1, W-1).
  h, w = shape
  dc_only = np.zeros(shape, np.float32)
  dc_only[h // 2, w // 2] = 1
  y = np.asarray(physics.CSMRI(dc_only).forward(np.ones((1, h, w), np.float32)))[0]
  # The orthonormal FFT of an all-ones image: sqrt(H·W) at DC, 0 elsewhere.
  # float32 FFT, relative error ~ eps·log2(H·W) ≈ 1.4e-6.
  np.testing.assert_allclose(np.abs(y[0, 0]), math.sqrt(h * w), rtol=1e-5)
  assert np.count_nonzero(y) == 1
  x = _images(b=2, h=h, w=w)
  mask = masks.poisson_disc(shape, 3, seed=0)
  ref = np.fft.ifftshift(mask) * np.fft.fft2(x.astype(np.float64), norm="ortho")
  # A float32 FFT's error per entry is within about eps·log2(H·W)·‖x‖₂ (the
  # orthonormal transform keeps ‖x‖₂): 5e-5 at 63×63, where 4e-6 was measured.
  bound = np.finfo(np.float32).eps * math.log2(h * w) * np.linalg.norm(x[0])
  np.testing.assert_allclose(np.asarray(physics.CSMRI(mask).forward(x)), ref, atol=bound)


def test_csmri_zero_filled_is_the_inverse_fft_of_the_measurement():
  # The network input is F⁻¹(y) as (real, imaginary) channels. Undersampled,
  # the image is complex; an all-ones mask leaves its imaginary part 0, where
  # a conjugated (sign-flipped) channel cannot be seen.
  x = _images()
  op = physics.CSMRI(masks.poisson_disc((32, 24), 3, seed=0))
  y = np.asarray(op.measure(x))
  ref = np.fft.ifft2(y.astype(np.complex128), norm="ortho")
  zf = np.asarray(op.zero_filled(y))
  # A float32 FFT's error per entry is within eps·log2(H·W)·‖y‖₂ (the
  # orthonormal transform keeps the norm): 1.8e-5 here.
  bound = np.finfo(np.float32).eps * math.log2(32 * 24) * np.linalg.norm(y, axis=(1, 2)).max()
  np.testing.assert_allclose(zf[..., 0], ref.real, rtol=0, atol=bound)
  np.testing.assert_allclose(zf[..., 1], ref.imag, rtol=0, atol=bound)
  assert np.abs(ref.imag).max() > 100 * bound  # the imaginary channel is not ~0


def test_csmri_refuses_an_image_given_in_place_of_its_k_space():
  # zero_filled(x) of the images themselves computed F⁻¹(x), a picture of
  # nothing, without a word; so did the data consistency against them.
  x = _images()
  op = physics.CSMRI(masks.poisson_disc((32, 24), 3, seed=0))
  for call in (lambda: op.zero_filled(x), lambda: op.adjoint(x),
               lambda: op.data_consistency(x, x),
               lambda: jax.jit(op.zero_filled)(jnp.asarray(x, jnp.float32))):
    with pytest.raises(errors.InputError, match=r"y must be complex k-space \(CSMRI.measure"
                                                r"\(x\) gives it\), got values of type float"):
      call()
  y = op.measure(x)
  assert op.zero_filled(y).shape == x.shape + (2,)
  assert op.zero_filled(np.asarray(y, np.complex128)).dtype == jnp.float32


def test_csmri_data_consistency():
  x = _images()
  op = physics.CSMRI(masks.poisson_disc((32, 24), 3, seed=0))
  y = op.measure(x, KEY)
  dc = op.data_consistency(x, y)
  assert dc.shape == (2,)
  np.testing.assert_allclose(dc, 0, atol=1e-8)
  recon = x + 0.1
  ref = np.sum(np.abs(np.asarray(op.forward(recon)) - np.asarray(y)) ** 2, axis=(1, 2))
  np.testing.assert_allclose(op.data_consistency(recon, y), ref, rtol=1e-5)
  assert np.all(np.asarray(op.data_consistency(recon, y)) > 0)


def test_csmri_noise_only_on_sampled_entries():
  x = _images(b=4, h=32, w=32)
  mask = masks.poisson_disc((32, 32), 3, seed=0)
  op = physics.CSMRI(mask, noise_sigma=0.5)
  y = np.asarray(op.measure(x, KEY))
  sampled = np.broadcast_to(np.fft.ifftshift(mask).astype(bool), y.shape)
  assert np.all(y[~sampled] == 0)
  noise = (y - np.asarray(op.forward(x)))[sampled]
  assert np.all(noise != 0)
  # Real and imaginary parts each have standard deviation noise_sigma.
  np.testing.assert_allclose([noise.real.std(), noise.imag.std()], 0.5, rtol=0.1)
  with pytest.raises(ValueError, match="key"):
    op.measure(x, None)
  # Different keys, different noise.
  assert (np.asarray(op.measure(x, jax.random.PRNGKey(1))) != y).any()


def test_csmri_noise_parts_are_independent_with_std_sigma():
  # n = 4·64·64 samples of each part. Independent parts: their sample
  # correlation has standard deviation 1/sqrt(n) = 0.0078; each sample std
  # has relative standard error 1/sqrt(2n) = 0.0055; bounds at 5 of those.
  sigma = 0.3
  op = physics.CSMRI(np.ones((64, 64), np.float32), noise_sigma=sigma)
  noise = np.asarray(op.measure(np.zeros((4, 64, 64), np.float32), KEY)).ravel()
  n = noise.size
  assert abs(np.corrcoef(noise.real, noise.imag)[0, 1]) < 5 / math.sqrt(n)
  np.testing.assert_allclose([noise.real.std(), noise.imag.std()], sigma,
                             rtol=5 / math.sqrt(2 * n))
  np.testing.assert_allclose([noise.real.mean(), noise.imag.mean()], 0,
                             atol=5 * sigma / math.sqrt(n))


def test_csmri_jit_and_vmap():
  x = _images()
  op = physics.CSMRI(masks.poisson_disc((32, 24), 3, seed=0), noise_sigma=0.01)

  @jax.jit
  def run(op, x, key):
    y = op.measure(x, key)
    return op.zero_filled(y), op.data_consistency(x, y)

  zf, dc = run(op, x, KEY)
  assert zf.shape == (2, 32, 24, 2) and dc.shape == (2,)
  xs = np.stack([x, x * 0.5])
  keys = jax.random.split(KEY, 2)
  # jit around vmap: one compilation of the random-number code instead of many.
  ys = jax.jit(jax.vmap(op.measure))(xs, keys)
  zfs = jax.vmap(op.zero_filled)(ys)
  dcs = jax.vmap(op.data_consistency)(xs, ys)
  assert zfs.shape == (2, 2, 32, 24, 2) and dcs.shape == (2, 2)
  np.testing.assert_allclose(zfs[1], op.zero_filled(jax.jit(op.measure)(xs[1], keys[1])),
                             atol=1e-6)
  clean = physics.CSMRI(op.mask)
  ys = jax.vmap(clean.measure)(xs)
  np.testing.assert_allclose(jax.vmap(clean.data_consistency)(xs, ys), 0, atol=1e-8)


def test_csmri_bad_inputs():
  op = physics.CSMRI(np.ones((32, 24), np.float32))
  with pytest.raises(ValueError, match=r"x has images of shape \(32, 32\)"):
    op.measure(_images(h=32, w=32))
  with pytest.raises(ValueError, match=r"\(B, H, W\)"):
    op.measure(np.zeros((32, 24), np.float32))
  with pytest.raises(ValueError, match="recon"):
    op.data_consistency(np.zeros((2, 16, 24)), np.zeros((2, 32, 24), np.complex64))
  # A measurement of the wrong shape would broadcast: (2, 32, 1) against
  # the (2, 32, 24) k-space of recon scored every column against one.
  with pytest.raises(errors.InputError, match=r"y has images of shape \(32, 1\)"):
    op.data_consistency(np.zeros((2, 32, 24), np.float32), np.zeros((2, 32, 1), np.complex64))
  with pytest.raises(ValueError, match="mask"):
    physics.CSMRI(np.ones((2, 32, 24)))
  with pytest.raises(ValueError, match="noise_sigma"):
    physics.CSMRI(np.ones((32, 24)), noise_sigma=-0.1)
  # A mask of 0.5s measured half of each point's value with acceleration 1;
  # an all-zero one measured nothing with acceleration inf.
  with pytest.raises(errors.InputError,
                     match=r"mask must hold 0s and 1s .*got the values \[0\.5\]"):
    physics.CSMRI(np.full((32, 24), 0.5))
  with pytest.raises(errors.InputError, match=r"mask samples no k-space point"):
    physics.CSMRI(np.zeros((32, 24)))
  assert physics.CSMRI([[0, 1], [True, False]]).acceleration == 2
  # The same as JAX arrays: a mask of 255s measured 255 times each value.
  with pytest.raises(errors.InputError, match=r"got the values \[0\.0, 255\.0\]"):
    physics.CSMRI(jnp.asarray(np.eye(32, 24) * 255))
  with pytest.raises(errors.InputError, match=r"mask samples no k-space point"):
    physics.CSMRI(jnp.zeros((32, 24)))
  # Inside a trace the values are not known, and a valid operator passes through.
  op = physics.CSMRI(jnp.asarray(np.eye(32, 24)))
  np.testing.assert_array_equal(jax.jit(lambda o: o)(op).mask, op.mask)


# -------------------------------------------------------------- Denoising


def test_denoise():
  x = _images(b=4)
  op = physics.Denoise(sigma=0.1)
  y = op.measure(x, KEY)
  assert y.shape == x.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(np.std(np.asarray(y) - x), 0.1, rtol=0.05)
  zf = np.asarray(op.zero_filled(y))
  assert zf.shape == x.shape + (2,)
  np.testing.assert_array_equal(zf[..., 0], y)
  np.testing.assert_array_equal(zf[..., 1], 0)
  np.testing.assert_allclose(op.data_consistency(y, y), 0)
  np.testing.assert_allclose(op.data_consistency(x, y),
                             np.sum((x - np.asarray(y)) ** 2, axis=(1, 2)), rtol=1e-5)
  np.testing.assert_array_equal(physics.Denoise(0.0).measure(x), x)
  with pytest.raises(ValueError, match="key"):
    op.measure(x)
  with pytest.raises(ValueError, match="sigma"):
    physics.Denoise(sigma=-1.0)
  with pytest.raises(ValueError, match="y has images"):
    op.data_consistency(x, np.zeros((4, 8, 8)))


def test_denoise_jit_and_vmap():
  x = _images()
  op = physics.Denoise(0.1)
  run = jax.jit(lambda op, x, k: op.data_consistency(x, op.measure(x, k)))
  assert run(op, x, KEY).shape == (2,)
  xs = np.stack([x, x])
  assert jax.vmap(op.zero_filled)(xs).shape == (2, 2, 32, 24, 2)
  assert jax.vmap(op.data_consistency)(xs, xs).shape == (2, 2)


# ------------------------------------------------------- Super-resolution

_A = -0.75


def _torch_bicubic_down_reference(img, factor):
  """PyTorch's upsample_bicubic2d (align_corners=False, no antialias), loop by loop."""

  def w_near(t):  # |t| <= 1
    return ((_A + 2) * t - (_A + 3)) * t * t + 1

  def w_far(t):  # 1 < |t| < 2
    return ((_A * t - 5 * _A) * t + 8 * _A) * t - 4 * _A

  def taps(out_index, size):
    src = factor * (out_index + 0.5) - 0.5
    i0 = math.floor(src)
    t = src - i0
    weights = [w_far(t + 1), w_near(t), w_near(1 - t), w_far(2 - t)]
    idx = [min(max(i0 - 1 + k, 0), size - 1) for k in range(4)]
    return idx, weights

  h, w = img.shape
  out = np.zeros((h // factor, w // factor))
  for oy in range(h // factor):
    iy, wy = taps(oy, h)
    for ox in range(w // factor):
      ix, wx = taps(ox, w)
      out[oy, ox] = sum(wy[a] * wx[b] * img[iy[a], ix[b]] for a in range(4) for b in range(4))
  return out


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_superres_matches_pytorch_bicubic_reference(factor):
  x = _images(b=2, h=24, w=36, seed=factor)
  op = physics.SuperResolution(factor)
  y = np.asarray(op.measure(x, KEY))
  assert y.shape == (2, 24 // factor, 36 // factor)
  ref = np.stack([_torch_bicubic_down_reference(im.astype(np.float64), factor) for im in x])
  np.testing.assert_allclose(y, ref, atol=2e-6)
  zf = np.asarray(op.zero_filled(y))
  assert zf.shape == (2, 24, 36, 2)
  up = np.zeros((2, 24, 36))
  for i in range(24):
    for j in range(36):
      up[:, i, j] = y[:, i // factor, j // factor]  # PyTorch nearest: floor(dst / f).
  np.testing.assert_array_equal(zf[..., 0], up)
  np.testing.assert_array_equal(zf[..., 1], 0)
  np.testing.assert_allclose(op.data_consistency(x, y), 0, atol=1e-10)
  np.testing.assert_allclose(
      op.data_consistency(x + 0.1, y),
      np.sum((np.asarray(op.measure(x + 0.1)) - y) ** 2, axis=(1, 2)), rtol=1e-5)


def test_superres_jit_and_vmap():
  x = _images()
  op = physics.SuperResolution(4)
  run = jax.jit(lambda op, x: op.data_consistency(x, op.measure(x)))
  assert run(op, x).shape == (2,)
  xs = np.stack([x, x])
  ys = jax.vmap(op.measure)(xs)
  assert ys.shape == (2, 2, 8, 6)
  assert jax.vmap(op.zero_filled)(ys).shape == (2, 2, 32, 24, 2)
  assert jax.vmap(op.data_consistency)(xs, ys).shape == (2, 2)


@pytest.mark.parametrize("op, shape", [
    (physics.CSMRI(np.ones((16, 16), np.float32)), (16, 16)),
    (physics.Denoise(0.1), (16, 16)),
    (physics.SuperResolution(2), (8, 8)),
])
def test_one_measurement_per_reconstruction(op, shape):
  # A batch of 1 measurement broadcast over 2 images: row 1 was scored
  # against row 0's measurement (DHS ranks rows by this value).
  recon = np.zeros((2, 16, 16), np.float32)
  y = np.zeros((1, *shape), np.complex64 if isinstance(op, physics.CSMRI) else np.float32)
  with pytest.raises(ValueError, match=r"y holds 1 measurements but recon 2 images"):
    op.data_consistency(recon, y)


def test_magnitude_needs_real_and_imaginary_channels():
  np.testing.assert_allclose(physics.magnitude(np.array([[3.0, 4.0]], np.float32)), [5.0])
  with pytest.raises(ValueError, match=r"magnitude needs \(\.\.\., 2\) images .* got shape "
                                       r"\(2, 8, 8\)"):
    physics.magnitude(np.ones((2, 8, 8), np.float32))  # it summed over W


def test_superres_bad_inputs():
  for bad in (2.5, 1, 0, -4, "4", True):
    with pytest.raises(ValueError, match="factor"):
      physics.SuperResolution(bad)
  assert physics.SuperResolution(4.0).factor == 4
  with pytest.raises(ValueError, match="not divisible by factor=4"):
    physics.SuperResolution(4).measure(np.zeros((1, 30, 32), np.float32))
  with pytest.raises(ValueError, match="y has images"):
    physics.SuperResolution(4).data_consistency(np.zeros((1, 32, 32)), np.zeros((1, 16, 16)))


# ---------------------------------------------------------------- Factory


# The fields a 'csmri' task reads with a Poisson-disc mask.
CSMRI = {"name": "csmri", "acceleration": 4.0, "mask": "poisson", "mask_seed": 0,
         "noise_sigma": 0.0}


def test_make_operator():
  op = physics.make_operator(ml_collections.ConfigDict(CSMRI), (64, 64))
  assert isinstance(op, physics.CSMRI) and op.noise_sigma == 0.0
  np.testing.assert_array_equal(op.mask, masks.poisson_disc((64, 64), 4.0, seed=0))
  op = physics.make_operator({**CSMRI, "acceleration": 4, "mask": "cartesian_equispaced",
                              "center_fraction": 0.1, "mask_seed": 2, "noise_sigma": 0.01},
                             (32, 64))
  np.testing.assert_array_equal(
      op.mask, masks.cartesian((32, 64), 4, center_fraction=0.1, kind="equispaced", seed=2))
  assert op.noise_sigma == 0.01
  op = physics.make_operator({**CSMRI, "acceleration": 8, "mask": "cartesian_random",
                              "center_fraction": 0.08}, (32, 64))
  assert abs(float(op.acceleration) - 8) < 0.4
  # Only the fields of the task are read.
  assert physics.make_operator({"name": "denoise", "sigma": 0.1}, (32, 32)).sigma == 0.1
  assert physics.make_operator(ml_collections.ConfigDict({"name": "denoise", "sigma": 0.2}),
                               (32, 32)).sigma == 0.2
  assert physics.make_operator({"name": "superres", "factor": 2}, (32, 32)).factor == 2
  assert physics.make_operator(types.SimpleNamespace(name="superres", factor=4),
                               (32, 32)).factor == 4


def test_make_operator_draws_the_poisson_mask_of_its_mask_seed():
  # Another mask_seed is another mask (test_make_operator uses seed 0, the
  # default of poisson_disc, where a dropped seed cannot be seen).
  op = physics.make_operator({**CSMRI, "mask_seed": 3}, (32, 32))
  np.testing.assert_array_equal(op.mask, masks.poisson_disc((32, 32), 4.0, seed=3))
  assert (np.asarray(op.mask) != masks.poisson_disc((32, 32), 4.0, seed=0)).any()


@pytest.mark.parametrize("seed", [1.5, -1, True, "0"])
def test_make_operator_refuses_a_mask_seed_that_is_no_integer(seed):
  # int() cut 1.5 to 1: the mask of another seed than the run's.
  with pytest.raises(errors.InputError, match=rf"task_config\.mask_seed must be an integer "
                                              rf"≥ 0, got {re.escape(repr(seed))}"):
    physics.make_operator({**CSMRI, "mask_seed": seed}, (32, 32))


def _without(config, field):
  return {k: v for k, v in config.items() if k != field}


@pytest.mark.parametrize("task, field", [
    ({"acceleration": 4.0}, "name"),
    *((_without(CSMRI, f), f) for f in ("acceleration", "mask", "mask_seed", "noise_sigma")),
    ({**CSMRI, "mask": "cartesian_random"}, "center_fraction"),
    ({"name": "denoise"}, "sigma"),
    (ml_collections.ConfigDict({"name": "superres"}), "factor"),
    (types.SimpleNamespace(name="denoise"), "sigma"),
])
def test_make_operator_names_a_missing_field(task, field):
  with pytest.raises(errors.InputError, match=rf"^task config lacks field '{field}'\.$"):
    physics.make_operator(task, (32, 32))


def test_make_operator_errors():
  with pytest.raises(ValueError, match="csmri.*denoise.*superres"):
    physics.make_operator({"name": "deblur"}, (32, 32))
  with pytest.raises(ValueError, match="poisson"):
    physics.make_operator({**CSMRI, "mask": "radial"}, (32, 32))
  with pytest.raises(ValueError, match="acceleration"):
    physics.make_operator({**CSMRI, "acceleration": 1.0}, (32, 32))
  # The mask's own message names calib, which a config does not set.
  with pytest.raises(ValueError, match=r"^task_config.acceleration=2000 cannot be reached by "
                                       r"a 32×32 Poisson-disc mask: calib=\(3, 3\) alone"):
    physics.make_operator({**CSMRI, "acceleration": 2000}, (32, 32))
  with pytest.raises(ValueError, match="divisible"):
    physics.make_operator({"name": "superres", "factor": 3}, (32, 32))
  # The width is checked as well as the height.
  with pytest.raises(errors.InputError,
                     match=r"image_shape \(32, 30\) is not divisible by factor=4"):
    physics.make_operator({"name": "superres", "factor": 4}, (32, 30))
  with pytest.raises(ValueError, match="sigma"):
    physics.make_operator({"name": "denoise", "sigma": -0.1}, (32, 32))


def _random(shape, rng, complex_=False):
  x = rng.normal(size=shape)
  if complex_:
    x = x + 1j * rng.normal(size=shape)
  return x


@pytest.mark.parametrize("name", ["csmri", "denoise", "superres"])
def test_adjoint_satisfies_the_inner_product_identity(name):
  # <A x, y> = <x, A^H y> for random x and y (deepinv's adjointness test),
  # computed in float64 from the operators' float32/complex64 outputs: the
  # two sides agree to float32 roundoff, ~1e-6 of their size.
  rng = np.random.default_rng(0)
  size = 16
  op = {"csmri": physics.CSMRI(masks.poisson_disc((size, size), 4, seed=0)),
        "denoise": physics.Denoise(0.1),
        "superres": physics.SuperResolution(4)}[name]
  x = _random((2, size, size), rng, complex_=name == "csmri")
  ax = np.asarray(op.forward(jnp.asarray(x, jnp.complex64 if name == "csmri" else jnp.float32)))
  y = _random(ax.shape, rng, complex_=name == "csmri")
  ahy = np.asarray(op.adjoint(jnp.asarray(y, ax.dtype)))
  left = np.vdot(y, ax.astype(np.complex128))
  right = np.vdot(ahy.astype(np.complex128), x)
  np.testing.assert_allclose(left, right, rtol=1e-5)
  assert abs(left) > 1.0  # not a vacuous 0 = 0


def test_superres_adjoint_of_non_square_images_satisfies_the_inner_product_identity():
  # As above on 16×24 images: an adjoint that swapped the H and W matrices
  # passed on squares. Each float32 output of D (or Dᵀ) is a sum of 16
  # weighted values, off by at most 16·2⁻²⁴·(Σ|w|)² ≈ 1.5e-6 of the inputs'
  # norm, so |⟨Ax, y⟩ − ⟨x, Aᴴy⟩| ≤ 2·1.5e-6·‖x‖‖y‖ (Cauchy–Schwarz);
  # atol 1e-5·‖x‖‖y‖ holds that with room, and no rtol: the inner product of
  # random vectors can be near 0.
  rng = np.random.default_rng(0)
  op = physics.SuperResolution(4)
  x, y = rng.normal(size=(2, 16, 24)), rng.normal(size=(2, 4, 6))
  ax = np.asarray(op.forward(jnp.asarray(x, jnp.float32)), np.float64)
  ahy = np.asarray(op.adjoint(jnp.asarray(y, jnp.float32)), np.float64)
  assert ax.shape == y.shape and ahy.shape == x.shape
  np.testing.assert_allclose(np.vdot(y, ax), np.vdot(ahy, x), rtol=0,
                             atol=1e-5 * np.linalg.norm(x) * np.linalg.norm(y))


@pytest.mark.parametrize("name", ["csmri", "denoise", "superres"])
def test_measure_and_data_consistency_are_the_forward_map_plus_noise(name):
  size = 16
  op = {"csmri": physics.CSMRI(masks.poisson_disc((size, size), 4, seed=0), noise_sigma=0.05),
        "denoise": physics.Denoise(0.1),
        "superres": physics.SuperResolution(4)}[name]
  x = jnp.asarray(np.random.default_rng(1).random((2, size, size)), jnp.float32)
  y = op.measure(x, jax.random.key(0))
  noise = np.asarray(y - op.forward(x))
  if name == "superres":
    assert np.all(noise == 0)
  else:
    assert np.std(np.abs(noise[noise != 0])) > 0  # noise was added
  # The data consistency of the clean image is the energy of the noise.
  np.testing.assert_allclose(np.asarray(op.data_consistency(x, y)),
                             np.sum(np.abs(noise) ** 2, axis=(1, 2)), rtol=1e-5)


def test_input_name_says_what_each_task_feeds_the_network():
  assert physics.input_name("csmri") == "zero-filled"  # the paper's word
  assert physics.input_name("denoise") == "noisy input"
  assert physics.input_name("superres") == "upsampled input"
  assert set(physics.INPUT_NAMES) == set(physics.OPERATOR_NAMES)  # every task has one
  with pytest.raises(errors.InputError, match="task must be one of .* got 'mri'"):
    physics.input_name("mri")


def test_a_run_is_bound_to_the_task_fields_its_operator_reads():
  from hyperrecon_jax.train import run_fields
  base = {"name": "denoise", "acceleration": 8.0, "mask": "poisson", "mask_seed": 0,
          "center_fraction": 0.08, "noise_sigma": 0.0, "sigma": 0.1, "factor": 4}

  def diffs(a, b):
    return run_fields.incompatibilities({"task": a}, {"task": b})

  # Denoising reads σ alone: another acceleration or factor is the same problem.
  assert physics.task_fields(base) == ("name", "sigma")
  assert diffs(base, {**base, "acceleration": 4.0, "factor": 2}) == []
  assert diffs(base, {**base, "sigma": 0.2}) == ["task.sigma: 0.1 in the workdir, 0.2 now"]
  # CS-MRI reads center_fraction only for a Cartesian mask.
  csmri = {**base, "name": "csmri"}
  assert diffs(csmri, {**csmri, "center_fraction": 0.04, "sigma": 0.3}) == []
  cartesian = {**csmri, "mask": "cartesian_random"}
  assert diffs(cartesian, {**cartesian, "center_fraction": 0.04}) == [
      "task.center_fraction: 0.08 in the workdir, 0.04 now"]
  # Another task: its name, and every field either task reads that differs.
  assert diffs(base, {**base, "name": "superres", "factor": 2}) == [
      "task.factor: 4 in the workdir, 2 now", "task.name: 'denoise' in the workdir, 'superres' now"]
