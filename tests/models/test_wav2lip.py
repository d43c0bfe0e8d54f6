"""Wav2Lip generator and quality discriminator vs the PyTorch reference, via real checkpoints."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lipsync_jax import convert
from lipsync_jax.convert import load_torch_checkpoint
from lipsync_jax.models.layers import ConvBlock
from lipsync_jax.models.wav2lip import AudioEncoder, QualityDiscriminator, Wav2Lip
from lipsync_jax.models.wav2lip import face_feature_shapes
from references import torch_wav2lip as ref


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  mel = rng.uniform(-4, 4, size=(2, 80, 16, 1)).astype(np.float32)
  faces = rng.uniform(size=(2, 96, 96, 6)).astype(np.float32)
  faces[:, 48:, :, :3] = 0.0  # Masked lower half of the target frame, as in training.
  return mel, faces


@pytest.fixture(scope="module")
def generator(inputs):
  """(torch reference in eval mode, its output as NHWC numpy)."""
  model = ref.randomize_(ref.TorchWav2Lip(), seed=1)
  mel, faces = inputs
  with torch.no_grad():
    out = model(_nchw(mel), _nchw(faces)).numpy().transpose(0, 2, 3, 1)
  return model, out


@functools.lru_cache(maxsize=None)
def _jitted_apply(module: nn.Module):
  return jax.jit(module.apply)


def test_parameter_counts():
  key = jax.random.key(0)
  mel = jnp.zeros((1, 80, 16, 1))
  gen = jax.eval_shape(Wav2Lip().init, key, mel, jnp.zeros((1, 96, 96, 6)))
  disc = jax.eval_shape(QualityDiscriminator().init, key, jnp.zeros((1, 96, 96, 3)))
  assert _count(gen["params"]) == 36_298_035
  assert _count(disc["params"]) == 14_113_793
  assert "batch_stats" not in disc


def test_48px_discriminator_is_the_96px_one_without_its_last_stride_2_stage(tmp_path):
  """Against the PyTorch reference with that stage removed, random weights."""
  model = ref.randomize_(ref.TorchQualityDiscriminator(), seed=3, gain=2 ** 0.5)
  del model.face_encoder_blocks[5]  # ModuleList renumbers: block 6 becomes block 5.
  model.eval()
  frames = np.random.default_rng(0).random((3, 48, 48, 3), np.float32)
  with torch.no_grad():
    expected = model(_nchw(frames)).numpy()[:, 0]
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = convert.variables_from_state_dict(state, "quality_discriminator",
                                                discriminator_size=48)
  module = QualityDiscriminator(img_size=48)
  out = np.asarray(_jitted_apply(module)(variables, frames))
  assert out.shape == (3,) and _count(variables["params"]) == 9_394_177
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_audio_encoder_shapes():
  mel = jnp.zeros((3, 80, 16, 1))
  variables = jax.eval_shape(AudioEncoder().init, jax.random.key(0), mel)
  assert jax.eval_shape(AudioEncoder().apply, variables, mel).shape == (3, 1, 1, 512)
  with pytest.raises(ValueError, match=r"AudioEncoder mel: expected shape \(B, 80, 16, 1\)"):
    jax.eval_shape(AudioEncoder().apply, variables, jnp.zeros((3, 80, 32, 1)))


def test_wrong_input_shapes_are_rejected():
  module = Wav2Lip()
  with pytest.raises(ValueError, match="faces"):
    jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                   jnp.zeros((1, 64, 64, 6)))
  with pytest.raises(ValueError, match="img_size=128"):
    jax.eval_shape(Wav2Lip(img_size=128).init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                   jnp.zeros((1, 128, 128, 6)))


@pytest.mark.parametrize("checkpoint_format", ref.CHECKPOINT_FORMATS)
def test_generator_matches_torch(checkpoint_format, generator, inputs, tmp_path):
  model, expected = generator
  path = tmp_path / "wav2lip.pth"
  ref.save_checkpoint(model, path, checkpoint_format)
  variables = load_torch_checkpoint(path, model="wav2lip")
  out = np.asarray(_jitted_apply(Wav2Lip())(variables, *inputs))
  assert out.shape == (2, 96, 96, 3) and out.dtype == np.float32
  assert expected.std() > 0.05  # The comparison is not between two near-constant images.
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


def test_decode_of_encoded_faces_equals_the_full_call(generator, inputs, tmp_path):
  """The split a live stream uses (face encoder once per avatar frame, then decode per
  output frame) against the whole network and the PyTorch reference. Measured bitwise
  equal on XLA:CPU (jax 0.10.2); asserted to 1e-6, room for another backend's fusion."""
  model, expected = generator
  path = tmp_path / "wav2lip.pth"
  ref.save_checkpoint(model, path, "zip")
  variables = load_torch_checkpoint(path, model="wav2lip")
  mel, faces = inputs
  module = Wav2Lip()
  full = np.asarray(_jitted_apply(module)(variables, mel, faces))
  encode = jax.jit(functools.partial(module.apply, method="encode_faces"))
  decode = jax.jit(functools.partial(module.apply, method="decode"))
  skips = encode(variables, faces)
  assert [s.shape for s in skips] == [(2, *shape) for shape in face_feature_shapes(96)]
  assert sum(int(np.prod(shape)) for shape in face_feature_shapes(96)) == 290_816
  split = np.asarray(decode(variables, mel, skips))
  np.testing.assert_allclose(split, full, rtol=0, atol=1e-6)
  np.testing.assert_allclose(split, expected, rtol=0, atol=1e-4)
  # Each frame's features are its own: frame 1's mel with frame 0's cached face.
  swapped = np.asarray(decode(variables, mel[::-1], [s[::-1] for s in skips]))
  np.testing.assert_allclose(swapped, full[::-1], rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match="face feature 2 must be"):
    jax.eval_shape(decode, variables, mel, [s[:1] if i == 2 else s for i, s in enumerate(skips)])
  with pytest.raises(ValueError, match="expected 7 face features"):
    jax.eval_shape(decode, variables, mel, skips[:-1])


def test_generator_bf16_compute_runs_close_to_fp32(generator, inputs, tmp_path):
  model, expected = generator
  path = tmp_path / "wav2lip.pth"
  ref.save_checkpoint(model, path, "zip")
  variables = load_torch_checkpoint(path, model="wav2lip")
  out = _jitted_apply(Wav2Lip(dtype=jnp.bfloat16))(variables, *inputs)
  assert out.dtype == jnp.float32
  error = np.abs(np.asarray(out) - expected)
  assert np.all(np.isfinite(out))
  assert error.mean() < 0.02 and error.max() < 0.2


@pytest.mark.parametrize("checkpoint_format", ref.CHECKPOINT_FORMATS)
def test_discriminator_matches_torch(checkpoint_format, inputs, tmp_path):
  model = ref.randomize_(ref.TorchQualityDiscriminator(), seed=2, gain=2 ** 0.5)
  frames = inputs[1][..., 3:]
  with torch.no_grad():
    expected = model(_nchw(frames)).numpy()[:, 0]
  path = tmp_path / "disc.pth"
  ref.save_checkpoint(model, path, checkpoint_format)
  variables = load_torch_checkpoint(path, model="quality_discriminator")
  out = np.asarray(_jitted_apply(QualityDiscriminator())(variables, frames))
  assert out.shape == (2,)
  assert np.abs(expected - 0.5).max() > 0.01  # Logits are not all ~0.
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
  logits = QualityDiscriminator().apply(variables, frames, method="logits")
  np.testing.assert_allclose(np.asarray(logits), torch.logit(torch.from_numpy(expected)).numpy(),
                             rtol=0, atol=1e-4)


def test_conv_block_train_mode_matches_torch_batchnorm():
  """Batch statistics, output and running-stat update (momentum 0.1) vs torch train mode.

  The running variance takes the unbiased batch variance, as torch does (flax's own
  BatchNorm would take the biased one, off by n / (n - 1) = 60 / 59 here).
  """
  block = ref.randomize_(ref.ConvBN(4, 4, 3, 1, 1, residual=True), seed=3).train()
  old_mean = block.conv_block[1].running_mean.clone()
  old_var = block.conv_block[1].running_var.clone()
  x = np.random.default_rng(1).normal(size=(2, 6, 5, 4)).astype(np.float32)
  with torch.no_grad():
    expected = block(_nchw(x)).numpy().transpose(0, 2, 3, 1)
  state = {k: v.numpy() for k, v in block.state_dict().items()}
  variables = {
      "params": {"conv": {"kernel": state["conv_block.0.weight"].transpose(2, 3, 1, 0),
                          "bias": state["conv_block.0.bias"]},
                 "bn": {"scale": state["conv_block.1.weight"],
                        "bias": state["conv_block.1.bias"]}},
      "batch_stats": {"bn": {"mean": old_mean.numpy(), "var": old_var.numpy()}},
  }
  out, updates = ConvBlock(4, 3, 1, 1, residual=True).apply(
      variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["bn"]["mean"]),
                             state["conv_block.1.running_mean"], rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["bn"]["var"]),
                             state["conv_block.1.running_var"], rtol=0, atol=1e-6)
  assert np.abs(state["conv_block.1.running_mean"] - old_mean.numpy()).min() > 1e-3
