"""The loss terms by name, what each needs, and their weighted composition.

`TERMS` maps a name ('mae', 'dc', …, or one added with `register_term`) to its
function; `compute_terms` gives a batch's (B, K) values of K named terms and
`composite` weights them into each sample's objective.
"""

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from collections.abc import Set
import re

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import metrics as _metrics
from hyperrecon_jax.losses import formulas

_check_images = _metrics.check_images
_check_pair = _metrics.check_pair


class _Terms(Mapping):
  """The registered loss terms by name: read-only, added to by `register_term`."""

  def __init__(self, terms):
    self._terms = dict(terms)

  def __getitem__(self, name):
    return self._terms[name]

  def __iter__(self):
    return iter(self._terms)

  def __len__(self):
    return len(self._terms)

  def __setitem__(self, name, fn):
    raise errors.InputError(f"losses.TERMS is read-only: add the term {name!r} with "
                            f"hr.losses.register_term({name!r}, fn, needs=...).")

  def __repr__(self):
    return f"TERMS({sorted(self._terms)})"


class _Names(Set):
  """The terms that need one input: read-only, kept up to date by `register_term`.

  One object for the life of the process, so that a name imported from this
  module before an extension registers its terms still lists them.
  """

  def __init__(self, names):
    self._names = set(names)

  def __contains__(self, name):
    return name in self._names

  def __iter__(self):
    return iter(sorted(self._names))

  def __len__(self):
    return len(self._names)

  @classmethod
  def _from_iterable(cls, names):
    return frozenset(names)

  def __repr__(self):
    return f"{{{', '.join(repr(n) for n in self)}}}"


# Every registered term has the signature
#   term(recon, target, *, operator, measurement, weights) -> (B,)
# and the inputs it reads besides recon are named by the NEEDS_* sets, which
# decide what training and evaluation give it.
TERMS = _Terms({
    "mae": lambda recon, target, **_: formulas.mae(recon, target),
    "mse": lambda recon, target, **_: formulas.mse(recon, target),
    "ssim": lambda recon, target, **_: formulas.dssim(recon, target),
    "hfen": lambda recon, target, **_: formulas.hfen(recon, target),
    "dc": lambda recon, target, *, operator, measurement, **_: formulas.data_consistency(
        recon, measurement, operator),
    "tv": lambda recon, target, **_: formulas.total_variation(recon),
    "wavelet": lambda recon, target, **_: formulas.wavelet_l1(recon),
    "weight_l1": lambda recon, target, *, weights, **_: formulas.weight_l1(weights),
})
BUILT_IN = frozenset(TERMS)
NEEDS_TARGET = _Names({"mae", "mse", "ssim", "hfen"})
NEEDS_MEASUREMENT = _Names({"dc"})
NEEDS_WEIGHTS = _Names({"weight_l1"})
NEEDS = ("target", "measurement", "weights")
_NEEDS_SETS = (("target", NEEDS_TARGET), ("measurement", NEEDS_MEASUREMENT),
               ("weights", NEEDS_WEIGHTS))


def register_term(name: str, fn, *, needs: Sequence[str] = (), replace: bool = False) -> None:
  """Adds a loss term under ``name``, for training, evaluation and the explorer.

  ``fn(recon, target, *, operator, measurement, weights, **_)`` returns the
  (B,) values of a batch; it is traced under ``jit``, so it must be written in
  JAX. It is given what ``needs`` names and None for the rest:

  * ``'target'``: the (B, H, W) ground truth (a supervised term);
  * ``'measurement'``: the measurement y, with the task's ``operator``;
  * ``'weights'``: the pytree of each sample's convolution weights
    (`hyperrecon_jax.models.HyperUnet.generate`'s, leaves with a leading B
    axis). Such a term is of λ alone, not of an image: it needs nothing else,
    and is given no ``recon`` and no ``target`` (None), in training as in
    evaluation, which scores it once per λ.

  A term that reads an input its ``needs`` leave out fails in the first
  training step's trace, and an error a registered term raises is an
  `InputError` that names it (`call_term`).

  Only the name is stored with a run (``config.losses``): a process that
  evaluates the run must register the same term under the same name, which
  ``config.extensions`` does for the command line (a module it imports).

  Args:
    name: the term's name, lowercase letters, digits and ``_`` (it names log
      keys and report columns); not a built-in term's.
    fn: the term, as above.
    needs: a subset of `NEEDS`.
    replace: allow replacing a term registered before under ``name``. The
      compiled programs of this process traced the old function, so every one
      is discarded (``jax.clear_caches()``) and compiles again on its next call.

  Raises:
    InputError: a bad name, ``fn`` or ``needs``; ``name`` already registered
      (without ``replace``) or built in.
  """
  if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
    raise errors.InputError(f"a loss term's name must be lowercase letters, digits and '_', "
                            f"starting with a letter, got {name!r}.")
  if name in BUILT_IN:
    raise errors.InputError(f"{name!r} is a built-in loss term; register yours under another "
                            f"name (built in: {sorted(BUILT_IN)}).")
  if name in TERMS and not replace:
    raise errors.InputError(f"a loss term {name!r} is registered already; pass replace=True "
                            "to replace it.")
  if not callable(fn):
    raise errors.InputError(f"the loss term {name!r} must be a function, got {fn!r}.")
  if isinstance(needs, str):
    needs = (needs,)
  needs = tuple(needs)
  bad = [n for n in needs if n not in NEEDS]
  if bad:
    raise errors.InputError(f"needs of the loss term {name!r} must be among {NEEDS}, got {bad}.")
  if "weights" in needs and len(set(needs)) > 1:
    others = sorted(set(needs) - {"weights"})
    raise errors.InputError(f"the loss term {name!r} needs the weights and {others}: a term "
                            "of the weights is of λ alone and can need nothing else.")
  replaced = name in TERMS
  TERMS._terms[name] = fn
  for need, names in _NEEDS_SETS:
    names._names.discard(name)
    if need in needs:
      names._names.add(name)
  if replaced:
    jax.clear_caches()


def check_names(names: Iterable[str]) -> tuple[str, ...]:
  """Checks a sequence of loss-term names (e.g. ``config.losses``).

  Args:
    names: term names, each a key of `TERMS`, no repeats.

  Returns:
    The names as a tuple.

  Raises:
    ValueError: for a bare string, an empty sequence, an unknown or a
      repeated name.
  """
  if isinstance(names, str):
    raise errors.InputError(f"names must be a sequence of term names, got the string {names!r}.")
  names = tuple(names)
  if not names:
    raise errors.InputError(f"names must name at least one loss term of {sorted(TERMS)}, got ().")
  unknown = [n for n in names if n not in TERMS]
  if unknown:
    # A stored run's own terms come from the modules of its config.extensions:
    # one that imports but registers nothing ends here, not at the import.
    raise errors.InputError(
        f"unknown loss term(s) {unknown} in {names}; valid: {sorted(TERMS)}. A loss term of "
        "one's own is registered by hr.losses.register_term, for a run in a module named in "
        "its config.extensions.")
  if len(set(names)) != len(names):
    raise errors.InputError(f"loss terms must not repeat, got {names}.")
  return names


def needs_of(name: str) -> tuple[str, ...]:
  """What the registered term ``name`` needs besides the reconstruction (of `NEEDS`)."""
  return tuple(need for need, names in _NEEDS_SETS if name in names)


def call_term(name: str, recon, target=None, *, operator=None, measurement=None,
              weights=None):
  """The values of term ``name``, given what its needs name and None for the rest.

  A term of the weights is given neither ``recon`` nor ``target``: it is of
  λ alone. Training, evaluation and the gradient scales all call a term here,
  so a term that reads an input its ``needs`` leave out fails at once, in the
  first training step's trace, not in the report after training.

  Raises:
    InputError: a term registered by `register_term` raised; the message names
      it, what it raised and what it was given.
  """
  needs = needs_of(name)
  measured = "measurement" in needs
  given = dict(operator=operator if measured else None,
               measurement=measurement if measured else None,
               weights=weights if "weights" in needs else None)
  if "weights" in needs:
    recon = None
  target = target if "target" in needs else None
  try:
    return TERMS[name](recon, target, **given)
  except Exception as e:  # a user's term: any error of its own, named with it
    if name in BUILT_IN:
      raise
    raise errors.InputError(
        f"loss term {name!r} raised {type(e).__name__}: {' '.join(str(e).split())[:300]}. It "
        f"is given what its needs name, {needs}, and None for the rest (register_term's "
        "needs=).") from e


def compute_terms(names: Sequence[str],
                  recon,
                  target=None,
                  *,
                  operator=None,
                  measurement=None,
                  weights=None):
  """Evaluates the named terms and stacks them in order.

  Args:
    names: term names (keys of `TERMS`), e.g. ``('mae', 'ssim')`` or
      ``('dc', 'weight_l1', 'tv')``.
    recon: (B, H, W) reconstructions.
    target: (B, H, W) ground truth; needed by 'mae', 'mse', 'ssim', 'hfen'.
    operator: forward operator; needed (with ``measurement``) by 'dc'.
    measurement: the measurement y; needed by 'dc'.
    weights: pytree of per-sample generated weights; needed by 'weight_l1'.

  Returns:
    (B, K) per-example values of the K terms.

  Raises:
    ValueError: for unknown names or when a term's input is missing.
  """
  names = check_names(names)
  _check_images("recon", recon)
  missing = []
  for n in names:
    if n in NEEDS_TARGET and target is None:
      missing.append(f"'{n}' needs target")
    if n in NEEDS_MEASUREMENT and (operator is None or measurement is None):
      missing.append(f"'{n}' needs operator and measurement")
    if n in NEEDS_WEIGHTS and weights is None:
      missing.append(f"'{n}' needs weights")
  if missing:
    raise errors.InputError("missing inputs for loss terms: " + "; ".join(missing) + ".")
  if target is not None:
    _check_pair(recon, target, "recon", "target")
  values = [call_term(n, recon, target, operator=operator, measurement=measurement,
                      weights=weights) for n in names]
  for n, v in zip(names, values):
    if jnp.shape(v) != recon.shape[:1]:
      hint = (" (a term of the weights needs them: register_term(..., needs=('weights',)))"
              if n not in NEEDS_WEIGHTS and weights is None else "")
      raise errors.InputError(f"loss term '{n}' returned shape {jnp.shape(v)}, expected "
                              f"{recon.shape[:1]}: one value per image{hint}.")
  return jnp.stack(values, axis=1)


def composite(per_term, coeffs, scales):
  """Weighted sum of the terms per example.

  ``L_b = sum_k coeffs[b, k] * per_term[b, k] / scales[k]``.

  Args:
    per_term: (B, K) term values, e.g. from `compute_terms`.
    coeffs: (B, K) loss coefficients of each sample (from its λ).
    scales: (K,) positive typical values s_k of the terms (alpha_k = 1 / s_k).

  Returns:
    (B,) total loss per example.
  """
  per_term = jnp.asarray(per_term)
  coeffs = jnp.asarray(coeffs)
  scales = jnp.asarray(scales, jnp.float32)
  if per_term.ndim != 2:
    raise errors.InputError(f"per_term must have shape (B, K), got shape {per_term.shape}.")
  if coeffs.shape != per_term.shape:
    raise errors.InputError(
        f"coeffs must have the shape of per_term {per_term.shape}, got {coeffs.shape}.")
  if scales.shape != per_term.shape[1:]:
    raise errors.InputError(
        f"scales must have shape ({per_term.shape[1]},), got shape {scales.shape}.")
  # A zero, negative or NaN scale turns a term's weight infinite, negative
  # (rewarding the loss) or NaN. Scales traced under a caller's jit come from
  # a checked config (`train.check_config`) and cannot be looked at.
  if not isinstance(scales, jax.core.Tracer):
    values = np.asarray(scales)
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
      raise errors.InputError(
          f"scales must be finite and > 0 (each term is divided by its scale), got "
          f"{values.tolist()}.")
  return jnp.sum(coeffs * per_term / scales, axis=1)
