"""The published LSE-D / LSE-C: syncnet_python's SyncNet v2 under Wav2Lip's scores_LSE protocol.

Wav2Lip's `evaluation/scores_LSE` (calculate_scores_LRS.py with its
SyncNetInstance_calc_scores.py), step by step, for one 25 fps video:

1. frames as BGR, each resized to 224 x 224 as `cv2.resize` does by default (bilinear,
   half-pixel centres, 11-bit fixed-point weights: `cv2_resize_linear`);
2. the audio as 16 kHz mono 16-bit integers (`to_int16`), and its MFCC exactly as
   `python_speech_features.mfcc` with its defaults (`mfcc`: 13 coefficients per 10 ms);
3. n = min(frames, samples // 640) - 5 windows (the protocol stops one window short of the
   last full one); window i: frames i..i+4 and MFCC steps 4i..4i+19;
4. embeddings in batches of 20 (BatchNorm in eval mode: batching does not change them);
5. for each offset k in -15..15: d[i, k] = ||lip_i - audio_{i+k} + 1e-6|| (PyTorch's
   `pairwise_distance`, zero audio embeddings past either end), averaged over i;
6. LSE-D = min_k mean d, LSE-C = median_k mean d - LSE-D, offset = 15 - argmin_k.

Differences from the scripts (docs/evaluation.md): frames are decoded directly (the
scripts round-trip them through ffmpeg JPEGs), channels are averaged for mono
(ffmpeg's `-ac 1` mixes with its own weights), and videos not at 25 fps are resampled
to 25 fps (the scripts assume 25 fps without checking).
"""

import math
from typing import Any, Callable
import warnings

import numpy as np
import scipy.fft
import scipy.signal

from lipsync_jax import audio
from lipsync_jax import errors
from lipsync_jax import faces as faces_lib
from lipsync_jax import video
from lipsync_jax.models import syncnet_v2

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_STEPS_PER_FRAME = 4
BATCH_SIZE = 20
VSHIFT = 15
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default
PROTOCOLS = ("lrs", "real_videos")
# run_pipeline.py of syncnet_python, for the real-video variant.
CROP_SCALE = 0.4
SMOOTHING_KERNEL = 13
CROP_PAD_VALUE = 110


class LSEError(errors.LipsyncError, ValueError):
  """A video that cannot be scored (too short, no face)."""


# Audio.


def to_int16(wav: np.ndarray) -> np.ndarray:
  """float samples in [-1, 1] -> int16 as ffmpeg's pcm_s16le writes them (x 32768, rounded,
  clipped)."""
  return np.clip(np.rint(np.asarray(wav, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
  return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
  """(num_filters, nfft // 2 + 1) triangles on FFT bins floor((nfft + 1) f / sr)."""
  mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
  bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate)
  bank = np.zeros((num_filters, nfft // 2 + 1))
  for j in range(num_filters):
    lo, mid, hi = bins[j:j + 3]
    rise = np.arange(int(lo), int(mid))
    fall = np.arange(int(mid), int(hi))
    bank[j, rise] = (rise - lo) / (mid - lo)
    bank[j, fall] = (hi - fall) / (hi - mid)
  return bank


def mfcc(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, num_coefficients: int = 13,
         num_filters: int = 26, nfft: int = 512, preemphasis: float = 0.97,
         lifter: int = 22) -> np.ndarray:
  """`python_speech_features.mfcc(samples, sample_rate)` with its defaults.

  25 ms rectangular frames every 10 ms (the last zero-padded), power spectrum |rfft|^2 /
  nfft, log mel energies, orthonormal DCT-II, sinusoidal lifter, c0 replaced by the log
  frame energy. Zeros are replaced by float64 eps before the logs.

  Args:
    samples: (N,) mono, in the units the protocol uses (16-bit integer values).
  Returns:
    float64 (num_frames, num_coefficients), num_frames = 1 + ceil((N - 400) / 160) at 16 kHz.
  """
  signal = np.asarray(samples, np.float64)
  if signal.ndim != 1 or signal.size == 0:
    raise LSEError(f"mfcc: expected a non-empty (N,) signal, got shape {signal.shape}")
  signal = np.append(signal[0], signal[1:] - preemphasis * signal[:-1])
  frame_len = int(math.floor(0.025 * sample_rate + 0.5))
  step = int(math.floor(0.01 * sample_rate + 0.5))
  count = 1 if len(signal) <= frame_len else 1 + math.ceil((len(signal) - frame_len) / step)
  padded = np.concatenate([signal, np.zeros((count - 1) * step + frame_len - len(signal))])
  frames = padded[np.arange(count)[:, None] * step + np.arange(frame_len)[None, :]]
  power = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft
  eps = np.finfo(np.float64).eps
  energy = np.sum(power, axis=1)
  energy = np.where(energy == 0, eps, energy)
  mel = power @ _mel_filterbank(num_filters, nfft, sample_rate).T
  mel = np.where(mel == 0, eps, mel)
  cepstra = scipy.fft.dct(np.log(mel), type=2, axis=1, norm="ortho")[:, :num_coefficients]
  cepstra *= 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_coefficients) / lifter)
  cepstra[:, 0] = np.log(energy)
  return cepstra


# Frames.


def _linear_taps(size_in: int, size_out: int, clamp_weights: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """OpenCV's INTER_LINEAR taps along one axis: (index0, index1, weight0, weight1), the
  weights in 1/2048. Past the edges the indices are clamped; OpenCV also resets the
  weights to (1, 0) there along x (`clamp_weights`) but not along y."""
  position = ((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5).astype(np.float32)
  index = np.floor(position).astype(np.int64)
  frac = (position - index.astype(np.float32)).astype(np.float32)
  if clamp_weights:
    frac[(index < 0) | (index >= size_in - 1)] = 0.0
  index0 = np.clip(index, 0, size_in - 1)
  index1 = np.clip(index + 1, 0, size_in - 1)
  w1 = np.rint(frac * np.float32(2048)).astype(np.int64)
  w0 = np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int64)
  return index0, index1, w0, w1


def cv2_resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """`cv2.resize(image, (width, height))` for uint8 images (H, W[, C]).

  Bilinear with half-pixel centres and clamped edges, no antialiasing; OpenCV's 8-bit
  path: weights rounded to 1/2048, rows interpolated first (exact integers), then
  columns with its fixed-point truncations.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise LSEError(f"cv2_resize_linear: expected uint8 (H, W[, C]), got {image.dtype} "
                   f"{image.shape}")
  channel = (1,) * (image.ndim - 2)
  x0, x1, xw0, xw1 = _linear_taps(image.shape[1], width, clamp_weights=True)
  y0, y1, yw0, yw1 = _linear_taps(image.shape[0], height, clamp_weights=False)
  src = image.astype(np.int64)
  rows = src[:, x0] * xw0.reshape(-1, *channel) + src[:, x1] * xw1.reshape(-1, *channel)
  top = (yw0.reshape(-1, 1, *channel) * (rows[y0] >> 4)) >> 16
  bottom = (yw1.reshape(-1, 1, *channel) * (rows[y1] >> 4)) >> 16
  return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def resize_frames(frames_rgb: np.ndarray, size: int = syncnet_v2.LIP_SIZE) -> np.ndarray:
  """uint8 (T, H, W, 3) RGB -> uint8 (T, size, size, 3) BGR, each as `cv2_resize_linear`."""
  return np.stack([cv2_resize_linear(f[..., ::-1], size, size) for f in frames_rgb])


# Windows, distances, scores.


def num_windows(num_frames: int, num_samples: int) -> int:
  """Windows the protocol scores: min(frames, samples // 640) - 5."""
  return min(num_frames, num_samples // SAMPLES_PER_FRAME) - syncnet_v2.LIP_FRAMES


def offset_distances(lip_emb: np.ndarray, audio_emb: np.ndarray,
                     vshift: int = VSHIFT) -> np.ndarray:
  """(N, 2 vshift + 1) distances: [i, j] = ||lip_i - audio_{i + j - vshift} + 1e-6||,
  audio rows outside 0..N-1 being zero vectors (the protocol's `calc_pdist`)."""
  lip_emb = np.asarray(lip_emb, np.float64)
  audio_emb = np.asarray(audio_emb, np.float64)
  n, dim = lip_emb.shape
  padded = np.concatenate([np.zeros((vshift, dim)), audio_emb, np.zeros((vshift, dim))])
  return np.stack([np.linalg.norm(lip_emb - padded[j:j + n] + PAIRWISE_EPS, axis=-1)
                   for j in range(2 * vshift + 1)], axis=1)


def scores(mean_distances: np.ndarray) -> dict[str, float | int]:
  """{"lse_d", "lse_c", "offset"} from the mean distance per offset (2 vshift + 1,).

  offset = vshift - argmin, the protocol's sign: lip window i matches audio window
  i - offset best, so offset > 0 when the audio leads the video (the opposite sign of
  `evaluation.sync_scores`' av_offset).
  """
  vshift = (len(mean_distances) - 1) // 2
  best = int(np.argmin(mean_distances))
  lse_d = float(mean_distances[best])
  return {"lse_d": lse_d, "lse_c": float(np.median(mean_distances) - lse_d),
          "offset": vshift - best}


EmbedFn = Callable[[Any, Any], tuple[Any, Any]]


def clip_scores(embed_fn: EmbedFn, frames_bgr: np.ndarray, samples: np.ndarray,
                vshift: int = VSHIFT, batch_size: int = BATCH_SIZE) -> dict[str, float | int]:
  """LSE-D, LSE-C and offset of one clip.

  Args:
    embed_fn: `(mfcc (B, 13, 20, 1), frames (B, 5, 224, 224, 3)) -> (audio_emb, lip_emb)`
      (`checkpoints.load_syncnet_v2`); it always sees `batch_size` windows (the last
      batch padded), so a jitted one compiles once.
    frames_bgr: uint8 (T, 224, 224, 3) BGR (`resize_frames`), at 25 fps.
    samples: int16 (N,) mono at 16 kHz (`to_int16`).
  Raises:
    LSEError: fewer than 6 frames (or 0.24 s of audio): no window to score.
  """
  n = num_windows(len(frames_bgr), len(samples))
  if n < 1:
    raise LSEError(f"{len(frames_bgr)} frames and {len(samples)} samples: the protocol "
                   f"scores min(frames, samples // {SAMPLES_PER_FRAME}) - 5 windows, none here")
  coefficients = mfcc(samples).T.astype(np.float32)  # (13, steps)
  audio_out, lip_out = [], []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(n, start + batch_size))
    idx = np.concatenate([idx, np.repeat(idx[-1:], batch_size - len(idx))])
    lips = np.stack([frames_bgr[i:i + syncnet_v2.LIP_FRAMES] for i in idx]).astype(np.float32)
    steps = idx[:, None] * MFCC_STEPS_PER_FRAME + np.arange(syncnet_v2.MFCC_STEPS)
    mfccs = np.moveaxis(coefficients[:, steps], 0, 1)[..., None]  # (B, 13, 20, 1)
    audio_emb, lip_emb = embed_fn(mfccs, lips)
    valid = min(batch_size, n - start)
    audio_out.append(np.asarray(audio_emb)[:valid])
    lip_out.append(np.asarray(lip_emb)[:valid])
  distances = offset_distances(np.concatenate(lip_out), np.concatenate(audio_out), vshift)
  return scores(distances.mean(axis=0))


# Reading videos for each protocol.


def read_lrs(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(frames uint8 (T, 224, 224, 3) BGR, samples int16 (N,)) of a video, as
  calculate_scores_LRS reads it: whole frames resized (the videos are face crops)."""
  frames, _ = video.read_video(path, fps=FPS)
  return resize_frames(frames), to_int16(audio.load_audio(path))


def track_crops(frames_rgb: np.ndarray, face_boxes: np.ndarray) -> np.ndarray:
  """uint8 (T, 224, 224, 3) BGR crops as syncnet_python's run_pipeline `crop_video` cuts
  them from face boxes (x1, y1, x2, y2) (T, 4).

  Box half-size s = max(w, h) / 2 and centre, each median-filtered over 13 frames; frames
  padded by int(1.8 s) with grey 110; crop rows [cy - s, cy + 1.8 s), columns
  [cx - 1.4 s, cx + 1.4 s) (the face sits in the upper part); resized to 224 x 224.
  """
  boxes = np.asarray(face_boxes, np.float64)
  with warnings.catch_warnings():  # tracks under 13 frames: zero-padded, as the original
    warnings.filterwarnings("ignore", "kernel_size exceeds volume extent")
    half, cy, cx = (scipy.signal.medfilt(v, SMOOTHING_KERNEL) for v in (
        np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2,
        (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2))
  crops = []
  for frame, s, y, x in zip(frames_rgb, half, cy, cx):
    pad = int(s * (1 + 2 * CROP_SCALE))
    padded = np.pad(frame[..., ::-1], ((pad, pad), (pad, pad), (0, 0)),
                    constant_values=CROP_PAD_VALUE)
    y, x = y + pad, x + pad
    face = padded[int(y - s):int(y + s * (1 + 2 * CROP_SCALE)),
                  int(x - s * (1 + CROP_SCALE)):int(x + s * (1 + CROP_SCALE))]
    if face.size == 0:
      raise LSEError(f"empty face crop (box half-size {s:.1f} px)")
    crops.append(cv2_resize_linear(face, syncnet_v2.LIP_SIZE, syncnet_v2.LIP_SIZE))
  return np.stack(crops)


def read_real_video(path: str, detector: faces_lib.FaceDetector | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(crops, samples) as calculate_scores_real_videos scores a video: the face tracked
  (one face per frame from our detector, gaps interpolated; see docs/evaluation.md for
  the differences from syncnet_python's S3FD tracker) and cropped by `track_crops`."""
  frames, _ = video.read_video(path, fps=FPS)
  boxes, has_face = faces_lib.detect_video_boxes(
      iter(frames), detector or faces_lib.FaceDetector(), pads=(0, 0, 0, 0), smooth=False,
      missing="interpolate", total=len(frames))
  if not has_face.any():
    raise LSEError(f"{path}: no face detected in any frame")
  return track_crops(frames, boxes), to_int16(audio.load_audio(path))


def video_scores(embed_fn: EmbedFn, path: str, protocol: str = "lrs",
                 vshift: int = VSHIFT, batch_size: int = BATCH_SIZE,
                 detector: faces_lib.FaceDetector | None = None) -> dict[str, float | int]:
  """LSE-D, LSE-C and offset of the video at `path` under `protocol` ("lrs" or
  "real_videos")."""
  if protocol == "lrs":
    frames, samples = read_lrs(path)
  elif protocol == "real_videos":
    frames, samples = read_real_video(path, detector)
  else:
    raise LSEError(f"unknown LSE protocol {protocol!r}; expected one of {PROTOCOLS}")
  try:
    return clip_scores(embed_fn, frames, samples, vshift, batch_size)
  except LSEError as e:
    raise LSEError(f"{path}: {e}") from e
