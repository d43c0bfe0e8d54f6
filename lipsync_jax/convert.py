"""PyTorch checkpoints -> flax variables for Wav2Lip, SyncNet, the discriminator, LPIPS and
the evaluation networks (syncnet_python's SyncNet v2, pytorch-fid's InceptionV3).

The file is read by `lipsync_jax.torch_checkpoint.read_state_dict` (weights only, no torch,
no arbitrary unpickling). Our flax modules name their submodules after the PyTorch attribute
paths, so each flax variable has exactly one PyTorch key:

  params/face_encoder_blocks_1_0/conv/kernel  <-  face_encoder_blocks.1.0.conv_block.0.weight
  params/audio_encoder/layers_3/bn/scale      <-  audio_encoder.3.conv_block.1.weight
  batch_stats/face_encoder_3/bn/mean          <-  face_encoder.3.conv_block.1.running_mean
  params/output_block_1/bias                  <-  output_block.1.bias

Kernels are transposed once, here: Conv2d (O, I, kH, kW) -> (kH, kW, I, O) and
ConvTranspose2d (Cin, Cout, kH, kW) -> (kH, kW, Cout, Cin) (the layout of
`ConvTransposeBlock`, which flips spatially itself); both are `transpose(2, 3, 1, 0)`.
`num_batches_tracked` buffers are ignored. Anything else that does not match raises
`CheckpointMismatchError` naming the keys.

The evaluation networks name their submodules after the PyTorch attributes too, each with
its own key rule (`_EVALUATION_KEYS`):

  params/lip_cnn/netcnnlip_4/kernel           <-  netcnnlip.4.weight       (syncnet_v2)
  params/audio_head/netfcaud_3/kernel         <-  netfcaud.3.weight
  params/Mixed_6b/branch7x7_1/conv/kernel     <-  Mixed_6b.branch7x7_1.conv.weight
                                                                   (inception_fid)

Dense kernels are (in, out) <- Linear (out, in) and Conv3d kernels (kT, kH, kW, I, O) <-
(O, I, kT, kH, kW): every kernel is the PyTorch weight with its first two axes moved last
and swapped. The FID Inception file's unused classifier (`fc.*`) is ignored.

Saving and loading converted folders, and every other way a network is loaded, is
`lipsync_jax.checkpoints`.
"""

import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lipsync_jax.errors import CheckpointError
from lipsync_jax.models import inception
from lipsync_jax.models import lpips
from lipsync_jax.models import syncnet_v2
from lipsync_jax.models.syncnet import SyncNet
from lipsync_jax.models.wav2lip import QualityDiscriminator, Wav2Lip
from lipsync_jax.torch_checkpoint import read_state_dict

MODELS = ("wav2lip", "syncnet", "quality_discriminator", "lpips_vgg16", "syncnet_v2",
          "inception_fid")
_IGNORED_SUFFIX = ".num_batches_tracked"
_IGNORED_PREFIXES = {"inception_fid": ("fc.", "AuxLogits.")}
_MODULE_NAMES = {"conv": "conv_block.0", "bn": "conv_block.1"}
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}


class CheckpointMismatchError(CheckpointError):
  """The checkpoint's keys or shapes do not match the model."""


def _flax_model(model: str, discriminator_size: int = 96
                ) -> tuple[nn.Module, tuple[jax.ShapeDtypeStruct, ...]]:
  """The flax module for `model` and example inputs for `init` (batch 1); 96 px faces but
  for the discriminator, which also has a 48 px variant."""
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  mel = f32(1, 80, 16, 1)
  if model == "wav2lip":
    return Wav2Lip(), (mel, f32(1, 96, 96, 6))
  if model == "syncnet":
    return SyncNet(), (mel, f32(1, 48, 96, 15))
  if model == "quality_discriminator":
    size = discriminator_size
    return QualityDiscriminator(img_size=size), (f32(1, size, size, 3),)
  if model == "syncnet_v2":
    return syncnet_v2.SyncNetV2(), (f32(1, 13, 20, 1), f32(1, 5, 224, 224, 3))
  if model == "inception_fid":
    return inception.FIDInceptionV3(), (f32(1, 299, 299, 3),)
  raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """The PyTorch state-dict key of the flax variable `collection`/`path` (see module doc)."""
  parts = []
  for name in path[:-1]:
    if name in _MODULE_NAMES:
      parts.append(_MODULE_NAMES[name])
    elif re.fullmatch(r"layers_\d+", name):
      parts.append(name[len("layers_"):])
    else:
      parts.append(re.sub(r"_(\d+)(?=_|$)", r".\1", name))
  leaf = path[-1]
  if leaf not in _LEAF_NAMES or (collection == "batch_stats") != (leaf in ("mean", "var")):
    raise ValueError(f"no PyTorch name for flax variable {collection}/{'/'.join(path)}")
  return ".".join(parts + [_LEAF_NAMES[leaf]])


def _syncnet_v2_key(collection: str, path: tuple[str, ...]) -> str:
  """`(audio_cnn, netcnnaud_4, scale)` -> `netcnnaud.4.weight` (the outer name is dropped)."""
  module = re.fullmatch(r"(net\w+?)_(\d+)", path[-2])
  if module is None:
    raise ValueError(f"no PyTorch name for flax variable {collection}/{'/'.join(path)}")
  return f"{module[1]}.{module[2]}.{_LEAF_NAMES[path[-1]]}"


def _verbatim_key(collection: str, path: tuple[str, ...]) -> str:
  """`(Mixed_5b, branch1x1, bn, mean)` -> `Mixed_5b.branch1x1.bn.running_mean`."""
  return ".".join(path[:-1] + (_LEAF_NAMES[path[-1]],))


_EVALUATION_KEYS = {"syncnet_v2": _syncnet_v2_key, "inception_fid": _verbatim_key}


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """PyTorch shape of a flax kernel (*spatial, in, out) -> (out, in, *spatial)."""
  if len(shape) >= 2:
    return (shape[-1], shape[-2], *shape[:-2])
  return tuple(shape)


def _flax_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch (out, in, *spatial) -> flax (*spatial, in, out)."""
  return weight.transpose(*range(2, weight.ndim), 1, 0)


def _summary(items: list[str], limit: int = 8) -> str:
  shown = ", ".join(items[:limit])
  return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], model: str,
                              source: str = "<state dict>",
                              discriminator_size: int = 96) -> dict[str, Any]:
  """Maps a PyTorch state dict (numpy arrays, no `module.` prefix) to flax variables.

  Args:
    state_dict: key -> array, as returned by `read_state_dict`.
    model: "wav2lip", "syncnet", "quality_discriminator", "syncnet_v2" or "inception_fid".
    source: where the dict came from, for error messages.
    discriminator_size: the quality discriminator's `img_size` (96, or 48 for 48 px
      generators); ignored for the other models.
  Returns:
    {"params": ..., "batch_stats": ...} of float32 jax arrays ("batch_stats" is empty for
    the discriminator), ready for `Module.apply`.
  Raises:
    CheckpointMismatchError: naming missing, unexpected and mis-shaped keys.
  """
  module, inputs = _flax_model(model, discriminator_size)
  shapes = jax.eval_shape(module.init, jax.random.key(0), *inputs)
  key_of = _EVALUATION_KEYS.get(model, torch_key)
  expected = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in traverse_util.flatten_dict(dict(shapes.get(collection, {}))).items():
      shape = tuple(leaf.shape)
      expected[key_of(collection, path)] = (collection, path,
                                            _torch_shape(shape) if path[-1] == "kernel" else shape)
  ignored = _IGNORED_PREFIXES.get(model, ())
  given = {k: v for k, v in state_dict.items()
           if not k.endswith(_IGNORED_SUFFIX) and not k.startswith(ignored)}
  missing = sorted(set(expected) - set(given))
  unexpected = sorted(set(given) - set(expected))
  mismatched = sorted(
      f"{key} {tuple(np.shape(given[key]))} != expected {shape}"
      for key, (_, _, shape) in expected.items()
      if key in given and tuple(np.shape(given[key])) != shape)
  if missing or unexpected or mismatched:
    problems = [f"{label} [{_summary(keys)}]" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches", mismatched)) if keys]
    raise CheckpointMismatchError(
        f"{source}: not a {model} checkpoint: {'; '.join(problems)}")
  flat = {"params": {}, "batch_stats": {}}
  for key, (collection, path, _) in expected.items():
    array = np.asarray(given[key], dtype=np.float32)
    if path[-1] == "kernel":
      array = _flax_kernel(array)
    flat[collection][path] = jnp.asarray(array)
  return {collection: traverse_util.unflatten_dict(leaves) for collection, leaves in flat.items()}


def load_torch_checkpoint(path: str | os.PathLike, model: str = "wav2lip") -> dict[str, Any]:
  """Reads a PyTorch checkpoint (zip or legacy format) into flax variables.

  Args:
    path: a `.pth`/`.pt` file: a bare state dict or `{"state_dict": ...}`, with or without
      DataParallel `module.` prefixes.
    model: one of `MODELS`. "lpips_vgg16" returns the variables of `lipsync_jax.models.LPIPS`.
  Returns:
    {"params", "batch_stats"} (see `variables_from_state_dict`).
  Raises:
    CheckpointMismatchError, and the reader's `UnsafeCheckpointError` /
    `CheckpointFormatError`; CheckpointError for a model with no PyTorch original.
  """
  if model not in MODELS:
    raise CheckpointError(f"{os.fspath(path)}: PyTorch checkpoints of {model!r} cannot be "
                          f"converted; models with a PyTorch original: {MODELS}")
  state_dict = read_state_dict(path)
  if model == "lpips_vgg16":
    return lpips.lpips_variables_from_state_dict(state_dict)
  return variables_from_state_dict(state_dict, model, source=os.fspath(path))
