"""lipsync_jax.cli and the tools' bad-input paths: one stderr line, exit code 1.

The subprocess cases fail before any training, conversion or inference runs, so each
takes the few seconds of importing JAX.
"""

import logging
import os
import pathlib
import re
import subprocess
import sys

from absl import app
import ml_collections
import pytest

from lipsync_jax import audio
from lipsync_jax import cli
from lipsync_jax import errors
from lipsync_jax import faces
from lipsync_jax import frame_store
from lipsync_jax import inference
from lipsync_jax import input_pipeline
from lipsync_jax import lse
from lipsync_jax import records
from lipsync_jax import video
from lipsync_jax.models import blazeface

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo_cpu.py"


def _tool(name, *args, timeout=120):
  """(exit code, stdout, stderr lines) of `python tools/<name>.py args`."""
  result = subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *args],
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)
  return result.returncode, result.stdout, result.stderr.splitlines()


def _one_error_line(result, tool_name, warnings=0):
  """The error line of a tool that failed, besides `warnings` "WARNING: " lines."""
  code, _, lines = result
  assert code == 1, lines
  assert len(lines) == 1 + warnings and lines[-1].startswith(f"{tool_name}: "), lines
  assert all(line.startswith("WARNING: ") for line in lines[:-1]), lines
  return lines[-1]


# The library.


def test_library_errors_derive_from_lipsync_error():
  expected = {records.RecordError: ValueError, input_pipeline.DatasetError: ValueError,
              audio.AudioError: ValueError, faces.NoFaceError: ValueError,
              inference.InferenceError: ValueError, video.VideoError: ValueError,
              blazeface.FaceDetectorError: RuntimeError, frame_store.FrameStoreError: ValueError,
              cli.ArgumentError: ValueError, lse.LSEError: ValueError}
  for error, second_base in expected.items():
    assert issubclass(error, errors.LipsyncError) and issubclass(error, second_base), error


def _config():
  config = ml_collections.ConfigDict({"batch_size": 1, "model": {"img_size": 96, "name": "x"}})
  config.lock()
  return config


def test_config_fields_and_unknown_fields():
  config = _config()
  assert cli.config_fields(config) == ["batch_size", "model", "model.img_size", "model.name"]
  assert not cli.unknown_field(config, "model.img_size")
  assert cli.unknown_field(config, "model.img_siz")
  assert cli.unknown_field(config, "modle.img_size")
  assert cli.unknown_field(config, "batch_size.x")


def test_one_line():
  assert cli.one_line(ValueError("a\n  b\n")) == "a; b"
  assert cli.one_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("error", [errors.ConfigError("bad field x"), FileNotFoundError(
    "nope.mp4: no such file"), app.UsageError("unexpected arguments")])
def test_tool_prints_one_line_and_exits_1(error, capsys):

  @cli.tool("some_tool")
  def main(argv):
    del argv
    raise error

  with pytest.raises(SystemExit) as exit_info:
    main(["some_tool"])
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == f"some_tool: {error}\n"


def test_bugs_keep_their_traceback():

  @cli.tool("some_tool")
  def main(argv):
    del argv
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    main(["some_tool"])


def test_log_file_gets_info_and_the_traceback_and_is_closed(tmp_path):
  log = tmp_path / "logs" / "x.log"

  @cli.tool("x", log_file=lambda: log)
  def main(argv):
    del argv
    logging.info("an info line")
    raise errors.CheckpointError("broken.pth: truncated")

  handlers = list(logging.getLogger().handlers)
  with pytest.raises(SystemExit):
    main(["x"])
  text = log.read_text()
  assert "an info line" in text and "CheckpointError: broken.pth: truncated" in text
  assert logging.getLogger().handlers == handlers


def test_console_filter_keeps_own_warnings_and_library_errors():
  quiet = cli._QuietFilter()  # pylint: disable=protected-access

  def record(level, pathname):
    return logging.LogRecord("absl", level, pathname, 1, "message", None, None)

  own = str(REPO / "lipsync_jax" / "train" / "components.py")
  library = os.path.join(sys.prefix, "lib", "site-packages", "orbax", "checkpoint.py")
  assert quiet.filter(record(logging.WARNING, own))
  assert not quiet.filter(record(logging.INFO, own))
  assert not quiet.filter(record(logging.WARNING, library))
  assert quiet.filter(record(logging.ERROR, library))


# The tools, in subprocesses.


@pytest.mark.parametrize("tool_name", ["train", "train_syncnet"])
def test_unknown_config_field_names_the_closest(tool_name, tmp_path):
  part = "generator" if tool_name == "train" else "syncnet"
  line = _one_error_line(_tool(tool_name, f"--config={DEMO_CONFIG}:{part}",
                               "--config.model.img_siz=48", f"--workdir={tmp_path / 'w'}"),
                         tool_name)
  assert "'model.img_siz'" in line and "closest: model.img_size" in line, line
  assert not (tmp_path / "w").exists()  # Nothing ran.


def test_config_value_of_the_wrong_type_is_one_line(tmp_path):
  line = _one_error_line(_tool("train", f"--config={DEMO_CONFIG}", "--config.batch_size=two",
                               f"--workdir={tmp_path}"), "train")
  assert "--config.batch_size=two" in line


def test_missing_config_file_is_one_line(tmp_path):
  line = _one_error_line(_tool("train_syncnet", f"--config={tmp_path / 'nope.py'}:syncnet",
                               "--config.batch_size=2", f"--workdir={tmp_path}"),
                         "train_syncnet")
  assert "nope.py:syncnet: no such config file" in line


def test_train_with_lpips_but_no_weights_is_one_line(tmp_path):
  line = _one_error_line(_tool(
      "train", f"--config={DEMO_CONFIG}:generator", f"--workdir={tmp_path}",
      "--config.expert.checkpoint=random", "--config.loss.lpips_weight=0.07",
      "--config.lpips.backbone=vgg16"), "train", warnings=1)  # The random expert's.
  assert "tools/convert_torch.py --model=lpips_vgg16" in line
  assert (tmp_path / "logs" / "train.log").is_file()


def test_train_syncnet_without_records_is_one_line(tmp_path):
  line = _one_error_line(_tool(
      "train_syncnet", f"--config={DEMO_CONFIG}:syncnet", f"--workdir={tmp_path / 'w'}",
      f"--config.data.train_path={tmp_path / 'no_records'}"), "train_syncnet")
  assert "no_records" in line


def test_convert_corrupt_checkpoint_is_one_line(tmp_path):
  corrupt = tmp_path / "wav2lip.pth"
  corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 60)
  line = _one_error_line(_tool("convert_torch", f"--input={corrupt}", "--model=wav2lip",
                               f"--output={tmp_path / 'out'}"), "convert_torch")
  assert "wav2lip.pth" in line
  assert not (tmp_path / "out").exists()


def test_preprocess_missing_input_is_one_line(tmp_path):
  line = _one_error_line(_tool("preprocess", f"--input_dir={tmp_path / 'nope'}",
                               f"--output_dir={tmp_path / 'out'}"), "preprocess")
  assert "nope: no such input directory" in line


def test_make_synthetic_bad_flag_is_one_line(tmp_path):
  line = _one_error_line(_tool("make_synthetic", f"--out_dir={tmp_path}", "--frame_size=32"),
                         "make_synthetic")
  assert "--frame_size=32" in line


def test_demo_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  line = _one_error_line(_tool("demo", f"--workdir={blocker / 'demo'}"), "demo")
  assert "file/demo" in line


def test_verbosity_brings_info_logs_back_to_the_console(tmp_path):
  code, _, lines = _tool(
      "train", f"--config={DEMO_CONFIG}:generator", f"--workdir={tmp_path}", "--verbosity=0",
      "--config.expert.checkpoint=random", "--config.loss.lpips_weight=0.07",
      "--config.lpips.backbone=vgg16")
  assert code == 1 and lines[-1].startswith("train: ")
  assert any(re.match(r"I\d{4} ", line) for line in lines), lines
