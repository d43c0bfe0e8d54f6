"""The project's jitted generator training step, built for the benchmarks.

Shared by `benchmarks/train_step.py` (CPU, vs PyTorch) and
`benchmarks/gpu_train_step.py` (FLOP/s against the GPU's peak). The step is
assembled exactly as `lipsync_jax.train.trainer.train_generator` does it (the
same `components.build_*`, `state.init_model_state`, `steps.make_*` and
`sharding.jit_train_step` calls, on a one-device mesh), from the LRS2 configs,
with random weights: the expert SyncNet is randomly initialised and LPIPS uses
a random VGG16 backbone with the shipped heads (speed does not depend on the
weight values). The sync-loss weight is set to its switched-on value (0.03),
the steady state of a long run; the sync loss is computed and differentiated
either way.

Recipes (`train_bench_util.MODELS`): "attn_wav2lip" = configs/attn_wav2lip_lrs2.py (L1 + sync +
LPIPS, no discriminator); "wav2lip" = configs/wav2lip_lrs2.py (L1 + sync +
adversarial, plus the quality discriminator's step).
"""

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lipsync_jax.train import components, profiling, sharding, steps
from lipsync_jax.train import state as state_lib
from lipsync_jax.types import PyTree

import train_bench_util  # benchmarks/ is on sys.path (the scripts put it there)

WINDOW_FRAMES = 5  # T: frames per sample


def load_config(model: str, dtype: str, batch_size: int) -> ml_collections.ConfigDict:
  """The LRS2 config of `model` with the benchmark's dtype, batch and random LPIPS."""
  config = train_bench_util.load_config(model)
  config.dtype = dtype
  config.batch_size = batch_size
  config.lpips.backbone = "random"
  return config


def random_batch(batch_size: int, img_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A generator batch as the input pipeline sends it (see `train/steps.py`): uniform
  uint8 images, normal float32 mels."""
  rng = np.random.default_rng(seed)
  b, t, s = batch_size, WINDOW_FRAMES, img_size
  return {"target": rng.integers(0, 256, (b, t, s, s, 3), np.uint8),
          "reference": rng.integers(0, 256, (b, t, s, s, 3), np.uint8),
          "mel_chunks": rng.normal(size=(b, t, 80, 16, 1)).astype(np.float32),
          "sync_mel": rng.normal(size=(b, 80, 16, 1)).astype(np.float32)}


@dataclasses.dataclass
class TrainStep:
  """One generator training step (and the discriminator's, when the recipe has one).

  Attributes:
    generator_step: jitted `(state, frozen, batch) -> (state, metrics, generated)`;
      donates the state.
    discriminator_step: jitted `(state, generated, target) -> (state, metrics)`, or None.
    state: the initial `GeneratorTrainState` on the device.
    frozen: the expert (and LPIPS) variables on the device.
    batch: a random batch on the device, sharded as training shards it.
    frames_per_step: batch size x T.
    recipe: the losses, for the tables.
  """
  generator_step: Callable
  discriminator_step: Callable | None
  state: PyTree
  frozen: PyTree
  batch: dict[str, jax.Array]
  frames_per_step: int
  recipe: str

  def compile(self) -> dict[str, float]:
    """Compiles the step(s) ahead of time; later `run` calls use these programs.

    Returns {"compile_s": seconds, "flops": FLOPs per step by XLA's cost analysis
    of the compiled programs, "flops_hlo": the same of the unoptimised HLO}; NaN
    where the backend reports none.
    """
    started = time.perf_counter()
    lowered = [self.generator_step.lower(self.state, self.frozen, self.batch)]
    self.generator_step = lowered[0].compile()
    if self.discriminator_step is not None:
      generated = lowered[0].out_info[2]
      lowered.append(self.discriminator_step.lower(self.state, generated, self.batch["target"]))
      self.discriminator_step = lowered[1].compile()
    seconds = time.perf_counter() - started
    compiled = [self.generator_step, self.discriminator_step][:len(lowered)]
    return {"compile_s": seconds, "flops": sum(_flops(c.cost_analysis()) for c in compiled),
            "flops_hlo": sum(_flops(x.cost_analysis()) for x in lowered)}

  def run(self, state: PyTree) -> tuple[PyTree, jax.Array]:
    """One full step as the trainer runs it; returns (new state, generator loss).

    The state argument is donated (invalid afterwards).
    """
    state, metrics, generated = self.generator_step(state, self.frozen, self.batch)
    if self.discriminator_step is not None:
      state, _ = self.discriminator_step(state, generated, self.batch["target"])
    return state, metrics["loss"]


def _flops(analysis) -> float:
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return float("nan")
  return float(analysis["flops"])


def build_train_step(model: str, dtype: str, batch_size: int, seed: int = 0,
                     gpu_autotune_level: int = -1) -> TrainStep:
  """The project's generator train step for `model`'s LRS2 recipe at `dtype` compute
  (`gpu_autotune_level`: `config.gpu_autotune_level`; -1: XLA's default)."""
  config = load_config(model, dtype, batch_size)
  options = profiling.compiler_options(gpu_autotune_level)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  loss_config = config.loss
  frozen = {"expert": components.init_expert(config, None)}
  lpips_fn = None
  if loss_config.lpips_weight:
    lpips_fn, frozen["lpips"] = components.load_lpips(config)
  frozen = sharding.put_replicated(mesh, frozen)
  generator = components.build_generator(config)
  expert = components.build_syncnet(config, dtype="float32")
  discriminator = (components.build_discriminator(config) if loss_config.adversarial_weight
                   else None)
  tx = state_lib.make_optimizer(config.optimizer, config.num_train_steps)
  disc_tx = state_lib.make_optimizer(config.disc_optimizer, config.num_train_steps)
  host_batch = random_batch(batch_size, config.img_size, seed)
  keys = jax.random.split(jax.random.key(seed), 2)
  faces = np.zeros((1, config.img_size, config.img_size, 6), np.float32)  # for init shapes
  state = state_lib.GeneratorTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(seed),
      generator=state_lib.init_model_state(
          generator, tx, keys[0],
          (host_batch["mel_chunks"][:1, 0], faces)),
      discriminator=(state_lib.init_model_state(discriminator, disc_tx, keys[1],
                                                (faces[..., :3],))
                     if discriminator is not None else None),
      sync_weight=jnp.asarray(loss_config.sync_weight, jnp.float32))
  state = sharding.put_replicated(mesh, state)
  generator_step = sharding.jit_train_step(
      steps.make_generator_train_step(generator, tx, expert, lpips_fn, discriminator,
                                      loss_config.lpips_weight, loss_config.adversarial_weight),
      mesh, state, num_replicated_args=1, num_outputs=3, batch_outputs=(2,),
      compiler_options=options)
  discriminator_step = (sharding.jit_train_step(
      steps.make_discriminator_train_step(discriminator, disc_tx), mesh, state,
      num_batch_args=2, compiler_options=options) if discriminator is not None else None)
  return TrainStep(generator_step=generator_step, discriminator_step=discriminator_step,
                   state=state, frozen=frozen,
                   batch=sharding.make_global_batch(mesh, host_batch),
                   frames_per_step=batch_size * WINDOW_FRAMES,
                   recipe=train_bench_util.recipe_name(config))


@dataclasses.dataclass
class SyncNetStep:
  """The SyncNet expert's training step (configs/syncnet_lrs2.py), as `TrainStep`."""
  step: Callable
  state: PyTree
  batch: dict[str, jax.Array]
  frames_per_step: int
  recipe: str = "SyncNet BCE"

  def compile(self) -> dict[str, float]:
    started = time.perf_counter()
    lowered = self.step.lower(self.state, self.batch)
    self.step = lowered.compile()
    return {"compile_s": time.perf_counter() - started,
            "flops": _flops(self.step.cost_analysis()), "flops_hlo": _flops(lowered.cost_analysis())}

  def run(self, state: PyTree) -> tuple[PyTree, jax.Array]:
    state, metrics = self.step(state, self.batch)
    return state, metrics["loss"]


def build_syncnet_step(dtype: str, batch_size: int, seed: int = 0,
                       gpu_autotune_level: int = -1) -> SyncNetStep:
  """The project's SyncNet train step at `dtype` compute, on a batch as the pipeline sends
  it (uint8 lower halves of T frames, float32 mel)."""
  config = train_bench_util.load_config("syncnet")
  config.dtype, config.batch_size = dtype, batch_size
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  syncnet = components.build_syncnet(config)
  tx = state_lib.make_optimizer(config.optimizer, config.num_train_steps)
  rng = np.random.default_rng(seed)
  s, t = config.img_size, WINDOW_FRAMES
  host_batch = {"mel": rng.normal(size=(batch_size, 80, 16, 1)).astype(np.float32),
                "lower_halves": rng.integers(0, 256, (batch_size, t, s // 2, s, 3), np.uint8),
                "label": (np.arange(batch_size) % 2).astype(np.float32)}
  state = state_lib.SyncNetTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(seed),
      syncnet=state_lib.init_model_state(
          syncnet, tx, jax.random.key(seed),
          (host_batch["mel"][:1], np.zeros((1, s // 2, s, 3 * t), np.float32))))
  state = sharding.put_replicated(mesh, state)
  step = sharding.jit_train_step(
      steps.make_syncnet_train_step(syncnet, tx), mesh, state,
      compiler_options=profiling.compiler_options(gpu_autotune_level))
  return SyncNetStep(step=step, state=state, batch=sharding.make_global_batch(mesh, host_batch),
                     frames_per_step=batch_size * t)
