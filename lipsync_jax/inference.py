"""Inference: a jitted generator function for notebooks, and video/photo + audio -> frames.

`make_inference_fn` is the array-level entry point (fixed batch shape, compiles once);
`export_inference_fn` serialises that fixed-shape function with `jax.export` (StableHLO).
`LipsyncJob` runs the whole pipeline streaming: face boxes (a fixed box, a JSON sidecar or
the detector), then per batch decode, crop, mel windows, generation, paste-back;
`tools/infer.py` writes its frames to an mp4, `lipsync` collects them in memory.
`prepare_avatar` does once, for a live stream (`streaming.LipsyncStream`), what does not
depend on the audio (decode, boxes, crops); `save_avatar` / `load_avatar` keep it in a
folder. Both paths share the box logic (`source_crop_boxes`), the generator input
(`face_inputs`) and the paste-back (`paste_generated`).
"""

import collections
import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import errors
from lipsync_jax import faces
from lipsync_jax import video

Array = np.ndarray


def make_inference_fn(model: nn.Module, variables: Any, batch_size: int = 16,
                      dtype: Any = None) -> Callable[[Array, Array], Array]:
  """Jitted generator over arrays of any length, in fixed-size batches.

  Args:
    model: a generator module (`Wav2Lip` or `AttnWav2Lip`).
    variables: its `{"params", "batch_stats"}`.
    batch_size: frames per compiled call; the last batch is padded, so one compile serves
      any number of frames (and later functions of an equal model reuse it).
    dtype: compute dtype override (e.g. `jnp.bfloat16`); weights keep their dtype.

  Returns:
    `fn(mel_chunks (N, 80, 16, 1), faces (N, H, W, 6)) -> (N, H, W, 3)` float32 numpy in
    [0, 1]; faces are float in [0, 1], channels 0-2 the target with its lower half zeroed,
    3-5 the reference, in the checkpoint's channel order.
  """
  if dtype is not None:
    model = model.clone(dtype=dtype)
  try:
    generate = _jitted_generator(model)
  except TypeError:  # An unhashable field (e.g. a list): no sharing, one compile here.
    generate = _jitted_generator.__wrapped__(model)

  def fn(mel_chunks: Array, face_inputs: Array) -> Array:
    if len(mel_chunks) != len(face_inputs):
      raise ValueError(f"{len(mel_chunks)} mel chunks vs {len(face_inputs)} faces")
    outputs = []
    for start in range(0, len(face_inputs), batch_size):
      mel = _pad_batch(mel_chunks[start:start + batch_size], batch_size)
      face = _pad_batch(face_inputs[start:start + batch_size], batch_size)
      valid = min(batch_size, len(face_inputs) - start)
      outputs.append(np.asarray(generate(variables, mel, face))[:valid])
    if not outputs:
      return np.zeros((0,) + face_inputs.shape[1:3] + (3,), np.float32)
    return np.concatenate(outputs)

  return fn


@functools.lru_cache(maxsize=8)
def _jitted_generator(model: nn.Module) -> Callable[[Any, Array, Array], Any]:
  """One jitted apply per module configuration (modules compare by their fields), so
  every job or notebook call with the same model and batch shape reuses one compile.
  The weights are an argument, not constants baked into the program."""

  @jax.jit
  def generate(variables, mel_chunks, faces):
    return model.apply(variables, mel_chunks, faces, train=False).astype(jnp.float32)

  return generate


def _pad_batch(x: Array, batch_size: int) -> Array:
  """Pads the leading axis to `batch_size` by repeating the last row."""
  x = np.asarray(x, np.float32)
  if len(x) == batch_size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], batch_size - len(x), axis=0)])


def export_inference_fn(model: nn.Module, variables: Any, batch_size: int = 16,
                        channel_order: str = "rgb", dtype: Any = None) -> bytes:
  """The fixed-shape generator as a serialised `jax.export` artifact (StableHLO).

  The weights are baked in as constants, so the artifact alone is the model:
  `jax.export.deserialize(data).call(mel_chunks, faces)` on any JAX backend, with
  `mel_chunks` float32 (batch_size, 80, 16, 1) and `faces` float32
  (batch_size, S, S, 6) in [0, 1], channels RGB whatever the checkpoint's order
  (a BGR checkpoint's flips are compiled in); returns float32 (batch_size, S, S, 3) RGB.

  Args:
    model, variables, batch_size, dtype: as `make_inference_fn`.
    channel_order: the order the weights expect, "rgb" or "bgr".
  """
  if channel_order not in ("rgb", "bgr"):
    raise ValueError(f"channel_order must be rgb or bgr, got {channel_order!r}")
  if dtype is not None:
    model = model.clone(dtype=dtype)
  size = int(getattr(model, "img_size", 96))
  flip = channel_order == "bgr"

  def generate(mel_chunks, faces):
    if flip:
      faces = jnp.concatenate([faces[..., 2::-1], faces[..., :2:-1]], axis=-1)
    out = model.apply(variables, mel_chunks, faces, train=False).astype(jnp.float32)
    return out[..., ::-1] if flip else out

  specs = (jax.ShapeDtypeStruct((batch_size, 80, audio.MEL_WINDOW, 1), jnp.float32),
           jax.ShapeDtypeStruct((batch_size, size, size, 6), jnp.float32))
  return bytes(jax.export.export(jax.jit(generate))(*specs).serialize())


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class InferenceError(errors.LipsyncError, ValueError):
  """An input the pipeline cannot use; the message names the file and the problem."""


@dataclasses.dataclass
class LipsyncResult:
  """frames: uint8 (N, H, W, 3) RGB; audio: float32 (n,) at `sample_rate`; has_face: (N,)."""
  frames: Array
  audio: Array
  fps: float
  sample_rate: int
  has_face: Array


@dataclasses.dataclass(frozen=True)
class FaceSource:
  """Where the face frames come from: a video file, a still image, or frames in memory."""
  frames: Array | None  # (T, H, W, 3) uint8 when in memory
  path: str | None
  fps: float
  resize_factor: int = 1
  length: int = 1  # source frames (from the header for videos)

  @property
  def is_still(self) -> bool:
    return self.frames is not None and len(self.frames) == 1

  def iter_once(self, limit: int) -> Iterator[Array]:
    """Up to `limit` frames of one pass over the source, resized."""
    stream = iter(self.frames) if self.frames is not None else video.iter_frames(self.path)
    for i, frame in enumerate(stream):
      if i == limit:
        return
      yield self._resize(frame)

  def iter(self, count: int, static: bool = False) -> Iterator[Array]:
    """`count` frames: frame i is source frame i mod T (frame 0 for stills / `static`)."""
    produced = 0
    while produced < count:
      before = produced
      for frame in self.iter_once(1 if static else count - produced):
        yield frame
        produced += 1
      if produced == before:
        raise InferenceError(f"{self.path}: the video has no frames")
      if static:
        for _ in range(count - produced):
          yield frame
        return

  def _resize(self, frame: Array) -> Array:
    if self.resize_factor == 1:
      return frame
    h, w = frame.shape[:2]
    size = (max(2, w // self.resize_factor), max(2, h // self.resize_factor))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))


def open_face_source(face: str | Array, fps: float | None = None,
                     resize_factor: int = 1) -> FaceSource:
  """A video path, image path, (H, W, 3) image or (T, H, W, 3) frames as a `FaceSource`.

  Videos keep their own frame rate; stills and in-memory frames use `fps` (25 if None).
  """
  if resize_factor < 1:
    raise InferenceError(f"resize_factor must be >= 1, got {resize_factor}")
  if not isinstance(face, (str, os.PathLike)):
    frames = np.asarray(face)
    if frames.ndim == 3:
      frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
      raise InferenceError(f"face frames must be uint8 (T, H, W, 3), got {frames.dtype} "
                           f"{frames.shape}")
    return FaceSource(frames, None, float(fps or 25.0), resize_factor, len(frames))
  path = os.fspath(face)
  if not os.path.isfile(path):
    raise InferenceError(f"{path}: no such file")
  if path.lower().endswith(IMAGE_SUFFIXES):
    return FaceSource(video.read_image(path)[None], path, float(fps or 25.0), resize_factor)
  info = video.probe_video(path)
  return FaceSource(None, path, info.fps, resize_factor, info.num_frames)


def sidecar_path(face: str | Array) -> str | None:
  """`<stem>.json` next to a face video or image, if that file exists."""
  if not isinstance(face, (str, os.PathLike)):
    return None
  path = os.path.splitext(os.fspath(face))[0] + ".json"
  return path if os.path.isfile(path) else None


def read_sidecar_boxes(path: str) -> list[Array | None]:
  """Per-source-frame face boxes (x1, y1, x2, y2) from a JSON file's "boxes" list.

  The format `data_pipeline` writes: `{"boxes": [[x1, y1, x2, y2], null, ...]}` in the
  source video's pixels, `null` where a frame has no face.
  """
  try:
    with open(path) as f:
      content = json.load(f)
    boxes = [None if b is None else np.asarray(b, np.float64)[:4] for b in content["boxes"]]
  except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
    raise InferenceError(f"{path}: not a boxes file ({type(e).__name__}: {e})") from e
  if not boxes or any(b is not None and b.shape != (4,) for b in boxes):
    raise InferenceError(f"{path}: \"boxes\" must be a non-empty list of [x1, y1, x2, y2] "
                         "or null")
  return boxes


def crop_boxes(face_boxes: list[Array | None], pads, frame_hw: tuple[int, int],
               smooth: bool = True, missing: str = "error") -> tuple[Array, Array]:
  """Crop boxes from per-frame face boxes, as `faces.detect_video_boxes` makes them.

  Faceless frames are filled by `faces.fill_missing(missing)`, boxes are padded and
  clipped by `faces.face_crop_box`, then smoothed over 5 frames.
  Returns (boxes int32 (T, 4), has_face bool (T,)).
  """
  filled, has_face = faces.fill_missing(face_boxes, missing)
  crop = np.zeros((len(filled), 4), np.float64)
  if has_face.any() or missing == "interpolate":
    crop = np.array([faces.face_crop_box(b, pads, frame_hw) for b in filled], np.float64)
  if smooth:
    crop = faces.smooth_boxes(crop, valid=has_face)
  return np.round(crop).astype(np.int32), has_face


def source_crop_boxes(source: FaceSource, used: int, *, box=None, face_boxes=None,
                      pads=(0, 10, 0, 0), smooth: bool = True, missing: str = "error",
                      face_index: int | None = None,
                      detector: "faces.FaceDetector | None" = None, batch_size: int = 16,
                      timings: dict | None = None) -> tuple[Array, Array, str]:
  """Crop boxes of the first `used` frames of `source`: the one box logic of the project.

  From a fixed `box` (x1, y1, x2, y2; no pads, every frame), else `face_boxes` (a list
  or a JSON path, in the source's pixels: scaled by its resize factor, padded, filled,
  smoothed), else the detector (`faces.detect_video_boxes`, timed under "detect").
  Returns (boxes int32 (k, 4), has_face bool (k,), box source); k = 1 for a fixed box,
  else `used` (fewer only if the detector sees fewer frames).
  Raises:
    InferenceError: too few or malformed face boxes; faces.NoFaceError (naming the file)
      for faceless frames under missing="error".
  """
  first = next(source.iter(1))
  if box is not None:
    crop = faces.face_crop_box(box, (0, 0, 0, 0), first.shape[:2])
    return np.asarray(crop, np.int32)[None], np.ones(1, bool), "box"
  box_source = "face_boxes"
  if face_boxes is not None:
    if isinstance(face_boxes, (str, os.PathLike)):
      box_source = face_boxes = os.fspath(face_boxes)
      face_boxes = read_sidecar_boxes(face_boxes)
    if len(face_boxes) < used:
      raise InferenceError(f"{box_source}: {len(face_boxes)} face boxes for the "
                           f"{used} frames of {source.path or 'the face frames'}")
    scale = 1.0 / source.resize_factor
    face_boxes = [None if b is None else np.asarray(b, np.float64)[:4] * scale
                  for b in face_boxes[:used]]
  try:
    if face_boxes is not None:
      boxes, has_face = crop_boxes(face_boxes, pads, first.shape[:2], smooth, missing)
    else:
      box_source = "detector"
      start = time.perf_counter()
      boxes, has_face = faces.detect_video_boxes(
          source.iter_once(used), detector or faces.FaceDetector(), batch_size=batch_size,
          pads=pads, face_index=face_index, smooth=smooth, missing=missing, total=used)
      if timings is not None:
        timings["detect"] += time.perf_counter() - start
  except faces.NoFaceError as e:  # Name the file too; keep the type and frame_indices.
    e.args = (f"{source.path or 'face frames'}: {e}",)
    raise
  return boxes, has_face, box_source


def face_inputs(crops: Array, channel_order: str = "rgb") -> Array:
  """uint8 (B, S, S, 3) RGB face crops -> float32 (B, S, S, 6) generator input in [0, 1]:
  the crop with its lower half zeroed, then the crop itself, in `channel_order`."""
  reference = crops.astype(np.float32) / 255.0
  if channel_order == "bgr":
    reference = reference[..., ::-1]
  masked = reference.copy()
  masked[:, crops.shape[1] // 2:] = 0.0
  return np.concatenate([masked, reference], axis=-1)


def paste_generated(frames: list[Array], generated: Array, boxes: Array, has_face: Array,
                    channel_order: str = "rgb", blend: bool = True) -> list[Array]:
  """The frames with the generator's (B, S, S, 3) outputs in `channel_order` pasted into
  their crop boxes (`faces.paste_back`); frames without a face are passed through."""
  if channel_order == "bgr":
    generated = generated[..., ::-1]
  return [faces.paste_back(frame, face, box, blend=blend) if present else frame
          for frame, face, box, present in zip(frames, generated, boxes, has_face)]


def load_wav(audio_input: str | Array) -> Array:
  """float32 (n,) 16 kHz audio from a path (any container) or an array."""
  if isinstance(audio_input, (str, os.PathLike)):
    return audio.load_audio(audio_input)
  wav = np.asarray(audio_input, np.float32)
  if wav.ndim != 1 or not len(wav):
    raise InferenceError(f"audio must be a non-empty (n,) array at 16 kHz, got {wav.shape}")
  return wav


class LipsyncJob:
  """Video/photo + audio -> lip-synced frames, streamed.

  The constructor does everything that can fail on bad input (audio, mel, face boxes),
  so a caller writing a file fails before writing anything; `frames()` then streams the
  output frames (decode, crop, generate, paste back), never holding the whole video.
  Output frame i shows source frame i mod T (frame 0 for stills or `static`) with the
  mel window of frame i (`audio.mel_window(..., clamp=True)`); there are
  `audio.num_video_frames_for_mel` of them, so the output lasts as long as the audio.

  Args:
    face: video path, image path, (H, W, 3) image or (T, H, W, 3) frames, uint8 RGB.
    audio_input: audio path (any container) or float32 (n,) at 16 kHz.
    generator: a `checkpoints.Generator` (module, variables, channel order).
    fps: frame rate for stills / in-memory frames (default 25); videos keep theirs.
    batch_size: frames per generator call (and per detector call).
    pads: (top, bottom, left, right) pixels added to detected boxes (`faces.face_crop_box`).
    box: a fixed (x1, y1, x2, y2) crop box for every frame: no detection, no pads.
    face_boxes: per-source-frame face boxes (x1, y1, x2, y2) or None (no face), in the
      source's pixels, or the path of a JSON file holding them under "boxes"; padded,
      filled and smoothed like detections, but no detector runs. By default a video's
      or image's `<stem>.json` sidecar is used when it exists (`use_sidecar`).
    smooth: running mean of boxes over 5 frames (Wav2Lip's `--nosmooth` turns it off).
    static: use only the first frame of a video.
    resize_factor: downscale the input (and output) frames by this integer factor.
    blend: feathered lower-face paste-back; False = the original hard paste of the box.
    missing: faceless frames: "error" (`faces.NoFaceError` names them), "interpolate"
      (boxes from neighbouring frames) or "passthrough" (original frame copied through).
    face_index: which face when several are found (None = largest).
    detector: a `faces.FaceDetector` (built on first need otherwise).
    dtype: compute dtype override for the generator (e.g. jnp.bfloat16).
  Attributes after construction: `num_frames`, `fps`, `wav`, `boxes` (crop boxes),
  `has_face`, `box_source` ("box", a JSON path, "face_boxes" or "detector"), and
  `timings` (seconds per stage: detect, decode, generate, paste; filled as frames stream).
  """

  def __init__(self, face, audio_input, generator: checkpoints.Generator, *,
               fps: float | None = None, batch_size: int = 16, pads=(0, 10, 0, 0),
               box=None, face_boxes=None, use_sidecar: bool = True, smooth: bool = True,
               static: bool = False, resize_factor: int = 1, blend: bool = True,
               missing: str = "error", face_index: int | None = None,
               detector: "faces.FaceDetector | None" = None, dtype: Any = None):
    if missing not in ("error", "interpolate", "passthrough"):
      raise InferenceError(f"missing-face mode must be error, interpolate or passthrough, "
                           f"got {missing!r}")
    self.timings = collections.defaultdict(float)
    self.generator, self.blend, self.batch_size = generator, blend, batch_size
    self.source = open_face_source(face, fps, resize_factor)
    self.fps = self.source.fps
    self.static = static or self.source.is_still
    self.wav = load_wav(audio_input)
    self.mel = audio.melspectrogram(self.wav)
    if self.mel.shape[1] < audio.MEL_WINDOW:
      name = audio_input if isinstance(audio_input, str) else "audio"
      raise InferenceError(f"{name}: audio of {len(self.wav) / audio.SAMPLE_RATE:.3f} s is "
                           f"shorter than one mel window (0.2 s)")
    self.num_frames = audio.num_video_frames_for_mel(self.mel.shape[1], self.fps)
    if face_boxes is None and box is None and use_sidecar:
      face_boxes = sidecar_path(face)
    self.boxes, self.has_face = self._boxes(box, face_boxes, pads, smooth, missing,
                                            face_index, detector)
    self._generate = make_inference_fn(generator.model, generator.variables, batch_size, dtype)

  def _boxes(self, box, face_boxes, pads, smooth, missing, face_index, detector):
    used = 1 if self.static else min(self.num_frames, self.source.length)
    boxes, has_face, self.box_source = source_crop_boxes(
        self.source, used, box=box, face_boxes=face_boxes, pads=pads, smooth=smooth,
        missing=missing, face_index=face_index, detector=detector,
        batch_size=self.batch_size, timings=self.timings)
    index = np.arange(self.num_frames) % len(boxes)
    return boxes[index], has_face[index]

  def frames(self) -> Iterator[Array]:
    """Streams the `num_frames` output frames, uint8 (H, W, 3) RGB."""
    source = self.source.iter(self.num_frames, self.static)
    size = self.generator.img_size
    for start in range(0, self.num_frames, self.batch_size):
      indices = range(start, min(start + self.batch_size, self.num_frames))
      tick = time.perf_counter()
      batch = [next(source) for _ in indices]
      self.timings["decode"] += time.perf_counter() - tick
      tick = time.perf_counter()
      crops = faces.crop_faces(batch, self.boxes[start:start + len(batch)], size)
      mels = np.stack([audio.mel_window(self.mel, i, self.fps, clamp=True) for i in indices])
      out = self._generate(mels[..., None], face_inputs(crops, self.generator.channel_order))
      self.timings["generate"] += time.perf_counter() - tick
      tick = time.perf_counter()
      batch = paste_generated(batch, out, self.boxes[start:start + len(batch)],
                              self.has_face[start:start + len(batch)],
                              self.generator.channel_order, self.blend)
      self.timings["paste"] += time.perf_counter() - tick
      yield from batch


def lipsync(face, audio_input, variables: Any, *, model: nn.Module | None = None,
            channel_order: str = "rgb", **options) -> LipsyncResult:
  """Lip-syncs a video or photo to an audio track, in memory.

  `model` defaults to the original `Wav2Lip()`; `variables` are its weights; the other
  options are those of `LipsyncJob`. Returns the frames, the 16 kHz audio and the fps.
  """
  generator = checkpoints.Generator(model or checkpoints.build_generator("wav2lip"), variables,
                                    channel_order)
  job = LipsyncJob(face, audio_input, generator, **options)
  frames = np.stack(list(job.frames()))
  return LipsyncResult(frames, job.wav, job.fps, audio.SAMPLE_RATE, job.has_face)


# Prepared avatars: what a live stream needs of the face, computed once.

AVATAR_ARRAYS = "avatar.npz"
AVATAR_METADATA = "avatar.json"


@dataclasses.dataclass(frozen=True)
class Avatar:
  """A face video or photo made ready for `streaming.LipsyncStream`.

  frames: uint8 (T, H, W, 3) RGB; boxes: int32 (T, 4) crop boxes (x1, y1, x2, y2);
  has_face: bool (T,) (False: the frame is passed through); crops: uint8 (T, S, S, 3)
  the boxes resized to the generator's input size S; fps: the output frame rate;
  source, box_source: where the frames and boxes came from.
  Output frame i shows frame `frame_index(i)`: the frames forward, then backward, ...
  """
  frames: Array
  boxes: Array
  has_face: Array
  crops: Array
  fps: float
  source: str = ""
  box_source: str = ""

  def frame_index(self, i: int) -> int:
    """0, 1, ..., T-1, T-2, ..., 1, 0, 1, ...: a ping-pong loop without jumps."""
    period = 2 * len(self.frames) - 2
    if period <= 0:
      return 0
    k = i % period
    return k if k < len(self.frames) else period - k

  def with_crop_size(self, size: int) -> "Avatar":
    """The avatar with its crops resized for a generator of input size `size`."""
    if self.crops.shape[1] == size:
      return self
    return dataclasses.replace(self, crops=faces.crop_faces(self.frames, self.boxes, size))


def prepare_avatar(face, *, fps: float | None = None, img_size: int = 96,
                   max_frames: int | None = None, box=None, face_boxes=None,
                   use_sidecar: bool = True, pads=(0, 10, 0, 0), smooth: bool = True,
                   resize_factor: int = 1, missing: str = "error",
                   face_index: int | None = None,
                   detector: "faces.FaceDetector | None" = None,
                   batch_size: int = 16) -> Avatar:
  """Decodes a face video / photo, finds its crop boxes and crops: an `Avatar`.

  Args:
    face: as `LipsyncJob`'s (video path, image path, or uint8 frames).
    fps: frame rate for stills / in-memory frames (default 25); videos keep theirs.
    img_size: the generator's input size (crops are redone on load if it differs).
    max_frames: use at most this many frames of a video (None: all).
    box, face_boxes, use_sidecar, pads, smooth, resize_factor, missing, face_index,
      detector, batch_size: as `LipsyncJob` (its box logic, `source_crop_boxes`).
  Raises:
    InferenceError, video.VideoError, faces.NoFaceError: as `LipsyncJob`.
  """
  if missing not in ("error", "interpolate", "passthrough"):
    raise InferenceError(f"missing-face mode must be error, interpolate or passthrough, "
                         f"got {missing!r}")
  source = open_face_source(face, fps, resize_factor)
  limit = source.length if max_frames is None else min(max_frames, source.length)
  frames = list(source.iter_once(max(1, limit)))
  if not frames:
    raise InferenceError(f"{source.path or 'face frames'}: the video has no frames")
  if face_boxes is None and box is None and use_sidecar:
    face_boxes = sidecar_path(face)
  boxes, has_face, box_source = source_crop_boxes(
      source, len(frames), box=box, face_boxes=face_boxes, pads=pads, smooth=smooth,
      missing=missing, face_index=face_index, detector=detector, batch_size=batch_size)
  frames = np.stack(frames[:len(boxes)] if box is None else frames)
  index = np.arange(len(frames)) % len(boxes)
  boxes, has_face = boxes[index], has_face[index]
  return Avatar(frames, boxes, has_face, faces.crop_faces(frames, boxes, img_size),
                source.fps, source.path or "frames", box_source)


def save_avatar(avatar: Avatar, folder: str | os.PathLike) -> str:
  """Writes `avatar` to `folder` (avatar.npz + avatar.json), complete or not at all:
  into a temporary sibling folder, renamed at the end (replacing an older avatar).

  Raises:
    InferenceError: `folder` exists and is not an avatar folder.
  """
  folder = os.path.abspath(os.fspath(folder))
  if os.path.exists(folder) and not os.path.isfile(os.path.join(folder, AVATAR_METADATA)):
    raise InferenceError(f"{folder}: exists and is not an avatar folder (will not replace it)")
  temp = f"{folder}.tmp-{os.getpid()}"
  old = f"{folder}.old-{os.getpid()}"
  try:
    os.makedirs(temp)
    np.savez(os.path.join(temp, AVATAR_ARRAYS), frames=avatar.frames, boxes=avatar.boxes,
             has_face=avatar.has_face, crops=avatar.crops)
    with open(os.path.join(temp, AVATAR_METADATA), "w") as f:
      json.dump({"fps": avatar.fps, "source": avatar.source, "box_source": avatar.box_source,
                 "num_frames": len(avatar.frames),
                 "frame_size": list(avatar.frames.shape[1:3])}, f, indent=1)
    if os.path.exists(folder):
      os.replace(folder, old)
    os.replace(temp, folder)
  finally:
    for leftover in (temp, old):
      if os.path.isdir(leftover):
        shutil.rmtree(leftover)
  return folder


def load_avatar(folder: str | os.PathLike) -> Avatar:
  """The `Avatar` that `save_avatar` wrote to `folder`.

  Raises:
    InferenceError: no such folder, or not a complete avatar folder.
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise InferenceError(f"{folder}: no such avatar folder (make one with "
                         "tools/prepare_avatar.py)")
  try:
    with open(os.path.join(folder, AVATAR_METADATA)) as f:
      metadata = json.load(f)
    with np.load(os.path.join(folder, AVATAR_ARRAYS)) as arrays:
      avatar = Avatar(arrays["frames"], arrays["boxes"], arrays["has_face"], arrays["crops"],
                      float(metadata["fps"]), metadata.get("source", ""),
                      metadata.get("box_source", ""))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise InferenceError(f"{folder}: not an avatar folder ({type(e).__name__}: {e})") from e
  t = len(avatar.frames)
  if (avatar.frames.ndim != 4 or avatar.frames.dtype != np.uint8 or not t
      or avatar.boxes.shape != (t, 4) or avatar.has_face.shape != (t,)
      or len(avatar.crops) != t or avatar.fps <= 0):
    raise InferenceError(f"{folder}: inconsistent avatar arrays (frames "
                         f"{avatar.frames.shape}, boxes {avatar.boxes.shape})")
  return avatar
