"""Tests of the synthetic talking heads: files, determinism, audio -> mouth ground truth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIL, A, E, I, O, U = range(6)


@pytest.fixture(scope="module")
def clips():
  return [synthetic.make_clip(seed) for seed in range(10)]


def test_clip_layout_and_alignment_definition(clips):
  clip = clips[0]
  assert clip.frames.shape == (75, 128, 128, 3) and clip.frames.dtype == np.uint8
  assert clip.wav.shape == (48000,) and clip.wav.dtype == np.float32
  assert np.abs(clip.wav).max() < 1 and clip.fps == 25
  boxes = clip.boxes
  assert boxes.shape == (75, 4) and boxes.min() >= 0 and boxes.max() <= 128
  assert np.all(boxes[:, 2] - boxes[:, 0] > 64) and np.all(boxes[:, 3] - boxes[:, 1] > 80)
  starts, ends = zip(*[(s, e) for s, e, _ in clip.segments])
  assert starts[0] == 0 and ends[-1] == 3.0 and starts[1:] == ends[:-1]
  for i in range(75):
    # Closed form of the documented alignment: the middle of frame i's interval.
    instant = (i + 0.5) / 25
    sounding = [v for s, e, v in clip.segments if s <= instant < e] or [clip.segments[-1][2]]
    assert clip.vowel[i] == sounding[0]


def test_deterministic_by_seed(clips):
  again = synthetic.make_clip(3)
  np.testing.assert_array_equal(again.frames, clips[3].frames)
  np.testing.assert_array_equal(again.wav, clips[3].wav)
  np.testing.assert_array_equal(again.boxes, clips[3].boxes)
  assert again.segments == clips[3].segments
  assert not np.array_equal(clips[3].frames, clips[4].frames)
  assert clips[3].segments != clips[4].segments


def test_written_clips_decode_with_their_sidecars(tmp_path):
  paths = synthetic.write_dataset(tmp_path, num_clips=2, seconds=2.0, seed=7)
  assert sorted(os.listdir(tmp_path)) == ["synth_00000.json", "synth_00000.mp4",
                                          "synth_00001.json", "synth_00001.mp4"]
  for index, path in enumerate(paths):
    info = video.probe_video(path)
    assert (info.fps, info.num_frames, info.width, info.height) == (25.0, 50, 128, 128)
    assert info.has_audio
    assert len(video.read_video(path)[0]) == 50
    assert abs(audio.load_audio(path).size - 32000) <= 1024
    with open(path.replace(".mp4", ".json")) as f:
      meta = json.load(f)
    assert meta["fps"] == 25.0 and len(meta["boxes"]) == 50
    assert all(len(meta["mouth"][key]) == 50 for key in ("open", "width", "round", "vowel"))
    expected = synthetic.make_clip(synthetic.clip_seed(7, index), seconds=2.0)
    np.testing.assert_array_equal(meta["boxes"], expected.boxes)
    np.testing.assert_array_equal(meta["mouth"]["vowel"], expected.vowel)
    decoded = video.read_video(path)[0].astype(float)
    assert 10 * np.log10(255 ** 2 / np.mean((decoded - expected.frames) ** 2)) > 30


def test_mouth_parameters_differ_between_vowel_classes(clips):
  params = np.concatenate([np.stack([c.mouth_open, c.mouth_width, c.mouth_round], 1)
                           for c in clips])
  vowels = np.concatenate([c.vowel for c in clips])
  means = np.stack([params[vowels == v].mean(0) for v in range(6)])
  distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
  assert distances[~np.eye(6, dtype=bool)].min() > 0.15
  assert means[A, 0] > means[O, 0] > means[E, 0] > means[SIL, 0]  # opening
  assert means[U, 2] > 0.7 and means[O, 2] > 0.5 and means[I, 2] < 0.2  # roundness
  assert means[I, 1] > means[A, 1] > means[U, 1]  # width


def test_drawn_mouth_opening_follows_the_parameters(clips):
  """The visible mouth opening (dark interior + teeth) grows with the true opening."""
  for clip in clips:
    areas = []
    for frame, (x1, y1, x2, y2) in zip(clip.frames, clip.boxes):
      w, h = x2 - x1, y2 - y1
      region = frame[y1 + int(0.66 * h):y2, x1 + w // 4:x2 - w // 4].astype(float)
      dark = region @ np.array([0.299, 0.587, 0.114]) < 30
      teeth = region.min(axis=-1) > 205
      areas.append(int((dark | teeth).sum()))
    assert scipy.stats.spearmanr(areas, clip.mouth_open).statistic > 0.85


def vowel_spectra(clips):
  """Per vowel class: (fraction of power in 1.6-3.5 kHz, power centroid below 1.2 kHz)."""
  features = {v: [] for v in range(1, 6)}
  for clip in clips:
    for start, end, vowel in clip.segments:
      if vowel == SIL or end - start < 0.2:
        continue
      middle = (start + end) / 2
      piece = clip.wav[int((middle - 0.08) * 16000):int((middle + 0.08) * 16000)]
      power = np.abs(np.fft.rfft(piece * np.hanning(piece.size))) ** 2
      freqs = np.fft.rfftfreq(piece.size, 1 / 16000)
      high = power[(freqs > 1600) & (freqs < 3500)].sum() / power.sum()
      low = freqs < 1200
      features[vowel].append((high, (power[low] * freqs[low]).sum() / power[low].sum()))
  return {v: np.median(np.array(f), axis=0) for v, f in features.items() if f}


def test_vowel_audio_has_its_formant_energy_where_expected(clips):
  spectra = vowel_spectra(clips)
  assert set(spectra) == {A, E, I, O, U}
  high = {v: s[0] for v, s in spectra.items()}
  low_centroid = {v: s[1] for v, s in spectra.items()}
  # /e/ and /i/ have a high F2 (1.8-2.3 kHz); /a/ /o/ /u/ keep F2 below 1.1 kHz.
  assert min(high[E], high[I]) > 3 * max(high[A], high[O], high[U])
  # F1: /a/ 730 > /o/ 570 > /e/ 530 > /u/ 300, /i/ 270 Hz.
  assert low_centroid[A] > low_centroid[O] > low_centroid[E] > max(low_centroid[U],
                                                                 low_centroid[I])


def window_features(clip_list, shift_frames=0, columns=4):
  """Gain-normalised mean spectrum of the first `columns` mel frames (50 ms) of each
  frame's mel window (optionally shifted): where the convention puts the frame's sound."""
  features, labels = [], []
  for clip in clip_list:
    mel = audio.melspectrogram(clip.wav)
    for i, vowel in enumerate(clip.vowel):
      start = audio.mel_window_start(i + shift_frames, clip.fps)
      if start < 0 or start + audio.MEL_WINDOW > mel.shape[1]:
        continue
      spectrum = audio.mel_window(mel, i + shift_frames, clip.fps)[:, :columns].mean(axis=1)
      features.append(spectrum - spectrum.mean())
      labels.append(vowel)
  return np.array(features), np.array(labels)


def test_mouth_class_is_predictable_from_its_mel_window_only_in_sync(clips):
  train_x, train_y = window_features(clips[:7])
  centroids = np.stack([train_x[train_y == v].mean(0) for v in range(6)])

  def accuracy(shift):
    x, y = window_features(clips[7:], shift)
    predicted = np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return (predicted == y).mean()

  in_sync = accuracy(0)
  assert in_sync > 0.85
  assert in_sync > max(accuracy(1), accuracy(-1))  # Best exactly at the convention.
  assert accuracy(8) < in_sync - 0.3 and accuracy(-8) < in_sync - 0.3


def test_command_line_tool(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", "make_synthetic.py"),
       f"--out_dir={tmp_path}", "--num_clips=2", "--seconds=1", "--seed=3"],
      capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "wrote 2 clips" in result.stdout
  assert video.probe_video(tmp_path / "synth_00001.mp4").num_frames == 25
