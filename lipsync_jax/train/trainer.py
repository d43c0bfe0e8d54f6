"""Training loops of SyncNet and the generators: data -> step -> metrics -> checkpoints.

`train_syncnet(config, workdir)` and `train_generator(config, workdir)` read record
shards with the Grain samplers of `lipsync_jax.input_pipeline`, run the jitted steps of
`train/steps.py` on a mesh over all devices (`train/sharding.py`), and write under
`workdir`:
  checkpoints/<step>/   orbax: train state (params, batch stats, optimizer states,
                        step, RNG, sync-weight schedule) + Grain iterator state;
                        the latest `keep_checkpoints` and the best by eval metric.
  tensorboard/          scalars (train and eval), image grids (generator).
  profile/              a `jax.profiler` trace of `config.profile_steps`, if set.
A run restarted with the same workdir resumes from the latest checkpoint; the
result is bit-identical to an uninterrupted run. Compiled steps go to the persistent
compilation cache `config.compilation_cache_dir` (`train/profiling.py`), so a
restarted run loads them instead of compiling them again. Models, frozen networks
and data are built by `train/components.py`; reports go through `train/reporting.py`.
"""

import functools
import logging
import pathlib
from typing import Callable

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from clu import metrics as clu_metrics

from lipsync_jax.errors import LipsyncError
from lipsync_jax.train import components, profiling, reporting, sharding
from lipsync_jax.train import state as state_lib, steps
from lipsync_jax.types import PyTree
_preservation = ocp.checkpoint_managers.preservation_policy


class NonFiniteLossError(LipsyncError, FloatingPointError):
  """A loss became NaN or infinite and the config says to stop."""


class Checkpointer:
  """Orbax `CheckpointManager` for (train state, Grain iterator): latest N + best.

  Saves are asynchronous; `close()` waits for the last one.
  """

  def __init__(self, directory: pathlib.Path, keep: int, best_metric: str):
    policy = _preservation.AnyPreservationPolicy([
        _preservation.LatestN(n=keep),
        _preservation.BestN(get_metric_fn=lambda m: m[best_metric], reverse=True, n=1,
                            keep_checkpoints_without_metrics=False)])
    # best_fn also makes the manager write the metrics next to each checkpoint,
    # so a later reader (`checkpoints.load_variables`) finds the best one.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                           enable_async_checkpointing=True,
                                           best_fn=lambda m: m[best_metric], best_mode="min")
    self._manager = ocp.CheckpointManager(directory.absolute(), options=options)

  def restore_latest(self, state: PyTree, iterator: grain.DatasetIterator,
                     shardings: PyTree) -> PyTree:
    """The latest saved state (iterator restored in place), or `state` if none.

    The state is read straight into `shardings` (per leaf, `sharding.state_sharding`):
    each process reads the parts its devices hold, with no transfer between hosts.
    """
    step = self._manager.latest_step()
    if step is None:
      return state
    abstract = jax.tree.map(
        lambda x, target: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target), state,
        shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=grain.checkpoint.CheckpointRestore(iterator)))
    logging.info("Resumed from %s at step %d", self._manager.directory, step)
    return restored["state"]

  def save(self, step: int, state: PyTree, iterator: grain.DatasetIterator,
           eval_metrics: dict[str, float] | None = None) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)),
                       metrics=eval_metrics, force=True)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _check_finite(step: int, metrics: dict[str, float], on_nonfinite: str) -> bool:
  """Whether every metric of `step` is finite; "stop" raises `NonFiniteLossError`
  naming the step and the losses, "skip" logs them (the step left the state unchanged)."""
  bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
  if not bad:
    return True
  message = f"non-finite loss at step {step}: " + ", ".join(f"{k}={metrics[k]}" for k in bad)
  if on_nonfinite == "stop":
    raise NonFiniteLossError(message + " (set --config.on_nonfinite=skip to skip such steps)")
  logging.warning("%s; update skipped", message)
  return False


def _check_finished_steps(unchecked: list[tuple[int, dict[str, jax.Array]]],
                          max_behind: int = 2) -> list[tuple[int, dict[str, jax.Array]]]:
  """Checks (stop mode) the steps of `unchecked` whose metrics are computed; returns the rest.

  Reading a step's metrics before it is computed would make the host wait for the device
  every step (and on the CPU a read queues behind the step running; measured: 15% fewer
  steps/s), so only finished steps are read, oldest first; the host waits only when
  more than `max_behind` steps are unchecked, so a non-finite loss stops the run within
  `max_behind` + 1 steps of it.
  """
  while unchecked and (len(unchecked) > max_behind
                       or all(x.is_ready() for x in jax.tree.leaves(unchecked[0][1]))):
    step, metrics = unchecked.pop(0)
    _check_finite(step, jax.device_get(metrics), "stop")
  return unchecked


def _collect(step_metrics: list[tuple[int, dict[str, jax.Array]]], on_nonfinite: str
             ) -> dict[str, float]:
  """Averages per-step metrics with `clu.metrics`, leaving out non-finite steps
  (`_check_finite(on_nonfinite)`: "stop" raises at the first)."""
  host = [(n, jax.device_get(m)) for n, m in step_metrics]
  for n, m in host:
    _check_finite(n, m, on_nonfinite)
  finite = [m for _, m in host if all(np.isfinite(v) for v in m.values())]
  if not finite:
    return {}
  collection = clu_metrics.Collection.create(
      **{k: clu_metrics.Average.from_output(k) for k in finite[0]})
  merged = collection.single_from_model_output(**finite[0])
  for m in finite[1:]:
    merged = merged.merge(collection.single_from_model_output(**m))
  return {k: float(v) for k, v in merged.compute().items()}


def _evaluate(eval_step, state, args, eval_iterator, mesh, num_batches: int
              ) -> dict[str, float]:
  """Eval metrics averaged over `num_batches` batches of `eval_iterator`."""
  per_batch = []
  for _ in range(num_batches):
    out = eval_step(state, *args, sharding.make_global_batch(mesh, next(eval_iterator)))
    per_batch.append((int(state.step), out[0] if isinstance(out, tuple) else out))
  return _collect(per_batch, "skip")


def _train_loop(config, workdir, state, train_step, eval_fn, data, checkpoint_metric,
                after_step=None, on_eval=None):
  """The loop shared by both trainers.

  Args:
    train_step: `(state, batch) -> (state, metrics, extra)`.
    eval_fn: `state -> eval metrics dict` (host floats).
    data: `components.Data` with the train iterator and the mesh.
    checkpoint_metric: the eval metric (lower is better) that picks the best.
    after_step: optional `(state, step, batch, extra, reporter)` hook (images).
    on_eval: optional `(state, eval_metrics) -> state` (the sync schedule).

  The run's first two steps are waited for and timed (`profiling.StepTimer`): the log
  has both times and the train scalars get `compile_seconds` once. `profile_steps`
  writes a trace to `<workdir>/profile` (`profiling.Profiler`).
  """
  workdir = pathlib.Path(workdir)
  checkpointer = Checkpointer(workdir / "checkpoints", config.keep_checkpoints,
                              checkpoint_metric)
  reporter = reporting.Reporter(workdir / "tensorboard", config.num_train_steps)
  profiler = profiling.Profiler(config.profile_steps, workdir / "profile")
  try:
    shardings = sharding.state_sharding(data.mesh, state, config.mesh.shard_weights)
    split = [s for s in jax.tree.leaves(shardings) if sharding.MODEL_AXIS in s.spec]
    if split:
      logging.info("Train state: %d of %d arrays split over the %r mesh axis", len(split),
                   len(jax.tree.leaves(shardings)), sharding.MODEL_AXIS)
    state = checkpointer.restore_latest(state, data.train_iterator, shardings)
    state = jax.device_put(state, shardings)
    first_step = int(state.step)
    timer = profiling.StepTimer(first_step + 1)
    pending, unchecked = [], []
    for step in range(first_step + 1, config.num_train_steps + 1):
      batch = sharding.make_global_batch(data.mesh, next(data.train_iterator))
      last = step == config.num_train_steps
      profiler.before(step)
      timer.start(step)
      state, metrics, extra = train_step(state, batch)  # Returns once compiled: async.
      timer.stop(step, (state, metrics))  # Waits for the first two steps only.
      reporter.advance(step)
      pending.append((step, metrics))
      if config.on_nonfinite == "stop":
        unchecked = _check_finished_steps(unchecked + [(step, metrics)])
      if after_step is not None:
        after_step(state, step, batch, extra, reporter)
      if step % config.log_every_steps == 0 or last:
        reporter.scalars(step, {**_collect(pending, config.on_nonfinite),
                                **timer.scalars(last)}, "train")
        pending = []
      eval_metrics = None
      if step % config.eval_every_steps == 0 or last:
        reporter.phase("evaluating")
        eval_metrics = eval_fn(state)
        reporter.scalars(step, eval_metrics, "eval")
        if on_eval is not None:
          state = on_eval(state, eval_metrics)
      if step % config.checkpoint_every_steps == 0 or last or eval_metrics:
        checkpointer.save(step, state, data.train_iterator,
                          {checkpoint_metric: eval_metrics[checkpoint_metric]}
                          if eval_metrics else None)
      profiler.after(step, (state, metrics), last)
  finally:
    profiler.close()
    checkpointer.close()
    reporter.close()
    data.close()
  return state


def _compiling_under_cache(train: Callable) -> Callable:
  """`train(config, workdir)` that first checks `config.profile_steps` (before anything
  is built), then compiles under the persistent cache `config.compilation_cache_dir`
  (`profiling`; JAX's settings are restored on return)."""

  @functools.wraps(train)
  def wrapped(config: ml_collections.ConfigDict, workdir: str):
    profiling.parse_profile_steps(config.profile_steps)
    with profiling.persistent_compilation_cache(config.compilation_cache_dir, workdir):
      return train(config, workdir)

  return wrapped


@_compiling_under_cache
def train_syncnet(config: ml_collections.ConfigDict, workdir: str
                  ) -> state_lib.SyncNetTrainState:
  """Trains the SyncNet expert per `configs/syncnet_lrs2.py`; returns the final state."""
  sharding.initialize_distributed(config.distributed)
  data = components.Data(config, kind="syncnet")
  syncnet = components.build_syncnet(config)
  tx = state_lib.make_optimizer(config.optimizer, config.num_train_steps)
  init_variables = (components.load_syncnet_variables(config.init_checkpoint, "init",
                                                      config.data.channel_order)
                    if config.init_checkpoint else None)
  example = data.example_batch()
  state = state_lib.SyncNetTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(config.seed),
      syncnet=state_lib.init_model_state(
          syncnet, tx, jax.random.key(config.seed), (example["mel"], example["faces"]),
          init_variables))
  loss_config = config.loss
  options = profiling.compiler_options(config.gpu_autotune_level)
  train = sharding.jit_train_step(
      steps.make_syncnet_train_step(syncnet, tx, loss_config.contrastive_weight,
                                    loss_config.temperature,
                                    loss_config.in_batch_negatives_weight),
      data.mesh, state, shard_weights=config.mesh.shard_weights, compiler_options=options)
  evaluate = sharding.jit_eval_step(steps.make_syncnet_eval_step(syncnet), data.mesh, state,
                                    shard_weights=config.mesh.shard_weights,
                                    compiler_options=options)

  def train_step(state, batch):
    state, metrics = train(state, batch)
    return state, metrics, None

  def eval_fn(state):
    return _evaluate(evaluate, state, (), data.eval_iterator(), data.mesh,
                     config.num_eval_batches)

  return _train_loop(config, workdir, state, train_step, eval_fn, data, "loss")


@_compiling_under_cache
def train_generator(config: ml_collections.ConfigDict, workdir: str
                    ) -> state_lib.GeneratorTrainState:
  """Trains Wav2Lip / AttnWav2Lip per `configs/attn_wav2lip_lrs2.py`; returns the state."""
  sharding.initialize_distributed(config.distributed)
  loss_config = config.loss
  frozen = {"expert": components.init_expert(config, components.load_syncnet_variables(
      config.expert.checkpoint, "expert", config.data.channel_order))}
  lpips_fn = None
  if loss_config.lpips_weight:
    lpips_fn, frozen["lpips"] = components.load_lpips(config)
  data = components.Data(config, kind="generator")
  frozen = sharding.put_replicated(data.mesh, frozen)
  generator = components.build_generator(config)
  expert = components.build_syncnet(config, dtype="float32")
  discriminator = (components.build_discriminator(config) if loss_config.adversarial_weight
                   else None)
  mouth_weight = loss_config.mouth_weight
  tx = state_lib.make_optimizer(config.optimizer, config.num_train_steps)
  disc_tx = state_lib.make_optimizer(config.disc_optimizer, config.num_train_steps)
  example = data.example_batch()
  frames = example["target"][:, 0]
  keys = jax.random.split(jax.random.key(config.seed), 2)
  init_variables = (components.load_generator_variables(config)
                    if config.init_checkpoint else None)
  state = state_lib.GeneratorTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(config.seed),
      generator=state_lib.init_model_state(
          generator, tx, keys[0], (example["mel_chunks"][:, 0], example["inputs"][:, 0]),
          init_variables),
      discriminator=(state_lib.init_model_state(discriminator, disc_tx, keys[1], (frames,))
                     if discriminator is not None else None),
      sync_weight=state_lib.initial_sync_weight(loss_config))

  shard = config.mesh.shard_weights
  options = profiling.compiler_options(config.gpu_autotune_level)
  gen_step = sharding.jit_train_step(
      steps.make_generator_train_step(generator, tx, expert, lpips_fn, discriminator,
                                      loss_config.lpips_weight,
                                      loss_config.adversarial_weight, mouth_weight),
      data.mesh, state, num_replicated_args=1, num_outputs=3, batch_outputs=(2,),
      shard_weights=shard, compiler_options=options)
  disc_step = (sharding.jit_train_step(
      steps.make_discriminator_train_step(discriminator, disc_tx), data.mesh, state,
      num_batch_args=2, shard_weights=shard, compiler_options=options)
               if discriminator is not None else None)
  evaluate = sharding.jit_eval_step(
      steps.make_generator_eval_step(generator, expert, lpips_fn, mouth_weight), data.mesh,
      state, num_replicated_args=1, num_outputs=2, batch_outputs=(1,), shard_weights=shard,
      compiler_options=options)

  def train_step(state, batch):
    state, metrics, generated = gen_step(state, frozen, batch)
    if disc_step is not None:
      state, disc_metrics = disc_step(state, generated, batch["target"])
      metrics = {**metrics, **disc_metrics}
    return state, metrics, generated

  def after_step(state, step, batch, generated, reporter):
    if step % config.image_every_steps == 0:
      reporter.image_grids(step, batch, generated, "train")

  def eval_fn(state):
    metrics = _evaluate(evaluate, state, (frozen,), data.eval_iterator(), data.mesh,
                        config.num_eval_batches)
    metrics["l1_plus_sync"] = metrics["l1"] + metrics["sync"]
    return metrics

  def on_eval(state, eval_metrics):
    updated = state_lib.update_sync_weight(state, eval_metrics["sync"], loss_config)
    if updated is not state:
      logging.info("eval sync loss %.4f < %.2f: sync loss weight now %.3f",
                   eval_metrics["sync"], loss_config.sync_threshold, loss_config.sync_weight)
      updated = jax.device_put(updated, sharding.state_sharding(data.mesh, updated, shard))
    return updated

  return _train_loop(config, workdir, state, train_step, eval_fn, data, "l1_plus_sync",
                     after_step=after_step, on_eval=on_eval)
