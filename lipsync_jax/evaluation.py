"""Evaluation metrics: expert sync scores, FID, PSNR, SSIM, LPIPS.

Images are float arrays NHWC in [0, 1].

Expert sync scores (`expert_sync_d`, `expert_sync_c`) follow the offset search of
syncnet_python with a Wav2Lip-style lip-sync expert (`models.SyncNet`: mel input,
L2-normalised embeddings, distances <= 2): every 5-frame video window and every audio
window is embedded; for each offset in -max_offset..+max_offset frames the pair distances
are averaged over the clip (windows shifted past the clip end are compared with zero
vectors, as the protocol's zero padding does); `expert_sync_d` is the smallest mean
distance, `expert_sync_c` the median of the mean distances minus that minimum. They are
NOT the published LSE-D / LSE-C, which need syncnet_python's SyncNet v2 and its exact
protocol: `lipsync_jax.lse`.

FID: the Fréchet distance between Gaussians fitted to pytorch-fid Inception pool features
(`checkpoints.load_inception`) of two sets of frames (`frechet_distance`).
"""

from typing import Any, Callable, Iterable, Sequence
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from lipsync_jax import audio
from lipsync_jax import errors
from lipsync_jax import faces as faces_lib

SYNC_WINDOW = 5  # video frames per SyncNet window


class EvaluationError(errors.LipsyncError, ValueError):
  """Clips that cannot be scored (too short, mismatched shapes)."""


def psnr(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 1.0) -> jnp.ndarray:
  """Peak signal-to-noise ratio in dB per image. x, y: (B, H, W, C) -> (B,)."""
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range**2 / mse)


def _gaussian_window(sigma: float, truncate: float = 3.5) -> np.ndarray:
  radius = int(truncate * sigma + 0.5)
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  g = np.exp(-0.5 * (t / sigma) ** 2)
  return (g / g.sum()).astype(np.float32)


def ssim(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 1.0,
         sigma: float = 1.5) -> jnp.ndarray:
  """Structural similarity (Wang et al. 2004) per image, averaged over channels.

  Gaussian window (sigma 1.5, 11 taps), K1 = 0.01, K2 = 0.03, population covariances,
  statistics over the valid region only: equal to scikit-image's
  `structural_similarity(gaussian_weights=True, use_sample_covariance=False,
  channel_axis=-1)`. x, y: (B, H, W, C) -> (B,).
  """
  g = jnp.asarray(_gaussian_window(sigma))
  kernel = jnp.outer(g, g)[:, :, None, None]  # (k, k, 1, 1)
  b, h, w, c = x.shape

  def blur(z):  # (B, H, W, C) -> (B, H-k+1, W-k+1, C), each channel separately
    z = jnp.moveaxis(z, -1, 1).reshape(b * c, h, w, 1)
    out = jax.lax.conv_general_dilated(z, kernel, (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.moveaxis(out.reshape(b, c, *out.shape[1:3]), 1, -1)

  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x**2
  var_y = blur(y * y) - mu_y**2
  cov = blur(x * y) - mu_x * mu_y
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
  return jnp.mean(s, axis=(1, 2, 3))


def offset_distances(audio_emb: np.ndarray, video_emb: np.ndarray,
                     max_offset: int = 15) -> np.ndarray:
  """Mean audio-video embedding distance per offset.

  audio_emb, video_emb: (N, D), row i embeds the window starting at video frame i.
  Returns (2 * max_offset + 1,): entry k + max_offset is the mean over i of
  ||video_emb[i] - audio_emb[i + k]||, audio rows outside 0..N-1 being zero vectors.
  """
  n = len(video_emb)
  if len(audio_emb) != n:
    raise EvaluationError(f"{len(audio_emb)} audio windows vs {n} video windows")
  padded = np.concatenate([np.zeros((max_offset, audio_emb.shape[1]), audio_emb.dtype),
                           audio_emb,
                           np.zeros((max_offset, audio_emb.shape[1]), audio_emb.dtype)])
  dists = [np.linalg.norm(video_emb - padded[k:k + n], axis=1).mean()
           for k in range(2 * max_offset + 1)]
  return np.asarray(dists, np.float64)


def sync_scores(mean_dists: np.ndarray) -> dict[str, float]:
  """Expert sync distance, confidence and best offset from `offset_distances`' output.

  Returns {"expert_sync_d", "expert_sync_c", "expert_av_offset"}: `expert_av_offset` k
  means video window i matches audio window i + k best: k > 0 when the audio lags the
  video by k frames.
  """
  max_offset = (len(mean_dists) - 1) // 2
  best = int(np.argmin(mean_dists))
  sync_d = float(mean_dists[best])
  return {"expert_sync_d": sync_d, "expert_sync_c": float(np.median(mean_dists) - sync_d),
          "expert_av_offset": best - max_offset}


def sync_windows(faces: np.ndarray, mel: np.ndarray, fps: float
                 ) -> tuple[np.ndarray, np.ndarray]:
  """SyncNet inputs for every 5-frame window of a clip.

  faces: (T, H, W, 3) face crops in [0, 1]; mel: (80, n_mel). Returns
  (mels (N, 80, 16, 1), lower_halves (N, H/2, W, 15)) with N = T - 4; window i holds
  frames i..i+4 and the mel window of frame i (clamped at the end of the audio).
  """
  t, h = faces.shape[:2]
  n = t - SYNC_WINDOW + 1
  if n < 1:
    raise EvaluationError(f"{t} frames: a clip needs at least {SYNC_WINDOW} for sync scores")
  lower = faces[:, h // 2:]
  halves = np.stack([np.concatenate(lower[i:i + SYNC_WINDOW], axis=-1) for i in range(n)])
  mels = np.stack([audio.mel_window(mel, i, fps, clamp=True) for i in range(n)])
  return mels[..., None].astype(np.float32), halves.astype(np.float32)


def embed_sync_windows(syncnet_fn: Callable[[Any, Any], tuple[Any, Any]],
                       mels: np.ndarray, halves: np.ndarray, batch_size: int = 64
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Runs `syncnet_fn(mels, halves) -> (audio_emb, video_emb)` in fixed-size batches.

  The last batch is padded so a jitted `syncnet_fn` compiles once.
  """
  audio_out, video_out = [], []
  for start in range(0, len(mels), batch_size):
    m, v = mels[start:start + batch_size], halves[start:start + batch_size]
    valid = len(m)
    if valid < batch_size:
      m = np.concatenate([m, np.repeat(m[-1:], batch_size - valid, 0)])
      v = np.concatenate([v, np.repeat(v[-1:], batch_size - valid, 0)])
    a_emb, v_emb = syncnet_fn(m, v)
    audio_out.append(np.asarray(a_emb)[:valid])
    video_out.append(np.asarray(v_emb)[:valid])
  return np.concatenate(audio_out), np.concatenate(video_out)


def clip_sync_scores(syncnet_fn: Callable[[Any, Any], tuple[Any, Any]], faces: np.ndarray,
                     mel: np.ndarray, fps: float, max_offset: int = 15,
                     batch_size: int = 64) -> dict[str, float]:
  """Expert sync scores (`sync_scores`) of one clip. faces (T, H, W, 3) in [0, 1]."""
  mels, halves = sync_windows(faces, mel, fps)
  audio_emb, video_emb = embed_sync_windows(syncnet_fn, mels, halves, batch_size)
  return sync_scores(offset_distances(audio_emb, video_emb, max_offset))


def clip_image_metrics(generated: np.ndarray, reference: np.ndarray,
                       lpips_fn: Callable[[Any, Any], Any] | None = None,
                       batch_size: int = 32) -> dict[str, float]:
  """Mean PSNR (dB), SSIM and (with `lpips_fn`) LPIPS over the frames of a clip.

  generated, reference: (T, H, W, 3) in [0, 1], same shape. `lpips_fn(x, y) -> (B,)` takes
  [0, 1] RGB batches (`checkpoints.load_lpips`); it sees fixed-size batches (the last one
  padded) so a jitted one compiles once.
  """
  if generated.shape != reference.shape:
    raise EvaluationError(f"generated {generated.shape} vs reference {reference.shape}")
  metrics = {"psnr": [], "ssim": [], "lpips": []}
  for start in range(0, len(generated), batch_size):
    x = np.asarray(generated[start:start + batch_size], np.float32)
    y = np.asarray(reference[start:start + batch_size], np.float32)
    metrics["psnr"].append(np.asarray(psnr(x, y)))
    metrics["ssim"].append(np.asarray(ssim(x, y)))
    if lpips_fn is not None:
      valid = len(x)
      if valid < batch_size:
        pad = ((0, batch_size - valid), (0, 0), (0, 0), (0, 0))
        x, y = np.pad(x, pad, mode="edge"), np.pad(y, pad, mode="edge")
      metrics["lpips"].append(np.asarray(lpips_fn(x, y))[:valid])
  return {name: float(np.mean(np.concatenate(values)))
          for name, values in metrics.items() if values}


def inception_features(inception_fn: Callable[[Any], Any], frames: Iterable[np.ndarray],
                       batch_size: int = 32) -> np.ndarray:
  """(N, 2048) float64 pool features of uint8 (H, W, 3) RGB frames, all of one size.

  `inception_fn(images (B, H, W, 3) in [0, 1]) -> (B, 2048)` (`checkpoints.load_inception`)
  always sees `batch_size` images (the last batch padded), so a jitted one compiles once.
  """
  features, batch = [], []

  def flush():
    valid = len(batch)
    images = np.stack(batch + batch[-1:] * (batch_size - valid)).astype(np.float32) / 255.0
    features.append(np.asarray(inception_fn(images), np.float64)[:valid])
    batch.clear()

  for frame in frames:
    batch.append(np.asarray(frame))
    if len(batch) == batch_size:
      flush()
  if batch:
    flush()
  if not features:
    raise EvaluationError("FID: no frames")
  return np.concatenate(features)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean (D,), covariance (D, D)) of features (N, D), N >= 2: pytorch-fid's
  `np.mean(axis=0)` and `np.cov(rowvar=False)` (divides by N - 1)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise EvaluationError(f"FID needs at least 2 frames per set, got {len(features)}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)), as pytorch-fid.

  When the product's square root is not finite (singular covariances: fewer frames than
  dimensions) eps is added to both diagonals and it is taken again; an imaginary part
  (numerical noise) is dropped unless a diagonal entry's exceeds 1e-3.

  Raises:
    EvaluationError: a significant imaginary component.
  """
  mu1, mu2 = (np.atleast_1d(m).astype(np.float64) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(s).astype(np.float64) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise EvaluationError(f"FID: statistics of different shapes {mu1.shape} / {mu2.shape}")
  diff = mu1 - mu2
  with warnings.catch_warnings():  # singular products are expected and handled below
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
      offset = np.eye(sigma1.shape[0]) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise EvaluationError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):g} in "
                            "the square root of the covariance product")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """FID between two sets of Inception pool features (N, 2048) and (M, 2048)."""
  return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def sync_crops(frames: np.ndarray, boxes: np.ndarray, size: int,
               channel_order: str = "rgb") -> np.ndarray:
  """float32 (T, size, size, 3) face crops in [0, 1] in `channel_order`, for a SyncNet."""
  crops = faces_lib.crop_faces(frames, boxes, size).astype(np.float32) / 255.0
  return crops[..., ::-1] if channel_order == "bgr" else crops


def summarize(clips: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
  """Mean of each of `keys` over the clips that have it (sync scores are clip averages)."""
  summary = {}
  for key in keys:
    values = [clip[key] for clip in clips if clip.get(key) is not None]
    if values:
      summary[key] = float(np.mean(values))
  return summary


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
  """A plain-text table: one row per dict, `columns` as the header; floats with 3 decimals."""
  def cell(value):
    if value is None:
      return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)

  cells = [list(columns)] + [[cell(row.get(c)) for c in columns] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
  lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)
