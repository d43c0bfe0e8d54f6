"""Tests of lipsync_jax.video: round trips through H.264 + AAC, fps resampling, errors."""

import math
import os

import av
import numpy as np
from PIL import Image
import pytest

from lipsync_jax import audio
from lipsync_jax import video

BITS = 7
BLOCK = 8


def coded_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
  """uint8 (T, H, W, 3) frames whose top row of 8x8 blocks spells the index in binary."""
  frames = np.full((num_frames, height, width, 3), 60, np.uint8)
  for index in range(num_frames):
    for bit in range(BITS):
      if index >> bit & 1:
        frames[index, :BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 230
  return frames


def decode_indices(frames: np.ndarray) -> list[int]:
  """The index spelled by each frame of `coded_frames` (robust to compression)."""
  indices = []
  for frame in frames:
    bits = [frame[2:BLOCK - 2, bit * BLOCK + 2:(bit + 1) * BLOCK - 2].mean() > 145
            for bit in range(BITS)]
    indices.append(sum(int(b) << k for k, b in enumerate(bits)))
  return indices


def test_round_trip_with_audio(tmp_path):
  path = tmp_path / "clip.mp4"
  frames = coded_frames(30)
  wav = (0.3 * np.sin(2 * np.pi * 300 * np.arange(19200) / 16000)).astype(np.float32)
  assert video.write_video(path, frames, 25, audio=wav) == str(path)
  assert os.listdir(tmp_path) == ["clip.mp4"]  # No temporary file left behind.

  info = video.probe_video(path)
  assert (info.fps, info.num_frames, info.width, info.height) == (25.0, 30, 64, 48)
  assert info.has_audio and abs(info.duration_s - 1.2) < 1e-6

  decoded, fps = video.read_video(path)
  assert fps == 25.0 and decoded.shape == frames.shape and decoded.dtype == np.uint8
  assert decode_indices(decoded) == list(range(30))
  assert np.abs(decoded.astype(int) - frames).mean() < 2.0

  loaded = audio.load_audio(path)
  assert abs(loaded.size - wav.size) <= 1024  # One AAC frame.
  assert np.abs(loaded[1000:18000] - wav[1000:18000]).max() < 0.05


def test_resample_30_to_25_drops_frames_by_time(tmp_path):
  path = tmp_path / "thirty.mp4"
  num_frames = 45  # 1.5 s
  video.write_video(path, coded_frames(num_frames), 30)
  resampled = list(video.iter_frames(path, fps=25))
  assert len(resampled) == math.ceil(num_frames * 25 / 30)
  # Output frame k (time k/25) shows the source frame shown at that time.
  assert decode_indices(resampled) == [k * 30 // 25 for k in range(len(resampled))]
  frames, fps = video.read_video(path, fps=25)
  assert fps == 25.0 and len(frames) == len(resampled)


def test_resample_25_to_50_repeats_frames(tmp_path):
  path = tmp_path / "twentyfive.mp4"
  video.write_video(path, coded_frames(20), 25)
  indices = decode_indices(video.read_video(path, fps=50)[0])
  assert indices == [k // 2 for k in range(40)]


def test_same_fps_passes_frames_through(tmp_path):
  path = tmp_path / "same.mp4"
  video.write_video(path, coded_frames(12), 25)
  assert decode_indices(list(video.iter_frames(path, fps=25.0))) == list(range(12))


def test_streams_frames_from_a_generator_and_pads_odd_sizes(tmp_path):
  path = tmp_path / "odd.mp4"
  video.write_video(path, (frame[:47, :63] for frame in coded_frames(10)), 25)
  info = video.probe_video(path)
  assert (info.width, info.height, info.num_frames, info.has_audio) == (64, 48, 10, False)
  assert decode_indices(video.read_video(path)[0]) == list(range(10))

  ramp = np.broadcast_to((np.arange(47) * 4 + 20).astype(np.uint8)[None, :, None, None],
                         (4, 47, 63, 3))
  video.write_video(path, ramp, 25)
  decoded = video.read_video(path)[0].astype(int)
  assert decoded.shape == (4, 48, 64, 3)
  assert np.abs(decoded[:, 47, 8:-8] - (46 * 4 + 20)).mean() < 3  # last row repeated


def test_write_errors_leave_no_file(tmp_path):
  path = tmp_path / "bad.mp4"
  with pytest.raises(video.VideoError, match="bad.mp4: frames must be uint8"):
    video.write_video(path, np.zeros((3, 16, 16, 3), np.float32), 25)
  with pytest.raises(video.VideoError, match="bad.mp4: no frames"):
    video.write_video(path, [], 25)
  frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((18, 16, 3), np.uint8)]
  with pytest.raises(video.VideoError, match="bad.mp4: frame 1 has size"):
    video.write_video(path, frames, 25)
  assert os.listdir(tmp_path) == []


def test_read_errors_name_the_file(tmp_path):
  with pytest.raises(video.VideoError, match="nothing.mp4: no such file"):
    video.probe_video(tmp_path / "nothing.mp4")
  with pytest.raises(video.VideoError, match="nothing.mp4: no such file"):
    next(video.iter_frames(tmp_path / "nothing.mp4"))
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(np.random.default_rng(0).bytes(4000))
  with pytest.raises(video.VideoError, match="garbage.mp4: unreadable"):
    video.read_video(garbage)
  sound = tmp_path / "sound.wav"
  with av.open(str(sound), "w") as container:
    stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate, frame.pts = 16000, 0
    container.mux(stream.encode(frame))
  with pytest.raises(video.VideoError, match="sound.wav: no video stream"):
    video.probe_video(sound)


def test_read_image(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / "face.png")
  Image.fromarray(rgb).convert("RGBA").save(tmp_path / "face_rgba.png")
  np.testing.assert_array_equal(video.read_image(tmp_path / "face.png"), rgb)
  np.testing.assert_array_equal(video.read_image(tmp_path / "face_rgba.png"), rgb)
  with pytest.raises(video.VideoError, match="face.jpg: no such file"):
    video.read_image(tmp_path / "face.jpg")
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(video.VideoError, match="text.png: unreadable image"):
    video.read_image(tmp_path / "text.png")
