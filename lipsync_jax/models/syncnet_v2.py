"""SyncNet of Chung & Zisserman as released in joonson/syncnet_python (`syncnet_v2.model`).

The network behind the published LSE-D / LSE-C numbers (Wav2Lip's
`evaluation/scores_LSE`). It is not the Wav2Lip lip-sync expert (`models.SyncNet`): its
audio input is MFCC, its lip input 5 whole 224 x 224 frames in raw 0..255 BGR values, and
its 1024-d embeddings are not normalised.

NHWC / NDHWC. Submodules are named after the PyTorch attributes of `SyncNetModel.S`
(`netcnnaud_4` <-> `netcnnaud.4`), for `lipsync_jax.convert`. BatchNorm runs in eval mode
(running statistics, eps 1e-5) only: the network is for evaluation.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

EMBEDDING_DIM = 1024
MFCC_COEFFICIENTS = 13
MFCC_STEPS = 20  # 0.2 s at 100 MFCC steps per second
LIP_FRAMES = 5
LIP_SIZE = 224

# Rows: (PyTorch index of the conv, features, kernel, strides, padding, the max pool after
# it as (window, strides, padding) or None); its BatchNorm is at index + 1, then a ReLU.
# Audio CNN, 2-D over (13 coefficients, 20 steps): comments give the output size.
_AUDIO_CNN = (
    (0, 64, (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1), (0, 0))),  # 13 x 20
    (4, 192, (3, 3), (1, 1), (1, 1), ((3, 3), (1, 2), (0, 0))),  # 11 x 9
    (8, 384, (3, 3), (1, 1), (1, 1), None),
    (11, 256, (3, 3), (1, 1), (1, 1), None),
    (14, 256, (3, 3), (1, 1), (1, 1), ((3, 3), (2, 2), (0, 0))),  # 5 x 4
    (18, 512, (5, 4), (1, 1), (0, 0), None),  # 1 x 1
)
# Lip CNN, 3-D over (5 frames, 224, 224).
_LIP_CNN = (
    (0, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),  # 1x54x54
    (4, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),  # 1x13x13
    (8, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (11, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (14, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),  # 1x6x6
    (18, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0), None),  # 1x1x1
)


def _pairs(padding: Sequence[int]) -> list[tuple[int, int]]:
  return [(p, p) for p in padding]


class _ConvStack(nn.Module):
  """Conv -> BatchNorm (eval) -> ReLU [-> max pool] layers of a table above."""
  table: tuple
  prefix: str

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for index, features, kernel, strides, padding, pool in self.table:
      x = nn.Conv(features, kernel, strides, _pairs(padding),
                  name=f"{self.prefix}_{index}")(x)
      x = nn.BatchNorm(use_running_average=True, epsilon=1e-5,
                       name=f"{self.prefix}_{index + 1}")(x)
      x = nn.relu(x)
      if pool is not None:
        window, pool_strides, pool_padding = pool
        x = nn.max_pool(x, window, pool_strides, _pairs(pool_padding))
    return x


class _Head(nn.Module):
  """Linear(512) -> BatchNorm1d (eval) -> ReLU -> Linear(`features`)."""
  prefix: str
  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.Dense(512, name=f"{self.prefix}_0")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=f"{self.prefix}_1")(x)
    return nn.Dense(self.features, name=f"{self.prefix}_3")(nn.relu(x))


class SyncNetV2(nn.Module):
  """syncnet_python's SyncNet: 13 x 20 MFCC windows and 5-frame clips to 1024-d embeddings.

  `embed_audio(mfcc)`: mfcc (B, 13, 20, 1) float, 13 coefficients x 20 steps of 10 ms
    (`lse.mfcc`, transposed) -> (B, 1024) float32, not normalised.
  `embed_lips(frames)`: frames (B, 5, 224, 224, 3) float, raw 0..255 BGR values (no
    normalisation, as the protocol feeds them) -> (B, 1024) float32.
  `__call__(mfcc, frames)` -> (audio_emb, lip_emb), both; `init` uses it.
  """
  embedding_dim: int = EMBEDDING_DIM

  def setup(self):
    self.audio_cnn = _ConvStack(_AUDIO_CNN, "netcnnaud", name="audio_cnn")
    self.audio_head = _Head("netfcaud", self.embedding_dim, name="audio_head")
    self.lip_cnn = _ConvStack(_LIP_CNN, "netcnnlip", name="lip_cnn")
    self.lip_head = _Head("netfclip", self.embedding_dim, name="lip_head")

  def embed_audio(self, mfcc: jnp.ndarray) -> jnp.ndarray:
    _check("mfcc", mfcc, (MFCC_COEFFICIENTS, MFCC_STEPS, 1))
    x = self.audio_cnn(mfcc.astype(jnp.float32))
    return self.audio_head(x.reshape(x.shape[0], -1))

  def embed_lips(self, frames: jnp.ndarray) -> jnp.ndarray:
    _check("frames", frames, (LIP_FRAMES, LIP_SIZE, LIP_SIZE, 3))
    x = self.lip_cnn(frames.astype(jnp.float32))
    return self.lip_head(x.reshape(x.shape[0], -1))

  def __call__(self, mfcc: jnp.ndarray, frames: jnp.ndarray
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    return self.embed_audio(mfcc), self.embed_lips(frames)


def _check(name: str, x: jnp.ndarray, shape: tuple[int, ...]) -> None:
  if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
    raise ValueError(f"SyncNetV2 {name}: expected (B, {', '.join(map(str, shape))}), "
                     f"got {tuple(x.shape)}")
