"""Loss terms of a user's own, as a module named in ``config.extensions`` registers them.

``grad_diff``: the squared difference of the images' horizontal gradients, a
supervised term; ``weight_l2``: the sum of squares of the convolution weights,
a term of λ alone.
"""

import jax
import jax.numpy as jnp

from hyperrecon_jax import losses


def grad_diff(recon, target, **_):
  """``sum_pixels (∂x recon − ∂x target)²`` per image."""
  d = jnp.diff(recon, axis=2) - jnp.diff(target, axis=2)
  return jnp.sum(d * d, axis=(1, 2))


def weight_l2(recon, target, *, weights, **_):
  """``sum_leaves sum w²`` per sample."""
  del recon, target
  return sum(jnp.sum(jnp.square(leaf).reshape(leaf.shape[0], -1), axis=1)
             for leaf in jax.tree_util.tree_leaves(weights))


losses.register_term("grad_diff", grad_diff, needs=("target",))
losses.register_term("weight_l2", weight_l2, needs=("weights",))
