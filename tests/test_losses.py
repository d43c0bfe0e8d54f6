"""Losses against PyTorch's BCELoss / cosine similarity and closed-form values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipsync_jax import losses


def test_l1_matches_torch():
  rng = np.random.default_rng(0)
  x, y = rng.random((2, 4, 6, 6, 3), dtype=np.float32)
  expected = F.l1_loss(torch.from_numpy(x), torch.from_numpy(y)).item()
  np.testing.assert_allclose(losses.l1_loss(x, y), expected, rtol=1e-6)


def test_mouth_weighted_l1_is_the_weighted_mean_over_the_mouth_region():
  rng = np.random.default_rng(1)
  x, y = rng.random((2, 3, 16, 8, 3), dtype=np.float32)
  # Mouth region of a 16 x 8 crop: rows 8..13, columns 2..5 (losses.MOUTH_ROWS/COLUMNS).
  weights = np.ones((16, 8), np.float64)
  weights[8:14, 2:6] = 4.0
  error = np.abs(x.astype(np.float64) - y)
  expected = (error * weights[:, :, None]).sum() / (weights.sum() * 3 * 3)
  np.testing.assert_allclose(losses.l1_loss(x, y, mouth_weight=4.0), expected, rtol=1e-5)
  # An error only inside the region: weight w turns its share f into w f / (w f + 1 - f).
  z = y.copy()
  z[:, 8:14, 2:6] += 0.5
  f = 24 / 128
  np.testing.assert_allclose(losses.l1_loss(z, y, mouth_weight=4.0),
                             0.5 * 4 * f / (4 * f + 1 - f), rtol=1e-5)
  np.testing.assert_allclose(losses.l1_loss(z, y, mouth_weight=1.0), 0.5 * f, rtol=1e-5)


def test_bce_matches_torch_and_is_finite_at_the_edges():
  p = np.array([0.1, 0.5, 0.9, 0.7], np.float32)
  y = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
  expected = F.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(y)).item()
  np.testing.assert_allclose(losses.binary_cross_entropy(p, y), expected, rtol=1e-6)
  edge = jnp.array([0.0, 1.0])
  value, grad = jax.value_and_grad(
      lambda q: losses.binary_cross_entropy(q, jnp.array([1.0, 0.0])))(edge)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(value, -np.log(losses.EPS), rtol=0.02)  # f32 rounds 1 - EPS


def test_sync_loss_is_bce_of_cosine_as_in_wav2lip():
  rng = np.random.default_rng(1)
  a = np.abs(rng.normal(size=(6, 512))).astype(np.float32)  # ReLU embeddings
  v = np.abs(rng.normal(size=(6, 512))).astype(np.float32)
  label = np.array([1, 0, 1, 0, 1, 1], np.float32)
  ta = F.normalize(torch.from_numpy(a), p=2, dim=1)
  tv = F.normalize(torch.from_numpy(v), p=2, dim=1)
  cos = F.cosine_similarity(ta, tv)
  expected = torch.nn.BCELoss()(cos, torch.from_numpy(label)).item()
  loss, accuracy = losses.sync_loss(a, v, label)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  expected_acc = np.mean((cos.numpy() > 0.5) == (label > 0.5))
  np.testing.assert_allclose(accuracy, expected_acc)


def test_sync_loss_of_identical_and_orthogonal_embeddings():
  e = np.eye(4, 8, dtype=np.float32)
  loss_same, acc_same = losses.sync_loss(e, e * 3.0)  # scale does not matter
  assert loss_same < 1e-5 and acc_same == 1.0
  loss_orth, acc_orth = losses.sync_loss(e, np.roll(e, 1, axis=1))
  np.testing.assert_allclose(loss_orth, -np.log(losses.EPS), rtol=1e-4)
  assert acc_orth == 0.0
  # Random guessing (cosine 0.5 everywhere) is the "stuck at 0.69" value ln 2.
  half = np.array([[1.0, 0.0]], np.float32), np.array([[0.5, np.sqrt(0.75)]], np.float32)
  np.testing.assert_allclose(losses.sync_loss(*half, label=0.0)[0], np.log(2.0), rtol=1e-5)


def test_in_batch_contrastive_loss_is_symmetric_infonce_over_in_sync_rows():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(5, 8)).astype(np.float32)
  v = rng.normal(size=(5, 8)).astype(np.float32)
  label = np.array([1, 0, 1, 1, 0], np.float32)
  logits = (F.normalize(torch.from_numpy(a), dim=1) @ F.normalize(torch.from_numpy(v), dim=1).T
            / 0.2)
  rows = torch.tensor([0, 2, 3])
  expected = 0.5 * (F.cross_entropy(logits[rows], rows)
                    + F.cross_entropy(logits.T[rows], rows)).item()
  np.testing.assert_allclose(losses.in_batch_contrastive_loss(a, v, label, 0.2), expected,
                             rtol=1e-5)
  # Matching pairs far apart from the rest give ~0; no in-sync row gives exactly 0.
  e = np.eye(5, 8, dtype=np.float32)
  assert losses.in_batch_contrastive_loss(e, e, np.ones(5), 0.05) < 1e-6
  assert losses.in_batch_contrastive_loss(a, v, np.zeros(5), 0.2) == 0.0


def test_in_batch_negatives_bce_is_bce_of_every_mismatched_pair():
  rng = np.random.default_rng(3)
  a = np.abs(rng.normal(size=(4, 6))).astype(np.float32)
  v = np.abs(rng.normal(size=(4, 6))).astype(np.float32)
  cos = F.normalize(torch.from_numpy(a), dim=1) @ F.normalize(torch.from_numpy(v), dim=1).T
  mismatched = cos[~torch.eye(4, dtype=torch.bool)]
  expected = F.binary_cross_entropy(mismatched, torch.zeros(12)).item()
  np.testing.assert_allclose(losses.in_batch_negatives_bce(a, v), expected, rtol=1e-5)
  # Matched pairs do not count: orthogonal one-hot rows give ~0 whatever the diagonal.
  e = np.eye(4, 6, dtype=np.float32)
  assert losses.in_batch_negatives_bce(e, e) < 1e-5


@pytest.mark.parametrize("is_real", [True, False])
def test_adversarial_loss(is_real):
  p = np.array([0.2, 0.6, 0.99], np.float32)
  target = torch.full((3,), float(is_real))
  expected = F.binary_cross_entropy(torch.from_numpy(p), target).item()
  np.testing.assert_allclose(losses.adversarial_loss(p, is_real), expected, rtol=1e-6)


def test_lpips_loss_maps_images_to_minus_one_one():
  seen = []

  def fake_distance(x, y):
    seen.append((float(x.min()), float(x.max()), float(y.min())))
    return jnp.sum((x - y) ** 2, axis=(1, 2, 3))

  x = np.zeros((2, 4, 4, 3), np.float32)
  y = np.ones((2, 4, 4, 3), np.float32)
  np.testing.assert_allclose(losses.lpips_loss(fake_distance, x, y), 4.0 * 48)
  assert seen == [(-1.0, -1.0, 1.0)]


def test_weighted_generator_loss_is_the_papers_combination():
  parts = {"l1": 2.0, "sync": 3.0, "lpips": 5.0, "adversarial": 7.0}
  total = losses.weighted_generator_loss(parts, 0.03, 0.1, 0.07)
  np.testing.assert_allclose(total, 0.8 * 2 + 0.03 * 3 + 0.1 * 5 + 0.07 * 7, rtol=1e-6)
  # Zero weights drop a term even when it is missing from the dict.
  only_l1 = losses.weighted_generator_loss({"l1": 2.0, "sync": 3.0}, 0.0, 0.0, 0.0)
  np.testing.assert_allclose(only_l1, 2.0)
