"""The array-level generator function, its jax.export artifact, and LipsyncJob's boxes."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import faces
from lipsync_jax import inference
from lipsync_jax import video
import lipsync_fixtures


class Traces:
  """Shapes a module was traced with (a plain object: flax would freeze a list field)."""

  def __init__(self):
    self.shapes = []


class CountingGenerator(nn.Module):
  """A one-conv generator (called like Wav2Lip) that records each trace in `traces`."""
  traces: Traces
  img_size: int = 32
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, mel_chunks, faces_in, train=False):
    self.traces.shapes.append(faces_in.shape)
    level = nn.Dense(3, dtype=self.dtype)(mel_chunks.mean(axis=(1, 2)))  # (B, 3)
    out = nn.Conv(3, (3, 3), dtype=self.dtype)(faces_in) + level[:, None, None, :]
    return nn.sigmoid(out)


def _inputs(n, size, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((n, 80, 16, 1)).astype(np.float32),
          rng.uniform(size=(n, size, size, 6)).astype(np.float32))


@pytest.fixture(scope="module")
def tiny():
  return lipsync_fixtures.tiny_generator(seed=3)


def test_inference_fn_equals_apply_and_compiles_once():
  traces = Traces()
  model = CountingGenerator(traces)
  mel, face = _inputs(11, 32)
  variables = lipsync_fixtures.random_variables(model, mel[:1], face[:1], seed=1)
  lengths = (11, 3, 4, 1)  # ragged: 3 batches with a partial one, a partial one, ...
  references = [model.apply(variables, mel[:n], face[:n]) for n in lengths]
  traces.shapes.clear()
  fn = inference.make_inference_fn(model, variables, batch_size=4)
  for n, reference in zip(lengths, references):
    np.testing.assert_allclose(fn(mel[:n], face[:n]), reference, atol=1e-6)
  assert traces.shapes == [(4, 32, 32, 6)]  # one trace (hence one compile) for every length
  assert fn(mel[:0], face[:0]).shape == (0, 32, 32, 3)
  with pytest.raises(ValueError, match="3 mel chunks vs 2 faces"):
    fn(mel[:3], face[:2])


def test_tiny_generator_bf16(tiny):
  model, variables = tiny
  mel, face = _inputs(5, 96, seed=2)
  # The float32 function equals model.apply (test above); its compile is shared with
  # the export test's (same model, same batch).
  reference = inference.make_inference_fn(model, variables, batch_size=4)(mel, face)
  bf16 = inference.make_inference_fn(model, variables, batch_size=4, dtype=jnp.bfloat16)
  out16 = bf16(mel, face)
  assert out16.dtype == np.float32 and out16.shape == reference.shape
  error = np.abs(out16 - reference)
  assert error.max() < 0.05 and error.mean() < 0.01  # bf16 rounding, not a different net
  assert error.max() > 0  # and it really ran in bfloat16


def test_export_equals_jitted_function_bgr(tiny):
  model, variables = tiny
  data = inference.export_inference_fn(model, variables, batch_size=4, channel_order="bgr")
  exported = jax.export.deserialize(bytearray(data))
  assert [a.shape for a in exported.in_avals] == [(4, 80, 16, 1), (4, 96, 96, 6)]
  mel, face = _inputs(4, 96, seed=4)
  # The artifact takes and returns RGB; the BGR weights see flipped channels.
  bgr_faces = np.concatenate([face[..., 2::-1], face[..., :2:-1]], axis=-1)
  expected = inference.make_inference_fn(model, variables, batch_size=4)(mel, bgr_faces)
  np.testing.assert_allclose(np.asarray(exported.call(mel, face)), expected[..., ::-1],
                             atol=1e-5)


def _clip_files(tmp_path, seconds=0.6):
  clip = synthetic.make_clip(seed=5, seconds=seconds)
  path = str(tmp_path / "clip.mp4")
  video.write_video(path, clip.frames, clip.fps, audio=clip.wav)
  return clip, path


def _job(face, wav, **options):
  traces = Traces()
  model = CountingGenerator(traces, img_size=32)
  mel, crops = _inputs(1, 32)
  generator = checkpoints.Generator(model, lipsync_fixtures.random_variables(model, mel, crops))
  return inference.LipsyncJob(face, wav, generator, batch_size=4, **options)


def test_sidecar_boxes_bypass_detection(tmp_path):
  clip, path = _clip_files(tmp_path)
  boxes = clip.boxes.astype(float).tolist()
  boxes[3] = None  # a faceless frame in the sidecar
  with open(tmp_path / "clip.json", "w") as f:
    json.dump({"boxes": boxes}, f)

  class NoDetector:
    def detect(self, frames):
      raise AssertionError("the detector must not run when boxes are given")

  with pytest.raises(faces.NoFaceError, match=r"clip.mp4: no face detected in 1 frame\(s\): 3"):
    _job(path, clip.wav, detector=NoDetector())
  job = _job(path, clip.wav, missing="passthrough", pads=(0, 6, 0, 0), smooth=False,
             detector=NoDetector())
  assert job.box_source == str(tmp_path / "clip.json")
  assert job.num_frames == audio.num_video_frames_for_mel(audio.melspectrogram(clip.wav).shape[1],
                                                          25.0)
  t = len(clip.frames)
  index = np.arange(job.num_frames) % t
  expected = [faces.face_crop_box(clip.boxes[i], (0, 6, 0, 0), clip.frames.shape[1:3])
              for i in index]
  np.testing.assert_array_equal(job.boxes[index != 3], np.asarray(expected)[index != 3])
  np.testing.assert_array_equal(job.has_face, index != 3)
  out = list(job.frames())
  assert len(out) == job.num_frames
  decoded = video.read_video(path)[0]
  np.testing.assert_array_equal(out[3], decoded[3])  # passed through unchanged
  assert not np.array_equal(out[4], decoded[4])  # generated mouth pasted in
  assert set(job.timings) == {"decode", "generate", "paste"}


def test_explicit_boxes_json_scaled_by_resize_factor(tmp_path):
  clip, path = _clip_files(tmp_path)
  boxes_file = tmp_path / "boxes.json"
  boxes_file.write_text(json.dumps({"boxes": clip.boxes.tolist()}))
  job = _job(path, clip.wav, face_boxes=str(boxes_file), resize_factor=2, smooth=False,
             pads=(0, 0, 0, 0), detector=None)
  np.testing.assert_array_equal(job.boxes[0], np.round(clip.boxes[0] / 2))
  short = tmp_path / "short.json"
  short.write_text(json.dumps({"boxes": clip.boxes[:4].tolist()}))
  with pytest.raises(inference.InferenceError,
                     match=f"short.json: 4 face boxes for the {job.num_frames} frames of "):
    _job(path, clip.wav, face_boxes=str(short))
  bad = tmp_path / "bad.json"
  bad.write_text('{"boxes": [[1, 2, 3]]}')
  with pytest.raises(inference.InferenceError, match="bad.json"):
    _job(path, clip.wav, face_boxes=str(bad))


@pytest.mark.parametrize("fps", [None, 30.0])
def test_lipsync_still_image_in_memory(fps):
  clip = synthetic.make_clip(seed=6, seconds=0.5)
  x1, y1, x2, y2 = clip.boxes[0]
  traces = Traces()
  model = CountingGenerator(traces, img_size=32)
  variables = lipsync_fixtures.random_variables(model, *_inputs(1, 32))
  traces.shapes.clear()
  result = inference.lipsync(clip.frames[0], clip.wav, variables, model=model,
                             box=(x1, y1, x2, y2), batch_size=4, fps=fps)
  mel_frames = audio.melspectrogram(clip.wav).shape[1]
  assert result.fps == (fps or 25.0) and result.sample_rate == 16000
  assert len(result.frames) == audio.num_video_frames_for_mel(mel_frames, fps or 25.0)
  np.testing.assert_array_equal(result.frames[:, :y1], np.broadcast_to(
      clip.frames[0, :y1], result.frames[:, :y1].shape))  # above the box: the photo
  assert len(traces.shapes) == 1
