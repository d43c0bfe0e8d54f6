"""Metrics against closed forms and scikit-image."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from lipsync_jax import evaluation


def _pair(seed, shape=(2, 40, 36, 3), noise=0.1):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape).astype(np.float32)
  # Structured content: a smooth gradient plus texture, then a noisy copy.
  x = 0.5 * x + 0.5 * np.linspace(0, 1, shape[2], dtype=np.float32)[None, None, :, None]
  y = np.clip(x + noise * rng.standard_normal(shape).astype(np.float32), 0, 1)
  return x, y


def test_psnr_closed_form():
  x = np.zeros((1, 8, 8, 3), np.float32)
  y = np.full_like(x, 0.1)  # mse = 0.01 -> 20 dB
  np.testing.assert_allclose(evaluation.psnr(x, y), [20.0], rtol=1e-5)


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_ssim_matches_scikit_image(noise):
  x, y = _pair(0, noise=noise)
  ours = np.asarray(evaluation.ssim(x, y))
  ref = [structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=1.0,
                               channel_axis=-1) for a, b in zip(x, y)]
  np.testing.assert_allclose(ours, ref, atol=1e-4)
  assert np.all(np.asarray(evaluation.ssim(x, x)) > 0.9999)


def test_offset_distances_brute_force():
  rng = np.random.default_rng(1)
  a, v = rng.standard_normal((2, 12, 4)).astype(np.float32)
  dists = evaluation.offset_distances(a, v, max_offset=3)
  for k in range(-3, 4):
    expected = np.mean([np.linalg.norm(v[i] - (a[i + k] if 0 <= i + k < 12 else 0))
                        for i in range(12)])
    np.testing.assert_allclose(dists[k + 3], expected, rtol=1e-5)


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_sync_scores_find_known_offset(shift):
  rng = np.random.default_rng(2)
  base = rng.standard_normal((60, 16)).astype(np.float32)
  base /= np.linalg.norm(base, axis=1, keepdims=True)
  video = base[20:40]
  audio = base[20 - shift:40 - shift]  # video window i matches audio window i + shift
  scores = evaluation.sync_scores(evaluation.offset_distances(audio, video, max_offset=6))
  assert scores["expert_av_offset"] == shift
  assert scores["expert_sync_c"] > 0.5


def test_sync_windows_layout():
  t, h, w = 9, 8, 6
  faces = np.random.default_rng(3).uniform(size=(t, h, w, 3)).astype(np.float32)
  mel = np.random.default_rng(4).standard_normal((80, 40)).astype(np.float32)
  mels, halves = evaluation.sync_windows(faces, mel, fps=25.0)
  assert halves.shape == (t - 4, h // 2, w, 15)
  np.testing.assert_array_equal(halves[2, ..., 3:6], faces[3, h // 2:])
  np.testing.assert_array_equal(mels[1, :, :, 0], mel[:, 3:19])  # int(80 * 1 / 25) = 3
  with pytest.raises(ValueError, match="at least 5"):
    evaluation.sync_windows(faces[:3], mel, 25.0)
