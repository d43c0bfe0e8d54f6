"""FID: pytorch-fid's InceptionV3 and the Fréchet distance.

References: a PyTorch FID Inception written here from torchvision's Inception3 layout with
pytorch-fid's FID blocks (random weights, BatchNorm statistics measured on inputs then
perturbed), saved as pytorch-fid's file is (with its unused 1008-way `fc`); the Fréchet
distance from the eigenvalues of sigma1 sigma2 (NumPy), not scipy's sqrtm.
"""

import functools
import json

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipsync_jax import checkpoints
from lipsync_jax import evaluation
from lipsync_jax import video
import lipsync_fixtures
from references.torch_calibrate import randomize_and_calibrate_


class BasicConv2d(nn.Module):

  def __init__(self, cin, cout, **kwargs):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _avg(x):
  return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class FIDInceptionA(nn.Module):

  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
    self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

  def forward(self, x):
    return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([self.branch3x3(x),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      F.max_pool2d(x, 3, 2)], 1)


class FIDInceptionC(nn.Module):

  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class FIDInceptionE(nn.Module):

  def __init__(self, cin, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
    self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
    self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg(x)
    return torch.cat([self.branch1x1(x),
                      torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
                      torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1),
                      self.branch_pool(pooled)], 1)


class TorchFIDInception(nn.Module):
  """pytorch-fid's InceptionV3(output_blocks=[3]) with fid_inception_v3's layers."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    self.Mixed_5b = FIDInceptionA(192, 32)
    self.Mixed_5c = FIDInceptionA(256, 64)
    self.Mixed_5d = FIDInceptionA(288, 64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = FIDInceptionC(768, 128)
    self.Mixed_6c = FIDInceptionC(768, 160)
    self.Mixed_6d = FIDInceptionC(768, 160)
    self.Mixed_6e = FIDInceptionC(768, 192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    self.fc = nn.Linear(2048, 1008)  # in the weights file, unused for FID

  def forward(self, x):  # (B, 3, H, W) in [0, 1] -> (B, 2048)
    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
    x = F.max_pool2d(x, 3, 2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
  root = tmp_path_factory.mktemp("fid")
  net = TorchFIDInception()
  images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
  randomize_and_calibrate_(net, 4, [(net.forward, images)])
  path = root / "pt_inception-2015-12-05-test.pth"
  torch.save(net.state_dict(), path)
  lipsync_fixtures.convert_with_tool(path, "inception_fid", root / "converted")
  return {"net": net, "file": path, "converted": root / "converted", "root": root}


def _reference_fid(a, b):
  """||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^1/2), the last trace as the sum of
  the square roots of the eigenvalues of the symmetric s1^1/2 s2 s1^1/2 (same spectrum as
  s1 s2)."""
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  eigenvalues = np.linalg.eigvalsh(root1 @ s2 @ root1)
  return (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * np.sum(np.sqrt(np.clip(eigenvalues, 0, None))))


def test_frechet_distance_equals_numpy_reference():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
  b = rng.standard_normal((150, 16)) * 1.5 + 0.3
  assert evaluation.fid(a, b) == pytest.approx(_reference_fid(a, b), abs=1e-3)
  assert evaluation.fid(a, a) == pytest.approx(0.0, abs=1e-3)
  with pytest.raises(evaluation.EvaluationError, match="at least 2"):
    evaluation.fid(a[:1], b)


def test_inception_pool_features_match_pytorch(inception):
  network = checkpoints.load_inception(inception["file"])
  images = np.random.default_rng(1).uniform(size=(2, 48, 40, 3)).astype(np.float32)
  ours = np.asarray(network.apply(images))
  with torch.no_grad():
    reference = inception["net"](torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  assert ours.shape == (2, 2048) and np.std(reference) > 0.05
  np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)


def test_converted_inception_holds_the_file_variables(inception):
  from_file = checkpoints.load_variables(inception["file"], "inception_fid")
  converted = checkpoints.load_variables(inception["converted"], "inception_fid")
  leaves = jax.tree_util.tree_leaves_with_path(from_file)
  # 94 conv + BatchNorm layers: kernel, scale, bias, mean, var each.
  assert len(leaves) == 470 == len(jax.tree_util.tree_leaves(converted))
  for path, leaf in leaves:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(
        functools.reduce(lambda tree, key: tree[key.key], path, converted)))


def test_tool_fid_over_videos_vs_references(inception, tmp_path, capsys):
  """Static videos: the covariances are zero, so scipy's sqrtm of a 2048 x 2048 matrix
  (about 25-50 s on these CPUs for a full one) is quick; FID is then the squared distance
  between the mean features, which checks which frames the tool feeds the network. The
  covariance part of the formula is tested above."""
  rng = np.random.default_rng(2)
  for folder in ("generated", "truth"):
    (tmp_path / folder).mkdir()
  frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  noisy = np.clip(frame + rng.integers(-60, 61, frame.shape), 0, 255).astype(np.uint8)
  video.write_video(tmp_path / "truth" / "a.mp4", np.stack([frame] * 3), 25)
  video.write_video(tmp_path / "generated" / "a.mp4", np.stack([noisy] * 3), 25)
  tool = lipsync_fixtures.InProcessTool("evaluate")
  try:
    assert tool.run(f"--videos={tmp_path / 'generated'}", f"--reference={tmp_path / 'truth'}",
                    f"--fid_model={inception['file']}", "--region=frame", "--batch_size=3",
                    f"--json_out={tmp_path / 'scores.json'}") == 0
  finally:
    tool.close()
  printed = capsys.readouterr().out
  result = json.loads((tmp_path / "scores.json").read_text())
  decoded = [video.read_video(tmp_path / d / "a.mp4")[0] for d in ("generated", "truth")]
  with torch.no_grad():
    features = [inception["net"](torch.from_numpy(f.transpose(0, 3, 1, 2) / 255.0).float())
                .double().numpy() for f in decoded]
  expected = np.sum((features[0].mean(0) - features[1].mean(0)) ** 2)
  assert expected > 1.0
  assert result["fid"] == pytest.approx(expected, rel=1e-3)
  assert "pytorch-fid InceptionV3" in result["models"]["fid"]
  assert "FID" in printed and "PSNR" in printed and "LSE-D" not in printed
