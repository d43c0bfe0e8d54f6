"""ConvBlock's residual option against a PyTorch Conv2d -> BatchNorm2d reference, and the
sub-pixel ConvTranspose against PyTorch's ConvTranspose2d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lipsync_jax.models.layers import ConvBlock, ConvTranspose


def _torch_conv_bn(params, stats, x_nhwc, train):
  """Conv2d(3x3, pad 1) -> BatchNorm2d from flax variables.

  Returns (y, conv output before BN, new running mean, new running var), NHWC numpy.
  """
  kernel = np.asarray(params["conv"]["kernel"])
  conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
  bn = torch.nn.BatchNorm2d(kernel.shape[3], momentum=0.1, eps=1e-5)
  with torch.no_grad():
    conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
    conv.bias.copy_(torch.tensor(np.asarray(params["conv"]["bias"])))
    bn.weight.copy_(torch.tensor(np.asarray(params["bn"]["scale"])))
    bn.bias.copy_(torch.tensor(np.asarray(params["bn"]["bias"])))
    bn.running_mean.copy_(torch.tensor(np.asarray(stats["bn"]["mean"])))
    bn.running_var.copy_(torch.tensor(np.asarray(stats["bn"]["var"])))
    bn.train(train)
    x = torch.tensor(np.asarray(x_nhwc).transpose(0, 3, 1, 2).copy())
    pre_bn = conv(x)
    y = bn(pre_bn).numpy().transpose(0, 2, 3, 1)
  return y, pre_bn.numpy().transpose(0, 2, 3, 1), bn.running_mean.numpy(), bn.running_var.numpy()


def _random_variables(variables, seed):
  """Replaces every leaf by random values (variances kept positive)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  new = []
  for path, leaf in leaves:
    value = rng.normal(size=leaf.shape).astype(np.float32)
    if "var" in jax.tree_util.keystr(path):
      value = rng.uniform(0.5, 2.0, size=leaf.shape).astype(np.float32)
    new.append(jnp.asarray(value))
  return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("train", [False, True])
def test_conv_block_residual_matches_torch(train):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 4))
  block = ConvBlock(4, 3, padding=1, residual=True)
  variables = _random_variables(block.init(jax.random.key(1), x), seed=2)
  if train:
    y, updates = block.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    y = block.apply(variables, x)
  branch, _, mean, var = _torch_conv_bn(variables["params"], variables["batch_stats"], x, train)
  np.testing.assert_allclose(np.asarray(y), np.maximum(branch + np.asarray(x), 0), atol=1e-4)
  if train:
    new_stats = updates["batch_stats"]["bn"]
    np.testing.assert_allclose(np.asarray(new_stats["mean"]), mean, atol=1e-5)
    # Unbiased batch variance in the running estimate, as PyTorch (flax's own BatchNorm
    # would use the biased one: off by n / (n - 1) = 60 / 59 here).
    np.testing.assert_allclose(np.asarray(new_stats["var"]), var, rtol=1e-5)


def test_conv_block_without_residual_differs_only_by_the_skip():
  x = jax.random.normal(jax.random.key(3), (1, 4, 4, 3))
  with_skip = ConvBlock(3, 3, padding=1, residual=True)
  variables = _random_variables(with_skip.init(jax.random.key(4), x), seed=5)
  plain = ConvBlock(3, 3, padding=1).apply(variables, x)
  branch, _, _, _ = _torch_conv_bn(variables["params"], variables["batch_stats"], x, False)
  np.testing.assert_allclose(np.asarray(plain), np.maximum(branch, 0), atol=1e-4)
  assert not np.allclose(np.asarray(plain), np.asarray(with_skip.apply(variables, x)))


@pytest.mark.parametrize("kernel,stride,padding,output_padding,size", [
    (3, 2, 1, 1, (6, 7)),   # Wav2Lip / AttnWav2Lip decoder: doubles the size
    (3, 1, 0, 0, (1, 1)),   # Wav2Lip's first decoder block: 1x1 -> 3x3
    (4, 2, 1, 0, (5, 5)),
    (5, 3, 2, 2, (4, 3)),
    (2, 2, 0, 0, (3, 4)),
    (3, 2, 0, 0, (3, 3))])
def test_conv_transpose_matches_torch_values_and_gradients(kernel, stride, padding,
                                                           output_padding, size):
  rng = np.random.default_rng(kernel * 10 + stride)
  x = rng.normal(size=(2, *size, 5)).astype(np.float32)
  module = ConvTranspose(7, (kernel, kernel), (stride, stride), (padding, padding),
                         (output_padding, output_padding))
  params = _random_variables(module.init(jax.random.key(0), x), seed=1)["params"]
  cotangent = rng.normal(size=module.apply({"params": params}, x).shape).astype(np.float32)

  def loss(params, x):
    return jnp.sum(module.apply({"params": params}, x) * cotangent)

  y = module.apply({"params": params}, x)
  grads, grad_x = jax.grad(loss, argnums=(0, 1))(params, x)

  reference = torch.nn.ConvTranspose2d(5, 7, kernel, stride, padding, output_padding)
  with torch.no_grad():  # (kH, kW, Cout, Cin) -> PyTorch (Cin, Cout, kH, kW)
    reference.weight.copy_(torch.from_numpy(np.array(params["kernel"]).transpose(3, 2, 0, 1)))
    reference.bias.copy_(torch.from_numpy(np.array(params["bias"])))
  x_torch = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  y_torch = reference(x_torch)
  (y_torch * torch.from_numpy(cotangent.transpose(0, 3, 1, 2))).sum().backward()

  np.testing.assert_allclose(np.asarray(y), y_torch.detach().numpy().transpose(0, 2, 3, 1),
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(grad_x), x_torch.grad.numpy().transpose(0, 2, 3, 1),
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(grads["kernel"]),
                             reference.weight.grad.numpy().transpose(2, 3, 1, 0), atol=1e-4)
  np.testing.assert_allclose(np.asarray(grads["bias"]), reference.bias.grad.numpy(), atol=1e-4)
