"""Building blocks shared by the generators, SyncNet and the discriminator.

All blocks take and return NHWC arrays. Padding is explicit and symmetric, as in
PyTorch's `Conv2d(padding=p)` (XLA's "SAME" differs for strided convolutions).
`dtype` is the compute dtype, `param_dtype` the storage dtype of the weights.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipsync_jax.types import at_least_float32

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

  Statistics and normalisation run in float32 (or wider: `at_least_float32`) whatever
  `dtype` is. In training the
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
    x32 = at_least_float32(x)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        count = x.size // features
        unbiased = var * (count / max(count - 1, 1))
        stats_dtype = running_mean.value.dtype
        running_mean.value = ((1 - self.momentum) * running_mean.value
                              + self.momentum * mean).astype(stats_dtype)
        running_var.value = ((1 - self.momentum) * running_var.value
                             + self.momentum * unbiased).astype(stats_dtype)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = y * scale.astype(x32.dtype) + bias.astype(x32.dtype)
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


def _phase_taps(kernel: int, stride: int, padding: int) -> tuple[int, list[list[int | None]]]:
  """One axis of a transposed convolution as `stride` phases of a plain correlation.

  PyTorch's transposed convolution adds x[i] * w[k] to output o = i * stride - padding + k.
  Output o = stride * m + r (phase r) therefore reads inputs i = m + d with
  k = r + padding - stride * d. Returns (d_min, taps) with taps[r][j] the kernel index
  k used at offset d = d_min + j, or None where phase r has no tap there.
  """
  offsets = {r: {d: r + padding - stride * d for d in range(-kernel, kernel + 1)
                 if 0 <= r + padding - stride * d < kernel} for r in range(stride)}
  used = [d for per_phase in offsets.values() for d in per_phase]
  d_min, d_max = min(used), max(used)
  return d_min, [[offsets[r].get(d) for d in range(d_min, d_max + 1)] for r in range(stride)]


class ConvTranspose(nn.Module):
  """PyTorch `ConvTranspose2d(k, s, p, output_padding=op)` computed as one stride-1 conv.

  Output size (H - 1) * s - 2p + k + op. Parameters as flax's `nn.ConvTranspose`
  with `transpose_kernel=True`: `kernel` (kH, kW, features, Cin), i.e. PyTorch's
  (Cin, Cout, kH, kW) transposed to (kH, kW, Cout, Cin) without a spatial flip, and
  `bias` (features,).

  The result equals `lax.conv_transpose`, but it is computed by sub-pixel
  decomposition: each of the s x s output phases is a small correlation of the
  input, so all of them are one stride-1 convolution to s*s*features channels
  (kernel rearranged from `kernel`, zeros where a phase has no tap) followed by a
  depth-to-space shuffle. Why: XLA:CPU runs the input-dilated convolution of
  `lax.conv_transpose` (and its gradients) several times slower than this form;
  the measurement is in docs/benchmarks.md. Outputs and gradients are tested
  against PyTorch's `ConvTranspose2d`.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: tuple[int, int]
  output_padding: tuple[int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, self.features, x.shape[-1]), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    (dh, taps_h), (dw, taps_w) = (_phase_taps(kh, sh, self.padding[0]),
                                  _phase_taps(kw, sw, self.padding[1]))
    zero = jnp.zeros_like(kernel[0, 0])
    tap = lambda a, b: zero if a is None or b is None else kernel[a, b]
    # (D_h, D_w, Cin, s_h * s_w * features), channels phase-major: (r_h, r_w, features).
    rows = []
    for j in range(len(taps_h[0])):
      cols = []
      for i in range(len(taps_w[0])):
        cols.append(jnp.concatenate([tap(taps_h[rh][j], taps_w[rw][i]).T
                                     for rh in range(sh) for rw in range(sw)], axis=-1))
      rows.append(jnp.stack(cols))
    phase_kernel = jnp.stack(rows)
    b, h, w, _ = x.shape
    out_h = (h - 1) * sh - 2 * self.padding[0] + kh + self.output_padding[0]
    out_w = (w - 1) * sw - 2 * self.padding[1] + kw + self.output_padding[1]
    m_h, m_w = -(-out_h // sh), -(-out_w // sw)
    pad_h = (-dh, max(0, m_h + len(taps_h[0]) - 1 - h + dh))
    pad_w = (-dw, max(0, m_w + len(taps_w[0]) - 1 - w + dw))
    x, phase_kernel, bias = nn.dtypes.promote_dtype(x, phase_kernel, bias, dtype=self.dtype)
    y = jax.lax.conv_general_dilated(x, phase_kernel, (1, 1), (pad_h, pad_w),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y[:, :m_h, :m_w].reshape(b, m_h, m_w, sh, sw, self.features)
    y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, m_h * sh, m_w * sw, self.features)
    return y[:, :out_h, :out_w] + bias


class ConvTransposeBlock(nn.Module):
  """ConvTranspose2d -> BatchNorm -> ReLU (Wav2Lip's `Conv2dTranspose`).

  Matches PyTorch `ConvTranspose2d(k, s, p, output_padding=op)` (see `ConvTranspose`).
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
    y = ConvTranspose(self.features, pair(self.kernel_size), pair(self.stride),
                      pair(self.padding), pair(self.output_padding), dtype=self.dtype,
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
