"""Sharded steps on 8 fake CPU devices equal the single-device steps: 8-way data
parallel with the state replicated, and a 4 x 2 (data, model) mesh with the large
weights split over "model".

The comparison runs in a subprocess (this file as a script) so that only it sees
8 CPU devices (`--xla_force_host_platform_device_count=8`); the test session
keeps its own device count.
"""

import os
import subprocess
import sys

import numpy as np

TOLERANCE = 1e-5
# Generated frames (sigmoid outputs in [0, 1]) differ by up to ~1.5e-5 (measured):
# train-mode BatchNorm's batch variance E[x^2] - E[x]^2 is reduced in another order.
GENERATED_TOLERANCE = 5e-5


def _tiny_generator():
  from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
  return AttnWav2Lip(widths=(8, 8, 16), encoder_blocks=1, decoder_blocks=1, cbam_reduction=4)


def _max_difference(a, b) -> float:
  """max |a - b| / (1 + |b|) over all leaves: absolute below 1, relative above."""
  import jax
  def leaf(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y) / (1.0 + np.abs(y)), initial=0.0))
  return max(jax.tree.leaves(jax.tree.map(leaf, a, b)))


def _run_check() -> None:
  """Runs each step on a 1-device and an 8-device mesh; prints the max differences."""
  import jax
  import jax.numpy as jnp
  import optax
  from lipsync_jax.models.syncnet import SyncNet
  from lipsync_jax.models.wav2lip import QualityDiscriminator
  from lipsync_jax.train import sharding, state as state_lib, steps

  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  b, t, s = 8, 5, 96
  # SGD at the recipes' learning rate 1e-4. Gradients of these deep BatchNorm
  # networks differ between reduction orders by up to ~2% in some conv kernels
  # (measured; BN backward cancels), and Adam would turn float noise in gradients
  # that are 0 in real arithmetic (conv biases before BN) into +-lr steps.
  # Forward results (losses, batch statistics, generated frames) are compared
  # at full scale.
  tx = optax.sgd(1e-4)
  mel = rng.normal(size=(b, 80, 16, 1)).astype(np.float32)
  syncnet_batch = {"mel": mel, "faces": rng.random((b, s // 2, s, 15), np.float32),
                   "label": (np.arange(b) % 2).astype(np.float32)}
  generator_batch = {"inputs": rng.random((b, t, s, s, 6), np.float32),
                     "mel_chunks": rng.normal(size=(b, t, 80, 16, 1)).astype(np.float32),
                     "sync_mel": mel, "target": rng.random((b, t, s, s, 3), np.float32)}
  syncnet, generator, discriminator = SyncNet(), _tiny_generator(), QualityDiscriminator()
  key = jax.random.key(0)
  syncnet_state = state_lib.SyncNetTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(1),
      syncnet=state_lib.init_model_state(syncnet, tx, key, (mel[:1], syncnet_batch["faces"][:1])))
  expert = {"expert": state_lib.jit_init(syncnet)(jax.random.key(1), mel[:1],
                                            syncnet_batch["faces"][:1])}
  gen_state = state_lib.GeneratorTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(2),
      generator=state_lib.init_model_state(
          generator, tx, jax.random.key(2),
          (generator_batch["mel_chunks"][:1, 0], generator_batch["inputs"][:1, 0])),
      discriminator=state_lib.init_model_state(
          discriminator, tx, jax.random.key(3), (generator_batch["target"][:1, 0],)),
      sync_weight=jnp.asarray(0.03, jnp.float32))
  syncnet_state, gen_state, expert = jax.device_get((syncnet_state, gen_state, expert))
  # Half of the discriminator batch: 8 samples of one frame each (cheaper than 5).
  generated = rng.random((b, 1, s, s, 3), np.float32)

  results = {}
  # "data": 8-way data parallel, state replicated. "model": a 4 x 2 mesh whose
  # "model" axis splits the large weights and their optimizer moments.
  for name, mesh, shard in (("single", sharding.make_mesh(devices=jax.devices()[:1]), False),
                            ("data", sharding.make_mesh(), False),
                            ("model", sharding.make_mesh(model_axis_size=2), True)):
    put = lambda tree: jax.device_put(tree, sharding.replicated(mesh))
    put_state = lambda tree: jax.device_put(tree, sharding.state_sharding(mesh, tree, shard))
    batch = lambda tree: sharding.make_global_batch(mesh, tree)
    # With the in-batch contrastive term: its (B, B) similarity matrix spans all shards.
    sync_step = sharding.jit_train_step(
        steps.make_syncnet_train_step(syncnet, tx, contrastive_weight=0.5), mesh, syncnet_state,
        shard_weights=shard)
    gen_step = sharding.jit_train_step(
        steps.make_generator_train_step(generator, tx, syncnet, None, None, 0.0, 0.0),
        mesh, gen_state, num_replicated_args=1, num_outputs=3, batch_outputs=(2,),
        shard_weights=shard)
    disc_step = sharding.jit_train_step(
        steps.make_discriminator_train_step(discriminator, tx), mesh, gen_state,
        num_batch_args=2, shard_weights=shard)
    out_sync = sync_step(put_state(syncnet_state), batch(syncnet_batch))
    out_gen = gen_step(put_state(gen_state), put(expert), batch(generator_batch))
    target = batch({"t": generator_batch["target"][:, :1]})["t"]
    out_disc = disc_step(put_state(gen_state), batch({"g": generated})["g"], target)
    if name != "single":
      assert len(out_gen[2].sharding.device_set) == 8
      assert len(batch(syncnet_batch)["mel"].addressable_shards) == 8
    if name == "model":  # Each device holds half of every large weight.
      for params in (out_sync[0].syncnet.params, out_gen[0].generator.params,
                     out_disc[0].discriminator.params):
        split = [x for x in jax.tree.leaves(params) if "model" in x.sharding.spec]
        assert split, "no weight is split over the model axis"
        assert all(x.addressable_shards[0].data.size * 2 == x.size for x in split)
    results[name] = jax.device_get((out_sync, out_gen, out_disc))

  for mesh_name in ("data", "model"):
    for i, step_name in enumerate(("syncnet", "generator", "discriminator")):
      outputs = ("state", "metrics", "generated")[:len(results["single"][i])]
      for j, output_name in enumerate(outputs):
        difference = _max_difference(results["single"][i][j], results[mesh_name][i][j])
        print(f"{mesh_name}:{step_name}/{output_name} {difference:.3e}")


def test_sharded_steps_equal_single_device_steps():
  # -O0: a third less CPU time here (compilation dominates); same numbers.
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
             " --xla_backend_optimization_level=0")
  result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  differences = dict(line.split() for line in result.stdout.strip().splitlines())
  outputs = {"syncnet/state", "syncnet/metrics", "generator/state", "generator/metrics",
             "generator/generated", "discriminator/state", "discriminator/metrics"}
  assert set(differences) == {f"{mesh}:{output}" for mesh in ("data", "model")
                              for output in outputs}, result.stdout
  for name, difference in differences.items():
    tolerance = GENERATED_TOLERANCE if name.endswith("generator/generated") else TOLERANCE
    assert float(difference) <= tolerance, (name, difference)

if __name__ == "__main__":
  _run_check()
