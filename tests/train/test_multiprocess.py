"""Two processes joined by `jax.distributed` (CPU, gloo) run the SyncNet step like one.

The multi-host path of `train/sharding.py`: `initialize_distributed` from the config,
a mesh over both processes' devices, each process feeding its rows of the global batch
(`process_batch_slice` + `make_global_batch`). Each process and a single-process run
of the same step write their results; all three must agree. The in-batch contrastive
term is on, so the step needs every row of the global batch in every loss.

The step runs in float64 (`jax_enable_x64`): its gradients are compared directly, per
weight array, at 1e-9 relative, which float32 rounding alone would exceed by far
(BatchNorm's backward pass cancels; see test_sharding.py).

This file is also the worker script (`python test_multiprocess.py ...`).
"""

import os
import socket
import subprocess
import sys

import numpy as np

import gradient_recorder

TOLERANCE = 1e-9  # Batch statistics and metrics: max |a - b| / (1 + |b|), float64.
GRADIENT_TOLERANCE = 1e-9  # Relative, per weight array (`gradient_recorder`), float64.
BATCH = 8


def _worker(num_processes: int, process_id: int, address: str, out_path: str) -> None:
  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  import ml_collections
  from lipsync_jax.models.syncnet import SyncNet
  from lipsync_jax.train import sharding, state as state_lib, steps

  sharding.initialize_distributed(ml_collections.ConfigDict({
      "num_processes": num_processes, "coordinator_address": address,
      "process_id": process_id}))
  assert jax.process_count() == num_processes, jax.process_count()
  rng = np.random.default_rng(0)
  batch = {"mel": rng.normal(size=(BATCH, 80, 16, 1)),
           "faces": rng.random((BATCH, 48, 96, 15)),
           "label": (np.arange(BATCH) % 2).astype(np.float64)}
  # The optimizer state holds the step's gradients: compared directly.
  model = SyncNet(width_multiplier=0.25, dtype=jnp.float64, param_dtype=jnp.float64)
  tx = gradient_recorder.record_gradients()
  state = state_lib.SyncNetTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(1),
      syncnet=state_lib.init_model_state(model, tx, jax.random.key(0),
                                         (batch["mel"][:1], batch["faces"][:1])))
  widen = lambda x: x.astype(np.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
  state = jax.tree.map(widen, jax.device_get(state))  # The train state keeps float32.
  mesh = sharding.make_mesh()
  sharding.check_batch_size(BATCH, mesh)
  rows = sharding.process_batch_slice(BATCH)
  step = sharding.jit_train_step(
      steps.make_syncnet_train_step(model, tx, contrastive_weight=0.5), mesh, state)
  state, metrics = step(sharding.put_replicated(mesh, state),
                        sharding.make_global_batch(mesh, {k: v[rows] for k, v in batch.items()}))
  local = lambda x: np.asarray(x.addressable_data(0))  # Replicated: any local copy.
  leaves = jax.tree_util.tree_leaves_with_path({
      "gradients": state.syncnet.opt_state, "batch_stats": state.syncnet.batch_stats,
      "metrics": metrics})
  np.savez(out_path, devices=jax.device_count(),
           **{jax.tree_util.keystr(path): local(leaf) for path, leaf in leaves})


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
  # -O1: at -O0 float64 convolutions are ~80x slower; the default level compiles slower.
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=1")
  address = f"127.0.0.1:{_free_port()}"
  runs = {"single": [sys.executable, __file__, "1", "0", "", str(tmp_path / "single.npz")]}
  for pid in range(2):
    runs[f"process{pid}"] = [sys.executable, __file__, "2", str(pid), address,
                             str(tmp_path / f"process{pid}.npz")]
  workers = {name: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, cmd in runs.items()}
  for name, worker in workers.items():
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, (name, stderr[-3000:])

  single = np.load(tmp_path / "single.npz")
  assert int(single["devices"]) == 1
  for pid in range(2):
    joined = np.load(tmp_path / f"process{pid}.npz")
    assert int(joined["devices"]) == 2
    assert set(joined.files) == set(single.files)
    names = sorted(set(single.files) - {"devices"})
    gradient_names = [n for n in names if n.startswith("['gradients']")]
    difference, _ = gradient_recorder.relative_difference(
        [joined[n] for n in gradient_names], [single[n] for n in gradient_names])
    assert difference <= GRADIENT_TOLERANCE, (pid, difference)
    for name in set(names) - set(gradient_names):
      a, b = joined[name].astype(np.float64), single[name].astype(np.float64)
      difference = float(np.max(np.abs(a - b) / (1.0 + np.abs(b)), initial=0.0))
      assert difference <= TOLERANCE, (pid, name, difference)
  # The step did something: the loss is finite and the gradients are not zero.
  assert np.isfinite(single["['metrics']['loss']"])
  assert max(np.abs(single[n]).max() for n in single.files if "gradients" in n) > 0


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
