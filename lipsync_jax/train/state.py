"""Train-state pytrees of SyncNet and generator (GAN) training.

Every field is an array or a pytree of arrays, so a state is checkpointed by
orbax as it is and carried through `jax.jit` with donation. Parameters and
optimizer states are float32 (the master weights) whatever the compute dtype.
The optimizer transformation itself is not state: the step functions close
over it (see `train/steps.py`).
"""

import functools
from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from lipsync_jax.types import PyTree


@flax.struct.dataclass
class ModelState:
  """Trainable variables of one network and its optimizer state.

  Attributes:
    params: the "params" collection (float32).
    batch_stats: the "batch_stats" collection ({} for networks without BN).
    opt_state: the optax state of `params`.
  """
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree

  def variables(self) -> dict[str, PyTree]:
    """The flax variables for `Module.apply`."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}


@flax.struct.dataclass
class SyncNetTrainState:
  """SyncNet training: step counter (int32 scalar), base RNG key data, network."""
  step: jnp.ndarray
  rng: jnp.ndarray
  syncnet: ModelState


@flax.struct.dataclass
class GeneratorTrainState:
  """Generator training.

  Attributes:
    step: int32 scalar, number of generator updates done.
    rng: uint32 key data of the base key; a step uses `fold_in(rng, step)`.
    generator: the generator's variables and optimizer state.
    discriminator: the quality discriminator's, or None when the adversarial
      weight is 0 (the paper's recipe).
    sync_weight: float32 scalar, the current weight s of the sync loss. It is
      the schedule state: 0 until the eval sync loss falls below the config's
      threshold (or on from the start, `initial_sync_weight`), then the config's
      sync weight (saved in every checkpoint, so a resumed run does not restart
      at 0 as the original does).
  """
  step: jnp.ndarray
  rng: jnp.ndarray
  generator: ModelState
  discriminator: ModelState | None
  sync_weight: jnp.ndarray


def make_optimizer(config: ml_collections.ConfigDict,
                   num_train_steps: int | None = None) -> optax.GradientTransformation:
  """Adam from a config with fields `learning_rate`, `b1`, `b2` and optionally
  `grad_clip_norm`, `warmup_steps` (linear from 0) and `cosine_decay` (True: cosine
  decay to 0 at `num_train_steps`, the end of the run; a run that ends inside the
  warm-up has no decay). Without either the learning rate is constant."""
  learning_rate = config.learning_rate
  warmup = config.warmup_steps
  if config.cosine_decay:
    if num_train_steps is None:
      raise ValueError("cosine_decay needs the run's num_train_steps")
    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(num_train_steps, warmup + 1))
  elif warmup:
    learning_rate = optax.linear_schedule(0.0, config.learning_rate, warmup)
  tx = optax.adam(learning_rate, b1=config.b1, b2=config.b2)
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


def init_model_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                     example_inputs: Sequence[jnp.ndarray],
                     variables: PyTree | None = None) -> ModelState:
  """Initialises `model` on `example_inputs` (or takes given `variables`).

  Args:
    model: a flax module whose `__call__(*example_inputs, train=False)` runs.
    tx: the optimizer.
    rng: a PRNG key for the initialisation.
    example_inputs: arrays with the shapes of one (small) batch.
    variables: optional pretrained variables (e.g. a converted checkpoint for
      fine-tuning); their tree must match the model's.

  Returns:
    A float32 `ModelState` with a fresh optimizer state.
  """
  if variables is None:
    variables = jit_init(model)(rng, *example_inputs)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), variables["params"])
  batch_stats = jax.tree.map(jnp.asarray, dict(variables.get("batch_stats", {})))
  return ModelState(params=params, batch_stats=batch_stats, opt_state=tx.init(params))


def jit_init(model: nn.Module):
  """`model.init(rng, *inputs, train=False)`, jitted at XLA -O0.

  Init runs once, so compile time is what counts: unoptimised compilation beats
  both eager init (one dispatch per op) and a default-optimised compile.
  """
  return jax.jit(functools.partial(model.init, train=False),
                 compiler_options={"xla_backend_optimization_level": 0})


def new_rng(seed: int) -> jnp.ndarray:
  """Raw uint32 key data for `seed` (orbax saves plain arrays, not typed keys)."""
  return jax.random.key_data(jax.random.key(seed))


def step_key(rng: jnp.ndarray, step: jnp.ndarray) -> jax.Array:
  """The PRNG key of one step: the base key folded with the step number."""
  return jax.random.fold_in(jax.random.wrap_key_data(rng), step)


def initial_sync_weight(config: ml_collections.ConfigDict) -> jnp.ndarray:
  """float32 scalar: 0 (Wav2Lip's schedule), or `config.sync_weight` from the first
  step when the `loss` config sets `sync_from_start` (for an expert trained with the
  generator's data and a generator that would otherwise never switch it on)."""
  return jnp.asarray(config.sync_weight if config.sync_from_start else 0.0, jnp.float32)


def update_sync_weight(state: GeneratorTrainState, eval_sync_loss: float,
                       config: ml_collections.ConfigDict) -> GeneratorTrainState:
  """Wav2Lip's schedule: switch the sync loss on once eval sync loss < threshold.

  Args:
    state: the current state.
    eval_sync_loss: mean expert sync loss of the generated eval frames.
    config: the `loss` config with `sync_weight` and `sync_threshold`.

  Returns:
    The state with `sync_weight` = `config.sync_weight` if the threshold was
    crossed now or before; once on, the sync loss stays on.
  """
  if float(state.sync_weight) > 0 or eval_sync_loss >= config.sync_threshold:
    return state
  return state.replace(sync_weight=jnp.asarray(config.sync_weight, jnp.float32))
