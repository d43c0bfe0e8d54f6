"""The reference `lpips` package's LPIPS math (net="vgg", version="0.1") in PyTorch.

Written from the package's facts (scaling layer constants, torchvision vgg16
`features` taps at indices 3, 8, 15, 22, 29, channel normalisation with eps
1e-10, 1x1 heads without bias, spatial mean or bilinear upsampling with
align_corners=False); used by tests/models/test_lpips.py and
benchmarks/lpips_speed.py.
"""

import torch

VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
TAP_INDICES = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


class TorchLPIPS(torch.nn.Module):
  """lpips.LPIPS(net="vgg", version="0.1") math: NCHW images in [-1, 1] -> (B,) or maps."""

  def __init__(self, heads):
    super().__init__()
    layers, in_channels = [], 3
    for stage, (channels, num_convs) in enumerate(VGG16_STAGES):
      if stage:
        layers.append(torch.nn.MaxPool2d(2, 2))
      for _ in range(num_convs):
        layers += [torch.nn.Conv2d(in_channels, channels, 3, padding=1), torch.nn.ReLU()]
        in_channels = channels
    self.features = torch.nn.Sequential(*layers)  # torchvision's indices 0..29.
    self.heads = [torch.from_numpy(heads[f"lin{i}.model.1.weight"]) for i in range(5)]
    self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])

  def taps(self, x):
    outputs = []
    for index, layer in enumerate(self.features):
      x = layer(x)
      if index in TAP_INDICES:
        outputs.append(x)
    return outputs

  def forward(self, x, y, spatial=False):
    fx, fy = self.taps((x - self.shift) / self.scale), self.taps((y - self.shift) / self.scale)
    total = 0
    for head, a, b in zip(self.heads, fx, fy):
      a = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + 1e-10)
      b = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + 1e-10)
      weighted = torch.nn.functional.conv2d((a - b)**2, head)
      if spatial:
        total = total + torch.nn.functional.interpolate(
            weighted, size=x.shape[2:], mode="bilinear", align_corners=False)
      else:
        total = total + weighted.mean(dim=(1, 2, 3))
    return total

  def randomize_(self, seed: int = 0) -> "TorchLPIPS":
    """He-normal (fan_out) conv weights and N(0, 0.05) biases, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
      for layer in self.features:
        if isinstance(layer, torch.nn.Conv2d):
          fan_out = layer.weight.shape[0] * 9
          layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator)
                             * (2.0 / fan_out) ** 0.5)
          layer.bias.copy_(0.05 * torch.randn(layer.bias.shape, generator=generator))
    return self
