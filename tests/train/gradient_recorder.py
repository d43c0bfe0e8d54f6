"""An optax "optimizer" that stores each step's gradients in its state, to compare them.

The sharded and multi-process tests run a real train step with it: the step's
optimizer state then holds the gradients themselves, not a small multiple of them
folded into the parameters, so their differences are measured at full scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def record_gradients() -> optax.GradientTransformation:
  """Zero updates (the parameters stay); the state is the last step's gradients."""

  def init(params):
    return jax.tree.map(jnp.zeros_like, params)

  def update(updates, state, params=None):
    del state, params
    return jax.tree.map(jnp.zeros_like, updates), updates

  return optax.GradientTransformation(init, update)


def relative_difference(gradients, reference, zero_fraction: float = 1e-6) -> tuple[float, int]:
  """(max over leaves of |g - r| / |r| in the 2-norm, number of leaves taken as zero).

  A leaf whose reference norm is below `zero_fraction` of the largest leaf norm holds
  a gradient that is 0 in real arithmetic (a conv bias before BatchNorm: the
  normalisation removes it), i.e. rounding noise; such a leaf must be below that bound
  in `gradients` too (else the result is inf) and is not compared relatively.
  """
  pairs = list(zip(jax.tree.leaves(gradients), jax.tree.leaves(reference), strict=True))
  norms = [float(np.linalg.norm(np.asarray(r, np.float64))) for _, r in pairs]
  floor = zero_fraction * max(norms)
  worst, zeros = 0.0, 0
  for (g, r), norm in zip(pairs, norms):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    if norm < floor:
      zeros += 1
      if np.linalg.norm(g) >= floor:
        return float("inf"), zeros
      continue
    worst = max(worst, float(np.linalg.norm(g - r)) / norm)
  return worst, zeros


def global_relative_difference(gradients, reference) -> float:
  """|g - r| / |r| in the 2-norm over all parameters together."""
  flat = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel()
                                      for x in jax.tree.leaves(tree)])
  g, r = flat(gradients), flat(reference)
  return float(np.linalg.norm(g - r) / np.linalg.norm(r))
