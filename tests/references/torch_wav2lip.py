"""PyTorch reference Wav2Lip generator, quality discriminator and colour SyncNet (NCHW).

Written for the parity tests and the speed benchmark from the architecture facts of
Rudrabha/Wav2Lip (models/conv.py, wav2lip.py, syncnet.py). Attribute names are chosen so that
`state_dict()` has the official key layout (`face_encoder_blocks.1.0.conv_block.0.weight`,
`audio_encoder.3.conv_block.1.running_mean`, `output_block.1.bias`, `binary_pred.0.weight`).
Layer tables are written out independently of `lipsync_jax.models`.
"""

import torch
from torch import nn
from torch.nn import functional as F


class ConvBN(nn.Module):
  """conv_block = [Conv2d, BatchNorm2d], then optional residual add, then ReLU."""

  def __init__(self, cin, cout, kernel_size, stride, padding, residual=False):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                    nn.BatchNorm2d(cout))
    self.residual = residual

  def forward(self, x):
    y = self.conv_block(x)
    return F.relu(y + x if self.residual else y)


class ConvTransposeBN(nn.Module):
  """conv_block = [ConvTranspose2d, BatchNorm2d], then ReLU."""

  def __init__(self, cin, cout, kernel_size, stride, padding, output_padding=0):
    super().__init__()
    self.conv_block = nn.Sequential(
        nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
        nn.BatchNorm2d(cout))

  def forward(self, x):
    return F.relu(self.conv_block(x))


class ConvLeaky(nn.Module):
  """conv_block = [Conv2d], then LeakyReLU(0.01)."""

  def __init__(self, cin, cout, kernel_size, stride, padding):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))

  def forward(self, x):
    return F.leaky_relu(self.conv_block(x), 0.01)


def _res(channels, count):
  return [ConvBN(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _audio_encoder(num_res_256):
  return nn.Sequential(
      ConvBN(1, 32, 3, 1, 1), *_res(32, 2),
      ConvBN(32, 64, 3, (3, 1), 1), *_res(64, 2),
      ConvBN(64, 128, 3, 3, 1), *_res(128, 2),
      ConvBN(128, 256, 3, (3, 2), 1), *_res(256, num_res_256),
      ConvBN(256, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0))


class TorchWav2Lip(nn.Module):
  """Generator: forward(mel (B,1,80,16), faces (B,6,96,96)) -> (B,3,96,96)."""

  def __init__(self):
    super().__init__()
    self.face_encoder_blocks = nn.ModuleList([
        nn.Sequential(ConvBN(6, 16, 7, 1, 3)),
        nn.Sequential(ConvBN(16, 32, 3, 2, 1), *_res(32, 2)),
        nn.Sequential(ConvBN(32, 64, 3, 2, 1), *_res(64, 3)),
        nn.Sequential(ConvBN(64, 128, 3, 2, 1), *_res(128, 2)),
        nn.Sequential(ConvBN(128, 256, 3, 2, 1), *_res(256, 2)),
        nn.Sequential(ConvBN(256, 512, 3, 2, 1), *_res(512, 1)),
        nn.Sequential(ConvBN(512, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0)),
    ])
    self.audio_encoder = _audio_encoder(num_res_256=1)
    self.face_decoder_blocks = nn.ModuleList([
        nn.Sequential(ConvBN(512, 512, 1, 1, 0)),
        nn.Sequential(ConvTransposeBN(1024, 512, 3, 1, 0), *_res(512, 1)),
        nn.Sequential(ConvTransposeBN(1024, 512, 3, 2, 1, 1), *_res(512, 2)),
        nn.Sequential(ConvTransposeBN(768, 384, 3, 2, 1, 1), *_res(384, 2)),
        nn.Sequential(ConvTransposeBN(512, 256, 3, 2, 1, 1), *_res(256, 2)),
        nn.Sequential(ConvTransposeBN(320, 128, 3, 2, 1, 1), *_res(128, 2)),
        nn.Sequential(ConvTransposeBN(160, 64, 3, 2, 1, 1), *_res(64, 2)),
    ])
    self.output_block = nn.Sequential(ConvBN(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0),
                                      nn.Sigmoid())

  def forward(self, mel, faces):
    x = self.audio_encoder(mel)
    skips = []
    y = faces
    for block in self.face_encoder_blocks:
      y = block(y)
      skips.append(y)
    for block in self.face_decoder_blocks:
      x = torch.cat([block(x), skips.pop()], dim=1)
    return self.output_block(x)


class TorchQualityDiscriminator(nn.Module):
  """forward(frames (B,3,96,96)) -> (B, 1) probability, computed on the lower half."""

  def __init__(self):
    super().__init__()
    self.face_encoder_blocks = nn.ModuleList([
        nn.Sequential(ConvLeaky(3, 32, 7, 1, 3)),
        nn.Sequential(ConvLeaky(32, 64, 5, (1, 2), 2), ConvLeaky(64, 64, 5, 1, 2)),
        nn.Sequential(ConvLeaky(64, 128, 5, 2, 2), ConvLeaky(128, 128, 5, 1, 2)),
        nn.Sequential(ConvLeaky(128, 256, 5, 2, 2), ConvLeaky(256, 256, 5, 1, 2)),
        nn.Sequential(ConvLeaky(256, 512, 3, 2, 1), ConvLeaky(512, 512, 3, 1, 1)),
        nn.Sequential(ConvLeaky(512, 512, 3, 2, 1), ConvLeaky(512, 512, 3, 1, 1)),
        nn.Sequential(ConvLeaky(512, 512, 3, 1, 0), ConvLeaky(512, 512, 1, 1, 0)),
    ])
    self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

  def forward(self, frames):
    x = frames[:, :, frames.shape[2] // 2:]
    for block in self.face_encoder_blocks:
      x = block(x)
    return self.binary_pred(x).view(x.shape[0], -1)


class TorchSyncNet(nn.Module):
  """forward(mel (B,1,80,16), lower halves (B,15,48,96)) -> L2-normalised (B,512) x 2."""

  def __init__(self):
    super().__init__()
    self.face_encoder = nn.Sequential(
        ConvBN(15, 32, 7, 1, 3),
        ConvBN(32, 64, 5, (1, 2), 1), *_res(64, 2),
        ConvBN(64, 128, 3, 2, 1), *_res(128, 3),
        ConvBN(128, 256, 3, 2, 1), *_res(256, 2),
        ConvBN(256, 512, 3, 2, 1), *_res(512, 2),
        ConvBN(512, 512, 3, 2, 1), ConvBN(512, 512, 3, 1, 0), ConvBN(512, 512, 1, 1, 0))
    self.audio_encoder = _audio_encoder(num_res_256=2)

  def forward(self, mel, faces):
    face = self.face_encoder(faces).flatten(1)
    audio = self.audio_encoder(mel).flatten(1)
    return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)


def randomize_(module: nn.Module, seed: int, gain: float = 1.0) -> nn.Module:
  """Random weights and BatchNorm statistics, scaled so activations stay O(1) in depth.

  Conv weights ~ N(0, gain^2 / fan_in) (fan_in per output pixel, also for transposed convs;
  gain sqrt(2) keeps LeakyReLU stacks from shrinking),
  biases and BN affine terms random, running means ~ N(0, 0.1), running variances
  ~ U(0.5, 1.5). Returns the module (in eval mode).
  """
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for sub in module.modules():
      if isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d)):
        fan_in = sub.weight[0].numel() if isinstance(sub, nn.Conv2d) else (
            sub.weight.shape[0] * sub.weight[0, 0].numel() / max(sub.stride[0], 1) ** 2)
        sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen) * gain / fan_in ** 0.5)
        sub.bias.copy_(torch.randn(sub.bias.shape, generator=gen) * 0.1)
      elif isinstance(sub, nn.BatchNorm2d):
        sub.weight.copy_(1.0 + 0.2 * torch.randn(sub.weight.shape, generator=gen))
        sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=gen))
        sub.running_mean.copy_(0.1 * torch.randn(sub.running_mean.shape, generator=gen))
        sub.running_var.copy_(0.5 + torch.rand(sub.running_var.shape, generator=gen))
        sub.num_batches_tracked.fill_(7)
  return module.eval()


CHECKPOINT_FORMATS = ("zip", "legacy_wrapped")


def save_checkpoint(module: nn.Module, path, checkpoint_format: str) -> None:
  """torch.save of the module's state dict in one of two layouts.

  "zip": a bare state dict in the default zip format (torch >= 1.6).
  "legacy_wrapped": the official training-script layout, `{"state_dict": ..., "global_step",
  "global_epoch"}` with DataParallel `module.` prefixes, in the legacy (non-zip) format.
  """
  state = module.state_dict()
  if checkpoint_format == "zip":
    torch.save(state, path)
  elif checkpoint_format == "legacy_wrapped":
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()},
               "global_step": 1234, "global_epoch": 5}
    torch.save(wrapped, path, _use_new_zipfile_serialization=False)
  else:
    raise ValueError(f"unknown checkpoint format {checkpoint_format!r}")
