"""The LPIPS-AttnWav2Lip generator: a U-Net of residual CBAM blocks with semantic alignment.

After Chen et al., "LPIPS-AttnWav2Lip", Speech Communication 2023. The paper names
the parts (residual CBAM U-Net, semantic alignment module, LPIPS loss) but not every
size; each choice it leaves open is a field of `AttnWav2Lip`, its default justified
below. docs/model.md sets the model as built beside the paper's description.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lipsync_jax.models.attention import ResidualCBAMBlock, SemanticAlignment
from lipsync_jax.models.layers import ConvBlock, ConvTransposeBlock, Dtype
from lipsync_jax.models.wav2lip import AudioEncoder
from lipsync_jax.errors import ConfigError
from lipsync_jax.types import at_least_float32


class AttnWav2Lip(nn.Module):
  """Audio-conditioned face generator, called like `Wav2Lip`.

  `__call__(mel_chunks (B, 80, 16, 1), faces (B, H, W, 6), train=False) -> (B, H, W, 3)`
  float32 in (0, 1). faces = lower-half-masked target frame (channels 0-2) and
  reference frame (3-5), H = W = `img_size`, in [0, 1].

  Layout, with L = len(widths) - 1 down-sampling stages and w_i = widths[i]:
  - audio: Wav2Lip's `AudioEncoder` -> a (B, 512) vector a.
  - encoder level 0: `stem_kernel` ConvBlock to w_0 at full size, then
    `encoder_blocks` residual CBAM blocks -> skip_0. Level i = 1..L: 3x3 stride-2
    ConvBlock to w_i (size halves), then `encoder_blocks` residual CBAM blocks -> skip_i.
  - bottleneck (img_size / 2^L; 6x6 at 96): a tiled over the plane, concatenated and
    fused back to w_L by a 3x3 ConvBlock (Wav2Lip-style concatenation: the audio path
    that remains when semantic alignment is switched off), then SAM(a).
  - decoder level i = L-1..0: 3x3 stride-2 transposed ConvTransposeBlock to w_i,
    concatenation with skip_i, 3x3 ConvBlock back to w_i, `decoder_blocks` residual
    CBAM blocks, SAM(a).
  - head: 1x1 conv to 3 channels, sigmoid (in float32).

  Defaults and why:
  - `widths` (32, 64, 128, 256, 512), i.e. four stages 96->48->24->12->6: fewer
    stages than Wav2Lip (which goes down to 1x1), as secondary accounts of the
    paper's full text describe it (docs/model.md); widths double per stage and end
    at 512, the audio vector's width, as in Wav2Lip. The bottleneck keeps a 6x6
    plane, so instance statistics (AdaIN) and the FFC's spectrum exist there. It is
    img_size / 2^L, so 192 or 256 need no code change (a longer `widths` adds stages).
  - `stem_kernel` 7: Wav2Lip's first face block (7x7, stride 1) sees the same field.
  - `encoder_blocks` 2: as Wav2Lip's face encoder stages. `decoder_blocks` 1: Wav2Lip
    has two per decoder stage, but ours adds a 3x3 fuse conv and a SAM per stage; with
    one block the model stays below Wav2Lip's size (30.1M parameters vs 36.3M); 2
    gives 31.6M. Their compute per frame is in docs/model.md.
  - `cbam_reduction` 16 and the 7x7 spatial kernel: CBAM's defaults (Woo et al.).
  - `ffc_global_ratio` 0.5: alpha, equal local and global widths (the paper's value
    is not known to us; LaMa uses 0.75).
  - `adain_eps` 1e-5: instance-norm convention (PyTorch, Huang & Belongie).
  - `use_cbam`, `use_semantic_alignment`, `use_ffc`: ablation switches. Off, they
    drop the `cbam` params of every residual block, every `sam_*` module, or each
    SAM's FFC (replaced by a 3x3 conv), respectively.
  """
  img_size: int = 96
  widths: Sequence[int] = (32, 64, 128, 256, 512)
  stem_kernel: int = 7
  encoder_blocks: int = 2
  decoder_blocks: int = 1
  use_cbam: bool = True
  use_semantic_alignment: bool = True
  use_ffc: bool = True
  cbam_reduction: int = 16
  ffc_global_ratio: float = 0.5
  adain_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _check_shapes(self, mel_chunks: jnp.ndarray, faces: jnp.ndarray) -> None:
    stages = len(self.widths) - 1
    bottleneck = self.img_size // 2**stages
    if stages < 1 or self.img_size % 2**stages or bottleneck < 2:
      raise ConfigError(f"attn_wav2lip.py: img_size {self.img_size} must be divisible by "
                       f"2^{stages} (widths {tuple(self.widths)}) with a bottleneck of 2x2 "
                       "or more")
    if faces.ndim != 4 or faces.shape[1:] != (self.img_size, self.img_size, 6):
      raise ValueError(f"attn_wav2lip.py: faces must be (B, {self.img_size}, "
                       f"{self.img_size}, 6), got {faces.shape}")
    if mel_chunks.shape[0] != faces.shape[0]:
      raise ValueError(f"attn_wav2lip.py: batch of mel_chunks {mel_chunks.shape} and faces "
                       f"{faces.shape} differ")

  def _blocks(self, x: jnp.ndarray, count: int, prefix: str, train: bool) -> jnp.ndarray:
    for j in range(count):
      x = ResidualCBAMBlock(x.shape[-1], self.use_cbam, self.cbam_reduction, self.dtype,
                            self.param_dtype, name=f"{prefix}_block{j}")(x, train)
    return x

  def _align(self, x: jnp.ndarray, audio: jnp.ndarray, name: str,
             train: bool) -> jnp.ndarray:
    if not self.use_semantic_alignment:
      return x
    return SemanticAlignment(self.use_ffc, self.ffc_global_ratio, eps=self.adain_eps,
                             dtype=self.dtype, param_dtype=self.param_dtype,
                             name=name)(x, audio, train)

  @nn.compact
  def __call__(self, mel_chunks: jnp.ndarray, faces: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
    self._check_shapes(mel_chunks, faces)
    conv = lambda features, kernel, stride, name: ConvBlock(
        features, kernel, stride, kernel // 2, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)

    audio = AudioEncoder(dtype=self.dtype, param_dtype=self.param_dtype,
                         name="audio_encoder")(mel_chunks, train)
    audio = audio.reshape(audio.shape[0], -1)

    x = conv(self.widths[0], self.stem_kernel, 1, "enc0_stem")(faces.astype(self.dtype), train)
    skips = [self._blocks(x, self.encoder_blocks, "enc0", train)]
    for level, width in enumerate(self.widths[1:], start=1):
      x = conv(width, 3, 2, f"enc{level}_down")(skips[-1], train)
      skips.append(self._blocks(x, self.encoder_blocks, f"enc{level}", train))

    x = skips.pop()
    tiled = jnp.broadcast_to(audio[:, None, None, :].astype(x.dtype),
                             x.shape[:3] + audio.shape[-1:])
    x = conv(self.widths[-1], 3, 1, "audio_fusion")(jnp.concatenate([x, tiled], -1), train)
    x = self._align(x, audio, "sam_bottleneck", train)

    for level in reversed(range(len(skips))):
      width = self.widths[level]
      x = ConvTransposeBlock(width, 3, 2, padding=1, output_padding=1, dtype=self.dtype,
                             param_dtype=self.param_dtype, name=f"dec{level}_up")(x, train)
      x = conv(width, 3, 1, f"dec{level}_fuse")(jnp.concatenate([x, skips[level]], -1), train)
      x = self._blocks(x, self.decoder_blocks, f"dec{level}", train)
      x = self._align(x, audio, f"sam_dec{level}", train)

    logits = nn.Conv(3, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                     name="head")(x)
    return nn.sigmoid(at_least_float32(logits))
