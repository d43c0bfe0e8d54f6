"""SyncNet vs the PyTorch reference, loaded from real checkpoints in both torch formats."""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from lipsync_jax.convert import load_torch_checkpoint, torch_key
from lipsync_jax.models.syncnet import SyncNet
from references import torch_wav2lip as ref


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.fixture(scope="module")
def reference():
  """(torch SyncNet, mel (2,80,16,1), lower halves (2,48,96,15), torch embeddings)."""
  rng = np.random.default_rng(0)
  mel = rng.uniform(-4, 4, size=(2, 80, 16, 1)).astype(np.float32)
  lower_halves = rng.uniform(size=(2, 48, 96, 15)).astype(np.float32)
  model = ref.randomize_(ref.TorchSyncNet(), seed=4)
  with torch.no_grad():
    audio_emb, face_emb = (t.numpy() for t in model(_nchw(mel), _nchw(lower_halves)))
  return model, mel, lower_halves, audio_emb, face_emb


@pytest.fixture(scope="module")
def jitted_apply():
  return jax.jit(SyncNet().apply)


def test_parameter_count():
  shapes = jax.eval_shape(SyncNet().init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                          jnp.zeros((1, 48, 96, 15)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"])) == (
      16_435_072)


def test_width_multiplier_scales_every_layer():
  inputs = (jax.random.key(0), jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 48, 96, 15)))
  full = traverse_util.flatten_dict(jax.eval_shape(SyncNet().init, *inputs)["params"])
  narrow_net = SyncNet(width_multiplier=0.25)
  narrow = traverse_util.flatten_dict(jax.eval_shape(narrow_net.init, *inputs)["params"])
  assert full.keys() == narrow.keys()
  for path, leaf in full.items():
    assert narrow[path].shape[-1] == max(8, round(leaf.shape[-1] / 4)), path
  audio_emb, face_emb = jax.eval_shape(narrow_net.apply, narrow_net.init(*inputs), *inputs[1:])
  assert audio_emb.shape == face_emb.shape == (1, 128)
  assert sum(int(np.prod(x.shape)) for x in narrow.values()) == 1_035_616


def test_wrong_face_shape_is_rejected():
  with pytest.raises(ValueError, match="lower_halves"):
    jax.eval_shape(SyncNet().init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                   jnp.zeros((1, 96, 96, 15)))


@pytest.mark.parametrize("checkpoint_format", ref.CHECKPOINT_FORMATS)
def test_embeddings_match_torch(checkpoint_format, reference, jitted_apply, tmp_path):
  model, mel, lower_halves, audio_expected, face_expected = reference
  path = tmp_path / "syncnet.pth"
  ref.save_checkpoint(model, path, checkpoint_format)
  variables = load_torch_checkpoint(path, model="syncnet")
  audio_emb, face_emb = (np.asarray(e) for e in jitted_apply(variables, mel, lower_halves))
  assert audio_emb.shape == face_emb.shape == (2, 512)
  np.testing.assert_allclose(np.linalg.norm(audio_emb, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(face_emb, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(audio_emb, audio_expected, rtol=0, atol=1e-4)
  np.testing.assert_allclose(face_emb, face_expected, rtol=0, atol=1e-4)
  # The two samples differ, so the embeddings carry the input, not just the biases.
  assert np.abs(audio_expected[0] - audio_expected[1]).max() > 1e-2


def test_bf16_compute_runs(reference, tmp_path):
  model, mel, lower_halves, audio_expected, face_expected = reference
  path = tmp_path / "syncnet.pth"
  ref.save_checkpoint(model, path, "zip")
  variables = load_torch_checkpoint(path, model="syncnet")
  audio_emb, face_emb = jax.jit(SyncNet(dtype=jnp.bfloat16).apply)(variables, mel, lower_halves)
  assert audio_emb.dtype == face_emb.dtype == jnp.float32
  cosine_fp32 = np.sum(audio_expected * face_expected, axis=1)
  cosine_bf16 = np.sum(np.asarray(audio_emb) * np.asarray(face_emb), axis=1)
  np.testing.assert_allclose(cosine_bf16, cosine_fp32, atol=0.05)


def test_train_mode_matches_torch_train_mode(reference, tmp_path):
  """Batch-statistics forward and running-mean updates of every BN layer vs torch.

  Batch 4: the last layers are 1x1, where batch norm over only 2 values is ill-conditioned.
  (Running variances differ by torch's n/(n-1) Bessel factor; see test_wav2lip.py.)
  """
  model = reference[0]
  rng = np.random.default_rng(1)
  mel = rng.uniform(-4, 4, size=(4, 80, 16, 1)).astype(np.float32)
  lower_halves = rng.uniform(size=(4, 48, 96, 15)).astype(np.float32)
  path = tmp_path / "syncnet.pth"
  ref.save_checkpoint(model, path, "zip")
  variables = load_torch_checkpoint(path, model="syncnet")
  model = copy.deepcopy(model).train()
  with torch.no_grad():
    audio_expected, face_expected = (t.numpy() for t in model(_nchw(mel), _nchw(lower_halves)))
  train_apply = jax.jit(functools.partial(SyncNet().apply, train=True, mutable=["batch_stats"]))
  (audio_emb, face_emb), updates = train_apply(variables, mel, lower_halves)
  np.testing.assert_allclose(np.asarray(audio_emb), audio_expected, rtol=0, atol=1e-4)
  np.testing.assert_allclose(np.asarray(face_emb), face_expected, rtol=0, atol=1e-4)
  updated = {k: v.numpy() for k, v in model.state_dict().items()}
  new_means = traverse_util.flatten_dict(updates["batch_stats"])
  num_batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
  assert len(new_means) == 2 * num_batchnorms  # mean and var of each
  for path, value in new_means.items():
    if path[-1] == "mean":
      np.testing.assert_allclose(np.asarray(value), updated[torch_key("batch_stats", path)],
                                 rtol=0, atol=1e-4, err_msg="/".join(path))
