"""Tests of lipsync_jax.audio: Wav2Lip mel parity, frame -> mel indexing, loading."""

from fractions import Fraction
import math

import av
import numpy as np
import pytest
import scipy.signal

from lipsync_jax import audio


def _hz_to_mel(hz):
  """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
  hz = np.asarray(hz, np.float64)
  min_log_mel, logstep = 15.0, math.log(6.4) / 27.0
  return np.where(hz >= 1000, min_log_mel + np.log(np.maximum(hz, 1000) / 1000) / logstep,
                  hz * 3 / 200)


def _mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  logstep = math.log(6.4) / 27.0
  return np.where(mel >= 15.0, 1000 * np.exp(logstep * (mel - 15.0)), mel * 200 / 3)


def numpy_filterbank():
  """Slaney triangular filters, area-normalised, written from the definition."""
  fft_hz = np.linspace(0.0, 8000.0, 401)
  edges = _mel_to_hz(np.linspace(_hz_to_mel(55.0), _hz_to_mel(7600.0), 82))
  lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  weights = np.maximum(0, np.minimum((fft_hz - lower) / (centre - lower),
                                     (upper - fft_hz) / (upper - centre)))
  return weights * 2.0 / (upper - lower)


def reference_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
  """The original Wav2Lip formula in plain numpy/scipy (independent of audio.py's librosa)."""
  emphasised = scipy.signal.lfilter([1, -0.97], [1], wav)
  padded = np.pad(emphasised, 400, mode=pad_mode)
  frames = np.lib.stride_tricks.sliding_window_view(padded, 800)[::200][:len(wav) // 200 + 1]
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic Hann
  magnitude = np.abs(np.fft.rfft(frames * window, axis=-1)).T
  db = 20 * np.log10(np.maximum(1e-5, numpy_filterbank() @ magnitude)) - 20
  return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
  """Harmonics of a gliding pitch with an envelope, plus noise; loud at both ends."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / 16000
  pitch = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
  phase = 2 * np.pi * np.cumsum(pitch) / 16000
  wav = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.6 + 0.4 * np.cos(9 * t))
  return (0.3 * wav + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)


def write_tone(path, rate: int, codec: str, layout: str, seconds: float,
               freq: float = 440.0, with_video: bool = False) -> np.ndarray:
  """Writes a tone (left = full, right = half amplitude when stereo); returns it (C, n)."""
  t = np.arange(int(seconds * rate)) / rate
  tone = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
  planes = tone[None] if layout == "mono" else np.stack([tone, 0.5 * tone])
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=rate, layout=layout)
    if codec == "aac":
      stream.bit_rate = 192_000  # FFmpeg's default (69 kb/s) audibly distorts a pure tone.
    if with_video:  # All streams must exist before the first packet is muxed.
      video = container.add_stream("libx264", rate=25)
      video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
      for _ in range(int(seconds * 25)):
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        container.mux(video.encode(frame))
      container.mux(video.encode(None))
    frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
    frame.sample_rate, frame.pts = rate, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  return planes


def _noise(num_samples: int, seed: int, scale: float, kind: str = "normal") -> np.ndarray:
  rng = np.random.default_rng(seed)
  if kind == "uniform":
    return rng.uniform(-scale, scale, num_samples).astype(np.float32)
  return (scale * rng.standard_normal(num_samples)).astype(np.float32)


# README: "audio.melspectrogram equals the original computation ... within 2e-6".
MEL_PARITY_ATOL = 2e-6
PARITY_SIGNALS = {
    "speech": lambda: speech_like(16000 + 137),
    "speech_seed3": lambda: speech_like(16000 + 3 * 137, seed=3),
    "speech_short": lambda: speech_like(audio.MIN_SAMPLES + 50, seed=4),
    "noise": lambda: _noise(12346, seed=5, scale=0.3),
    "full_scale_uniform": lambda: _noise(20000, seed=6, scale=1.0, kind="uniform"),
    "quiet_noise": lambda: _noise(9000, seed=7, scale=1e-3),
    "tone": lambda: (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(
        np.float32),
}


@pytest.mark.parametrize("signal", sorted(PARITY_SIGNALS))
@pytest.mark.filterwarnings("ignore:n_fft=800 is too large:UserWarning")
def test_melspectrogram_matches_reference_formula(signal):
  """Max abs difference to the float64 reference, at the README's tolerance.

  The original computed the FFT in float64 (scipy's pre-emphasis returns float64) and
  the mel/dB steps in float32; float32 rounding of the dB values alone leaves ~1e-6.
  """
  wav = PARITY_SIGNALS[signal]()
  mel = audio.melspectrogram(wav)
  expected = reference_mel(wav)
  assert mel.dtype == np.float32
  assert mel.shape == (80, wav.size // 200 + 1)
  assert np.abs(mel - expected).max() < MEL_PARITY_ATOL
  assert mel.min() >= -4 and mel.max() <= 4 and mel.std() > 0.5


def test_zero_padding_of_new_librosa_would_differ():
  """librosa >= 0.10 pads with zeros by default; the checkpoints saw reflect padding."""
  wav = speech_like(8000, seed=1)
  ours = audio.melspectrogram(wav)
  zero_padded = reference_mel(wav, pad_mode="constant")
  edge_error = np.abs(ours[:, [0, -1]] - zero_padded[:, [0, -1]]).max()
  assert edge_error > 0.05
  # Frames 3.. -4 read no padded sample.
  assert np.abs(ours[:, 3:-3] - zero_padded[:, 3:-3]).max() < MEL_PARITY_ATOL


def test_filterbank_matches_slaney_definition():
  np.testing.assert_allclose(audio.mel_filterbank(), numpy_filterbank(), atol=1e-7)


def test_mel_of_a_tone_peaks_in_its_band():
  t = np.arange(16000) / 16000
  mel = audio.melspectrogram(0.5 * np.sin(2 * np.pi * 1000 * t))
  centres = _mel_to_hz(np.linspace(_hz_to_mel(55), _hz_to_mel(7600), 82))[1:-1]
  peak_band = int(np.argmax(mel[:, 40]))
  assert abs(centres[peak_band] - 1000) < 60


@pytest.mark.parametrize("wav, message", [
    (np.zeros(0, np.float32), "too short"),
    (np.zeros(audio.MIN_SAMPLES - 1, np.float32), "too short"),
    (np.zeros((2, 1000), np.float32), "1-D"),
    (np.full(1000, np.nan, np.float32), "NaN"),
])
def test_melspectrogram_rejects_bad_signals(wav, message):
  with pytest.raises(audio.AudioError, match=message):
    audio.melspectrogram(wav)


@pytest.mark.parametrize("fps", [25, 30, 24, 60, Fraction(30000, 1001)])
@pytest.mark.parametrize("offset", [0, -1, 3])
def test_mel_window_start_closed_form(fps, offset):
  for i in range(300):
    # Exact rational arithmetic, truncated towards zero like Python's int().
    value = Fraction(80 * (i + offset)) / Fraction(fps)
    assert audio.mel_window_start(i, fps, offset) == math.trunc(value)
  if fps == 25:
    assert [audio.mel_window_start(i, 25) for i in range(6)] == [0, 3, 6, 9, 12, 16]
    # The original training convention: one video frame (3.2 mel frames) earlier.
    assert audio.mel_window_start(5, 25, offset_frames=-1) == 12


def test_mel_window_slices_clamps_and_rejects():
  num_mel = 40
  mel = np.tile(np.arange(num_mel, dtype=np.float32), (80, 1))
  np.testing.assert_array_equal(audio.mel_window(mel, 5, 25)[0], np.arange(16, 32))
  np.testing.assert_array_equal(audio.mel_window(mel, 6, 25, offset_frames=-1)[0],
                                np.arange(16, 32))
  assert audio.mel_window(mel, 7, 25).shape == (80, audio.MEL_WINDOW)  # starts at 22, ends 38
  with pytest.raises(ValueError, match="outside"):
    audio.mel_window(mel, 8, 25)  # starts at 25, needs 41 frames
  np.testing.assert_array_equal(audio.mel_window(mel, 8, 25, clamp=True)[0],
                                np.arange(num_mel - 16, num_mel))
  with pytest.raises(ValueError, match="outside"):
    audio.mel_window(mel, 0, 25, offset_frames=-1)
  np.testing.assert_array_equal(audio.mel_window(mel, 0, 25, offset_frames=-1, clamp=True)[0],
                                np.arange(16))
  with pytest.raises(ValueError, match="fewer than one window"):
    audio.mel_window(mel[:, :10], 0, 25, clamp=True)


@pytest.mark.parametrize("fps", [25, 30, 24, Fraction(30000, 1001)])
def test_num_video_frames_matches_inference_loop(fps):
  for num_mel in [16, 17, 33, 241, 500]:
    chunks, i = 0, 0
    while True:  # Wav2Lip's inference.py, with exact arithmetic.
      start = math.trunc(Fraction(80 * i) / Fraction(fps))
      chunks += 1
      if start + 16 > num_mel:
        break
      i += 1
    assert audio.num_video_frames_for_mel(num_mel, fps) == chunks


@pytest.mark.parametrize("suffix, codec, rate, layout, with_video", [
    ("wav", "pcm_s16le", 44100, "stereo", False),
    ("m4a", "aac", 48000, "mono", False),
    ("mp4", "aac", 44100, "stereo", True),
])
def test_load_audio_containers_resample_and_mix(tmp_path, suffix, codec, rate, layout,
                                                with_video):
  path = tmp_path / f"tone.{suffix}"
  planes = write_tone(path, rate, codec, layout, seconds=1.0, with_video=with_video)
  wav = audio.load_audio(path)
  assert wav.dtype == np.float32 and wav.ndim == 1
  assert abs(wav.size - 16000) <= (0 if codec.startswith("pcm") else 1024)
  # Independent reference: channel mean, polyphase resampling to 16 kHz.
  expected = scipy.signal.resample_poly(planes.mean(axis=0), 16000, rate)
  interior = slice(1600, 14400)
  error = np.abs(wav[interior] - expected[interior]).max()
  assert error < (0.002 if codec.startswith("pcm") else 0.03)
  spectrum = np.abs(np.fft.rfft(wav[interior] * np.hanning(12800)))
  assert abs(np.argmax(spectrum) * 16000 / 12800 - 440) < 2


def test_load_audio_errors_name_the_file(tmp_path):
  missing = tmp_path / "missing.wav"
  with pytest.raises(audio.AudioError, match="missing.wav: no such file"):
    audio.load_audio(missing)

  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(np.random.default_rng(0).bytes(5000))
  with pytest.raises(audio.AudioError, match="garbage.wav: unreadable"):
    audio.load_audio(garbage)

  silent_video = tmp_path / "video_only.mp4"
  with av.open(str(silent_video), "w") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for _ in range(5):
      frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  with pytest.raises(audio.AudioError, match="video_only.mp4: no audio stream"):
    audio.load_audio(silent_video)

  empty = tmp_path / "empty.wav"
  with av.open(str(empty), "w") as container:
    container.add_stream("pcm_s16le", rate=16000, layout="mono")
    container.start_encoding()  # A valid header, no samples.
  with pytest.raises(audio.AudioError, match="empty.wav: the audio stream has no samples"):
    audio.load_audio(empty)
