"""Step functions: frame stacking, the sync schedule, non-finite handling, loss weights."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
import pytest
import torch

from configs import base
from lipsync_jax import losses
from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
from lipsync_jax.models.syncnet import SyncNet
from lipsync_jax.train import state as state_lib, steps, trainer


def test_lower_half_stack_matches_wav2lip_channel_order():
  frames = np.random.default_rng(0).random((2, 5, 8, 6, 3), np.float32)
  # Wav2Lip: g (B, 3, T, H, W) -> lower half -> torch.cat([g[:, :, t] for t], dim=1).
  g = torch.from_numpy(frames).permute(0, 4, 1, 2, 3)[:, :, :, 4:]
  expected = torch.cat([g[:, :, t] for t in range(5)], dim=1).permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(steps.lower_half_stack(frames), expected)


def _schedule_state(weight: float) -> state_lib.GeneratorTrainState:
  return state_lib.GeneratorTrainState(step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(0),
                                       generator=None, discriminator=None,
                                       sync_weight=jnp.asarray(weight, jnp.float32))


def test_sync_weight_switches_on_below_threshold_and_stays_on():
  config = base.get_config().loss  # sync_weight 0.03, sync_threshold 0.75
  assert float(state_lib.update_sync_weight(_schedule_state(0.0), 0.8, config).sync_weight) == 0
  on = state_lib.update_sync_weight(_schedule_state(0.0), 0.7, config)
  np.testing.assert_allclose(on.sync_weight, 0.03)
  np.testing.assert_allclose(state_lib.update_sync_weight(on, 5.0, config).sync_weight, 0.03)


def test_sync_weight_starts_on_only_with_sync_from_start():
  config = base.get_config().loss  # sync_weight 0.03, sync_threshold 0.75
  assert float(state_lib.initial_sync_weight(config)) == 0
  config.sync_from_start = True
  np.testing.assert_allclose(state_lib.initial_sync_weight(config), 0.03)


def test_optimizer_warmup_and_cosine_decay_scale_the_adam_step():
  """Adam's first step moves each weight by ~lr(0); later steps follow the schedule."""
  def update_sizes(config, num_train_steps=None):
    optimizer = base.get_config().optimizer
    optimizer.update(config)
    tx = state_lib.make_optimizer(optimizer, num_train_steps)
    params = {"w": jnp.zeros(3)}
    opt_state, sizes = tx.init(params), []
    for _ in range(12):
      updates, opt_state = tx.update({"w": jnp.ones(3)}, opt_state, params)
      sizes.append(float(jnp.abs(updates["w"][0])))
    return np.array(sizes)

  adam = {"learning_rate": 0.1, "b1": 0.9, "b2": 0.999}
  np.testing.assert_allclose(update_sizes(adam), 0.1, rtol=1e-4)  # constant gradients
  warm = update_sizes({**adam, "warmup_steps": 4})
  np.testing.assert_allclose(warm[:5], [0.0, 0.025, 0.05, 0.075, 0.1], rtol=1e-4, atol=1e-7)
  cosine = update_sizes({**adam, "warmup_steps": 2, "cosine_decay": True}, num_train_steps=10)
  expected = 0.1 * 0.5 * (1 + np.cos(np.pi * np.arange(9) / 8))
  np.testing.assert_allclose(cosine[2:11], expected, rtol=1e-4, atol=1e-7)
  assert cosine[11] == 0.0


def test_collect_stops_naming_the_step_and_the_loss():
  finite = {"loss": jnp.float32(1.0), "l1": jnp.float32(0.5)}
  bad = {"loss": jnp.float32(np.nan), "l1": jnp.float32(0.5)}
  with pytest.raises(trainer.NonFiniteLossError, match=r"step 8: loss=nan"):
    trainer._collect([(7, finite), (8, bad)], "stop")  # pylint: disable=protected-access
  # "skip" averages the finite steps only.
  averaged = trainer._collect([(7, finite), (8, bad)], "skip")  # pylint: disable=protected-access
  assert averaged == {"loss": 1.0, "l1": 0.5}


def _tiny_generator_step(img_size: int, batch, expert):
  """(jitted generator step, its initial state) of a tiny AttnWav2Lip at `img_size`."""
  generator = AttnWav2Lip(img_size=img_size, widths=(8, 8, 16), encoder_blocks=1,
                          decoder_blocks=1, cbam_reduction=4)
  tx = optax.adam(1e-3)
  state = state_lib.GeneratorTrainState(
      step=jnp.zeros((), jnp.int32), rng=state_lib.new_rng(0),
      generator=state_lib.init_model_state(
          generator, tx, jax.random.key(2),
          (batch["mel_chunks"][:, 0], np.zeros((1, img_size, img_size, 6), np.float32))),
      discriminator=None, sync_weight=jnp.asarray(0.03, jnp.float32))
  # -O0: compiling dominates these tests' time.
  step = jax.jit(steps.make_generator_train_step(generator, tx, expert, None, None, 0.0, 0.0),
                 compiler_options={"xla_backend_optimization_level": 0})
  return step, state


def _pil_bicubic(frames: np.ndarray, size: int) -> np.ndarray:
  """(N, h, w, 3) float frames resized by PIL's bicubic, one float channel at a time."""
  return np.stack([np.stack([np.asarray(Image.fromarray(f[..., c]).resize(
      (size, size), Image.Resampling.BICUBIC)) for c in range(3)], axis=-1) for f in frames])


@pytest.fixture(scope="module")
def generator_setup():
  rng = np.random.default_rng(0)
  b, t, s = 1, 5, 96
  batch = {"target": rng.integers(0, 256, (b, t, s, s, 3), np.uint8),
           "reference": rng.integers(0, 256, (b, t, s, s, 3), np.uint8),
           "mel_chunks": rng.normal(size=(b, t, 80, 16, 1)).astype(np.float32),
           "sync_mel": rng.normal(size=(b, 80, 16, 1)).astype(np.float32)}
  expert = SyncNet()
  frozen = {"expert": state_lib.jit_init(expert)(
      jax.random.key(1), batch["sync_mel"], steps.lower_half_stack(batch["target"] / 255.0))}
  step, state = _tiny_generator_step(s, batch, expert)
  return step, state, frozen, batch


def test_generator_step_combines_losses_and_updates(generator_setup):
  step, state, frozen, batch = generator_setup
  new_state, metrics, generated = step(state, frozen, batch)
  np.testing.assert_allclose(metrics["loss"], 0.97 * metrics["l1"] + 0.03 * metrics["sync"],
                             rtol=1e-6)
  np.testing.assert_allclose(metrics["l1"],
                             np.mean(np.abs(generated - batch["target"] / np.float32(255))),
                             rtol=1e-5)
  assert generated.shape == batch["target"].shape and metrics["skipped"] == 0
  assert 0.0 <= metrics["sync_accuracy"] <= 1.0
  assert int(new_state.step) == 1
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), state.generator.params,
                         new_state.generator.params)
  assert np.mean(jax.tree.leaves(changed)) > 0.9  # (some grads may be exactly 0)


@pytest.mark.parametrize("size, expert_size", [(24, 48), (48, 24)])
def test_resize_for_expert_is_pil_bicubic(size, expert_size):
  # Up (the demo's 48 px generator under a 96 px expert) and down (a larger generator),
  # where PIL's bicubic is antialiased.
  rng = np.random.default_rng(0)
  frames = rng.uniform(0.0, 1.0, (1, 2, size, size, 3)).astype(np.float32)
  resized = np.asarray(steps.resize_for_expert(jnp.asarray(frames), expert_size))
  expected = np.clip(_pil_bicubic(frames[0], expert_size), 0.0, 1.0)
  np.testing.assert_allclose(resized[0], expected, atol=1e-6)
  np.testing.assert_array_equal(steps.resize_for_expert(jnp.asarray(frames), size), frames)


def test_a_smaller_generator_is_judged_by_the_expert_at_its_size(generator_setup):
  _, _, frozen, batch = generator_setup
  small = {k: (v[:, :, ::2, ::2] if k in ("reference", "target") else v)
           for k, v in batch.items()}
  expert = SyncNet()
  step, state = _tiny_generator_step(48, small, expert)
  _, metrics, generated = step(state, frozen, small)
  assert generated.shape == small["target"].shape
  np.testing.assert_allclose(metrics["l1"],
                             np.mean(np.abs(generated - small["target"] / np.float32(255))),
                             rtol=1e-5)
  # The expert sees the frames at 96 px, resized as PIL resizes them.
  upsampled = np.clip(_pil_bicubic(np.asarray(generated)[0], 96), 0.0, 1.0)[None]
  audio_emb, face_emb = expert.apply(frozen["expert"], small["sync_mel"],
                                     steps.lower_half_stack(upsampled), train=False)
  expected, _ = losses.sync_loss(audio_emb, face_emb, 1.0)
  np.testing.assert_allclose(metrics["sync"], expected, rtol=1e-4)


def test_generator_step_skips_a_non_finite_update(generator_setup):
  step, state, frozen, batch = generator_setup
  poisoned = dict(batch, target=np.full(batch["target"].shape, np.nan, np.float32))
  new_state, metrics, _ = step(state, frozen, poisoned)
  assert np.isnan(metrics["l1"]) and metrics["skipped"] == 1
  assert int(new_state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, (state.generator, state.sync_weight),
               (new_state.generator, new_state.sync_weight))


def test_device_batch_scales_and_masks_on_the_device():
  rng = np.random.default_rng(3)
  target = rng.integers(0, 256, (2, 5, 6, 4, 3), np.uint8)
  reference = rng.integers(0, 256, (2, 5, 6, 4, 3), np.uint8)
  batch = jax.jit(steps.device_batch)({"target": target, "reference": reference,
                                       "mel_chunks": np.ones((2, 5, 80, 16, 1), np.float32)})
  expected_target = target.astype(np.float32) / 255
  masked = expected_target.copy()
  masked[:, :, 3:] = 0  # rows H/2.. of every frame
  np.testing.assert_array_equal(batch["target"], expected_target)
  np.testing.assert_array_equal(batch["inputs"],
                                np.concatenate([masked, reference / np.float32(255)], -1))
  halves = rng.integers(0, 256, (2, 5, 3, 4, 3), np.uint8)  # (B, T, H/2, W, 3)
  faces = steps.device_batch({"lower_halves": halves})["faces"]
  for t in range(5):  # frame t in channels 3t..3t+2, as Wav2Lip's torch.cat(..., 1)
    np.testing.assert_array_equal(faces[..., 3 * t:3 * t + 3], halves[:, t] / np.float32(255))
  floats = rng.random((2, 3, 4, 15)).astype(np.float32)  # float images pass unchanged
  np.testing.assert_array_equal(steps.device_batch({"faces": floats})["faces"], floats)
