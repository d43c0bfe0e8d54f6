"""Losses of SyncNet and generator training (Wav2Lip and LPIPS-AttnWav2Lip).

All losses return float32 scalars (the mean over the batch) and compute in
float32 whatever the dtype of their inputs (or wider: float64 under jax_enable_x64),
so bf16 models keep f32 losses.
Images are NHWC in [0, 1] unless stated otherwise.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax.types import at_least_float32

# Probabilities are clipped into [EPS, 1 - EPS] before the logarithm: log(1e-7)
# = -16.1 bounds the loss of a confidently wrong prediction. PyTorch's BCELoss,
# which the original uses, clamps log() at -100 instead; both only matter when
# a prediction is (numerically) exactly 0 or 1.
EPS = 1e-7


# The mouth region of a Wav2Lip-style face crop (`faces.face_crop_box`, chin pad 10 px),
# as fractions of its height and width: the lower half down to 7/8 (below: chin and
# neck), the middle half of the columns.
MOUTH_ROWS = (1 / 2, 7 / 8)
MOUTH_COLUMNS = (1 / 4, 3 / 4)


def mouth_slices(height: int, width: int) -> tuple[slice, slice]:
  """(rows, columns) of the mouth region of a height x width face crop."""
  return (slice(int(height * MOUTH_ROWS[0]), int(height * MOUTH_ROWS[1])),
          slice(int(width * MOUTH_COLUMNS[0]), int(width * MOUTH_COLUMNS[1])))


def l1_loss(prediction: jnp.ndarray, target: jnp.ndarray,
            mouth_weight: float = 1.0) -> jnp.ndarray:
  """Mean absolute error of images (..., H, W, C) (Wav2Lip's reconstruction loss).

  With `mouth_weight` w != 1 it is the weighted mean with weight w on the mouth
  region (`MOUTH_ROWS`, `MOUTH_COLUMNS`) and 1 elsewhere: the mouth is a few percent
  of the pixels, so plain L1 barely rewards a generator for getting it right.
  """
  error = jnp.abs(at_least_float32(prediction) - at_least_float32(target))
  if mouth_weight == 1.0:
    return jnp.mean(error)
  weights = np.ones(error.shape[-3:-1] + (1,), np.float32)
  weights[mouth_slices(*error.shape[-3:-1])] = mouth_weight
  return jnp.mean(error * weights) / weights.mean()


def binary_cross_entropy(probability: jnp.ndarray, label: jnp.ndarray) -> jnp.ndarray:
  """Mean BCE of probabilities (not logits) against labels in {0, 1}.

  Args:
    probability: (B,) predicted probabilities; clipped into [EPS, 1 - EPS].
    label: (B,) targets, 1 = positive.
  """
  p = jnp.clip(at_least_float32(probability), EPS, 1.0 - EPS)
  y = at_least_float32(label)
  return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def cosine_similarity(audio_emb: jnp.ndarray, face_emb: jnp.ndarray) -> jnp.ndarray:
  """(B,) cosine similarity of two (B, D) embeddings (re-normalised here)."""
  a = at_least_float32(audio_emb)
  v = at_least_float32(face_emb)
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
  return jnp.sum(a * v, axis=-1)


def sync_loss(audio_emb: jnp.ndarray, face_emb: jnp.ndarray,
              label: jnp.ndarray | float = 1.0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """SyncNet loss: BCE of the cosine similarity read as the in-sync probability.

  Args:
    audio_emb: (B, 512) audio embeddings.
    face_emb: (B, 512) face embeddings.
    label: (B,) 1 for in-sync pairs, 0 for shifted ones; a scalar broadcasts
      (the generator's sync loss uses 1).

  Returns:
    (loss, accuracy): the mean BCE and the fraction of pairs whose cosine is on
    the label's side of 0.5.
  """
  cosine = cosine_similarity(audio_emb, face_emb)
  label = jnp.broadcast_to(jnp.asarray(label, jnp.float32), cosine.shape)
  accuracy = jnp.mean(((cosine > 0.5) == (label > 0.5)).astype(jnp.float32))
  return binary_cross_entropy(cosine, label), accuracy


def in_batch_contrastive_loss(audio_emb: jnp.ndarray, face_emb: jnp.ndarray,
                              label: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """Symmetric InfoNCE of the in-sync pairs of a batch, the other faces and audio as negatives.

  For every in-sync pair i: -log softmax_j(cos(a_i, v_j) / temperature)[i], and the
  same with audio and faces swapped; j runs over all B pairs of the batch (off-sync
  pairs contribute their faces and audio as negatives only). Off-sync rows are
  masked out; the mean is over in-sync rows (0 when there are none).

  Args:
    audio_emb, face_emb: (B, D) embeddings (normalised here).
    label: (B,) 1 for in-sync pairs.
    temperature: the softmax temperature (e.g. 0.1).
  """
  a = at_least_float32(audio_emb)
  v = at_least_float32(face_emb)
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
  logits = a @ v.T / temperature
  diagonal = jnp.diagonal(logits)
  audio_to_face = jax.nn.logsumexp(logits, axis=1) - diagonal
  face_to_audio = jax.nn.logsumexp(logits, axis=0) - diagonal
  positive = (jnp.asarray(label, jnp.float32) > 0.5).astype(jnp.float32)
  per_row = 0.5 * (audio_to_face + face_to_audio) * positive
  return jnp.sum(per_row) / jnp.maximum(jnp.sum(positive), 1.0)


def in_batch_negatives_bce(audio_emb: jnp.ndarray, face_emb: jnp.ndarray) -> jnp.ndarray:
  """Mean BCE(cos(a_i, v_j), 0) over all i != j of a batch: every mismatched audio and
  face of the batch is an off-sync pair (B * (B - 1) of them instead of about B / 2).

  Args:
    audio_emb, face_emb: (B, D) embeddings (normalised here), B >= 2.
  """
  a = at_least_float32(audio_emb)
  v = at_least_float32(face_emb)
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
  cosine = jnp.clip(a @ v.T, EPS, 1.0 - EPS)
  off_diagonal = 1.0 - jnp.eye(cosine.shape[0], dtype=jnp.float32)
  return -jnp.sum(jnp.log1p(-cosine) * off_diagonal) / jnp.sum(off_diagonal)


def adversarial_loss(probability: jnp.ndarray, is_real: bool) -> jnp.ndarray:
  """BCE of discriminator probabilities (B,) against all-real or all-fake labels."""
  return binary_cross_entropy(probability, jnp.full(probability.shape, float(is_real)))


def lpips_loss(lpips_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
               prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Mean LPIPS distance between images in [0, 1].

  Args:
    lpips_fn: maps two (B, H, W, 3) images in [-1, 1] to (B,) distances, e.g.
      `functools.partial(LPIPS().apply, lpips_variables)`.
    prediction, target: (B, H, W, 3) in [0, 1].
  """
  distance = lpips_fn(prediction * 2.0 - 1.0, target * 2.0 - 1.0)
  return jnp.mean(at_least_float32(distance))


def weighted_generator_loss(losses: dict[str, Any], sync_weight: Any,
                            lpips_weight: float, adversarial_weight: float) -> jnp.ndarray:
  """(1 - s - p - d) * L1 + s * sync + p * LPIPS + d * adversarial.

  `losses` holds "l1", "sync" and, when their weights are non-zero, "lpips"
  and "adversarial". `sync_weight` may be a traced scalar (the schedule).
  """
  total = (1.0 - sync_weight - lpips_weight - adversarial_weight) * losses["l1"]
  total = total + sync_weight * losses["sync"]
  if lpips_weight:
    total = total + lpips_weight * losses["lpips"]
  if adversarial_weight:
    total = total + adversarial_weight * losses["adversarial"]
  return total
