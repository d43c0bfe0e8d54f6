"""The original Wav2Lip generator, its audio encoder and the visual quality discriminator.

Layer lists follow Rudrabha/Wav2Lip (models/wav2lip.py). Everything is NHWC. Submodule
names mirror the PyTorch attribute paths, so that `lipsync_jax.convert` maps checkpoint keys
mechanically: a list attribute `face_encoder_blocks` of lists gives flax names
`face_encoder_blocks_1_0` for PyTorch `face_encoder_blocks.1.0`, and `AudioEncoder.layers_3`
is PyTorch `audio_encoder.3`.

Only `img_size=96` is implemented for the generator (the official checkpoints); the
discriminator also has a 48 px table (the CPU demo's generator size). A 192 or 256 model keeps every
stage below and adds stages at full resolution: one more face encoder stage before the first
stride-2 stage, one more transposed-conv decoder stage after the last one, and the output
block then sees the concatenation of that stage with the new encoder stage. The stage tables
are per image size, so such a variant is a new table entry, not a new module.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.layers import ConvBlock, ConvTransposeBlock, NoNormConvBlock
from lipsync_jax.errors import ConfigError
from lipsync_jax.types import at_least_float32

Dtype = Any
# A layer spec: the block class with its shape arguments bound; dtypes are added at setup.
LayerSpec = Callable[..., nn.Module]

MEL_BINS = 80
MEL_STEPS = 16


def conv_spec(features, kernel_size, stride=1, padding=0, residual=False) -> LayerSpec:
  """A `ConvBlock` (conv -> BN -> ReLU) with PyTorch-style symmetric padding."""
  return functools.partial(ConvBlock, features, kernel_size, stride, padding, residual)


def residual_specs(features: int, count: int) -> list[LayerSpec]:
  """`count` 3x3 stride-1 residual ConvBlocks keeping `features` channels."""
  return [conv_spec(features, 3, 1, 1, residual=True) for _ in range(count)]


def _up(features: int, stride: int = 2, padding: int = 1, output_padding: int = 1) -> LayerSpec:
  """A 3x3 `ConvTransposeBlock`; the defaults double the spatial size."""
  return functools.partial(ConvTransposeBlock, features, 3, stride, padding, output_padding)


def _nonorm(features, kernel_size, stride=1, padding=0) -> LayerSpec:
  """A `NoNormConvBlock` (conv -> LeakyReLU(0.01))."""
  return functools.partial(NoNormConvBlock, features, kernel_size, stride, padding)


def audio_encoder_layers(num_residual_256: int) -> list[LayerSpec]:
  """The audio encoder's layers; (80, 16) -> (27, 16) -> (9, 6) -> (3, 3) -> (1, 1)."""
  return [
      conv_spec(32, 3, 1, 1), *residual_specs(32, 2),
      conv_spec(64, 3, (3, 1), 1), *residual_specs(64, 2),
      conv_spec(128, 3, 3, 1), *residual_specs(128, 2),
      conv_spec(256, 3, (3, 2), 1), *residual_specs(256, num_residual_256),
      conv_spec(512, 3, 1, 0), conv_spec(512, 1, 1, 0),
  ]


# Face encoder stages for 96x96 inputs; the comment is the stage's output size.
_FACE_ENCODER_96 = (
    [conv_spec(16, 7, 1, 3)],  # 96
    [conv_spec(32, 3, 2, 1), *residual_specs(32, 2)],  # 48
    [conv_spec(64, 3, 2, 1), *residual_specs(64, 3)],  # 24
    [conv_spec(128, 3, 2, 1), *residual_specs(128, 2)],  # 12
    [conv_spec(256, 3, 2, 1), *residual_specs(256, 2)],  # 6
    [conv_spec(512, 3, 2, 1), *residual_specs(512, 1)],  # 3
    [conv_spec(512, 3, 1, 0), conv_spec(512, 1, 1, 0)],  # 1
)

# Decoder stages for 96x96; stage i's output is concatenated with encoder stage (6 - i).
_FACE_DECODER_96 = (
    [conv_spec(512, 1, 1, 0)],  # 1
    [_up(512, stride=1, padding=0, output_padding=0), *residual_specs(512, 1)],  # 3
    [_up(512), *residual_specs(512, 2)],  # 6
    [_up(384), *residual_specs(384, 2)],  # 12
    [_up(256), *residual_specs(256, 2)],  # 24
    [_up(128), *residual_specs(128, 2)],  # 48
    [_up(64), *residual_specs(64, 2)],  # 96
)

# Discriminator stages for the lower half (48x96) of a 96x96 face.
_DISCRIMINATOR_96 = (
    [_nonorm(32, 7, 1, 3)],  # 48x96
    [_nonorm(64, 5, (1, 2), 2), _nonorm(64, 5, 1, 2)],  # 48x48
    [_nonorm(128, 5, 2, 2), _nonorm(128, 5, 1, 2)],  # 24
    [_nonorm(256, 5, 2, 2), _nonorm(256, 5, 1, 2)],  # 12
    [_nonorm(512, 3, 2, 1), _nonorm(512, 3, 1, 1)],  # 6
    [_nonorm(512, 3, 2, 1), _nonorm(512, 3, 1, 1)],  # 3
    [_nonorm(512, 3, 1, 0), _nonorm(512, 1, 1, 0)],  # 1
)
# For 48 px generators (the CPU demo's; no official checkpoint): the 96 px table without
# its last stride-2 stage, so the 24 x 48 lower half also ends at 1 x 1.
_DISCRIMINATOR_48 = _DISCRIMINATOR_96[:5] + _DISCRIMINATOR_96[6:]


def scale_widths(specs, multiplier: float) -> list[LayerSpec]:
  """`specs` with every block's output channels scaled: max(8, round(features * multiplier)).

  A multiplier of 1 returns the specs unchanged (the checkpoint-compatible networks).
  """
  if multiplier == 1.0:
    return list(specs)
  return [functools.partial(spec.func, max(8, int(round(spec.args[0] * multiplier))),
                            *spec.args[1:], **spec.keywords) for spec in specs]


def stage_table(tables: dict[int, tuple], img_size: int, what: str) -> tuple:
  """The layer table for `img_size`; ValueError naming the model if there is none."""
  if img_size not in tables:
    raise ConfigError(f"{what}: img_size={img_size} is not implemented "
                     f"(available: {sorted(tables)}); see the module docstring.")
  return tables[img_size]


def build_layers(specs, dtype, param_dtype) -> list[nn.Module]:
  """Instantiates layer specs with the compute and parameter dtypes (call from `setup`)."""
  return [spec(dtype=dtype, param_dtype=param_dtype) for spec in specs]


def check_shape(name: str, x: jnp.ndarray, expected: tuple) -> None:
  """Raises ValueError naming `name` unless x.shape == (B, *expected)."""
  if tuple(x.shape[1:]) != tuple(expected):
    raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, expected))}), "
                     f"got {tuple(x.shape)}")


class AudioEncoder(nn.Module):
  """Wav2Lip's audio encoder: one mel window -> one 512-d vector.

  Input (B, 80, 16, 1): 80 mel bins as height, 16 mel frames (0.2 s) as width, float in
  [-4, 4] (`lipsync_jax.audio.melspectrogram`). Output (B, 1, 1, 512) in `dtype`.
  `num_residual_256` is 1 in the Wav2Lip generator and 2 in SyncNet; nothing else differs.
  `width_multiplier` scales every layer's channels (`scale_widths`; the output then has
  max(8, round(512 * width_multiplier)) channels); 1 is the original.
  """
  num_residual_256: int = 1
  width_multiplier: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    specs = scale_widths(audio_encoder_layers(self.num_residual_256), self.width_multiplier)
    self.layers = build_layers(specs, self.dtype, self.param_dtype)

  def __call__(self, mel: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    check_shape("AudioEncoder mel", mel, (MEL_BINS, MEL_STEPS, 1))
    x = mel
    for layer in self.layers:
      x = layer(x, train=train)
    return x


def face_feature_shapes(img_size: int = 96) -> list[tuple[int, int, int]]:
  """The (H, W, C) of each face encoder stage's output (`Wav2Lip.encode_faces`), in order.

  At 96: (96, 96, 16), (48, 48, 32), (24, 24, 64), (12, 12, 128), (6, 6, 256), (3, 3, 512),
  (1, 1, 512): 290,816 values per frame. Raises ConfigError for an unimplemented size.
  """
  shapes, size = [], img_size
  for stage in stage_table({96: _FACE_ENCODER_96}, img_size, "Wav2Lip"):
    for spec in stage:
      features, kernel, stride, padding = spec.args[:4]
      size = (size + 2 * padding - kernel) // stride + 1
    shapes.append((size, size, features))
  return shapes


class Wav2Lip(nn.Module):
  """The Wav2Lip generator (U-Net face encoder/decoder conditioned on audio), 36,298,035 params.

  `__call__(mel_chunks, faces, train=False)`:
    mel_chunks: (B, 80, 16, 1) one mel window per output frame.
    faces: (B, img_size, img_size, 6) float in [0, 1]; channels 0-2 the target frame with the
      lower half zeroed, 3-5 the reference frame (BGR for the official checkpoints).
    returns: (B, img_size, img_size, 3) float32 in [0, 1] (sigmoid computed in float32).
  `train=True` uses batch statistics and needs `mutable=["batch_stats"]`.

  The face encoder never sees the audio, so the call splits in two (same variables):
  `__call__(mel, faces)` is `decode(mel, encode_faces(faces))`. A live stream runs
  `apply(variables, faces, method="encode_faces")` once per avatar frame and
  `apply(variables, mel, skips, method="decode")` per output frame.
  """
  img_size: int = 96
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    encoder = stage_table({96: _FACE_ENCODER_96}, self.img_size, "Wav2Lip")
    decoder = stage_table({96: _FACE_DECODER_96}, self.img_size, "Wav2Lip")
    build = functools.partial(build_layers, dtype=self.dtype, param_dtype=self.param_dtype)
    self.audio_encoder = AudioEncoder(num_residual_256=1, dtype=self.dtype,
                                      param_dtype=self.param_dtype)
    self.face_encoder_blocks = [build(stage) for stage in encoder]
    self.face_decoder_blocks = [build(stage) for stage in decoder]
    # Named after PyTorch's output_block.0 / output_block.1 (a Sequential with a Sigmoid).
    self.output_block_0 = ConvBlock(32, 3, 1, 1, dtype=self.dtype, param_dtype=self.param_dtype)
    self.output_block_1 = nn.Conv(3, (1, 1), padding="VALID", dtype=self.dtype,
                                  param_dtype=self.param_dtype)

  def encode_faces(self, faces: jnp.ndarray, train: bool = False) -> list[jnp.ndarray]:
    """The face encoder: faces (B, img_size, img_size, 6) as in `__call__` -> the output
    of every stage, B x `face_feature_shapes(img_size)` in `dtype`, full resolution first
    (the decoder's skip connections). Raises ValueError for another faces shape."""
    check_shape("Wav2Lip faces", faces, (self.img_size, self.img_size, 6))
    skips = []
    y = faces
    for stage in self.face_encoder_blocks:
      for layer in stage:
        y = layer(y, train=train)
      skips.append(y)
    return skips

  def decode(self, mel_chunks: jnp.ndarray, skips, train: bool = False) -> jnp.ndarray:
    """Audio encoder, decoder and output block: mel_chunks (B, 80, 16, 1) and the
    `encode_faces` outputs of B faces (any float dtype) -> (B, img_size, img_size, 3)
    float32 in [0, 1], as `__call__`. Raises ValueError for skips of other shapes or
    another batch size than the mel's."""
    expected = face_feature_shapes(self.img_size)
    if len(skips) != len(expected):
      raise ValueError(f"Wav2Lip.decode: expected {len(expected)} face features, "
                       f"got {len(skips)}")
    for i, (skip, shape) in enumerate(zip(skips, expected)):
      if tuple(skip.shape) != (mel_chunks.shape[0], *shape):
        raise ValueError(f"Wav2Lip.decode: face feature {i} must be (B, "
                         f"{', '.join(map(str, shape))}) with B = {mel_chunks.shape[0]} "
                         f"(the mel batch), got {tuple(skip.shape)}")
    x = self.audio_encoder(mel_chunks, train=train)
    skips = list(skips)
    for stage in self.face_decoder_blocks:
      for layer in stage:
        x = layer(x, train=train)
      x = jnp.concatenate([x, skips.pop().astype(x.dtype)], axis=-1)
    x = self.output_block_0(x, train=train)
    x = self.output_block_1(x)
    return nn.sigmoid(at_least_float32(x))

  def __call__(self, mel_chunks: jnp.ndarray, faces: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
    check_shape("Wav2Lip faces", faces, (self.img_size, self.img_size, 6))
    if mel_chunks.shape[0] != faces.shape[0]:
      raise ValueError(f"Wav2Lip: batch of mel_chunks {mel_chunks.shape} and faces "
                       f"{faces.shape} differ")
    return self.decode(mel_chunks, self.encode_faces(faces, train=train), train=train)


class QualityDiscriminator(nn.Module):
  """Wav2Lip's visual quality discriminator, 14,113,793 params at 96 px (9,394,177 at
  48 px: one stride-2 stage fewer); no normalisation layers.

  `__call__(frames)`: frames (B, img_size, img_size, 3) full face crops in [0, 1]; the
  network looks at the lower half (rows img_size // 2 onwards) only. Returns (B,) float32
  probabilities that the frames are real. `train` is accepted for a uniform call signature
  and changes nothing. `apply(..., method="logits")` gives the pre-sigmoid values.
  """
  img_size: int = 96
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    stages = stage_table({96: _DISCRIMINATOR_96, 48: _DISCRIMINATOR_48}, self.img_size,
                         "QualityDiscriminator")
    self.face_encoder_blocks = [build_layers(stage, self.dtype, self.param_dtype)
                                for stage in stages]
    # Named after PyTorch's binary_pred.0 (a Sequential with a Sigmoid).
    self.binary_pred_0 = nn.Conv(1, (1, 1), padding="VALID", dtype=self.dtype,
                                 param_dtype=self.param_dtype)

  def logits(self, frames: jnp.ndarray) -> jnp.ndarray:
    """(B, img_size, img_size, 3) -> (B,) float32 logits (for numerically stable BCE)."""
    check_shape("QualityDiscriminator frames", frames, (self.img_size, self.img_size, 3))
    x = frames[:, self.img_size // 2:]
    for stage in self.face_encoder_blocks:
      for layer in stage:
        x = layer(x)
    x = at_least_float32(self.binary_pred_0(x))
    return x.reshape(x.shape[0])

  def __call__(self, frames: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train  # No normalisation or dropout layers.
    return nn.sigmoid(self.logits(frames))
