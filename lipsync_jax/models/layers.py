"""Building blocks shared by the generators, SyncNet and the discriminator.

All blocks take and return NHWC arrays. Padding is explicit and symmetric, as in
PyTorch's `Conv2d(padding=p)` (XLA's "SAME" differs for strided convolutions).
`dtype` is the compute dtype, `param_dtype` the storage dtype of the weights.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
IntOrPair = int | Sequence[int]


def pair(value: IntOrPair) -> tuple[int, int]:
  """(a, a) for an int, the pair itself otherwise."""
  if isinstance(value, int):
    return (value, value)
  return (int(value[0]), int(value[1]))


def explicit_padding(padding: IntOrPair) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch-style symmetric padding (ph, pw) as flax per-side padding."""
  ph, pw = pair(padding)
  return ((ph, ph), (pw, pw))


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with PyTorch `BatchNorm2d` semantics.

  Statistics and normalisation run in float32 whatever `dtype` is. In training the
  running statistics move by `momentum` (PyTorch's convention: new = (1 - m) old + m batch)
  and the running variance takes the UNBIASED batch variance (n / (n - 1)), as PyTorch
  does and flax's `nn.BatchNorm` does not, so fine-tuning a converted checkpoint keeps
  the statistics PyTorch would. Variables: params `scale`, `bias`; batch_stats `mean`, `var`.
  """
  use_running_average: bool = False
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        count = x.size // features
        unbiased = var * (count / max(count - 1, 1))
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(self.dtype)


class ConvBlock(nn.Module):
  """Conv2d -> BatchNorm -> ReLU; with `residual`, the input is added before the ReLU.

  Wav2Lip's `Conv2d` block. Input (B, H, W, Cin) -> (B, H', W', features).
  `residual` requires Cin == features and stride 1.
  """
  features: int
  kernel_size: IntOrPair
  stride: IntOrPair = 1
  padding: IntOrPair = 0
  residual: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = nn.Conv(self.features, pair(self.kernel_size), strides=pair(self.stride),
                padding=explicit_padding(self.padding), dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    y = BatchNorm(use_running_average=not train, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="bn")(y)
    if self.residual:
      y = y + x
    return nn.relu(y)


class ConvTransposeBlock(nn.Module):
  """ConvTranspose2d -> BatchNorm -> ReLU (Wav2Lip's `Conv2dTranspose`).

  Matches PyTorch `ConvTranspose2d(k, s, p, output_padding=op)`: output size
  (H - 1) * s - 2p + k + op. The kernel is stored (kH, kW, features, Cin) with
  `transpose_kernel=True`, i.e. PyTorch's (Cin, Cout, kH, kW) transposed to
  (kH, kW, Cout, Cin) without a spatial flip (flax flips it).
  """
  features: int
  kernel_size: IntOrPair
  stride: IntOrPair
  padding: IntOrPair = 0
  output_padding: IntOrPair = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    (kh, kw), (ph, pw), (oh, ow) = (pair(self.kernel_size), pair(self.padding),
                                    pair(self.output_padding))
    padding = ((kh - 1 - ph, kh - 1 - ph + oh), (kw - 1 - pw, kw - 1 - pw + ow))
    y = nn.ConvTranspose(self.features, (kh, kw), strides=pair(self.stride),
                         padding=padding, transpose_kernel=True, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="conv")(x)
    y = BatchNorm(use_running_average=not train, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="bn")(y)
    return nn.relu(y)


class NoNormConvBlock(nn.Module):
  """Conv2d -> LeakyReLU(0.01), no normalisation (the discriminator's `nonorm_Conv2d`)."""
  features: int
  kernel_size: IntOrPair
  stride: IntOrPair = 1
  padding: IntOrPair = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = nn.Conv(self.features, pair(self.kernel_size), strides=pair(self.stride),
                padding=explicit_padding(self.padding), dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    return nn.leaky_relu(y, negative_slope=0.01)
