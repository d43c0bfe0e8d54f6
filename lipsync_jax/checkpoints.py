"""Loading the networks inference and evaluation use, from any checkpoint we accept.

Accepted everywhere:
- an official PyTorch `.pth` / `.pt` (converted on the fly; trained on BGR frames),
- a folder written by `lipsync_jax.convert.save_converted` (`tools/convert_torch.py`, the
  trainer's export): orbax `variables/` + `metadata.json` {"model", "channel_order",
  optionally "model_config" (constructor fields) and "source"},
- for SyncNet also a training workdir of ours (`lipsync_jax.train`; RGB).
Each loader returns the module, its variables, the channel order and a name saying which
weights they are (recorded next to evaluation numbers).
"""

import dataclasses
import logging
import os
from typing import Any, Callable

import flax.linen as nn
import jax

GENERATORS = ("wav2lip", "attn_wav2lip")
TORCH_SUFFIXES = (".pth", ".pt", ".tar")


class CheckpointError(ValueError):
  """A checkpoint that is missing or holds the wrong network; names the path."""


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generator ready for inference: module, variables and the channel order it expects."""
  model: nn.Module
  variables: Any
  channel_order: str = "rgb"

  @property
  def img_size(self) -> int:
    return int(getattr(self.model, "img_size", 96))


def build_generator(name: str, **kwargs) -> nn.Module:
  """The generator module called `name` ("wav2lip" or "attn_wav2lip")."""
  if name == "wav2lip":
    from lipsync_jax.models.wav2lip import Wav2Lip  # pylint: disable=g-import-not-at-top
    return Wav2Lip(**kwargs)
  if name == "attn_wav2lip":
    from lipsync_jax.models.attn_wav2lip import AttnWav2Lip  # pylint: disable=g-import-not-at-top
    return AttnWav2Lip(**kwargs)
  raise ValueError(f"unknown generator {name!r}; expected one of {GENERATORS}")


def _converted(path: str, expected: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
  """(variables, metadata) of a `save_converted` folder holding one of `expected`."""
  from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
  variables, metadata = convert.restore_converted(path)
  if metadata.get("model") not in expected:
    raise CheckpointError(f"{path}: holds a {metadata.get('model')!r}, not one of {expected}")
  if metadata.get("channel_order", "rgb") not in ("rgb", "bgr"):
    raise CheckpointError(f"{path}: channel_order {metadata['channel_order']!r} is not "
                          "rgb or bgr")
  return variables, metadata


def _fields(config: dict[str, Any]) -> dict[str, Any]:
  """Module fields from JSON: lists become tuples (modules must stay hashable)."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def load_generator(path: str) -> Generator:
  """A generator from an official `wav2lip*.pth` or a converted/exported folder."""
  from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such checkpoint")
  if os.path.isfile(path):
    return Generator(build_generator("wav2lip"),
                     convert.load_torch_checkpoint(path, model="wav2lip"), "bgr")
  if not os.path.isfile(os.path.join(path, "metadata.json")):
    raise CheckpointError(f"{path}: not a checkpoint folder (no metadata.json)")
  variables, metadata = _converted(path, GENERATORS)
  model = build_generator(metadata["model"], **_fields(metadata.get("model_config", {})))
  return Generator(model, variables, metadata.get("channel_order", "rgb"))


@dataclasses.dataclass(frozen=True)
class SyncExpert:
  """A SyncNet for evaluation.

  `embed(mels (B, 80, 16, 1), lower_halves (B, S/2, S, 15)) -> (audio_emb, face_emb)`,
  jitted; lower halves in [0, 1] in `channel_order`. `name` says which weights.
  """
  embed: Callable[[Any, Any], tuple[Any, Any]]
  img_size: int
  channel_order: str
  name: str


def load_syncnet(path: str) -> SyncExpert:
  """A SyncNet from a `.pth` (official `lipsync_expert.pth`: BGR), a converted folder
  (its metadata's channel order) or a training workdir of ours (RGB)."""
  from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
  from lipsync_jax.models.syncnet import SyncNet  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such SyncNet checkpoint")
  name = os.path.basename(os.path.normpath(path))
  config = {}
  if os.path.isfile(path):
    variables, order = convert.load_torch_checkpoint(path, model="syncnet"), "bgr"
  elif os.path.isfile(os.path.join(path, "metadata.json")):
    variables, metadata = _converted(path, ("syncnet",))
    order = metadata.get("channel_order", "rgb")
    config = _fields(metadata.get("model_config", {}))
    if metadata.get("source"):
      name = f"{name} (from {metadata['source']})"
  else:
    from lipsync_jax.train import components  # pylint: disable=g-import-not-at-top
    variables, order = components.load_variables(path, "syncnet", "syncnet"), "rgb"
    name = f"{name} (training workdir)"
  model = SyncNet(**config)
  embed = jax.jit(lambda mel, halves: model.apply(variables, mel, halves, train=False))
  return SyncExpert(embed, model.img_size, order, name)


def load_lpips(weights: str | None, backbone: str = "vgg16") -> Callable[[Any, Any], Any]:
  """Jitted `fn(x, y) -> (B,)` LPIPS distance, x, y (B, H, W, 3) RGB in [0, 1].

  Args:
    weights: a converted `lpips_vgg16` folder or a VGG16 `.pth` (torchvision's, or an
      `lpips` module state dict); ignored for the random backbone.
    backbone: "vgg16", or "random" (a random VGG16 with the shipped heads: NOT a
      perceptual distance; for tests and smoke runs only, logged as such).
  """
  from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
  from lipsync_jax.models import lpips  # pylint: disable=g-import-not-at-top
  if backbone == "random":
    variables = lpips.random_lpips_variables()
  elif backbone != "vgg16":
    raise ValueError(f"LPIPS backbone must be vgg16 or random, got {backbone!r}")
  elif not weights or not os.path.exists(weights):
    raise CheckpointError(f"{weights}: no such LPIPS checkpoint (convert torchvision's "
                          "vgg16 with tools/convert_torch.py --model=lpips_vgg16)")
  elif os.path.isfile(weights):
    variables = convert.load_torch_checkpoint(weights, model="lpips_vgg16")
  else:
    variables = _converted(weights, ("lpips_vgg16",))[0]
  model = lpips.LPIPS()
  logging.info("LPIPS backbone: %s", backbone)
  return jax.jit(lambda x, y: model.apply(variables, 2.0 * x - 1.0, 2.0 * y - 1.0))

