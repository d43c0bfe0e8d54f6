"""Attention and audio-alignment blocks of the LPIPS-AttnWav2Lip generator.

CBAM (Woo et al. 2018), the residual CBAM block, fast Fourier convolution (Chi et
al. 2020, as used in LaMa), audio-driven AdaIN (Huang & Belongie 2017) and the
semantic alignment module (FFC then AdaIN). They live beside `layers.py` rather
than in it to keep each file under ~400 lines. All take and return NHWC arrays;
`dtype` is the compute dtype, `param_dtype` the storage dtype of the weights.
FFTs and normalisation statistics are computed in float32 whatever `dtype` is
(XLA has no bfloat16 FFT, and bf16 means/variances over a plane are too coarse).
"""

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import BatchNorm, ConvBlock, Dtype
from lipsync_jax.types import at_least_float32


def _max_over(x: jnp.ndarray, axis: int) -> jnp.ndarray:
  """`x.max(axis, keepdims=True)` whose gradient goes to one arg-max element.

  `jnp.max`'s gradient divides by the count of elements equal to the maximum; when
  XLA recomputes x in another fusion with different rounding that count can be 0
  and the gradient NaN (seen on CPU at optimisation level 0). Gathering the arg-max
  element takes the value from x itself.
  """
  index = jnp.argmax(x, axis=axis, keepdims=True)
  return jnp.take_along_axis(x, index, axis=axis)


def _batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype, name: str) -> BatchNorm:
  """`layers.BatchNorm` (PyTorch semantics) in inference or training mode."""
  return BatchNorm(use_running_average=not train, dtype=dtype, param_dtype=param_dtype,
                   name=name)


class ChannelAttention(nn.Module):
  """CBAM channel attention map `sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`.

  The MLP is shared between both pooled descriptors: Dense(C // reduction, at least
  1) -> ReLU -> Dense(C), with biases as in the CBAM reference code.
  Input (B, H, W, C) -> map (B, 1, 1, C) in (0, 1).
  """
  reduction: int = 16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    hidden = nn.Dense(max(channels // self.reduction, 1), dtype=self.dtype,
                      param_dtype=self.param_dtype, name="hidden")
    out = nn.Dense(channels, dtype=self.dtype, param_dtype=self.param_dtype, name="out")
    mlp = lambda v: out(nn.relu(hidden(v)))
    avg = jnp.mean(x, axis=(1, 2), keepdims=True)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    peak = _max_over(flat, axis=1)[:, :, None, :]
    return nn.sigmoid(mlp(avg) + mlp(peak))


class SpatialAttention(nn.Module):
  """CBAM spatial attention map `sigmoid(conv([mean_c(x); max_c(x)]))`.

  One k x k convolution (with bias, zero padding k // 2) over the channel-mean and
  channel-max planes, stacked in that order. Input (B, H, W, C) -> (B, H, W, 1).
  """
  kernel_size: int = 7
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    pooled = jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True),
                              _max_over(x, axis=-1)], axis=-1)
    pad = self.kernel_size // 2
    logits = nn.Conv(1, (self.kernel_size, self.kernel_size), padding=((pad, pad), (pad, pad)),
                     dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(pooled)
    return nn.sigmoid(logits)


class CBAM(nn.Module):
  """Convolutional block attention: `x' = Mc(x) * x`, then `x'' = Ms(x') * x'`.

  Input (B, H, W, C) -> (B, H, W, C).
  """
  reduction: int = 16
  kernel_size: int = 7
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x * ChannelAttention(self.reduction, self.dtype, self.param_dtype, name="channel")(x)
    return x * SpatialAttention(self.kernel_size, self.dtype, self.param_dtype,
                                name="spatial")(x)


class ResidualCBAMBlock(nn.Module):
  """`y = relu(x + CBAM(convs(x)))` with convs = 3x3 ConvBlock (conv-BN-ReLU) -> 3x3 conv-BN.

  The branch ends in conv-BN without a ReLU, as in a ResNet basic block (where Woo
  et al. insert CBAM): attention and the residual sum then see signed features, so
  the branch can lower activations as well as raise them; a ReLU follows the sum.
  `use_cbam=False` gives the plain residual block (the ablation; no `cbam` params).
  Input (B, H, W, features) -> (B, H, W, features).
  """
  features: int
  use_cbam: bool = True
  reduction: int = 16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.shape[-1] != self.features:
      raise ValueError(f"attention.py: ResidualCBAMBlock({self.features}) got "
                       f"{x.shape[-1]} input channels; they must be equal")
    y = ConvBlock(self.features, 3, padding=1, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="conv_block")(x, train)
    y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(y)
    y = _batch_norm(train, self.dtype, self.param_dtype, "bn")(y)
    if self.use_cbam:
      y = CBAM(self.reduction, dtype=self.dtype, param_dtype=self.param_dtype, name="cbam")(y)
    return nn.relu(x + y)


class FourierUnit(nn.Module):
  """Convolution in the 2-D Fourier domain: global receptive field in one layer.

  rfft2 over (H, W) with orthonormal scaling -> [real; imag] stacked on channels,
  (B, H, W//2+1, 2C) -> 1x1 conv (no bias) -> BN -> ReLU -> split back into
  real/imag -> irfft2 to (H, W). Input (B, H, W, C) -> (B, H, W, features).
  """
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    height, width = x.shape[1:3]
    spectrum = jnp.fft.rfft2(at_least_float32(x), axes=(1, 2), norm="ortho")
    y = jnp.concatenate([spectrum.real, spectrum.imag], axis=-1).astype(self.dtype)
    y = nn.Conv(2 * self.features, (1, 1), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(y)
    y = nn.relu(_batch_norm(train, self.dtype, self.param_dtype, "bn")(y))
    y = at_least_float32(y)
    spectrum = y[..., :self.features] + 1j * y[..., self.features:]
    y = jnp.fft.irfft2(spectrum, s=(height, width), axes=(1, 2), norm="ortho")
    return y.astype(self.dtype)


class SpectralTransform(nn.Module):
  """LaMa's spectral transform: `conv_out(h + FourierUnit(h))`, h = 1x1 conv-BN-ReLU(x).

  The hidden width is features // 2 (as in LaMa); convs have no bias (BN follows, or
  the caller normalises). Input (B, H, W, C) -> (B, H, W, features).
  """
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    hidden = max(self.features // 2, 1)
    h = nn.Conv(hidden, (1, 1), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv_in")(x)
    h = nn.relu(_batch_norm(train, self.dtype, self.param_dtype, "bn_in")(h))
    h = h + FourierUnit(hidden, self.dtype, self.param_dtype, name="fourier")(h, train)
    return nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="conv_out")(h)


class FastFourierConv(nn.Module):
  """FFC: channels split local/global by `global_ratio` (alpha), for input and output.

  With x = [x_l; x_g] (the last int(C * alpha) channels global):
  `y_l = conv_l2l(x_l) + conv_g2l(x_g)`, `y_g = conv_l2g(x_l) + SpectralTransform(x_g)`,
  output [y_l; y_g]. Local convs are k x k, zero padding k // 2, no bias (a
  normalisation follows in every use here). Requires 0 < alpha < 1 and at least one
  channel on each side. Input (B, H, W, C) -> (B, H, W, features).
  """
  features: int
  global_ratio: float = 0.5
  kernel_size: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _split(self, channels: int) -> tuple[int, int]:
    num_global = int(channels * self.global_ratio)
    if not 0 < num_global < channels:
      raise ValueError(f"attention.py: FastFourierConv global_ratio={self.global_ratio} "
                       f"leaves no local or no global channel of {channels}")
    return channels - num_global, num_global

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    in_local, _ = self._split(x.shape[-1])
    out_local, out_global = self._split(self.features)
    pad = self.kernel_size // 2
    conv = lambda features, name: nn.Conv(
        features, (self.kernel_size, self.kernel_size), padding=((pad, pad), (pad, pad)),
        use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x_local, x_global = x[..., :in_local], x[..., in_local:]
    y_local = conv(out_local, "local_to_local")(x_local) + conv(out_local, "global_to_local")(
        x_global)
    y_global = conv(out_global, "local_to_global")(x_local) + SpectralTransform(
        out_global, self.dtype, self.param_dtype, name="global_to_global")(x_global, train)
    return jnp.concatenate([y_local, y_global], axis=-1)


class AdaIN(nn.Module):
  """Audio-driven adaptive instance norm `gamma(a) * (x - mu(x)) / sigma(x) + beta(a)`.

  mu, sigma per sample and channel over (H, W), sigma = sqrt(biased var + eps).
  `gamma(a) = 1 + Dense(a)`, `beta(a) = Dense(a)` (dense layers "gamma"/"beta"). Their
  kernels start at zero, so the module starts as plain instance normalisation (the +1)
  and learns the audio modulation; random kernels would scale features by the
  unnormalised audio vector's magnitude at initialisation.
  x (B, H, W, C), audio (B, D) -> (B, H, W, C).
  """
  eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, audio: jnp.ndarray) -> jnp.ndarray:
    channels = x.shape[-1]
    dense = lambda name: nn.Dense(channels, kernel_init=nn.initializers.zeros,
                                  dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    gamma = 1.0 + at_least_float32(dense("gamma")(audio))[:, None, None, :]
    beta = at_least_float32(dense("beta")(audio))[:, None, None, :]
    x32 = at_least_float32(x)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.var(x32, axis=(1, 2), keepdims=True)
    y = gamma * (x32 - mean) * jnp.reciprocal(jnp.sqrt(var + self.eps)) + beta
    return y.astype(self.dtype)


class SemanticAlignment(nn.Module):
  """Semantic alignment module: `y = relu(x + AdaIN(FFC(x), audio))`.

  FFC widens the receptive field to the whole plane; AdaIN matches the statistics of
  the visual features to the audio vector. The ReLU after the residual sum follows
  the residual blocks' convention. `use_ffc=False` replaces the FFC by one k x k
  conv (no bias) of the FFC's local kernel size, keeping the audio path (ablation).
  x (B, H, W, C), audio (B, D) -> (B, H, W, C).
  """
  use_ffc: bool = True
  global_ratio: float = 0.5
  kernel_size: int = 3
  eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, audio: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    channels = x.shape[-1]
    if self.use_ffc:
      y = FastFourierConv(channels, self.global_ratio, self.kernel_size, self.dtype,
                          self.param_dtype, name="ffc")(x, train)
    else:
      pad = self.kernel_size // 2
      y = nn.Conv(channels, (self.kernel_size, self.kernel_size),
                  padding=((pad, pad), (pad, pad)), use_bias=False, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="conv")(x)
    y = AdaIN(self.eps, self.dtype, self.param_dtype, name="adain")(y, audio)
    return nn.relu(x + y)
