"""tools/infer.py end to end on synthetic clips: outputs, the export, and every input error."""

import json
import os
import pathlib
import re

import jax
import numpy as np
from PIL import Image
import pytest
import scipy.io.wavfile

from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import video
import lipsync_fixtures



@pytest.fixture(scope="module")
def tool():
  script = lipsync_fixtures.InProcessTool("infer")
  yield script
  script.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("infer")
  lipsync_fixtures.save_tiny_generator(str(root / "generator"))
  clip = synthetic.make_clip(seed=11, seconds=1.0)
  video.write_video(root / "face.mp4", clip.frames, clip.fps, audio=clip.wav)
  (root / "face.json").write_text(json.dumps(synthetic.sidecar(clip)))
  speech = synthetic.make_clip(seed=12, seconds=1.4).wav  # longer than the face video
  scipy.io.wavfile.write(root / "speech.wav", audio.SAMPLE_RATE, speech)
  x1, y1, x2, y2 = (int(v) for v in clip.boxes[0])
  Image.fromarray(clip.frames[0]).save(root / "photo.png")
  return {"root": root, "generator": str(root / "generator"), "face": str(root / "face.mp4"),
          "speech": speech, "wav": str(root / "speech.wav"),
          "box": f"{y1},{y2},{x1},{x2}"}


def _check_output(path, speech, fps):
  info = video.probe_video(path)
  frames, _ = video.read_video(path)
  expected = audio.num_video_frames_for_mel(audio.melspectrogram(speech).shape[1], fps)
  assert len(frames) == info.num_frames == expected
  assert info.fps == pytest.approx(fps)
  assert info.duration_s == pytest.approx(expected / fps, abs=1.5 / fps)
  assert info.has_audio
  track = audio.load_audio(path)
  assert len(track) == pytest.approx(len(speech), abs=0.05 * audio.SAMPLE_RATE)
  return frames


def test_video_with_sidecar_boxes(tool, files, capsys):
  out = str(files["root"] / "out.mp4")
  assert tool.run(f"--checkpoint={files['generator']}", f"--face={files['face']}",
                  f"--audio={files['wav']}", f"--outfile={out}", "--batch_size=8") == 0
  assert capsys.readouterr().out.strip().endswith("boxes from " + files["face"][:-4] + ".json")
  frames = _check_output(out, files["speech"], 25.0)
  source = video.read_video(files["face"])[0]
  # The 25-frame video loops under the 1.4 s of speech; the forehead stays the input's.
  assert len(frames) > len(source)
  np.testing.assert_allclose(frames[len(source)][:20].astype(float),
                             source[0][:20].astype(float), atol=12)


def test_still_image_without_fps_is_25(tool, files):
  out = str(files["root"] / "still.mp4")
  assert tool.run(f"--checkpoint={files['generator']}", f"--face={files['root'] / 'photo.png'}",
                  f"--audio={files['wav']}", f"--outfile={out}", f"--box={files['box']}",
                  "--batch_size=8") == 0
  _check_output(out, files["speech"], 25.0)


def test_export(tool, files):
  path = str(files["root"] / "generator.stablehlo")
  assert tool.run(f"--checkpoint={files['generator']}", f"--export={path}",
                  "--batch_size=2") == 0
  exported = jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))
  assert [a.shape for a in exported.in_avals] == [(2, 80, 16, 1), (2, 96, 96, 6)]
  assert [a.shape for a in exported.out_avals] == [(2, 96, 96, 3)]


def _write_bytes(path, data):
  path.write_bytes(data)
  return str(path)


def _errors(files, tmp):
  short = tmp / "short.wav"
  scipy.io.wavfile.write(short, audio.SAMPLE_RATE, files["speech"][:2400])  # 0.15 s
  blank = tmp / "blank.mp4"
  video.write_video(blank, np.full((6, 96, 96, 3), 90, np.uint8), 25.0)
  not_a_folder = _write_bytes(tmp / "file", b"x")
  return {
      "missing face": ([f"--face={tmp / 'nope.mp4'}"], "nope.mp4: no such file"),
      "unreadable face": ([f"--face={_write_bytes(tmp / 'junk.mp4', b'junk' * 50)}"],
                          "junk.mp4"),
      "missing audio": ([f"--audio={tmp / 'nope.wav'}"], "nope.wav"),
      "unreadable audio": ([f"--audio={_write_bytes(tmp / 'junk.wav', b'RIFF' * 30)}"],
                           "junk.wav"),
      "short audio": ([f"--audio={short}"], "shorter than one mel window"),
      "no face": ([f"--face={blank}", "--nosidecar"],
                  r"blank.mp4: no face detected in 6 frame\(s\): 0, 1, 2, 3, 4, 5"),
      "output folder missing": ([f"--outfile={tmp / 'no' / 'out.mp4'}"], "does not exist"),
      "output under a file": ([f"--outfile={not_a_folder}/out.mp4"], "is not a folder"),
      "bad box": (["--box=1,2,3"], "--box needs 4"),
  }


ERRORS = ("missing face", "unreadable face", "missing audio", "unreadable audio",
          "short audio", "no face", "output folder missing", "output under a file", "bad box")


@pytest.mark.parametrize("case", ERRORS)
def test_errors(tool, files, tmp_path, capsys, case):
  args, message = _errors(files, tmp_path)[case]
  defaults = {"--face": files["face"], "--audio": files["wav"],
              "--outfile": str(tmp_path / "out.mp4")}
  given = {a.split("=")[0] for a in args}
  args += [f"{k}={v}" for k, v in defaults.items() if k not in given]
  before = set(os.listdir(tmp_path))
  assert tool.run(f"--checkpoint={files['generator']}", *args) == 1
  lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
  err = [line for line in lines if line and not line.startswith("face detection:")]
  assert len(err) == 1 and err[0].startswith("infer: ")  # one line besides the progress bar
  assert re.search(message, err[0]), err[0]
  assert set(os.listdir(tmp_path)) == before  # no partial output


@pytest.mark.parametrize("kind", ["pth", "folder"])
def test_corrupt_checkpoint_is_one_line(tool, files, tmp_path, capsys, kind):
  if kind == "pth":
    checkpoint = _write_bytes(tmp_path / "wav2lip.pth", b"PK\x03\x04" + bytes(60))
  else:
    checkpoint = tmp_path / "converted"
    checkpoint.mkdir()
    (checkpoint / "metadata.json").write_text("{not json")
  out = tmp_path / "out.mp4"
  assert tool.run(f"--checkpoint={checkpoint}", f"--face={files['face']}",
                  f"--audio={files['wav']}", f"--outfile={out}") == 1
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"infer: {checkpoint}"), lines
  assert not out.exists()
