"""Type aliases shared by the library, and its compute-dtype rule."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any  # Nested dicts / dataclasses of arrays (flax variables, train states).
Batch = dict[str, jax.Array]  # One global batch of the input pipeline, on the devices.
HostBatch = dict[str, np.ndarray]  # The same, on the host, this process's rows.
Metrics = dict[str, jax.Array]  # Scalar metrics of one step.


def at_least_float32(x) -> jax.Array:
  """`x` in float32, or in its own dtype when wider (float64 under `jax_enable_x64`).

  Normalisation statistics, FFTs, sigmoids and losses run in this dtype, so bfloat16
  models keep float32 numerics there and a float64 model stays float64 throughout.
  """
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
