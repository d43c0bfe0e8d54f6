"""The published LSE-D / LSE-C: SyncNet v2, MFCC, the cv2 resize and the scores_LSE protocol.

References, all independent of our code: a PyTorch SyncNet v2 written here from
syncnet_python's `SyncNetModel.S` (random weights, BatchNorm statistics measured on
inputs and then perturbed), `python_speech_features.mfcc`, `cv2.resize`, and the
protocol of Wav2Lip's `SyncNetInstance_calc_scores.evaluate` written out in PyTorch.
"""

import json
import math
import os

import cv2
import numpy as np
import python_speech_features
import pytest
import scipy.signal
import torch
from torch import nn

from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import faces
from lipsync_jax import lse
from lipsync_jax import video
import lipsync_fixtures
from references import torch_wav2lip
from references.torch_calibrate import randomize_and_calibrate_


def _conv_bn(conv, channels, bn=nn.BatchNorm2d):
  return [conv, bn(channels), nn.ReLU()]


class TorchSyncNetV2(nn.Module):
  """syncnet_python's `S` (num_layers_in_fc_layers=1024): same attributes and indices."""

  def __init__(self):
    super().__init__()
    self.netcnnaud = nn.Sequential(
        *_conv_bn(nn.Conv2d(1, 64, 3, padding=1), 64), nn.MaxPool2d(1, 1),
        *_conv_bn(nn.Conv2d(64, 192, 3, padding=1), 192), nn.MaxPool2d(3, (1, 2)),
        *_conv_bn(nn.Conv2d(192, 384, 3, padding=1), 384),
        *_conv_bn(nn.Conv2d(384, 256, 3, padding=1), 256),
        *_conv_bn(nn.Conv2d(256, 256, 3, padding=1), 256), nn.MaxPool2d(3, 2),
        *_conv_bn(nn.Conv2d(256, 512, (5, 4)), 512))
    bn3 = nn.BatchNorm3d
    self.netcnnlip = nn.Sequential(
        *_conv_bn(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, bn3),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, bn3),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
        *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
        *_conv_bn(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn3))
    self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                  nn.Linear(512, 1024))
    self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                  nn.Linear(512, 1024))

  def forward_aud(self, x):  # (N, 1, 13, 20)
    return self.netfcaud(self.netcnnaud(x).flatten(1))

  def forward_lip(self, x):  # (N, 3, 5, 224, 224)
    return self.netfclip(self.netcnnlip(x).flatten(1))


def _random_inputs(seed, n=3):
  rng = np.random.default_rng(seed)
  mfcc = rng.standard_normal((n, 13, 20, 1)).astype(np.float32) * 10
  frames = rng.integers(0, 256, (n, 5, 224, 224, 3)).astype(np.float32)
  return mfcc, frames


def _torch_embed(net, mfcc, frames):
  with torch.no_grad():
    a = net.forward_aud(torch.from_numpy(mfcc.transpose(0, 3, 1, 2).copy()))
    v = net.forward_lip(torch.from_numpy(frames.transpose(0, 4, 1, 2, 3).copy()))
  return a.numpy(), v.numpy()


@pytest.fixture(scope="module")
def syncnet(tmp_path_factory):
  """The PyTorch SyncNet v2 and its files: the official layout (a bare state dict in the
  legacy format, as `syncnet_v2.model`) and our converted folder."""
  root = tmp_path_factory.mktemp("syncnet_v2")
  net = TorchSyncNetV2()
  mfcc, frames = _random_inputs(0, 4)
  m = torch.from_numpy(mfcc.transpose(0, 3, 1, 2).copy())
  f = torch.from_numpy(frames.transpose(0, 4, 1, 2, 3).copy())
  randomize_and_calibrate_(net, 3, [(net.forward_aud, m), (net.forward_lip, f)])
  with torch.no_grad():
    # One output bias shared by both heads, so that audio-lip distances are comparable to
    # the distance to the zero padding and the scores depend on the content (independent
    # random embeddings would put the minimum at a fully padded offset: LSE-C 0).
    shared = 8.0 * torch.randn(1024, generator=torch.Generator().manual_seed(4))
    net.netfcaud[3].bias.copy_(shared)
    net.netfclip[3].bias.copy_(shared)
  model_file = root / "syncnet_v2.model"
  torch.save(net.state_dict(), model_file, _use_new_zipfile_serialization=False)
  lipsync_fixtures.convert_with_tool(model_file, "syncnet_v2", root / "converted")
  return {"net": net, "file": model_file, "converted": root / "converted", "root": root}


def test_mfcc_equals_python_speech_features():
  rng = np.random.default_rng(0)
  for n in (399, 400, 401, 4000, 12345):
    samples = rng.integers(-20000, 20000, n).astype(np.int16)
    reference = python_speech_features.mfcc(samples, 16000)
    ours = lse.mfcc(samples)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-9)
  silence = np.zeros(3000, np.int16)  # zero energy: the eps replacement
  np.testing.assert_allclose(lse.mfcc(silence), python_speech_features.mfcc(silence, 16000),
                             atol=1e-9)


def test_cv2_resize_linear_equals_opencv():
  rng = np.random.default_rng(1)
  for shape, (width, height) in [((160, 160, 3), (224, 224)), ((480, 640, 3), (224, 224)),
                                 ((96, 96, 3), (224, 224)), ((37, 101), (224, 60)),
                                 ((448, 448, 3), (224, 224))]:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(lse.cv2_resize_linear(image, width, height),
                                  cv2.resize(image, (width, height)))


@pytest.mark.parametrize("checkpoint", ["file", "converted"])
def test_syncnet_v2_matches_pytorch(syncnet, checkpoint):
  network = checkpoints.load_syncnet_v2(syncnet[checkpoint])
  mfcc, frames = _random_inputs(1)
  audio_emb, lip_emb = (np.asarray(e) for e in network.apply(mfcc, frames))
  ref_audio, ref_lip = _torch_embed(syncnet["net"], mfcc, frames)
  for ours, ref in ((audio_emb, ref_audio), (lip_emb, ref_lip)):
    assert ours.shape == (3, 1024) and np.std(ref) > 0.1
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


def test_syncnet_v2_refuses_other_checkpoints(syncnet, tmp_path):
  expert = tmp_path / "lipsync_expert.pth"
  torch_wav2lip.save_checkpoint(torch_wav2lip.TorchSyncNet(), expert, "zip")
  with pytest.raises(checkpoints.CheckpointError, match="not a syncnet_v2 checkpoint"):
    checkpoints.load_syncnet_v2(expert)
  with pytest.raises(checkpoints.CheckpointError, match="no such"):
    checkpoints.load_syncnet_v2(tmp_path / "nope.model")


def test_offset_distances_equal_pairwise_distance_of_calc_pdist():
  rng = np.random.default_rng(2)
  lip, aud = rng.standard_normal((2, 9, 16))
  vshift = 4
  padded = torch.nn.functional.pad(torch.from_numpy(aud), (0, 0, vshift, vshift))
  reference = torch.stack([
      torch.nn.functional.pairwise_distance(torch.from_numpy(lip[[i]]).repeat(9, 1),
                                            padded[i:i + 9]) for i in range(9)]).numpy()
  np.testing.assert_allclose(lse.offset_distances(lip, aud, vshift), reference, rtol=1e-12)


def _reference_protocol(net, frames_rgb, wav, vshift=15, batch_size=20, resize=True):
  """SyncNetInstance_calc_scores.evaluate on decoded frames and samples: cv2.resize (or
  frames already cropped: uint8 BGR 224 x 224), python_speech_features, the PyTorch
  network, calc_pdist; (LSE-D, LSE-C, offset)."""
  images = ([cv2.resize(np.ascontiguousarray(f[..., ::-1]), (224, 224)) for f in frames_rgb]
            if resize else list(frames_rgb))
  im = np.stack(images, axis=3)[None].transpose(0, 3, 4, 1, 2)  # (1, 3, T, 224, 224)
  imtv = torch.from_numpy(im.astype(float)).float()
  samples = np.clip(np.round(wav.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
  mfcc = np.stack([np.array(c) for c in zip(*python_speech_features.mfcc(samples, 16000))])
  cct = torch.from_numpy(mfcc[None, None].astype(float)).float()
  lastframe = min(len(images), math.floor(len(samples) / 640)) - 5
  im_feat, cc_feat = [], []
  with torch.no_grad():
    for i in range(0, lastframe, batch_size):
      window = range(i, min(lastframe, i + batch_size))
      im_feat.append(net.forward_lip(torch.cat([imtv[:, :, v:v + 5] for v in window])))
      cc_feat.append(net.forward_aud(torch.cat([cct[..., v * 4:v * 4 + 20] for v in window])))
  im_feat, cc_feat = torch.cat(im_feat), torch.cat(cc_feat)
  padded = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
  dists = [torch.nn.functional.pairwise_distance(im_feat[[i]].repeat(2 * vshift + 1, 1),
                                                 padded[i:i + 2 * vshift + 1])
           for i in range(len(im_feat))]
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  return float(minval), float(torch.median(mdist) - minval), int(vshift - minidx)


@pytest.fixture(scope="module")
def videos(syncnet):
  """Two synthetic talking heads (0.44 s: 11 frames, 6 protocol windows) as mp4s."""
  folder = syncnet["root"] / "videos"
  folder.mkdir()
  for seed in (5, 6):
    clip = synthetic.make_clip(seed, seconds=0.44)
    video.write_video(folder / f"clip{seed}.mp4", clip.frames, 25, audio=clip.wav)
  return folder


@pytest.fixture(scope="module")
def tool():
  script = lipsync_fixtures.InProcessTool("evaluate")
  yield script
  script.close()


def test_tool_lse_equals_pytorch_protocol(syncnet, videos, tool, capsys):
  output = syncnet["root"] / "scores.json"
  assert tool.run(f"--videos={videos}", f"--lse_model={syncnet['file']}",
                  f"--json_out={output}") == 0
  printed = capsys.readouterr().out
  result = json.loads(output.read_text())
  assert [v["video"] for v in result["videos"]] == ["clip5.mp4", "clip6.mp4"]
  for entry in result["videos"]:
    frames, _ = video.read_video(videos / entry["video"])
    wav = audio.load_audio(videos / entry["video"])
    lse_d, lse_c, offset = _reference_protocol(syncnet["net"], frames, wav)
    assert entry["lse_d"] == pytest.approx(lse_d, abs=1e-3)
    assert entry["lse_c"] == pytest.approx(lse_c, abs=1e-3)
    assert entry["offset"] == offset
    assert lse_c > 1.0 and abs(offset) < 5  # not a degenerate minimum in the padding
  assert result["mean"]["lse_d"] == pytest.approx(
      np.mean([v["lse_d"] for v in result["videos"]]))
  assert "syncnet_v2.model" in result["models"]["lse"]
  assert "LSE-D" in printed and "syncnet_python SyncNet v2" in printed
  assert "FID" not in printed and "expert_sync_d" not in printed


def _reference_crops(frames, boxes):
  """run_pipeline.py's crop_video on decoded frames and a face track."""
  s = scipy.signal.medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0])
                           / 2, 13)
  y = scipy.signal.medfilt((boxes[:, 1] + boxes[:, 3]) / 2, 13)
  x = scipy.signal.medfilt((boxes[:, 0] + boxes[:, 2]) / 2, 13)
  crops = []
  for i, image in enumerate(frames):
    bsi = int(s[i] * 1.8)
    padded = np.pad(image[..., ::-1], ((bsi, bsi), (bsi, bsi), (0, 0)), "constant",
                    constant_values=(110, 110))
    my, mx = y[i] + bsi, x[i] + bsi
    face = padded[int(my - s[i]):int(my + s[i] * 1.8), int(mx - s[i] * 1.4):int(mx + s[i] * 1.4)]
    crops.append(cv2.resize(face, (224, 224)))
  return np.stack(crops)


@pytest.mark.filterwarnings("ignore:kernel_size exceeds volume extent")  # 11-frame track
def test_tool_real_videos_protocol_scores_the_tracked_crops(syncnet, videos, tool):
  output = syncnet["root"] / "scores_real.json"
  path = videos / "clip5.mp4"
  assert tool.run(f"--videos={path}", f"--lse_model={syncnet['converted']}",
                  "--protocol=real_videos", f"--json_out={output}") == 0
  (entry,) = json.loads(output.read_text())["videos"]
  frames, _ = video.read_video(path)
  boxes, has_face = faces.detect_video_boxes(iter(frames), faces.FaceDetector(),
                                             pads=(0, 0, 0, 0), smooth=False,
                                             missing="interpolate")
  assert has_face.all()
  crops = _reference_crops(frames, boxes.astype(np.float64))
  lse_d, lse_c, offset = _reference_protocol(syncnet["net"], crops, audio.load_audio(path),
                                             resize=False)
  assert entry["lse_d"] == pytest.approx(lse_d, abs=1e-3)
  assert entry["lse_c"] == pytest.approx(lse_c, abs=1e-3)
  assert entry["offset"] == offset


def test_track_crops_as_run_pipeline_crop_video():
  rng = np.random.default_rng(3)
  frames = rng.integers(0, 256, (15, 120, 160, 3), dtype=np.uint8)
  boxes = np.stack([np.array([50, 30, 100, 85]) + rng.integers(-4, 5, 4) for _ in frames])
  np.testing.assert_array_equal(lse.track_crops(frames, boxes),
                                _reference_crops(frames, boxes.astype(np.float64)))


@pytest.mark.parametrize("case", ["missing lse model", "expert as lse model",
                                  "fid without reference", "nothing to compute",
                                  "missing fid model"])
def test_tool_bad_input_is_one_line(syncnet, videos, tool, tmp_path, capsys, case):
  args = {"--videos": str(videos), "--json_out": str(tmp_path / "scores.json")}
  if case == "missing lse model":
    args["--lse_model"] = str(tmp_path / "syncnet_v2.model")
    expected = "syncnet_v2.model: no such SyncNet v2 (syncnet_v2.model) file"
  elif case == "expert as lse model":
    expert = tmp_path / "lipsync_expert.pth"
    torch_wav2lip.save_checkpoint(torch_wav2lip.TorchSyncNet(), expert, "zip")
    args["--lse_model"] = str(expert)
    expected = "lipsync_expert.pth: not a syncnet_v2 checkpoint: missing keys"
  elif case == "fid without reference":
    args["--lse_model"] = str(syncnet["file"])
    args["--fid_model"] = str(tmp_path / "inception.pth")
    expected = "--fid_model needs --reference"
  elif case == "nothing to compute":
    expected = "nothing to compute"
  else:
    args["--reference"] = str(videos)
    args["--fid_model"] = str(syncnet["file"])  # the wrong network
    expected = "not a inception_fid checkpoint"
  before = set(os.listdir(tmp_path))
  assert tool.run(*[f"{k}={v}" for k, v in args.items()]) == 1
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("evaluate: ") and expected in lines[0], lines
  assert set(os.listdir(tmp_path)) == before
