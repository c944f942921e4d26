"""How far apart the Unets a hypernetwork generates are: is each λ direction learned?

A hypernetwork that ignores λ generates one Unet for every λ. During training
the loop logs, with the validation metrics:

* ``weight_spread``: ``max_{a, b} ||W(a) − W(b)|| / ||W(centre)||`` over the
  validation λ (`weight_spread`);
* from three loss terms on, ``weight_spread_<term>`` for every term k:
  ``||W(e_k) − W(c̄)|| / ||W(c̄)||``, the distance from the Unet of the
  simplex's centroid ``c̄ = (1/K, …, 1/K)`` to the Unet of vertex ``e_k`` (all
  weight on term k) (`direction_spreads`). A direction whose spread stays
  near 0 while the others grow is one the hypernetwork is not learning.

``W`` is all generated convolution kernels and biases as one vector: with
``model.conditioned`` other than ``'all'``, the shared convolutions, the
same at every λ, would only add to ``||W(centre)||`` and shrink the spread
(7.5× at ``'head'``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import hparams


def _generated(model, params, coeffs):
  """(G, P): the weights the hypernetwork generates at each row of ``coeffs``, flat."""
  weights = model.apply({"params": params}, coeffs,
                        method=lambda module, c: module.hypernetwork(c))
  return jnp.concatenate([x.reshape(x.shape[0], -1) for x in jax.tree_util.tree_leaves(weights)],
                         1)


def weight_spread(model, params, lams) -> float:
  """``max_{a, b} ||W(a) − W(b)|| / ||W(centre)||`` over the validation λ.

  The centre is the λ of all 0.5. Near 0 the hypernetwork gives one Unet for
  every λ.

  Args:
    model: the ``HyperUnet``.
    params: its parameters.
    lams: the validation λ vectors.

  Returns:
    The relative spread.
  """
  # One call generates the Unets of every validation λ and of the centre.
  lams = jnp.concatenate([jnp.asarray(lams, jnp.float32),
                          jnp.full((1, len(lams[0])), 0.5, jnp.float32)])
  w = _generated(model, params, hparams.coefficients(lams))
  w, centre = w[:-1], w[-1]
  d = jnp.sqrt(jnp.sum((w[:, None] - w[None]) ** 2, -1))
  return float(jnp.max(d) / jnp.linalg.norm(centre))


def direction_spreads(model, params, names) -> dict[str, float]:
  """``||W(e_k) − W(c̄)|| / ||W(c̄)||`` for every loss term k.

  Args:
    model: the ``HyperUnet``.
    params: its parameters.
    names: the K loss-term names, in order.

  Returns:
    ``{'weight_spread_<name>': spread}``.
  """
  k = len(names)
  coeffs = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k)]).astype(np.float32)
  w = _generated(model, params, jnp.asarray(coeffs))
  centre = w[-1]
  d = jnp.linalg.norm(w[:-1] - centre, axis=1) / jnp.linalg.norm(centre)
  return {f"weight_spread_{n}": float(v) for n, v in zip(names, np.asarray(d))}
