"""Live lip sync: the incremental mel, the stream against the offline job, and tools/stream.py."""

import io
import json
import os
import re
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io.wavfile

from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import inference
from lipsync_jax import streaming
from lipsync_jax import video
from lipsync_jax.models.wav2lip import Wav2Lip
import lipsync_fixtures
from test_audio import speech_like


def _random_chunks(wav, rng, largest):
  position = 0
  while position < len(wav):
    size = int(rng.choice([1, 7, rng.integers(1, largest)]))
    yield wav[position:position + size]
    position += size


@pytest.mark.parametrize("num_samples", [401, 599, 3999, 16000, 24123])
def test_streaming_mel_equals_offline_for_random_chunkings(num_samples):
  wav = speech_like(num_samples, seed=num_samples)
  offline = audio.melspectrogram(wav)
  rng = np.random.default_rng(num_samples)
  for largest in (50, 900, 5000):
    mel = audio.StreamingMel()
    columns = [mel.push(chunk) for chunk in _random_chunks(wav, rng, largest)]
    # Column m is out as soon as samples up to 200 m + 399 are in (column 0: 401).
    assert mel.num_columns == (num_samples - 400) // 200 + 1
    columns.append(mel.finish())
    np.testing.assert_allclose(np.concatenate(columns, axis=1), offline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001])
def test_mel_windows_equal_offline_windows_as_soon_as_determined(fps):
  wav = speech_like(int(2.3 * audio.SAMPLE_RATE), seed=3)
  offline = audio.melspectrogram(wav)
  expected_count = audio.num_video_frames_for_mel(offline.shape[1], fps)
  windows, pushed = streaming.MelWindows(fps), 0
  got = []
  for chunk in _random_chunks(wav, np.random.default_rng(1), 2000):
    pushed += len(chunk)
    ready = windows.push(chunk, arrival=pushed)
    # Emitted exactly when the audio covers the window: no earlier, no later.
    assert windows.next_index == sum(streaming.samples_needed(i, fps) <= pushed
                                     for i in range(expected_count + 2))
    got += ready
  during = len(got)
  got += windows.finish(arrival=-1)
  assert [w.index for w in got] == list(range(expected_count))
  assert 0 < during < expected_count  # the last windows touch the end: only at finish
  for w in got:
    np.testing.assert_allclose(w.mel, audio.mel_window(offline, w.index, fps, clamp=True),
                               atol=1e-5, rtol=0)
    if w.index < during:
      assert w.arrival >= streaming.samples_needed(w.index, fps)  # the push that completed it


def test_samples_needed_is_the_last_sample_the_window_depends_on():
  wav = speech_like(audio.SAMPLE_RATE, seed=5).astype(np.float64)
  for index in (0, 3, 11):
    needed = streaming.samples_needed(index, 25.0)
    reference = audio.mel_window(audio.melspectrogram(wav), index, 25.0)
    for sample, changes in ((needed - 1, True), (needed, False)):
      bumped = wav.copy()
      bumped[sample] += 0.5
      window = audio.mel_window(audio.melspectrogram(bumped), index, 25.0)
      # (The last sample of a frame has a tiny Hann weight: any change counts.)
      assert (np.abs(window - reference).max() > 0) == changes, (index, sample)


def test_short_stream_and_push_after_finish():
  windows = streaming.MelWindows(25.0)
  windows.push(np.zeros(2999, np.int16), 0.0)  # 15 mel columns
  with pytest.raises(audio.AudioError, match="shorter than one mel window"):
    windows.finish(0.0)
  mel = audio.StreamingMel()
  mel.push(np.zeros(500))
  mel.finish()
  with pytest.raises(audio.AudioError, match="push after finish"):
    mel.push(np.zeros(5))


def test_avatar_frames_loop_forward_then_backward():
  def order(count, n):
    avatar = inference.Avatar(np.zeros((count, 2, 2, 3), np.uint8), None, None, None, 25.0)
    return [avatar.frame_index(i) for i in range(n)]

  assert order(3, 9) == [0, 1, 2, 1, 0, 1, 2, 1, 0]
  assert order(1, 3) == [0, 0, 0]
  assert order(2, 4) == [0, 1, 0, 1]


@pytest.fixture(scope="module")
def tiny():
  model, variables = lipsync_fixtures.tiny_generator(seed=7)
  return checkpoints.Generator(model, variables, "bgr")  # BGR: exercise both flips


@pytest.fixture(scope="module")
def wav2lip():
  """Full-size Wav2Lip, random weights: the stream caches its face encoder's outputs."""
  model = Wav2Lip()
  variables = lipsync_fixtures.random_variables(model, jnp.zeros((1, 80, 16, 1)),
                                                jnp.zeros((1, 96, 96, 6)), seed=3)
  return checkpoints.Generator(model, variables, "bgr")


@pytest.fixture(scope="module")
def clip():
  return synthetic.make_clip(seed=21, seconds=0.4, frame_size=96)  # 10 frames


def test_prepared_avatar_uses_the_job_boxes_and_round_trips(tmp_path, clip, tiny):
  path = str(tmp_path / "face.mp4")
  video.write_video(path, clip.frames, clip.fps)
  with open(tmp_path / "face.json", "w") as f:
    json.dump(synthetic.sidecar(clip), f)
  avatar = inference.prepare_avatar(path, pads=(0, 6, 0, 0))
  job = inference.LipsyncJob(path, speech_like(8000), tiny, pads=(0, 6, 0, 0))
  assert avatar.box_source == job.box_source == str(tmp_path / "face.json")
  np.testing.assert_array_equal(avatar.boxes, job.boxes[:len(clip.frames)])
  np.testing.assert_array_equal(avatar.frames, video.read_video(path)[0])
  loaded = inference.load_avatar(inference.save_avatar(avatar, tmp_path / "avatar"))
  for field in ("frames", "boxes", "has_face", "crops"):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(avatar, field))
  assert (loaded.fps, loaded.source) == (25.0, path)
  assert sorted(os.listdir(tmp_path)) == ["avatar", "face.json", "face.mp4"]


@pytest.mark.parametrize("batch_size", [2])  # compiles shared with the tool tests
@pytest.mark.parametrize("generator_name", ["tiny", "wav2lip"])
def test_stream_gives_the_offline_frames(clip, generator_name, batch_size, request):
  generator = request.getfixturevalue(generator_name)
  x1, y1, x2, y2 = (int(v) for v in clip.boxes[0])
  avatar = inference.prepare_avatar(clip.frames, box=(x1, y1, x2, y2))
  wav = speech_like(int(1.1 * audio.SAMPLE_RATE), seed=8)  # 27 frames: loops the 10
  stream = streaming.LipsyncStream(generator, avatar, batch_size=batch_size)
  out = []
  for chunk in _random_chunks(wav, np.random.default_rng(2), 3000):
    stream.push((chunk * 32767).astype(np.int16))  # int16 PCM, as from a microphone
    out += list(stream.frames())
  stream.finish()
  out += list(stream.frames())
  assert stream.done and len(stream.generate_seconds) >= len(out) / batch_size
  # Wav2Lip: the face encoder ran once per avatar frame, each call only decoded.
  assert (stream.face_cache is not None) == (generator_name == "wav2lip")
  if stream.face_cache is not None:
    assert len(stream.face_cache) == len(clip.frames)
    assert stream.face_cache.nbytes == len(clip.frames) * 290_816 * 4
  # Offline: the job over the avatar's looped frame sequence, same audio, same box.
  sequence = avatar.frames[[avatar.frame_index(i) for i in range(len(out))]]
  quantised = (wav * 32767).astype(np.int16).astype(np.float32) / 32768.0
  job = inference.LipsyncJob(sequence, quantised, generator, box=(x1, y1, x2, y2),
                             batch_size=2)
  offline = np.stack(list(job.frames()))
  assert [f.index for f in out] == list(range(job.num_frames))
  streamed = np.stack([f.image for f in out]).astype(int)
  assert np.abs(streamed - offline).max() <= 1
  assert np.mean(streamed != offline) < 1e-3
  assert not np.array_equal(streamed[0], clip.frames[0])  # a mouth was pasted in


# tools/prepare_avatar.py and tools/stream.py


@pytest.fixture(scope="module")
def files(tmp_path_factory, clip):
  root = tmp_path_factory.mktemp("stream")
  lipsync_fixtures.save_tiny_generator(str(root / "generator"), seed=4)
  lipsync_fixtures.save_random_syncnet(str(root / "syncnet"))
  video.write_video(root / "face.mp4", clip.frames, clip.fps)
  x1, y1, x2, y2 = (int(v) for v in clip.boxes[0])
  tool = lipsync_fixtures.InProcessTool("prepare_avatar")
  try:
    assert tool.run(f"--face={root / 'face.mp4'}", f"--avatar={root / 'avatar'}",
                    f"--box={y1},{y2},{x1},{x2}") == 0
  finally:
    tool.close()
  speech = speech_like(int(1.2 * audio.SAMPLE_RATE), seed=9)
  scipy.io.wavfile.write(root / "speech.wav", audio.SAMPLE_RATE, speech)
  return {"root": root, "generator": str(root / "generator"), "avatar": str(root / "avatar"),
          "speech": speech, "wav": str(root / "speech.wav"), "syncnet": str(root / "syncnet")}


@pytest.fixture(scope="module")
def tool(files):
  script = lipsync_fixtures.InProcessTool("stream")
  yield script
  script.close()


def _stats(text):
  fps = re.search(r"^sustained fps: ([\d.]+)$", text, re.M)
  latency = re.search(r"^latency ms p50/p95/max: (\d+)/(\d+)/(\d+)$", text, re.M)
  assert fps and latency, text
  p50, p95, worst = (int(v) for v in latency.groups())
  assert float(fps.group(1)) > 0 and 0 <= p50 <= p95 <= worst
  return text.strip().splitlines()[-2:]


def test_realtime_mp4_with_audio(tool, files, tmp_path, capsys):
  out = tmp_path / "out.mp4"
  started = time.perf_counter()
  assert tool.run(f"--checkpoint={files['generator']}", f"--avatar={files['avatar']}",
                  f"--audio={files['wav']}", "--realtime", f"--outfile={out}",
                  "--batch_size=2") == 0
  seconds = 1.2
  assert time.perf_counter() - started >= seconds  # fed at 1x: no faster than the audio
  lines = _stats(capsys.readouterr().out)
  assert lines[0].startswith("sustained fps: ")
  frames, _ = video.read_video(out)
  info = video.probe_video(out)
  expected = audio.num_video_frames_for_mel(audio.melspectrogram(files["speech"]).shape[1], 25)
  assert len(frames) == expected and info.fps == 25.0 and info.has_audio
  assert len(audio.load_audio(out)) == pytest.approx(seconds * audio.SAMPLE_RATE,
                                                     abs=0.05 * audio.SAMPLE_RATE)


class _Stdin:
  def __init__(self, data):
    self.buffer = io.BytesIO(data)


def test_stdin_pcm_to_raw_frames_on_stdout(tool, files, monkeypatch, capsysbinary):
  pcm = (files["speech"] * 32767).astype("<i2")
  monkeypatch.setattr(sys, "stdin", _Stdin(pcm.tobytes()))
  assert tool.run(f"--checkpoint={files['generator']}", f"--avatar={files['avatar']}",
                  "--audio=-", "--outfile=-", "--batch_size=2") == 0
  captured = capsysbinary.readouterr()
  _stats(captured.err.decode())
  avatar = inference.load_avatar(files["avatar"])
  frames = np.frombuffer(captured.out, np.uint8).reshape((-1,) + avatar.frames.shape[1:])
  # The library's stream over the same samples in one piece (mel to ~1e-6: within 1/255).
  stream = streaming.LipsyncStream(checkpoints.load_generator(files["generator"]), avatar,
                                   batch_size=2)
  stream.push(pcm)
  stream.finish()
  expected = np.stack([f.image for f in stream.frames()]).astype(int)
  assert frames.shape == expected.shape
  assert np.abs(frames - expected).max() <= 1 and np.mean(frames != expected) < 1e-3


def _bad_input(files, tmp):
  pcm = (files["speech"] * 32767).astype("<i2").tobytes()
  return {
      "missing avatar": ([f"--avatar={tmp / 'nope'}"], None, "nope: no such avatar folder"),
      "odd byte count": (["--audio=-"], pcm + b"\x01", "stdin: .* not whole 16-bit samples"),
      "wav on stdin": (["--audio=-"], open(files["wav"], "rb").read(), "stdin: a WAV file"),
      "wrong model": ([f"--checkpoint={files['syncnet']}"], None, "syncnet"),
      "short audio": (["--audio=-"], pcm[:4000], "stdin: audio of 0.125 s is shorter"),
  }


@pytest.mark.parametrize("case", ["missing avatar", "odd byte count", "wav on stdin",
                                  "wrong model", "short audio"])
def test_bad_input_is_one_line_and_no_output(tool, files, tmp_path, monkeypatch, capsys, case):
  args, stdin, message = _bad_input(files, tmp_path)[case]
  if stdin is not None:
    monkeypatch.setattr(sys, "stdin", _Stdin(stdin))
  defaults = {"--checkpoint": files["generator"], "--avatar": files["avatar"],
              "--audio": files["wav"], "--outfile": str(tmp_path / "out.mp4")}
  given = {a.split("=")[0] for a in args}
  args += [f"{k}={v}" for k, v in defaults.items() if k not in given]
  before = set(os.listdir(tmp_path))
  assert tool.run(*args, "--batch_size=2") == 1
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("stream: "), lines
  assert re.search(message, lines[0]), lines[0]
  assert set(os.listdir(tmp_path)) == before  # no partial output
