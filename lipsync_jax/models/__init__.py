"""The networks, NHWC flax.linen modules (see each module for shapes)."""

from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
from lipsync_jax.models.inception import FIDInceptionV3
from lipsync_jax.models.lpips import LPIPS
from lipsync_jax.models.syncnet import SyncNet
from lipsync_jax.models.syncnet_v2 import SyncNetV2
from lipsync_jax.models.wav2lip import QualityDiscriminator
from lipsync_jax.models.wav2lip import Wav2Lip

__all__ = ["AttnWav2Lip", "FIDInceptionV3", "LPIPS", "QualityDiscriminator", "SyncNet",
           "SyncNetV2", "Wav2Lip"]
