"""THE loading module: every network training, inference and evaluation load.

Checkpoints accepted (`load_variables`, and the model-level loaders built on it):
- an official PyTorch `.pth` / `.pt` (converted on the fly by `convert`, weights only;
  the official Wav2Lip / SyncNet files were trained on BGR frames);
- a converted folder (`save_converted`: `tools/convert_torch.py`, the trainer's export):
  orbax `variables/` + `metadata.json` {"model", "channel_order", optionally
  "model_config" (constructor fields) and "source"};
- a training workdir of ours (its best checkpoint by the eval metric, else the latest)
  or one of its step folders: RGB, any mesh (read whole onto this host's first device).

Every failure is a `CheckpointError` naming the path.
"""

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from lipsync_jax import convert
from lipsync_jax.errors import CheckpointError
from lipsync_jax.models import inception
from lipsync_jax.models import lpips
from lipsync_jax.models import syncnet_v2
from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
from lipsync_jax.models.syncnet import SyncNet
from lipsync_jax.models.wav2lip import Wav2Lip
from lipsync_jax.types import PyTree

GENERATORS = {"wav2lip": Wav2Lip, "attn_wav2lip": AttnWav2Lip}
TORCH_SUFFIXES = (".pth", ".pt", ".tar")
CHANNEL_ORDERS = ("rgb", "bgr")
LPIPS_CONVERT_COMMAND = ("python tools/convert_torch.py --model=lpips_vgg16 "
                         "--input=<torchvision vgg16 state dict .pth> --output=<dir>")


def build_generator(name: str, **kwargs) -> nn.Module:
  """The generator module called `name` ("wav2lip" or "attn_wav2lip") with `kwargs`."""
  if name not in GENERATORS:
    raise CheckpointError(f"unknown generator {name!r}; expected one of {sorted(GENERATORS)}")
  return GENERATORS[name](**kwargs)


# Converted folders.


def save_converted(output_dir: str | os.PathLike, variables: Mapping[str, Any],
                   metadata: Mapping[str, Any]) -> None:
  """Writes `variables/` (orbax) and `metadata.json` to a temp dir, then renames it.

  Raises FileExistsError if `output_dir` exists.
  """
  output_dir = os.path.abspath(os.fspath(output_dir))
  if os.path.exists(output_dir):
    raise FileExistsError(f"{output_dir}: already exists; remove it or choose another name")
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix=os.path.basename(output_dir) + ".tmp-", dir=parent)
  try:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp_dir, "variables"), dict(variables))
    checkpointer.wait_until_finished()
    with open(os.path.join(tmp_dir, "metadata.json"), "w") as f:
      json.dump(dict(metadata), f, indent=2, sort_keys=True)
    os.rename(tmp_dir, output_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise


def is_converted(path: str | os.PathLike) -> bool:
  """Whether `path` is a folder written by `save_converted`."""
  return os.path.isfile(os.path.join(path, "metadata.json"))


def restore_converted(path: str | os.PathLike, expected: tuple[str, ...] | None = None,
                      channel_order: str | None = None) -> tuple[PyTree, dict[str, Any]]:
  """(variables, metadata) of a `save_converted` folder.

  Args:
    path: the folder.
    expected: model names it may hold (None: any).
    channel_order: the data's ("rgb"/"bgr"); when given, the recorded order must equal it.
  Raises:
    CheckpointError: unreadable, another model, or another channel order.
  """
  path = os.path.abspath(os.fspath(path))
  try:
    with open(os.path.join(path, "metadata.json")) as f:
      metadata = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: unreadable metadata.json ({e})") from e
  if expected is not None and metadata.get("model") not in expected:
    raise CheckpointError(f"{path}: holds a {metadata.get('model')!r}, not one of {expected}")
  recorded = metadata.get("channel_order", "rgb")
  if recorded not in CHANNEL_ORDERS:
    raise CheckpointError(f"{path}: channel_order {recorded!r} is not rgb or bgr")
  if channel_order and recorded != channel_order:
    raise CheckpointError(f"{path}: converted for {recorded.upper()} frames but the data is "
                          f"{channel_order!r}; set --config.data.channel_order={recorded}")
  variables = ocp.StandardCheckpointer().restore(os.path.join(path, "variables"))
  return variables, metadata


def module_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
  """Constructor fields recorded in `metadata["model_config"]` (JSON lists -> tuples)."""
  config = metadata.get("model_config") or {}
  return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


# Training workdirs.


def restore_state_on_this_host(path: pathlib.Path) -> PyTree:
  """A saved train state, every array whole on this process's first device.

  Works whatever mesh saved it (one device, 8 GPUs, several hosts): the target
  sharding is given, not taken from the checkpoint, so a pod's checkpoint loads
  in a notebook.
  """
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path.absolute()).item_metadata)
  return checkpointer.restore(path.absolute(), target)


def _workdir_variables(path: pathlib.Path, model_key: str, best_metric: str) -> PyTree | None:
  """`state[model_key]`'s params and batch stats from a workdir or one step folder."""
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  if not (path / "state").is_dir():
    options = ocp.CheckpointManagerOptions(read_only=True, best_mode="min",
                                           best_fn=lambda metrics: metrics[best_metric])
    manager = ocp.CheckpointManager(path.absolute(), options=options)
    step = manager.best_step() or manager.latest_step()
    if step is None:
      return None
    path = path / str(step)
  state = restore_state_on_this_host(path / "state")
  model_state = state.get(model_key) if isinstance(state, dict) else None
  if model_state is None:
    return None
  return {k: model_state[k] for k in ("params", "batch_stats") if model_state.get(k)}


def load_variables(path: str | os.PathLike, model: str, model_key: str | None = None,
                   best_metric: str = "loss", channel_order: str | None = None) -> PyTree:
  """Variables of `model` from any checkpoint of the module docstring.

  Args:
    path: a PyTorch file, a converted folder, a training workdir or a step folder.
    model: the network's name ("syncnet", "wav2lip", "attn_wav2lip", "lpips_vgg16", ...);
      a PyTorch file is converted as it, a converted folder must hold it.
    model_key: the field of our train state holding it ("syncnet", "generator").
    best_metric: the eval metric (lower is better) saved with a workdir's checkpoints.
    channel_order: the data's, checked against a converted folder's; PyTorch files are
      the official ones, trained on BGR frames.
  Raises:
    CheckpointError (and `convert.CheckpointMismatchError`, a subclass) naming `path`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such checkpoint")
  if os.path.isfile(path):
    if channel_order and channel_order != "bgr" and model != "lpips_vgg16":
      raise CheckpointError(f"{path}: official PyTorch checkpoints expect BGR frames but the "
                            f"data is {channel_order!r}; set --config.data.channel_order=bgr "
                            "(or convert it with --channel_order=rgb if it was trained on RGB)")
    return convert.load_torch_checkpoint(path, model=model)
  if is_converted(path):
    return restore_converted(path, (model,), channel_order)[0]
  variables = _workdir_variables(pathlib.Path(path), model_key or model, best_metric)
  if variables is None:
    raise CheckpointError(f"{path}: no {model_key or model} variables found (expected a "
                          ".pth file, a tools/convert_torch.py output or a training workdir)")
  return variables


# Models ready to use.


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generator ready for inference: module, variables and the channel order it expects."""
  model: nn.Module
  variables: Any
  channel_order: str = "rgb"

  @property
  def img_size(self) -> int:
    return int(getattr(self.model, "img_size", 96))


def load_generator(path: str | os.PathLike) -> Generator:
  """A generator from an official `wav2lip*.pth` or a converted / exported folder."""
  path = os.fspath(path)
  if os.path.isfile(path) or not os.path.exists(path):
    return Generator(build_generator("wav2lip"), load_variables(path, "wav2lip"), "bgr")
  if not is_converted(path):
    raise CheckpointError(f"{path}: not a checkpoint folder (no metadata.json)")
  variables, metadata = restore_converted(path, tuple(GENERATORS))
  model = build_generator(metadata["model"], **module_fields(metadata))
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


def load_syncnet(path: str | os.PathLike) -> SyncExpert:
  """A SyncNet from a `.pth` (official `lipsync_expert.pth`: BGR), a converted folder
  (its metadata's channel order) or a training workdir of ours (RGB)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such SyncNet checkpoint")
  name = os.path.basename(os.path.normpath(path))
  variables, fields, order = None, {}, "rgb"
  if os.path.isfile(path):
    order = "bgr"
  elif is_converted(path):
    variables, metadata = restore_converted(path, ("syncnet",))
    order, fields = metadata.get("channel_order", "rgb"), module_fields(metadata)
    if metadata.get("source"):
      name = f"{name} (from {metadata['source']})"
  elif os.path.isdir(path):
    name = f"{name} (training workdir)"
  if variables is None:
    variables = load_variables(path, "syncnet")
  model = SyncNet(**fields)
  embed = jax.jit(lambda mel, halves: model.apply(variables, mel, halves, train=False))
  return SyncExpert(embed, model.img_size, order, name)


@dataclasses.dataclass(frozen=True)
class EvaluationNetwork:
  """A jitted network of a published metric and `name`, which weights it holds."""
  apply: Callable[..., Any]
  name: str


def _evaluation_variables(path: str | os.PathLike, model: str, what: str,
                          command: str) -> tuple[PyTree, str]:
  """(variables, name) of `model` from a PyTorch file or a converted folder only."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such {what} file")
  name = os.path.basename(os.path.normpath(path))
  if os.path.isdir(path):
    if not is_converted(path):
      raise CheckpointError(f"{path}: not a {what} file nor a converted folder ({command})")
    variables, metadata = restore_converted(path, (model,))
    if metadata.get("source"):
      name = f"{name} (from {metadata['source']})"
    return variables, name
  return convert.load_torch_checkpoint(path, model=model), name


def load_syncnet_v2(path: str | os.PathLike) -> EvaluationNetwork:
  """syncnet_python's SyncNet for the published LSE-D / LSE-C (`lipsync_jax.lse`).

  Args:
    path: the official `syncnet_v2.model` (a PyTorch state dict, read by our restricted
      reader) or its `tools/convert_torch.py --model=syncnet_v2` folder.
  Returns:
    `apply(mfcc (B, 13, 20, 1), frames (B, 5, 224, 224, 3) BGR 0..255)
    -> (audio_emb, lip_emb)`, each (B, 1024) float32.
  Raises:
    CheckpointError: missing, unreadable, or another network's weights.
  """
  variables, name = _evaluation_variables(
      path, "syncnet_v2", "SyncNet v2 (syncnet_v2.model)",
      "tools/convert_torch.py --model=syncnet_v2")
  model = syncnet_v2.SyncNetV2()
  return EvaluationNetwork(jax.jit(lambda mfcc, frames: model.apply(variables, mfcc, frames)),
                           name)


def load_inception(path: str | os.PathLike) -> EvaluationNetwork:
  """pytorch-fid's InceptionV3 for FID (`evaluation.frechet_distance`).

  Args:
    path: pytorch-fid's `pt_inception-2015-12-05-*.pth` or its `tools/convert_torch.py
      --model=inception_fid` folder.
  Returns:
    `apply(images (B, H, W, 3) RGB in [0, 1]) -> (B, 2048)` pool features.
  Raises:
    CheckpointError: missing, unreadable, or another network's weights.
  """
  variables, name = _evaluation_variables(
      path, "inception_fid", "FID Inception (pt_inception-2015-12-05-*.pth)",
      "tools/convert_torch.py --model=inception_fid")
  model = inception.FIDInceptionV3()
  return EvaluationNetwork(jax.jit(lambda images: model.apply(variables, images)), name)


def load_lpips_variables(weights: str | None, backbone: str = "vgg16",
                         seed: int = 0) -> PyTree:
  """Variables of `models.LPIPS`.

  Args:
    weights: a converted `lpips_vgg16` folder or a VGG16 `.pth` (torchvision's, or an
      `lpips` module state dict); ignored for the random backbone.
    backbone: "vgg16", or "random" (a random VGG16 with the shipped heads: NOT a
      perceptual distance; for tests and the CPU demo only, logged as such).
    seed: the random backbone's.
  Raises:
    CheckpointError: an unknown backbone, or missing weights (naming the command that
      converts them).
  """
  if backbone == "random":
    logging.warning("LPIPS backbone is RANDOM: the LPIPS distance is not perceptual; "
                    "only for tests and the CPU demo")
    return lpips.random_lpips_variables(seed)
  if backbone != "vgg16":
    raise CheckpointError(f"LPIPS backbone must be 'vgg16' or 'random', got {backbone!r}")
  if not weights:
    raise CheckpointError(f"LPIPS needs converted VGG16 weights: run `{LPIPS_CONVERT_COMMAND}` "
                          "and pass the folder (or use the random backbone for a smoke test)")
  if not os.path.exists(weights):
    raise CheckpointError(f"{weights}: no such LPIPS checkpoint (convert torchvision's vgg16 "
                          f"with `{LPIPS_CONVERT_COMMAND}`)")
  return load_variables(weights, "lpips_vgg16")


def load_lpips(weights: str | None, backbone: str = "vgg16") -> Callable[[Any, Any], Any]:
  """Jitted `fn(x, y) -> (B,)` LPIPS distance, x, y (B, H, W, 3) RGB in [0, 1].

  Arguments as `load_lpips_variables`.
  """
  variables = load_lpips_variables(weights, backbone)
  model = lpips.LPIPS()
  return jax.jit(lambda x, y: model.apply(variables, 2.0 * x - 1.0, 2.0 * y - 1.0))
