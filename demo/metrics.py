"""Mouth-region metrics of the CPU demo (`tools/demo.py`) on synthetic clips.

The synthetic faces (`data_pipeline.synthetic_faces`) draw the mouth opening as a
dark red interior (RGB about (0.22, 0.04, 0.07)) with white teeth inside it, on lips
and skin that are never that dark-red nor that grey-white. So the opening of a
face crop is measurable: the tallest run of interior-or-teeth pixels in a column of
the mouth region, the same way for ground-truth, generated and baseline frames. A
linear calibration fitted on ground-truth frames maps that height (a fraction of the
crop height) to the sidecar's `mouth.open` parameter; its residual on the ground
truth is the floor of the mouth-parameter error: about 0.06 on the 0..1 scale for
uncompressed crops and 0.08 for the JPEG crops of the record shards, with a
correlation of 0.96-0.97 between measurement and parameter (`tests/test_demo_metrics.py`).

All images are float (..., H, W, 3) RGB in [0, 1], face crops as preprocessing and
inference make them (`faces.face_crop_box` with pads (0, 10, 0, 0)).
"""

import dataclasses
from typing import Any, Sequence

import numpy as np

from lipsync_jax.losses import mouth_slices

# Columns averaged for the opening height (the tallest ones: the mouth's middle).
_TALLEST_COLUMNS = 3


def mouth_region(images: np.ndarray) -> np.ndarray:
  """(..., H, W, C) -> (..., rows, columns, C) the mouth region (`losses.mouth_slices`)."""
  rows, columns = mouth_slices(*images.shape[-3:-1])
  return images[..., rows, columns, :]


def mouth_interior_mask(images: np.ndarray) -> np.ndarray:
  """bool (..., H, W): pixels of the drawn mouth interior (dark red) or teeth (grey-white).

  Dark red: red below 0.45 and above 2.5 x green + 0.05 (the lip seam, a darkened lip
  colour, has red about twice green). Teeth: every channel above 0.55 and a spread
  below 0.2 (the lightest skin has a spread of 0.27, 0.21 where shaded); loose enough
  for JPEG-compressed crops.
  """
  images = np.asarray(images, np.float32)
  red, green = images[..., 0], images[..., 1]
  dark_red = (red < 0.45) & (red > 2.5 * green + 0.05)
  brightest, darkest = images.max(-1), images.min(-1)
  teeth = (darkest > 0.55) & (brightest - darkest < 0.2)
  return dark_red | teeth


def mouth_opening(crops: np.ndarray) -> np.ndarray:
  """float32 (N,) opening height of each face crop (N, H, W, 3), a fraction of H.

  The mean interior-pixel count of the `_TALLEST_COLUMNS` tallest columns of the
  mouth region, divided by the crop height; 0 for a closed mouth.
  """
  mask = mouth_interior_mask(mouth_region(crops)).astype(np.float32)
  heights = np.sort(mask.sum(axis=-2), axis=-1)[..., -_TALLEST_COLUMNS:]
  return (heights.mean(axis=-1) / crops.shape[-3]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class OpeningCalibration:
  """`mouth.open ~ scale * mouth_opening(crop) + offset`, fitted on ground truth."""
  scale: float
  offset: float

  @classmethod
  def fit(cls, openings: np.ndarray, mouth_open: np.ndarray) -> "OpeningCalibration":
    """Least squares on paired measurements and ground-truth parameters (N,)."""
    openings, mouth_open = np.ravel(openings), np.ravel(mouth_open)
    if openings.shape != mouth_open.shape or openings.size < 2:
      raise ValueError(f"need matching measurements and parameters, got {openings.shape} "
                       f"and {mouth_open.shape}")
    design = np.stack([openings, np.ones_like(openings)], axis=1).astype(np.float64)
    (scale, offset), *_ = np.linalg.lstsq(design, mouth_open.astype(np.float64), rcond=None)
    return cls(float(scale), float(offset))

  def predict(self, crops: np.ndarray) -> np.ndarray:
    """float32 (N,) the mouth-open parameter read from face crops (N, H, W, 3)."""
    return (self.scale * mouth_opening(crops) + self.offset).astype(np.float32)


def mouth_l1(generated: np.ndarray, target: np.ndarray) -> np.ndarray:
  """float32 (N,) mean absolute error over each frame's mouth region (N, H, W, 3)."""
  diff = np.abs(mouth_region(np.asarray(generated, np.float32))
                - mouth_region(np.asarray(target, np.float32)))
  return diff.reshape(len(diff), -1).mean(axis=1)


def mouth_psnr(generated: np.ndarray, target: np.ndarray) -> np.ndarray:
  """float32 (N,) PSNR in dB (peak 1) over each frame's mouth region (N, H, W, 3)."""
  diff = (mouth_region(np.asarray(generated, np.float32))
          - mouth_region(np.asarray(target, np.float32)))
  mse = np.maximum(np.square(diff).reshape(len(diff), -1).mean(axis=1), 1e-10)
  return (10 * np.log10(1.0 / mse)).astype(np.float32)


def copy_reference(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """The copy-the-reference baseline: the target's upper half over the reference's lower
  half, (N, H, W, 3) each."""
  out = np.array(target, np.float32, copy=True)
  h = out.shape[-3]
  out[..., h // 2:, :, :] = reference[..., h // 2:, :, :]
  return out


def mouth_scores(generated: np.ndarray, target: np.ndarray, mouth_open: np.ndarray,
                 calibration: OpeningCalibration) -> dict[str, np.ndarray]:
  """Per-frame mouth metrics of generated against ground-truth frames.

  Args:
    generated, target: (N, H, W, 3) face crops in [0, 1].
    mouth_open: (N,) ground-truth `mouth.open` of the target frames.
    calibration: fitted on ground-truth frames.
  Returns:
    {"mouth_l1", "mouth_psnr", "open_error"}: (N,) each; open_error =
    |calibrated opening of the generated frame - ground-truth parameter|.
  """
  return {"mouth_l1": mouth_l1(generated, target),
          "mouth_psnr": mouth_psnr(generated, target),
          "open_error": np.abs(calibration.predict(generated) - np.asarray(mouth_open))}


def mean_scores(per_clip: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
  """Frame-weighted means of per-frame score arrays over clips."""
  keys = per_clip[0].keys()
  return {k: float(np.mean(np.concatenate([np.ravel(c[k]) for c in per_clip]))) for k in keys}


def beats_baseline(model: dict[str, Any], baseline: dict[str, Any]) -> bool:
  """True when the model is better than the baseline on all three mouth metrics."""
  return (model["mouth_l1"] < baseline["mouth_l1"]
          and model["mouth_psnr"] > baseline["mouth_psnr"]
          and model["open_error"] < baseline["open_error"])


def shifted_mel(mel: np.ndarray, frames: int, fps: float = 25.0) -> np.ndarray:
  """The mel (80, n) of audio delayed by `frames` video frames, circularly.

  A shift of 20 frames at 25 fps is exactly 64 mel frames; other shifts round.
  """
  return np.roll(mel, int(round(frames * 80 / fps)), axis=1)
