"""Video and image I/O with PyAV alone (its wheel bundles FFmpeg; no ffmpeg binary).

Frames are uint8 (H, W, 3) RGB. Reading streams frame by frame; `fps=` resamples the
video to a new frame rate by timestamps (sample and hold: output frame k at time
k / fps shows the latest source frame that started at or before it, so frames are
dropped or repeated as needed). Writing makes H.264 (yuv420p) + AAC mp4 files under a
temporary name and renames them when complete.
"""

from collections.abc import Iterable, Iterator
import dataclasses
from fractions import Fraction
import os
import uuid

import av
import numpy as np
from PIL import Image

from lipsync_jax import errors


class VideoError(errors.LipsyncError, ValueError):
  """A video or image that cannot be read or written."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What `probe_video` reports about a file's first video stream.

  fps: average frames per second; num_frames: frames in the stream (from the
  container, else counted from the packets); width, height: pixels; has_audio:
  whether the file has an audio stream; duration_s: the video stream's duration.
  """
  fps: float
  num_frames: int
  width: int
  height: int
  has_audio: bool
  duration_s: float


def _as_fraction(fps: float | Fraction) -> Fraction:
  fps = Fraction(fps).limit_denominator(1_000_000)
  if fps <= 0:
    raise VideoError(f"fps must be positive, got {float(fps)}")
  return fps


def _open(path: str | os.PathLike) -> tuple[str, "av.container.InputContainer"]:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VideoError(f"{path}: no such file")
  try:
    container = av.open(path)
  except av.FFmpegError as e:
    raise VideoError(f"{path}: unreadable video ({e})") from e
  if not container.streams.video:
    container.close()
    raise VideoError(f"{path}: no video stream")
  return path, container


def _stream_fps(stream) -> Fraction | None:
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  return Fraction(rate) if rate else None


def probe_video(path: str | os.PathLike) -> VideoInfo:
  """Reads a video's header (and its packet list when the header has no frame count).

  Raises:
    VideoError: missing or unreadable file, no video stream, unknown frame rate.
  """
  path, container = _open(path)
  with container:
    stream = container.streams.video[0]
    fps = _stream_fps(stream)
    if fps is None:
      raise VideoError(f"{path}: the video stream has no frame rate")
    num_frames = stream.frames
    try:
      if not num_frames:
        num_frames = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as e:
      raise VideoError(f"{path}: unreadable video ({e})") from e
    if stream.duration is not None and stream.time_base:
      duration_s = float(stream.duration * stream.time_base)
    else:
      duration_s = float(num_frames / fps)
    return VideoInfo(fps=float(fps), num_frames=int(num_frames),
                     width=stream.codec_context.width, height=stream.codec_context.height,
                     has_audio=bool(container.streams.audio), duration_s=duration_s)


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[np.ndarray]:
  """Decodes a video frame by frame.

  Args:
    path: any video FFmpeg reads.
    fps: output frame rate; None keeps the source frames as they are.

  Yields:
    uint8 (H, W, 3) RGB frames.

  Raises:
    VideoError: missing, unreadable or truncated file, no video stream.
  """
  path, container = _open(path)
  with container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    source_fps = _stream_fps(stream)
    try:
      if fps is None or (source_fps is not None and _as_fraction(fps) == source_fps):
        for frame in container.decode(stream):
          yield frame.to_ndarray(format="rgb24")
        return
      yield from _resample(container.decode(stream), _as_fraction(fps), source_fps)
    except av.FFmpegError as e:
      raise VideoError(f"{path}: unreadable video ({e})") from e


def _resample(frames, fps: Fraction, source_fps: Fraction | None) -> Iterator[np.ndarray]:
  """Sample and hold by presentation time, relative to the first frame's time."""
  held, held_time, first_time, count, out_index = None, None, None, 0, 0
  for frame in frames:
    if frame.pts is not None and frame.time_base is not None:
      time = Fraction(frame.pts) * Fraction(frame.time_base)
    else:
      time = Fraction(count) / (source_fps or fps)
    count += 1
    if first_time is None:
      first_time = time
    time -= first_time
    if held is not None and time <= held_time:
      continue  # Out of order or duplicated timestamp: keep the earlier frame.
    while held is not None and out_index / fps < time:
      yield held
      out_index += 1
    held, held_time = frame.to_ndarray(format="rgb24"), time
  if held is None:
    return
  frame_duration = 1 / source_fps if source_fps else 1 / fps
  while out_index / fps < held_time + frame_duration:
    yield held
    out_index += 1


def read_video(path: str | os.PathLike,
               fps: float | None = None) -> tuple[np.ndarray, float]:
  """All frames of a video in memory (prefer `iter_frames` for long videos).

  Returns:
    (frames uint8 (T, H, W, 3) RGB, fps of those frames).

  Raises:
    VideoError: as `iter_frames`, or the video has no frames.
  """
  frames = list(iter_frames(path, fps))
  if not frames:
    raise VideoError(f"{os.fspath(path)}: the video has no frames")
  out_fps = float(fps) if fps is not None else probe_video(path).fps
  return np.stack(frames), out_fps


def read_image(path: str | os.PathLike) -> np.ndarray:
  """uint8 (H, W, 3) RGB of an image file (anything Pillow reads).

  Raises:
    VideoError: missing or unreadable file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VideoError(f"{path}: no such file")
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"), dtype=np.uint8)
  except (OSError, ValueError) as e:
    raise VideoError(f"{path}: unreadable image ({e})") from e


def _even_size(frame: np.ndarray) -> np.ndarray:
  """Repeats the last row / column so both sides are even (yuv420p needs it)."""
  pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
  if pad_h or pad_w:
    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
  return frame


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
                audio: np.ndarray | None = None, sample_rate: int = 16000,
                crf: int = 18) -> str:
  """Writes an H.264 (yuv420p) mp4, with the audio muxed as AAC when given.

  The file appears at `path` only when complete (written to a temporary name in
  the same folder, then renamed). Frames with an odd width or height are padded
  by one repeated row / column.

  Args:
    path: output file (.mp4).
    frames: uint8 (H, W, 3) RGB frames, all the same size; a (T, H, W, 3) array or
      any iterable (e.g. a generator, so long videos stream).
    fps: frames per second.
    audio: optional float (n,) mono or (n, channels) signal in [-1, 1].
    sample_rate: of `audio`, in Hz.
    crf: x264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).

  Returns:
    `path` as a string.

  Raises:
    VideoError: no frames, frames of the wrong dtype / shape, or the encoder failed.
  """
  path = os.fspath(path)
  folder, name = os.path.split(os.path.abspath(path))
  temp_path = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp.mp4")
  rate = _as_fraction(fps)
  try:
    with av.open(temp_path, mode="w", format="mp4") as container:
      video_stream, num_frames = None, 0
      for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
          raise VideoError(f"{path}: frames must be uint8 (H, W, 3), "
                           f"got {frame.dtype} {frame.shape}")
        frame = _even_size(frame)
        if video_stream is None:
          video_stream = container.add_stream("libx264", rate=rate)
          video_stream.width, video_stream.height = frame.shape[1], frame.shape[0]
          video_stream.pix_fmt = "yuv420p"
          video_stream.options = {"crf": str(crf), "preset": "medium"}
          audio_stream = _add_audio_stream(container, audio, sample_rate)
        elif frame.shape[:2] != (video_stream.height, video_stream.width):
          raise VideoError(f"{path}: frame {num_frames} has size {frame.shape[:2]}, "
                           f"expected {(video_stream.height, video_stream.width)}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        container.mux(video_stream.encode(video_frame))
        num_frames += 1
      if video_stream is None:
        raise VideoError(f"{path}: no frames to write")
      container.mux(video_stream.encode(None))
      if audio_stream is not None:
        _encode_audio(container, audio_stream, audio, sample_rate)
    os.replace(temp_path, path)
  except av.FFmpegError as e:
    raise VideoError(f"{path}: encoding failed ({e})") from e
  finally:
    if os.path.exists(temp_path):
      os.remove(temp_path)
  return path


def _audio_planes(audio: np.ndarray) -> np.ndarray:
  """float32 (channels, n) planes of a (n,) or (n, channels) signal."""
  audio = np.asarray(audio, np.float32)
  return audio[None] if audio.ndim == 1 else audio.T


def _add_audio_stream(container, audio: np.ndarray | None, sample_rate: int):
  if audio is None:
    return None
  layout = "mono" if _audio_planes(audio).shape[0] == 1 else "stereo"
  stream = container.add_stream("aac", rate=int(sample_rate), layout=layout)
  stream.bit_rate = 96_000 if layout == "mono" else 160_000
  return stream


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
  planes = np.ascontiguousarray(np.clip(_audio_planes(audio), -1.0, 1.0))
  if planes.shape[-1]:
    frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=stream.layout.name)
    frame.sample_rate, frame.pts = int(sample_rate), 0
    container.mux(stream.encode(frame))
  container.mux(stream.encode(None))
