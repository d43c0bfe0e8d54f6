"""Random PyTorch weights with calibrated, then perturbed, BatchNorm statistics."""

import torch
from torch import nn


def randomize_and_calibrate_(module, seed, batches):
  """Random weights, and BatchNorm running statistics measured on `batches` (a list of
  (forward, input)): non-trivial statistics (not 0 / 1) under which every layer still sees
  O(1) activations in eval mode, as in a trained network. Test on other inputs than
  `batches`. Returns the module in eval mode."""
  gen = torch.Generator().manual_seed(seed)
  norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
  with torch.no_grad():
    for sub in module.modules():
      if isinstance(sub, (nn.Conv2d, nn.Conv3d, nn.Linear)):
        sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen)
                         * (2.0 / sub.weight[0].numel()) ** 0.5)
        if sub.bias is not None:
          sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=gen))
      elif isinstance(sub, norms):
        sub.weight.copy_(1.0 + 0.2 * torch.randn(sub.weight.shape, generator=gen))
        sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=gen))
        sub.momentum = None  # cumulative average: after one batch, that batch's statistics
        sub.reset_running_stats()
    module.train()
    for forward, x in batches:
      forward(x)
  return module.eval()
