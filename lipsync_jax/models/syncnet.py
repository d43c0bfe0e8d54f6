"""SyncNet lip-sync expert (colour, 5 frames), as in Rudrabha/Wav2Lip models/syncnet.py.

NHWC. Submodule names mirror the PyTorch attributes (`face_encoder_3` <-> `face_encoder.3`,
`audio_encoder/layers_3` <-> `audio_encoder.3`) for `lipsync_jax.convert`.

Only `img_size=96` (lower halves of 48x96) is implemented. Larger faces need a longer face
encoder so that the output is still 1x1x512 (e.g. a stride-2 stage at the front for 192);
that is a new entry in the per-size layer table. The audio encoder does not depend on the
image size.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.wav2lip import (AudioEncoder, build_layers, check_shape, conv_spec,
                                        residual_specs, scale_widths, stage_table)
from lipsync_jax.types import at_least_float32

Dtype = Any

# Face encoder for lower halves of 96x96 faces (48x96); comments give the output size.
_FACE_ENCODER_96 = (
    conv_spec(32, 7, 1, 3),  # 48x96
    conv_spec(64, 5, (1, 2), 1), *residual_specs(64, 2),  # 46x47
    conv_spec(128, 3, 2, 1), *residual_specs(128, 3),  # 23x24
    conv_spec(256, 3, 2, 1), *residual_specs(256, 2),  # 12x12
    conv_spec(512, 3, 2, 1), *residual_specs(512, 2),  # 6x6
    conv_spec(512, 3, 2, 1),  # 3x3
    conv_spec(512, 3, 1, 0),  # 1x1
    conv_spec(512, 1, 1, 0),  # 1x1
)


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """x / max(||x||_2, eps) over the last axis (PyTorch `F.normalize`), in float32."""
  x = at_least_float32(x)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class SyncNet(nn.Module):
  """Colour SyncNet: embeds a mel window and 5 lower-half frames; 16,435,072 params.

  `__call__(mel, lower_halves, train=False)`:
    mel: (B, 80, 16, 1) mel window (see `AudioEncoder`).
    lower_halves: (B, img_size // 2, img_size, 15) float in [0, 1], the lower halves of 5
      consecutive frames stacked on channels (frame k in channels 3k..3k+2; BGR for the
      official checkpoints).
    returns: (audio_emb (B, 512), face_emb (B, 512)), float32, each L2-normalised.
  The sync probability used by the losses is their cosine similarity (a dot product here).

  `width_multiplier` scales the channels of every layer of both encoders
  (`wav2lip.scale_widths`; the embeddings then have max(8, round(512 * m)) dimensions):
  the CPU demo trains a 0.25-wide SyncNet (1.04 M parameters, 1/16 of the FLOPs). The
  default 1.0 is the original network that the official checkpoints fit.
  """
  img_size: int = 96
  width_multiplier: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    layers = stage_table({96: _FACE_ENCODER_96}, self.img_size, "SyncNet")
    self.face_encoder = build_layers(scale_widths(layers, self.width_multiplier), self.dtype,
                                     self.param_dtype)
    self.audio_encoder = AudioEncoder(num_residual_256=2,
                                      width_multiplier=self.width_multiplier,
                                      dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, mel: jnp.ndarray, lower_halves: jnp.ndarray,
               train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    check_shape("SyncNet lower_halves", lower_halves,
                (self.img_size // 2, self.img_size, 15))
    face = lower_halves
    for layer in self.face_encoder:
      face = layer(face, train=train)
    audio = self.audio_encoder(mel, train=train)
    audio_emb = l2_normalize(audio.reshape(audio.shape[0], -1))
    face_emb = l2_normalize(face.reshape(face.shape[0], -1))
    return audio_emb, face_emb
