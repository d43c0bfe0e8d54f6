"""InceptionV3 of FID (pytorch-fid's `fid_inception_v3`), up to the 2048-d pool features.

The TensorFlow FID Inception ported by pytorch-fid: torchvision's Inception3 layout with
the FID blocks (FIDInceptionA / C / E_1: average pools that do not count the padding;
FIDInceptionE_2: a max pool in its pool branch). Loads `pt_inception-2015-12-05-*.pth`.
NHWC; submodules are named after the PyTorch attributes (`Mixed_6b/branch7x7_1/conv`
<-> `Mixed_6b.branch7x7_1.conv`) for `lipsync_jax.convert`. Eval mode only: each
BasicConv2d is conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

FEATURE_DIM = 2048
INPUT_SIZE = 299


def _padding(padding: int | Sequence[int]) -> list[tuple[int, int]]:
  ph, pw = (padding, padding) if isinstance(padding, int) else padding
  return [(ph, ph), (pw, pw)]


class BasicConv(nn.Module):
  """torchvision's BasicConv2d in eval mode."""
  features: int
  kernel: int | Sequence[int]
  strides: int = 1
  padding: int | Sequence[int] = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = (self.kernel, self.kernel) if isinstance(self.kernel, int) else tuple(self.kernel)
    x = nn.Conv(self.features, kernel, self.strides, _padding(self.padding), use_bias=False,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
  """3x3 stride-1 average pool, padding 1, averaging only the pixels inside the image."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3(x: jnp.ndarray, strides: int = 2, padding: int = 0) -> jnp.ndarray:
  return nn.max_pool(x, (3, 3), (strides, strides), _padding(padding))


class InceptionA(nn.Module):  # FIDInceptionA
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, 1, name="branch1x1")(x)
    b5 = BasicConv(48, 1, name="branch5x5_1")(x)
    b5 = BasicConv(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = BasicConv(64, 1, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, 1, name="branch_pool")(avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):  # torchvision's InceptionB (Mixed_6a)

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, 3, strides=2, name="branch3x3")(x)
    bd = BasicConv(64, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, 3, strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, max_pool_3x3(x)], axis=-1)


class InceptionC(nn.Module):  # FIDInceptionC
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv(192, 1, name="branch1x1")(x)
    b7 = BasicConv(c, 1, name="branch7x7_1")(x)
    b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c, 1, name="branch7x7dbl_1")(x)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, 1, name="branch_pool")(avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):  # torchvision's InceptionD (Mixed_7a)

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, 1, name="branch3x3_1")(x)
    b3 = BasicConv(320, 3, strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, 1, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, 3, strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3(x)], axis=-1)


class InceptionE(nn.Module):  # FIDInceptionE_1 (average pool) / FIDInceptionE_2 (max pool)
  max_pool_branch: bool

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, 1, name="branch1x1")(x)
    b3 = BasicConv(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)],
                         axis=-1)
    bd = BasicConv(448, 1, name="branch3x3dbl_1")(x)
    bd = BasicConv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                         axis=-1)
    pooled = max_pool_3x3(x, strides=1, padding=1) if self.max_pool_branch else avg_pool_3x3(x)
    bp = BasicConv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images: jnp.ndarray, size: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B, size, size, C) bilinear, half-pixel centres, no antialiasing.

  PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`: also when shrinking,
  each output pixel reads only its 2 x 2 neighbours.
  """
  def axis_weights(n_in):
    scale = n_in / size
    src = jnp.maximum((jnp.arange(size) + 0.5) * scale - 0.5, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
    hi = jnp.minimum(lo + 1, n_in - 1)
    frac = src - lo
    return (jax.nn.one_hot(lo, n_in) * (1 - frac)[:, None]
            + jax.nn.one_hot(hi, n_in) * frac[:, None])  # (size, n_in)

  wy, wx = axis_weights(images.shape[1]), axis_weights(images.shape[2])
  hp = jax.lax.Precision.HIGHEST
  out = jnp.einsum("yh,bhwc->bywc", wy, images, precision=hp)
  return jnp.einsum("xw,bywc->byxc", wx, out, precision=hp)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's InceptionV3 (block 3): images -> 2048-d pool features.

  `__call__(images)`: (B, H, W, 3) float RGB in [0, 1], any size: resized to 299 x 299
  (`resize_bilinear`), scaled to [-1, 1] -> (B, 2048) float32.
  """

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3: expected (B, H, W, 3) images, got {images.shape}")
    x = resize_bilinear(images.astype(jnp.float32), INPUT_SIZE)
    x = 2.0 * x - 1.0
    x = BasicConv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, 3, name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = max_pool_3x3(x)
    x = BasicConv(80, 1, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, 3, name="Conv2d_4a_3x3")(x)
    x = max_pool_3x3(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                           ("Mixed_6e", 192)):
      x = InceptionC(channels, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool_branch=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool_branch=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))
