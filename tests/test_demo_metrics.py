"""The demo's mouth measurement against the synthetic ground truth, and its table logic."""

import numpy as np
import pytest
from skimage import metrics as skimage_metrics

from data_pipeline import synthetic
from demo import metrics as demo_metrics
from lipsync_jax import faces


def _crops(seed, seconds=3.0):
  """(face crops (T, 96, 96, 3) in [0, 1] as preprocessing makes them, clip)."""
  clip = synthetic.make_clip(synthetic.clip_seed(7, seed), seconds)
  boxes = np.array([faces.face_crop_box(b, (0, 10, 0, 0), clip.frames.shape[1:3])
                    for b in clip.boxes])
  return faces.crop_faces(clip.frames, boxes, 96).astype(np.float32) / 255.0, clip


@pytest.fixture(scope="module")
def clips():
  return [_crops(seed) for seed in range(6)]


def test_opening_follows_ground_truth(clips):
  openings = np.concatenate([demo_metrics.mouth_opening(c) for c, _ in clips])
  truth = np.concatenate([clip.mouth_open for _, clip in clips])
  assert np.corrcoef(openings, truth)[0, 1] > 0.93
  closed = truth < 0.02
  assert closed.any() and np.median(openings[closed]) < 0.01
  # Calibrated on half the clips, it reads the other half's parameter far better than
  # guessing their mean (the spread of the parameter).
  half = len(clips) // 2
  calibration = demo_metrics.OpeningCalibration.fit(
      np.concatenate([demo_metrics.mouth_opening(c) for c, _ in clips[:half]]),
      np.concatenate([clip.mouth_open for _, clip in clips[:half]]))
  held_crops = np.concatenate([c for c, _ in clips[half:]])
  held_truth = np.concatenate([clip.mouth_open for _, clip in clips[half:]])
  error = np.abs(calibration.predict(held_crops) - held_truth).mean()
  spread = np.abs(held_truth - held_truth.mean()).mean()
  assert error < 0.1 and error < spread / 3


def test_copy_reference_error_grows_with_mouth_difference(clips):
  crops, clip = clips[0]
  calibration = demo_metrics.OpeningCalibration.fit(demo_metrics.mouth_opening(crops),
                                                    clip.mouth_open)
  closed, wide = np.argmin(clip.mouth_open), np.argmax(clip.mouth_open)
  baseline = demo_metrics.copy_reference(crops[[wide]], crops[[closed]])
  scores = demo_metrics.mouth_scores(baseline, crops[[wide]], clip.mouth_open[[wide]],
                                     calibration)
  perfect = demo_metrics.mouth_scores(crops[[wide]], crops[[wide]], clip.mouth_open[[wide]],
                                      calibration)
  assert scores["open_error"][0] > 0.6 > perfect["open_error"][0] + 0.4
  assert perfect["mouth_l1"][0] == 0.0 and scores["mouth_l1"][0] > 0.01


def test_copy_reference_takes_each_half_from_its_frame():
  rng = np.random.default_rng(0)
  target, reference = rng.uniform(size=(2, 3, 8, 6, 3)).astype(np.float32)
  out = demo_metrics.copy_reference(target, reference)
  np.testing.assert_array_equal(out[:, :4], target[:, :4])
  np.testing.assert_array_equal(out[:, 4:], reference[:, 4:])


def test_calibration_recovers_a_linear_map():
  x = np.linspace(0, 0.2, 11)
  calibration = demo_metrics.OpeningCalibration.fit(x, 6.5 * x + 0.04)
  assert calibration.scale == pytest.approx(6.5) and calibration.offset == pytest.approx(0.04)
  with pytest.raises(ValueError, match="matching"):
    demo_metrics.OpeningCalibration.fit(x, x[:3])


def test_mouth_l1_and_psnr_match_references():
  rng = np.random.default_rng(1)
  a, b = rng.uniform(size=(2, 2, 16, 16, 3)).astype(np.float32)
  region_a, region_b = a[:, 8:14, 4:12], b[:, 8:14, 4:12]
  np.testing.assert_allclose(demo_metrics.mouth_l1(a, b),
                             np.abs(region_a - region_b).mean(axis=(1, 2, 3)), rtol=1e-6)
  expected = [skimage_metrics.peak_signal_noise_ratio(x, y, data_range=1.0)
              for x, y in zip(region_b, region_a)]
  np.testing.assert_allclose(demo_metrics.mouth_psnr(a, b), expected, rtol=1e-5)


def test_table_logic():
  model = {"mouth_l1": 0.02, "mouth_psnr": 30.0, "open_error": 0.1}
  baseline = {"mouth_l1": 0.05, "mouth_psnr": 25.0, "open_error": 0.3}
  assert demo_metrics.beats_baseline(model, baseline)
  assert not demo_metrics.beats_baseline({**model, "open_error": 0.4}, baseline)
  per_clip = [{"x": np.array([1.0, 2.0])}, {"x": np.array([4.0])}]
  assert demo_metrics.mean_scores(per_clip) == {"x": pytest.approx(7 / 3)}


def test_shifted_mel_delays_audio_by_whole_frames():
  mel = np.arange(3 * 160, dtype=np.float32).reshape(3, 160)
  shifted = demo_metrics.shifted_mel(mel, 20)
  np.testing.assert_array_equal(shifted[:, 64:], mel[:, :-64])
