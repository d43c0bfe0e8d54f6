"""Sharded steps on 8 fake CPU devices equal the single-device steps: a 4 x 2
(data, model) mesh, the batch split 4 ways and the large weights (and their optimizer
state) split over "model": the same forward results and the same GRADIENTS.

The steps run in float64 (`jax_enable_x64`, every model and array widened), in a
subprocess (this file as a script) so that only it sees 8 CPU devices
(`--xla_force_host_platform_device_count=8`). In float32 the gradients could not be
compared tightly: BatchNorm's backward pass cancels, so merely reordering one device's
batch moves these networks' float32 gradients by up to ~1% in some arrays (measured);
in float64 sharded and single-device gradients agree to ~1e-13 (measured), so the
bounds below catch any real difference (a missing all-reduce, a wrong shard).
"""

import os
import subprocess
import sys

import numpy as np

FORWARD_TOLERANCE = 1e-10  # Losses, batch statistics, generated frames (float64).
GRADIENT_TOLERANCE = 1e-9  # Relative, per weight array (`gradient_recorder`), float64.


def _tiny_generator(dtype):
  from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
  return AttnWav2Lip(widths=(8, 8, 16), encoder_blocks=1, decoder_blocks=1, cbam_reduction=4,
                     dtype=dtype, param_dtype=dtype)


def _max_difference(a, b) -> float:
  """max |a - b| / (1 + |b|) over all leaves: absolute below 1, relative above."""
  import jax
  def leaf(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y) / (1.0 + np.abs(y)), initial=0.0))
  return max(jax.tree.leaves(jax.tree.map(leaf, a, b)), default=0.0)


def _run_check() -> None:
  """Runs each step on 1 device and on the 4 x 2 mesh; prints the max differences."""
  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  from lipsync_jax.models.syncnet import SyncNet
  from lipsync_jax.models.wav2lip import QualityDiscriminator
  from lipsync_jax.train import sharding, state as state_lib, steps
  import gradient_recorder

  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  b, t, s = 4, 5, 96
  # The optimizer state holds each step's gradients (the parameters stay), so the
  # gradients are compared directly; forward results (losses, batch statistics,
  # generated frames) are compared too.
  tx = gradient_recorder.record_gradients()
  dtype = np.float64
  mel = rng.normal(size=(b, 80, 16, 1)).astype(dtype)
  # Images as the input pipeline sends them: uint8, scaled inside the sharded steps.
  pixels = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)
  syncnet_batch = {"mel": mel, "lower_halves": pixels(b, t, s // 2, s, 3),
                   "label": (np.arange(b) % 2).astype(dtype)}
  generator_batch = {"target": pixels(b, t, s, s, 3), "reference": pixels(b, t, s, s, 3),
                     "mel_chunks": rng.normal(size=(b, t, 80, 16, 1)).astype(dtype),
                     "sync_mel": mel}
  init_faces = np.zeros((1, s, s, 6), dtype)  # generator input; SyncNet's lower halves:
  init_halves = np.zeros((1, s // 2, s, 15), dtype)
  syncnet = SyncNet(width_multiplier=0.25, dtype=dtype, param_dtype=dtype)
  generator = _tiny_generator(dtype)
  discriminator = QualityDiscriminator(dtype=dtype, param_dtype=dtype)
  key = jax.random.key(0)
  syncnet_state = state_lib.SyncNetTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(1),
      syncnet=state_lib.init_model_state(syncnet, tx, key, (mel[:1], init_halves)))
  expert = {"expert": state_lib.jit_init(syncnet)(jax.random.key(1), mel[:1],
                                            init_halves)}
  gen_state = state_lib.GeneratorTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(2),
      generator=state_lib.init_model_state(
          generator, tx, jax.random.key(2),
          (generator_batch["mel_chunks"][:1, 0], init_faces)),
      discriminator=state_lib.init_model_state(
          discriminator, tx, jax.random.key(3), (init_faces[..., :3],)),
      sync_weight=jnp.asarray(0.03, jnp.float32))
  # The train state keeps float32 weights; widen every float.
  widen = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  syncnet_state, gen_state, expert = jax.tree.map(
      widen, jax.device_get((syncnet_state, gen_state, expert)))
  # Half of the discriminator batch: samples of one frame each (cheaper than 5).
  generated = rng.random((b, 1, s, s, 3))

  results = {}
  # "model": a 4 x 2 mesh whose "model" axis splits the large weights and their
  # optimizer state, and whose "data" axis splits the batch (gradients and BatchNorm
  # statistics are reduced over it, as on a data-parallel-only mesh).
  for name, mesh, shard in (("single", sharding.make_mesh(devices=jax.devices()[:1]), False),
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
      assert mesh.shape == {"data": 4, "model": 2}
    if name == "model":  # Each device holds half of every large weight.
      for params in (out_sync[0].syncnet.params, out_gen[0].generator.params,
                     out_disc[0].discriminator.params):
        split = [x for x in jax.tree.leaves(params) if "model" in x.sharding.spec]
        assert split, "no weight is split over the model axis"
        assert all(x.addressable_shards[0].data.size * 2 == x.size for x in split)
    results[name] = jax.device_get((out_sync, out_gen, out_disc))

  gradients = lambda out, name: getattr(out[0], name).opt_state
  forward = lambda out, name: (getattr(out[0], name).batch_stats,) + tuple(out[1:])
  for mesh_name in ("model",):
    for i, step_name in enumerate(("syncnet", "generator", "discriminator")):
      single, sharded = results["single"][i], results[mesh_name][i]
      outputs = ("metrics", "generated")[:len(single) - 1]
      for j, output_name in enumerate(("batch_stats",) + outputs):
        difference = _max_difference(forward(sharded, step_name)[j],
                                     forward(single, step_name)[j])
        print(f"{mesh_name}:{step_name}/{output_name} {difference:.3e}")
      difference, _ = gradient_recorder.relative_difference(
          gradients(sharded, step_name), gradients(single, step_name))
      print(f"{mesh_name}:{step_name}/gradients {difference:.3e}")


def test_sharded_steps_equal_single_device_steps():
  # -O1: at -O0 float64 convolutions are ~80x slower; the default level compiles slower.
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
             " --xla_backend_optimization_level=1")
  result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  differences = {name: float(value) for name, value in
                 (line.split() for line in result.stdout.strip().splitlines())}
  outputs = {"syncnet/batch_stats", "syncnet/metrics", "syncnet/gradients",
             "generator/batch_stats", "generator/metrics", "generator/generated",
             "generator/gradients", "discriminator/batch_stats", "discriminator/metrics",
             "discriminator/gradients"}
  assert set(differences) == {f"model:{output}" for output in outputs}, result.stdout
  for name, difference in differences.items():
    tolerance = GRADIENT_TOLERANCE if name.endswith("gradients") else FORWARD_TOLERANCE
    assert difference <= tolerance, (name, difference)


if __name__ == "__main__":
  _run_check()
