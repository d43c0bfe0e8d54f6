"""Synthetic talking heads whose mouth is a known function of the audio.

Each clip is a drawn face (random skin, face shape, eyes, brows, hair, background,
head drift and jitter, blinks) "speaking" a random sequence of vowel syllables and
silences. The audio is a source-filter model of voiced speech: a glottal pulse train
with a varying pitch, shaped by the formant resonators of the vowel (classes /a/ /e/
/i/ /o/ /u/), with silences in between. The mouth (open height, width, roundness;
dark interior, teeth when spread) has one target shape per class, closed in silence,
eased between syllables.

Alignment, stated exactly: video frame i shows the mouth of the instant
`(i + 0.5) / fps` s, the middle of the frame's display interval, as a filmed mouth
shows the sound it makes at that moment (`frame_times`). Frame i's mel window
(`audio.mel_window(mel, i, fps)`, 16 mel frames from about i / fps) therefore starts
with the sound frame i shows, and the 0.2 s window of frame s spans the sounds of the
5 frames s .. s + 4 that SyncNet pairs with it (mouth instants s / fps + 0.02 ..
s / fps + 0.18 s). So lip-sync is measurable against the ground truth in the
project's single frame -> mel convention, the one Wav2Lip's training assumes of real video.

This is the project's embedded default dataset and learning benchmark.
"""

import dataclasses
import json
import os

import numpy as np
import scipy.signal
import tqdm

from data_pipeline import synthetic_faces
from lipsync_jax import audio
from lipsync_jax import video

FPS = 25
SAMPLE_RATE = audio.SAMPLE_RATE
VOWELS = ("sil", "a", "e", "i", "o", "u")
# Formants F1..F4 in Hz of an adult male voice (Peterson & Barney style averages).
FORMANTS_HZ = {
    "a": (730, 1090, 2440, 3400), "e": (530, 1840, 2480, 3500),
    "i": (270, 2290, 3010, 3600), "o": (570, 840, 2410, 3300),
    "u": (300, 870, 2240, 3300)}
FORMANT_BANDWIDTHS_HZ = (80, 100, 140, 200)
# Mouth target per class: (open height, width, roundness), dimensionless.
MOUTH_SHAPES = np.array([
    (0.00, 0.85, 0.0),   # silence: closed
    (1.00, 0.90, 0.1),   # a: wide open
    (0.50, 1.05, 0.0),   # e: half open, spread
    (0.25, 1.15, 0.0),   # i: nearly closed, widest, teeth
    (0.70, 0.62, 0.8),   # o: open and round
    (0.30, 0.45, 1.0),   # u: small and round
], np.float32)
MOUTH_EASE_S = 0.08
VOICE_EASE_S = 0.03


@dataclasses.dataclass(frozen=True)
class SyntheticClip:
  """One clip. T frames at `fps`; `wav` is exactly T / fps seconds long.

  frames: uint8 (T, H, W, 3) RGB. wav: float32 (T * 640,) at 16 kHz.
  boxes: int32 (T, 4) face box x1, y1, x2, y2 (pixels, x2/y2 exclusive).
  mouth_open, mouth_width, mouth_round: float32 (T,) ground-truth mouth parameters.
  vowel: int32 (T,) index into `VOWELS` of the sound at the frame's instant (`frame_times`).
  segments: ((start_s, end_s, vowel index), ...) covering [0, T / fps).
  """
  frames: np.ndarray
  wav: np.ndarray
  fps: float
  boxes: np.ndarray
  mouth_open: np.ndarray
  mouth_width: np.ndarray
  mouth_round: np.ndarray
  vowel: np.ndarray
  segments: tuple[tuple[float, float, int], ...]


def frame_times(num_frames: int, fps: float = FPS) -> np.ndarray:
  """float64 (num_frames,) the instant in s whose mouth frame i shows: (i + 0.5) / fps."""
  return (np.arange(num_frames) + 0.5) / fps


def vowel_at(segments, times_s: np.ndarray) -> np.ndarray:
  """int32 vowel index sounding at each time (times past the end: the last segment)."""
  starts = np.array([start for start, _, _ in segments])
  classes = np.array([vowel for _, _, vowel in segments], np.int32)
  return classes[np.clip(np.searchsorted(starts, times_s, side="right") - 1, 0, None)]


def sample_segments(rng: np.random.Generator,
                    seconds: float) -> tuple[tuple[float, float, int], ...]:
  """A random utterance: silence, syllables (some back to back), silence to the end."""
  segments, time = [], float(rng.uniform(0.08, 0.3))
  segments.append((0.0, time, 0))
  previous = 0
  while time < seconds - 0.35:
    vowel = int(rng.choice([v for v in range(1, len(VOWELS)) if v != previous]))
    end = min(time + float(rng.uniform(0.18, 0.42)), seconds - 0.1)
    segments.append((time, end, vowel))
    time, previous = end, vowel
    if rng.uniform() < 0.4 and time < seconds - 0.3:
      end = time + float(rng.uniform(0.1, 0.35))
      segments.append((time, end, 0))
      time, previous = end, 0
  segments.append((time, float(seconds), 0))
  return tuple(segments)


def _smooth_weight(times: np.ndarray, start: float, end: float, ease: float) -> np.ndarray:
  """Indicator of [start, end) with smoothstep edges `ease` wide centred on the ends.

  The weights of segments that tile the time axis sum to one.
  """
  def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
  return smoothstep((times - start) / ease + 0.5) * smoothstep((end - times) / ease + 0.5)


def mouth_trajectory(segments, times_s: np.ndarray) -> np.ndarray:
  """float32 (len(times), 3) eased (open, width, round) at the given times."""
  total = segments[-1][1]
  times = np.clip(times_s, 0.0, total)
  params = np.zeros((times.size, 3), np.float64)
  for index, (start, end, vowel) in enumerate(segments):
    # The first and last segments extend past the clip so the ends are not eased.
    start = -1.0 if index == 0 else start
    end = total + 1.0 if index == len(segments) - 1 else end
    params += _smooth_weight(times, start, end, MOUTH_EASE_S)[:, None] * MOUTH_SHAPES[vowel]
  return params.astype(np.float32)


def _resonator(signal: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
  """Klatt two-pole resonator with unit gain at 0 Hz."""
  radius = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
  b1 = 2 * radius * np.cos(2 * np.pi * freq / SAMPLE_RATE)
  b2 = -radius ** 2
  return scipy.signal.lfilter([1 - b1 - b2], [1, -b1, -b2], signal)


def synthesize_speech(rng: np.random.Generator, segments, num_samples: int,
                      base_pitch_hz: float, formant_scale: float) -> np.ndarray:
  """float32 (num_samples,) source-filter speech of `segments` at 16 kHz, peak < 1."""
  times = np.arange(num_samples) / SAMPLE_RATE
  intonation = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 0.9) * times
                                 + rng.uniform(0, 2 * np.pi))
  pitch = base_pitch_hz * intonation * (1 - 0.1 * times / max(times[-1], 1e-3))
  phase = np.cumsum(pitch) / SAMPLE_RATE
  pulses = np.diff(np.floor(phase), prepend=0.0)
  glottal_pole = np.exp(-2 * np.pi * 150 / SAMPLE_RATE)
  # Two one-pole low-passes: the glottal pulse spectrum falls 12 dB / octave.
  source = scipy.signal.lfilter([(1 - glottal_pole) ** 2],
                                [1, -2 * glottal_pole, glottal_pole ** 2], pulses)
  source = source / (np.abs(source).max() + 1e-9) + 0.03 * rng.standard_normal(num_samples)
  speech = np.zeros(num_samples)
  margin = int(0.05 * SAMPLE_RATE)
  for start, end, vowel in segments:
    if vowel == 0:
      continue
    lo = max(0, int(start * SAMPLE_RATE) - margin)
    hi = min(num_samples, int(end * SAMPLE_RATE) + margin)
    stress = rng.uniform(0.6, 1.0)
    voiced = stress * source[lo:hi] * _smooth_weight(times[lo:hi], start, end, VOICE_EASE_S)
    for formant, bandwidth in zip(FORMANTS_HZ[VOWELS[vowel]], FORMANT_BANDWIDTHS_HZ):
      jitter = rng.uniform(0.97, 1.03)
      voiced = _resonator(voiced, formant * formant_scale * jitter, bandwidth)
    speech[lo:hi] += voiced
  speech = np.diff(speech, prepend=0.0)  # Lip radiation, +6 dB / octave.
  speech *= rng.uniform(0.3, 0.7) / (np.abs(speech).max() + 1e-9)
  speech += 3e-4 * rng.standard_normal(num_samples)
  return speech.astype(np.float32)


def make_clip(seed: int, seconds: float = 3.0, frame_size: int = 128) -> SyntheticClip:
  """A deterministic synthetic clip of round(seconds * 25) frames.

  Args:
    seed: everything (face, motion, utterance, voice) follows from it.
    seconds: duration; rounded to whole frames.
    frame_size: side of the square frames in pixels (>= 64).
  """
  if frame_size < 64:
    raise ValueError(f"frame_size must be at least 64, got {frame_size}")
  num_frames = int(round(seconds * FPS))
  if num_frames < 1:
    raise ValueError(f"seconds={seconds} gives no frame")
  duration = num_frames / FPS
  rng = np.random.default_rng(seed)
  segments = sample_segments(rng, duration)
  wav = synthesize_speech(rng, segments, num_frames * SAMPLE_RATE // FPS,
                          base_pitch_hz=rng.uniform(85, 230),
                          formant_scale=rng.uniform(0.92, 1.15))
  instants = frame_times(num_frames)
  mouth = mouth_trajectory(segments, instants)
  frames, boxes = synthetic_faces.render(rng, mouth, frame_size)
  return SyntheticClip(frames=frames, wav=wav, fps=float(FPS), boxes=boxes,
                       mouth_open=mouth[:, 0], mouth_width=mouth[:, 1],
                       mouth_round=mouth[:, 2], vowel=vowel_at(segments, instants),
                       segments=segments)


def sidecar(clip: SyntheticClip) -> dict:
  """The JSON-able ground truth of a clip (per-frame boxes and mouth parameters)."""
  return {
      "fps": clip.fps,
      "num_frames": int(clip.frames.shape[0]),
      "sample_rate": SAMPLE_RATE,
      "boxes": clip.boxes.tolist(),
      "mouth": {"open": np.round(clip.mouth_open, 4).tolist(),
                "width": np.round(clip.mouth_width, 4).tolist(),
                "round": np.round(clip.mouth_round, 4).tolist(),
                "vowel": clip.vowel.tolist()},
      "vowel_names": list(VOWELS),
      "segments": [[round(s, 4), round(e, 4), v] for s, e, v in clip.segments],
      "alignment": "mouth of frame i = state at (i + 0.5) / fps s, the start of "
                   "audio.mel_window(mel, i, fps)",
  }


def clip_seed(seed: int, index: int) -> int:
  """Seed of clip `index` of a dataset generated with `seed`."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_dataset(out_dir: str | os.PathLike, num_clips: int, seconds: float = 3.0,
                  seed: int = 0, frame_size: int = 128,
                  show_progress: bool = False) -> list[str]:
  """Writes `<out_dir>/synth_<index>.mp4` (H.264 + AAC audio) and `.json` sidecars.

  Each file appears only when complete (temporary name, then rename).

  Returns:
    The mp4 paths, in clip order.
  """
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for index in tqdm.trange(num_clips, desc="synthetic clips", disable=not show_progress):
    clip = make_clip(clip_seed(seed, index), seconds, frame_size)
    stem = os.path.join(out_dir, f"synth_{index:05d}")
    video.write_video(stem + ".mp4", clip.frames, clip.fps, audio=clip.wav,
                      sample_rate=SAMPLE_RATE)
    temp_json = f"{stem}.json.tmp"
    with open(temp_json, "w") as f:
      json.dump(sidecar(clip), f)
    os.replace(temp_json, stem + ".json")
    paths.append(stem + ".mp4")
  return paths
