"""A minimal state and data source for running `trainer._train_loop` without models."""

import flax
import grain
import jax.numpy as jnp
import numpy as np

from lipsync_jax.train import sharding


@flax.struct.dataclass
class FakeState:
  step: jnp.ndarray
  w: jnp.ndarray


def fake_state() -> FakeState:
  return FakeState(step=jnp.zeros((), jnp.int32), w=jnp.zeros(3))


class FakeData:
  """What `_train_loop` reads of `components.Data`: a mesh and a train iterator (Grain's,
  so checkpoints can save its state)."""

  def __init__(self):
    self.mesh = sharding.make_mesh()
    self.train_iterator = iter(grain.MapDataset.range(100).map(
        lambda i: {"x": np.full((1, 2), i, np.float32)}).to_iter_dataset())

  def close(self):
    pass
