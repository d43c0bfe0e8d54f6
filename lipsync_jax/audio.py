"""Audio loading, the Wav2Lip-compatible mel spectrogram, and frame -> mel indexing.

The mel spectrogram reproduces the original Wav2Lip computation (Rudrabha/Wav2Lip
`audio.py` with its `hparams.py`), on which the official checkpoints were trained:

  16 kHz mono -> pre-emphasis y[n] = x[n] - 0.97 x[n-1]
  -> |STFT| (n_fft 800, hop 200, periodic Hann window of 800, centred with
     *reflect* padding, as librosa 0.7 did; librosa >= 0.10 pads with zeros)
  -> Slaney mel filterbank (80 bands, 55..7600 Hz, area-normalised), on the magnitude
  -> 20 log10(max(1e-5, mel)) - 20
  -> clip(8 (S + 100) / 100 - 4, -4, 4).

There are 80 mel frames per second of audio and a mel window is 16 frames (0.2 s).
`StreamingMel` computes the same spectrogram from chunks as they arrive (live lip sync).

Frame -> mel convention. The project has ONE convention, the one of Wav2Lip's
inference: video frame i (0-based, at `fps` frames per second) is paired with the
window of `MEL_WINDOW` mel frames starting at `int(80 * i / fps)`. Everything
(samplers, SyncNet, inference, evaluation, the synthetic data) calls
`mel_window_start` / `mel_window`. The original *training* code of the generator
started each frame's window one video frame earlier (Wav2Lip issues #437, #680);
`offset_frames=-1` reproduces that, as a compatibility switch only.
"""

from fractions import Fraction
import math
import os

import av
import librosa
import numpy as np
import scipy.signal

from lipsync_jax import errors

SAMPLE_RATE = 16000
MEL_FRAMES_PER_SECOND = 80
MEL_WINDOW = 16

N_FFT = 800
HOP_LENGTH = 200
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MIN_SAMPLES = N_FFT // 2 + 1
_MAX_TRAILING_PADDING = 2048  # samples at 16 kHz


class AudioError(errors.LipsyncError, ValueError):
  """Audio that cannot be loaded or turned into a mel spectrogram."""


def load_audio(path: str | os.PathLike) -> np.ndarray:
  """Decodes the first audio stream of any container FFmpeg reads.

  Channels are mixed down and the signal resampled to `SAMPLE_RATE` inside the
  process (PyAV's bundled libswresample); no external ffmpeg is used.

  Args:
    path: a wav, mp3, m4a, mp4, mkv, ... file.

  Returns:
    float32 (num_samples,) mono signal at 16 kHz, nominally in [-1, 1].

  Raises:
    AudioError: the file is missing, unreadable, has no audio stream or no samples.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AudioError(f"{path}: no such file")
  chunks = []
  try:
    with av.open(path) as container:
      if not container.streams.audio:
        raise AudioError(f"{path}: no audio stream")
      stream = container.streams.audio[0]
      declared_s = (float(stream.duration * stream.time_base)
                    if stream.duration and stream.time_base else None)
      # Planar float at 16 kHz, channels kept: libswresample's own downmix weights
      # stereo by 1/sqrt(2) each, librosa (the original's loader) averages them.
      resampler = av.AudioResampler(format="fltp", layout=None, rate=SAMPLE_RATE)
      for frame in container.decode(stream):
        chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(frame))
      chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(None))
  except av.FFmpegError as e:
    raise AudioError(f"{path}: unreadable audio ({e})") from e
  wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
  if wav.size == 0:
    raise AudioError(f"{path}: the audio stream has no samples")
  if declared_s is not None:
    # Codecs such as AAC decode whole frames; drop the padding past the declared
    # duration (at most a couple of codec frames, never real audio).
    declared = round(declared_s * SAMPLE_RATE)
    if 0 < wav.size - declared <= _MAX_TRAILING_PADDING:
      wav = wav[:declared]
  return wav


def mel_filterbank() -> np.ndarray:
  """librosa's Slaney-style, area-normalised mel filters: float32 (80, n_fft // 2 + 1)."""
  return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN,
                             fmax=FMAX).astype(np.float32)


def stft_magnitude(wav: np.ndarray) -> np.ndarray:
  """|STFT| (periodic Hann window, centred, REFLECT padding as librosa 0.7 did).

  librosa >= 0.10 defaults to zero padding, which changes the first and last frames;
  the official checkpoints saw reflect padding, so it is passed explicitly.

  The FFT runs in float64 and only the magnitudes are rounded to float32, as in the
  original (scipy's pre-emphasis returns float64 and librosa 0.7 transformed it in
  float64, storing complex64). librosa >= 0.8 keeps a float32 input in float32 (and
  numpy >= 2 then transforms in float32), which moved the final mel by up to ~4e-6 on
  speech and noise and 1.5e-4 on pure tones (vs ~1e-6 this way).

  Returns:
    float32 (n_fft // 2 + 1, n // hop_length + 1) magnitudes.
  """
  spectrum = librosa.stft(y=np.asarray(wav, np.float64), n_fft=N_FFT, hop_length=HOP_LENGTH,
                          win_length=N_FFT, window="hann", center=True, pad_mode="reflect")
  return np.abs(spectrum).astype(np.float32)


def melspectrogram(wav: np.ndarray) -> np.ndarray:
  """Wav2Lip's normalised log-mel spectrogram of a 16 kHz mono signal.

  Args:
    wav: float (num_samples,) at `SAMPLE_RATE`, at least `MIN_SAMPLES` long.

  Returns:
    float32 (80, num_samples // 200 + 1) in [-4, 4]; column m is centred on sample 200 m.

  Raises:
    AudioError: the signal is not 1-D, empty, shorter than `MIN_SAMPLES` or not finite.
  """
  wav = np.asarray(wav, np.float32)
  if wav.ndim != 1:
    raise AudioError(f"melspectrogram expects a 1-D signal, got shape {wav.shape}")
  if wav.size < MIN_SAMPLES:
    raise AudioError(f"audio too short for a mel spectrogram: {wav.size} samples "
                     f"(need at least {MIN_SAMPLES})")
  if not np.all(np.isfinite(wav)):
    raise AudioError("audio contains NaN or infinite samples")
  emphasised = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], wav)  # float64
  return normalised_log_mel(mel_filterbank() @ stft_magnitude(emphasised))


def normalised_log_mel(mel: np.ndarray) -> np.ndarray:
  """Mel magnitudes (80, T) -> Wav2Lip's clipped, normalised dB, float32 in [-4, 4].

  Column by column (no statistics over time), so the streaming mel shares it.
  """
  min_level = 10.0 ** (MIN_LEVEL_DB / 20.0)
  db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
  normalised = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
  return np.clip(normalised, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


class StreamingMel:
  """`melspectrogram` of a signal that arrives in chunks of any size.

  `push(chunk)` returns the mel columns that the audio so far determines: column m
  (centred on sample 200 m) once samples up to index 200 m + 399 have arrived (column 0
  needs 401 samples for its reflect padding); `finish()` returns the remaining columns,
  whose frames reach past the end and are reflect-padded there as the offline STFT
  does. The concatenated outputs equal `melspectrogram` of the whole signal (to float
  rounding, ~1e-6): same float64 pre-emphasis carried across chunks, same reflect
  padding at both ends, same periodic Hann window and normalisation.

  Attributes: `num_samples` pushed so far, `num_columns` returned so far.
  """

  def __init__(self):
    self.num_samples = 0
    self.num_columns = 0
    self._filterbank = mel_filterbank()
    self._window = scipy.signal.get_window("hann", N_FFT, fftbins=True)
    self._last_sample = None  # float32 x[n-1], for the pre-emphasis of the next chunk.
    self._head = np.zeros(0)  # pre-emphasised samples before the start padding is known
    self._padded = None  # the centre-padded signal from column `num_columns`'s frame on
    self._finished = False

  def push(self, chunk: np.ndarray) -> np.ndarray:
    """Adds float samples (k,) at 16 kHz; returns float32 (80, new columns).

    Raises:
      AudioError: a chunk that is not 1-D or has NaN / infinite samples, or a push
        after `finish`.
    """
    if self._finished:
      raise AudioError("StreamingMel: push after finish")
    chunk = np.asarray(chunk, np.float32)
    if chunk.ndim != 1:
      raise AudioError(f"audio chunks must be 1-D, got shape {chunk.shape}")
    if not np.all(np.isfinite(chunk)):
      raise AudioError("audio contains NaN or infinite samples")
    if not chunk.size:
      return np.zeros((NUM_MELS, 0), np.float32)
    x = chunk.astype(np.float64)
    previous = np.concatenate([[0.0 if self._last_sample is None else self._last_sample], x[:-1]])
    emphasised = x - PREEMPHASIS * previous  # as lfilter([1, -0.97], [1]): y[0] = x[0]
    self._last_sample = float(chunk[-1])
    self.num_samples += chunk.size
    if self._padded is None:
      self._head = np.concatenate([self._head, emphasised])
      if self._head.size < MIN_SAMPLES:
        return np.zeros((NUM_MELS, 0), np.float32)
      pad = N_FFT // 2  # librosa's centre=True reflect padding of the start
      self._padded, self._head = np.concatenate([self._head[pad:0:-1], self._head]), None
    else:
      self._padded = np.concatenate([self._padded, emphasised])
    return self._columns(self._padded)

  def finish(self) -> np.ndarray:
    """Ends the signal; returns float32 (80, k) of the columns reaching past the end.

    Raises:
      AudioError: fewer than `MIN_SAMPLES` samples in all.
    """
    if self._finished:
      return np.zeros((NUM_MELS, 0), np.float32)
    self._finished = True
    if self._padded is None:
      raise AudioError(f"audio too short for a mel spectrogram: {self.num_samples} samples "
                       f"(need at least {MIN_SAMPLES})")
    # Reflect padding of the end: padded[n + 400 + j] = y[n - 2 - j]; `_padded` holds
    # at least the last 600 samples (see `_columns`).
    tail = self._padded[-2:-2 - N_FFT // 2:-1]
    total = self.num_samples // HOP_LENGTH + 1
    return self._columns(np.concatenate([self._padded, tail]), total - self.num_columns)

  def _columns(self, padded: np.ndarray, limit: int | None = None) -> np.ndarray:
    count = max(0, (padded.size - N_FFT) // HOP_LENGTH + 1)
    if limit is not None:
      count = min(count, limit)
    if not count:
      return np.zeros((NUM_MELS, 0), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:count]
    magnitude = np.abs(np.fft.rfft(frames * self._window, axis=-1)).astype(np.float32)
    self._padded = padded[count * HOP_LENGTH:]
    self.num_columns += count
    return normalised_log_mel(self._filterbank @ magnitude.T)


def mel_window_start(frame_index: int, fps: float, offset_frames: int = 0) -> int:
  """First mel frame of the window of video frame `frame_index`.

  `int(80 * (frame_index + offset_frames) / fps)`, computed exactly (no float
  rounding at integer boundaries). `offset_frames=-1` is the original Wav2Lip
  generator-training convention; the project's convention is 0.

  Args:
    frame_index: 0-based video frame index.
    fps: video frames per second (e.g. 25, 29.97, Fraction(30000, 1001)).
    offset_frames: shift of the window in video frames.
  """
  fps = Fraction(fps).limit_denominator(1_000_000)
  if fps <= 0:
    raise AudioError(f"fps must be positive, got {float(fps)}")
  return math.trunc(MEL_FRAMES_PER_SECOND * (int(frame_index) + int(offset_frames)) / fps)


def mel_window(mel: np.ndarray, frame_index: int, fps: float, offset_frames: int = 0,
               clamp: bool = False) -> np.ndarray:
  """The (80, 16) mel window paired with a video frame.

  Args:
    mel: (80, n_mel) spectrogram from `melspectrogram`.
    frame_index: 0-based video frame index.
    fps: video frames per second.
    offset_frames: see `mel_window_start`.
    clamp: inference behaviour: a window running past the end of `mel` is replaced by
      the last `MEL_WINDOW` frames (and one starting before 0 by the first ones).

  Returns:
    (80, MEL_WINDOW) slice of `mel` (same dtype).

  Raises:
    ValueError: the window is out of range and `clamp` is False, or `mel` is shorter
      than one window.
  """
  num_mel = mel.shape[-1]
  if num_mel < MEL_WINDOW:
    raise AudioError(f"mel has {num_mel} frames, fewer than one window ({MEL_WINDOW})")
  start = mel_window_start(frame_index, fps, offset_frames)
  if clamp:
    start = min(max(start, 0), num_mel - MEL_WINDOW)
  elif start < 0 or start + MEL_WINDOW > num_mel:
    raise AudioError(f"mel window [{start}, {start + MEL_WINDOW}) of frame {frame_index} "
                     f"is outside the {num_mel} mel frames")
  return mel[..., start:start + MEL_WINDOW]


def num_video_frames_for_mel(num_mel: int, fps: float) -> int:
  """How many mel windows (hence output frames) Wav2Lip's inference makes of `num_mel`.

  The original emits the window of frame i = 0, 1, ... while it fits entirely
  (`mel_window_start(i, fps) + 16 <= num_mel`), then one last window clamped to the
  end, and stops; the video is cut (or a still image repeated) to this many frames.
  With `mel_window(..., clamp=True)` frames 0 .. result - 1 give exactly those windows.

  Raises:
    ValueError: `num_mel` is shorter than one window.
  """
  if num_mel < MEL_WINDOW:
    raise AudioError(f"mel has {num_mel} frames, fewer than one window ({MEL_WINDOW})")
  fps = Fraction(fps).limit_denominator(1_000_000)
  # int(80 i / fps) <= n - 16  <=>  80 i / fps < n - 15  <=>  i < (n - 15) fps / 80.
  return math.ceil((num_mel - MEL_WINDOW + 1) * fps / MEL_FRAMES_PER_SECOND) + 1
