"""Checkpoint conversion: key mapping, named errors, the orbax output and the CLI."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from lipsync_jax import checkpoints, convert, errors
from references import torch_wav2lip as ref

_CLI = pathlib.Path(__file__).resolve().parents[1] / "tools" / "convert_torch.py"


@pytest.fixture(scope="module")
def discriminator_state():
  """The reference discriminator's state dict as {key: tensor}."""
  return dict(ref.randomize_(ref.TorchQualityDiscriminator(), seed=5).state_dict())


def test_torch_key_examples():
  assert convert.torch_key("params", ("face_encoder_blocks_1_0", "conv", "kernel")) == (
      "face_encoder_blocks.1.0.conv_block.0.weight")
  assert convert.torch_key("params", ("audio_encoder", "layers_12", "bn", "scale")) == (
      "audio_encoder.12.conv_block.1.weight")
  assert convert.torch_key("batch_stats", ("face_encoder_16", "bn", "var")) == (
      "face_encoder.16.conv_block.1.running_var")
  assert convert.torch_key("params", ("output_block_1", "bias")) == "output_block.1.bias"
  assert convert.torch_key("params", ("binary_pred_0", "kernel")) == "binary_pred.0.weight"


def test_every_reference_key_is_used_and_transposed(discriminator_state):
  state = {k: v.numpy() for k, v in discriminator_state.items()}
  variables = convert.variables_from_state_dict(state, "quality_discriminator")
  kernel = variables["params"]["face_encoder_blocks_1_0"]["conv"]["kernel"]
  torch_kernel = state["face_encoder_blocks.1.0.conv_block.0.weight"]  # (64, 32, 5, 5)
  assert kernel.shape == (5, 5, 32, 64)
  np.testing.assert_array_equal(np.asarray(kernel)[1, 4, 3, 7], torch_kernel[7, 3, 1, 4])
  num_leaves = len(jax.tree_util.tree_leaves(variables))
  assert num_leaves == len(state)


def test_wrong_key_is_named(discriminator_state, tmp_path):
  state = dict(discriminator_state)
  state["face_encoder_blocks.2.9.conv_block.0.weight"] = state.pop(
      "face_encoder_blocks.2.1.conv_block.0.weight")
  path = tmp_path / "renamed.pth"
  torch.save(state, path)
  with pytest.raises(convert.CheckpointMismatchError) as info:
    convert.load_torch_checkpoint(path, model="quality_discriminator")
  message = str(info.value)
  assert str(path) in message
  assert "missing keys [face_encoder_blocks.2.1.conv_block.0.weight]" in message
  assert "unexpected keys [face_encoder_blocks.2.9.conv_block.0.weight]" in message


def test_wrong_shape_is_named(discriminator_state, tmp_path):
  state = dict(discriminator_state)
  state["binary_pred.0.weight"] = torch.zeros(2, 512, 1, 1)
  path = tmp_path / "reshaped.pth"
  torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"binary_pred\.0\.weight \(2, 512, 1, 1\) != expected "
                           r"\(1, 512, 1, 1\)"):
    convert.load_torch_checkpoint(path, model="quality_discriminator")


def test_checkpoint_of_another_model_is_refused(discriminator_state, tmp_path):
  path = tmp_path / "disc.pth"
  torch.save(discriminator_state, path)
  with pytest.raises(convert.CheckpointMismatchError, match="not a syncnet checkpoint"):
    convert.load_torch_checkpoint(path, model="syncnet")
  with pytest.raises(errors.CheckpointError, match="disc.pth: PyTorch checkpoints of .wav2lip_hq."):
    convert.load_torch_checkpoint(path, model="wav2lip_hq")


def test_save_and_restore_round_trip(discriminator_state, tmp_path):
  state = {k: v.numpy() for k, v in discriminator_state.items()}
  variables = convert.variables_from_state_dict(state, "quality_discriminator")
  out = tmp_path / "converted"
  checkpoints.save_converted(out, variables, {"model": "quality_discriminator"})
  restored, metadata = checkpoints.restore_converted(out)
  assert metadata == {"model": "quality_discriminator"}
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, variables)
  assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # No temp dir left behind.
  with pytest.raises(FileExistsError, match="already exists"):
    checkpoints.save_converted(out, variables, {})


def test_cli_writes_orbax_checkpoint_and_reports_errors(discriminator_state, tmp_path):
  good, bad = tmp_path / "disc.pth", tmp_path / "bad.pth"
  ref.save_checkpoint(ref.TorchQualityDiscriminator().eval(), good, "legacy_wrapped")
  torch.save({k.replace("binary_pred", "head"): v for k, v in discriminator_state.items()}, bad)
  out = tmp_path / "flax"
  run = subprocess.run([sys.executable, str(_CLI), f"--input={good}",
                        "--model=quality_discriminator", f"--output={out}"],
                       capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr
  restored, metadata = checkpoints.restore_converted(out)
  assert metadata == {"model": "quality_discriminator", "channel_order": "bgr",
                      "source": "disc.pth"}
  expected = convert.load_torch_checkpoint(good, model="quality_discriminator")
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, expected)
  assert json.loads((out / "metadata.json").read_text())["channel_order"] == "bgr"

  run = subprocess.run([sys.executable, str(_CLI), f"--input={bad}",
                        "--model=quality_discriminator", f"--output={tmp_path / 'never'}"],
                       capture_output=True, text=True, check=False)
  assert run.returncode == 1
  assert "missing keys [binary_pred.0.bias, binary_pred.0.weight]" in run.stderr
  assert not (tmp_path / "never").exists()


def test_lpips_vgg16_is_dispatched_to_the_lpips_converter(tmp_path):
  """torchvision-layout VGG16 features in a legacy file; the shipped heads fill in."""
  channels = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
  indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
  gen = torch.Generator().manual_seed(6)
  state, cin = {}, 3
  for index, cout in zip(indices, channels):
    state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen)
    state[f"features.{index}.bias"] = torch.randn(cout, generator=gen)
    cin = cout
  path = tmp_path / "vgg16.pth"
  torch.save(state, path, _use_new_zipfile_serialization=False)
  params = convert.load_torch_checkpoint(path, model="lpips_vgg16")["params"]
  np.testing.assert_array_equal(np.asarray(params["features"]["conv3_1"]["kernel"]),
                                state["features.10.weight"].numpy().transpose(2, 3, 1, 0))
  assert params["lin4"]["kernel"].shape == (1, 1, 512, 1)
