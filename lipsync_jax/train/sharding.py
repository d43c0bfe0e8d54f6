"""Device mesh, shardings of batches and train states, and multi-host start-up.

One mesh over all devices with axes ("data", "model"); batches are split over
"data". Train states are replicated, or, with `shard_weights` and a "model" axis
of size m > 1 (`config.mesh.model_axis_size`, `config.mesh.shard_weights`),
every state array of at least `MIN_SHARDED_SIZE` elements (weights, their
optimizer moments) is split m ways along its last axis that m divides (a
kernel's output channels): each device holds 1/m of them and XLA's SPMD
partitioner splits the layers' computation to match, inserting the
collectives. Our models (30M parameters) fit every accelerator replicated;
the option is for larger variants. The jitted steps get explicit in/out
shardings and donate the state they replace.

Multi-host: every process calls `initialize_distributed` first, builds the
same mesh over all global devices, reads its own part of each global batch
(`process_batch_slice`) and assembles the global array with
`jax.make_array_from_process_local_data`.
"""

import math
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lipsync_jax.errors import ConfigError
from lipsync_jax.types import PyTree

DATA_AXIS = "data"
MODEL_AXIS = "model"
MIN_SHARDED_SIZE = 2**14  # Smaller arrays (biases, norms, scalars) stay replicated.


def _distributed_initialized() -> bool:
  is_initialized = getattr(jax.distributed, "is_initialized", None)  # public in newer JAX
  if is_initialized is not None:
    return is_initialized()
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  return distributed.global_state.client is not None


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Calls `jax.distributed.initialize` when the config asks for several processes.

  `config` fields: `num_processes` (1 = single host, nothing to do),
  `coordinator_address` ("host:port"), `process_id`. On managed clusters
  (Cloud TPU, SLURM) set `num_processes` to -1 to let JAX auto-detect them.
  Must run before anything touches a device. Once JAX's distributed client is up,
  later calls do nothing (the training tools call it before the trainer does).
  """
  if config.num_processes == 1 or _distributed_initialized():
    return
  if config.num_processes == -1:
    jax.distributed.initialize()
    return
  jax.distributed.initialize(coordinator_address=config.coordinator_address,
                             num_processes=config.num_processes,
                             process_id=config.process_id)


def make_mesh(model_axis_size: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, model) mesh over `devices` (all global devices by default)."""
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) % model_axis_size:
    raise ConfigError(f"{len(devices)} devices do not split into a model axis of "
                     f"{model_axis_size}")
  grid = np.asarray(devices).reshape(len(devices) // model_axis_size, model_axis_size)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data", the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def state_sharding(mesh: Mesh, state: PyTree, shard_weights: bool = False) -> PyTree:
  """Per-leaf sharding of a train state (arrays or `jax.ShapeDtypeStruct`s).

  Replicated on every device; with `shard_weights`, arrays of at least
  `MIN_SHARDED_SIZE` elements are split over "model" along their last axis that
  the axis size divides (replicated if none does, or if the axis has size 1).
  """
  model_size = mesh.shape[MODEL_AXIS]

  def leaf(x) -> NamedSharding:
    shape = tuple(x.shape)
    if shard_weights and model_size > 1 and math.prod(shape) >= MIN_SHARDED_SIZE:
      for axis in reversed(range(len(shape))):
        if shape[axis] % model_size == 0:
          spec = [None] * len(shape)
          spec[axis] = MODEL_AXIS
          return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)

  return jax.tree.map(leaf, state)


def put_replicated(mesh: Mesh, tree: PyTree) -> PyTree:
  """Copies a host (or single-device) pytree onto every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises ConfigError unless the batch splits evenly over data devices and hosts."""
  data_size = mesh.shape[DATA_AXIS]
  if global_batch_size % data_size or global_batch_size % jax.process_count():
    raise ConfigError(f"batch_size {global_batch_size} is not divisible by the {data_size} "
                     f"data-parallel devices and {jax.process_count()} processes")


def process_batch_slice(global_batch_size: int) -> slice:
  """The rows of each global batch that this process reads."""
  per_process = global_batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def make_global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles this process's rows of a batch into global arrays sharded on "data"."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def jit_train_step(step: Callable, mesh: Mesh, state: PyTree, num_batch_args: int = 1,
                   num_replicated_args: int = 0, num_outputs: int = 2,
                   batch_outputs: Sequence[int] = (), shard_weights: bool = False,
                   compiler_options: dict[str, Any] | None = None) -> Callable:
  """`jax.jit` of `step(state, *replicated_args, *batch_args)` with explicit shardings.

  Args:
    step: a pure step function whose first argument and first output are the
      train state.
    mesh: the device mesh.
    state: an example state (only its tree structure is used).
    num_batch_args: trailing arguments sharded on "data" (pytrees of arrays).
    num_replicated_args: arguments after the state that are replicated (e.g.
      the frozen networks' variables).
    num_outputs: number of outputs (state, metrics, ...).
    batch_outputs: indices of outputs sharded on "data" (e.g. generated frames).
    shard_weights: the state's large arrays split over "model" (`state_sharding`);
      the state must be placed with the same `state_sharding`.
    compiler_options: XLA options of this program (`profiling.compiler_options`).

  Returns:
    The jitted step; the state argument is donated.
  """
  state_shardings = state_sharding(mesh, state, shard_weights)
  in_shardings = ((state_shardings,) + (replicated(mesh),) * num_replicated_args
                  + (batch_sharding(mesh),) * num_batch_args)
  out_shardings = tuple(
      state_shardings if i == 0 else
      batch_sharding(mesh) if i in batch_outputs else replicated(mesh)
      for i in range(num_outputs))
  return jax.jit(step, in_shardings=in_shardings, out_shardings=out_shardings,
                 donate_argnums=(0,), compiler_options=compiler_options)


def jit_eval_step(step: Callable, mesh: Mesh, state: PyTree, num_batch_args: int = 1,
                  num_replicated_args: int = 0, batch_outputs: Sequence[int] = (),
                  num_outputs: int = 1, shard_weights: bool = False,
                  compiler_options: dict[str, Any] | None = None) -> Callable:
  """`jax.jit` of an eval step `step(state, *replicated_args, *batch_args)`, no donation
  (arguments as `jit_train_step`'s)."""
  in_shardings = ((state_sharding(mesh, state, shard_weights),)
                  + (replicated(mesh),) * num_replicated_args
                  + (batch_sharding(mesh),) * num_batch_args)
  outs = tuple(batch_sharding(mesh) if i in batch_outputs else replicated(mesh)
               for i in range(num_outputs))
  return jax.jit(step, in_shardings=in_shardings,
                 out_shardings=outs if num_outputs > 1 else outs[0],
                 compiler_options=compiler_options)
