"""What the trainers are built from: networks, frozen weights, data and reporting.

- `build_*`: the networks a config names, with its compute dtype (float32
  parameters always).
- `load_syncnet_variables`, `load_lpips`: frozen or initial weights from our own
  checkpoints, converted ones (`tools/convert_torch.py`) or PyTorch files.
- `Data`: the mesh, the train iterator (this host's part of each batch) and
  fresh eval iterators, over record shards.
- `Reporter`: TensorBoard scalars and image grids (tensorboardX, no TensorFlow)
  and console progress with steps/s and ETA.
"""

import logging
import os
import pathlib
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorboardX

from data_pipeline import records, sources
from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
from lipsync_jax.models.syncnet import SyncNet
from lipsync_jax.models.wav2lip import QualityDiscriminator, Wav2Lip
from lipsync_jax.train import sharding, state as state_lib

PyTree = Any
LPIPS_CONVERT_COMMAND = ("python tools/convert_torch.py --model=lpips_vgg16 "
                         "--input=<torchvision vgg16 state dict .pth> --output=<dir>")


class ConfigError(ValueError):
  """The config asks for something that cannot be set up."""


def _dtype(config: ml_collections.ConfigDict, dtype: str | None = None):
  name = dtype or config.get("dtype", "float32")
  if name not in ("float32", "bfloat16"):
    raise ConfigError(f"config.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


def build_syncnet(config: ml_collections.ConfigDict, dtype: str | None = None) -> SyncNet:
  """SyncNet with `config.syncnet_kwargs` (e.g. `width_multiplier`; absent: the original)."""
  return SyncNet(img_size=config.img_size, dtype=_dtype(config, dtype),
                 **dict(config.get("syncnet_kwargs") or {}))


def generator_img_size(config: ml_collections.ConfigDict) -> int:
  """The generator's face size: `config.model.img_size`, default `config.img_size`.

  `config.img_size` is the records' crop size, which SyncNet sees. A smaller generator
  (the CPU demo's) gets its frames resized by the input pipeline, and the expert sees
  its output resized back (`train/steps.py`).
  """
  return int(config.model.get("img_size") or config.img_size)


def build_generator(config: ml_collections.ConfigDict) -> nn.Module:
  """Wav2Lip or AttnWav2Lip (`config.model.name`) with `config.model.kwargs`."""
  kwargs = dict(config.model.get("kwargs") or {})
  models = {"wav2lip": Wav2Lip, "attn_wav2lip": AttnWav2Lip}
  if config.model.name not in models:
    raise ConfigError(f"config.model.name must be one of {sorted(models)}, "
                      f"got {config.model.name!r}")
  return models[config.model.name](img_size=generator_img_size(config), dtype=_dtype(config),
                                   **kwargs)


def build_discriminator(config: ml_collections.ConfigDict) -> QualityDiscriminator:
  """The quality discriminator, at the generator's face size."""
  return QualityDiscriminator(img_size=generator_img_size(config), dtype=_dtype(config))


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


def _restore_variables(path: pathlib.Path, model_key: str, best_metric: str,
                       channel_order: str | None) -> PyTree | None:
  """Variables from a workdir of ours (best checkpoint by `best_metric`, else the
  latest), one of its step dirs, or a `tools/convert_torch.py` output dir (whose
  recorded channel order must equal `channel_order` when that is given)."""
  if (path / "metadata.json").exists() and (path / "variables").exists():
    from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
    variables, metadata = convert.restore_converted(path)
    recorded = metadata.get("channel_order")
    if channel_order and recorded and recorded != channel_order:
      raise ConfigError(f"{path}: converted for {recorded.upper()} frames but "
                        f"config.data.channel_order is {channel_order!r}; set "
                        f"--config.data.channel_order={recorded}")
    return variables
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


def load_variables(path: str, model: str, model_key: str, best_metric: str = "loss",
                   channel_order: str | None = None) -> PyTree:
  """Variables of `model` from a PyTorch `.pth`/`.pt` file or an orbax directory.

  Args:
    path: a PyTorch checkpoint (converted with `load_torch_checkpoint`), a
      directory written by `tools/convert_torch.py`, a training workdir of ours
      (its best, else latest, checkpoint) or one step directory of it.
    model: the converter's model name ("syncnet", "wav2lip", ...).
    model_key: the field of our train state holding it ("syncnet", "generator").
    best_metric: the eval metric (lower is better) saved with the checkpoints.
    channel_order: the data's ("rgb"/"bgr"), checked against converted dirs.
      (Official Wav2Lip / SyncNet `.pth` files expect BGR.)
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: checkpoint not found")
  if path.endswith((".pth", ".pt", ".tar")):
    from lipsync_jax import convert  # pylint: disable=g-import-not-at-top
    return convert.load_torch_checkpoint(path, model=model)
  variables = _restore_variables(pathlib.Path(path), model_key, best_metric, channel_order)
  if variables is None:
    raise ConfigError(f"{path}: no {model_key} variables found (expected a .pth file, a "
                      "tools/convert_torch.py output or a training workdir)")
  return variables


def load_syncnet_variables(path: str, role: str = "init",
                           channel_order: str | None = None) -> PyTree | None:
  """SyncNet variables from `path`; "random" gives None (random init) with a warning."""
  if path == "random":
    logging.warning("SyncNet %s weights are RANDOM (config says 'random'): sync losses "
                    "and accuracies are meaningless; only for tests and smoke runs", role)
    return None
  if not path:
    raise ConfigError(f"no SyncNet checkpoint for the {role}: set it to our SyncNet "
                      "workdir, a converted lipsync_expert.pth, or 'random'")
  return load_variables(path, "syncnet", "syncnet", channel_order=channel_order)


def init_expert(config: ml_collections.ConfigDict, variables: PyTree | None) -> PyTree:
  """The expert's variables, initialised from `config.seed` when none were loaded."""
  if variables is not None:
    return variables
  mel = jnp.zeros((1, 80, 16, 1), jnp.float32)
  faces = jnp.zeros((1, config.img_size // 2, config.img_size, 15), jnp.float32)
  return state_lib.jit_init(build_syncnet(config, "float32"))(
      jax.random.key(config.seed + 1), mel, faces)


def load_generator_variables(config: ml_collections.ConfigDict) -> PyTree:
  return load_variables(config.init_checkpoint, "wav2lip", "generator", "l1_plus_sync",
                        config.data.channel_order)


def load_lpips(config: ml_collections.ConfigDict) -> tuple[Callable, PyTree]:
  """(`fn(variables, x, y) -> (B,)`, variables) of LPIPS per `config.lpips`.

  backbone "vgg16" needs `config.lpips.checkpoint` (converted VGG16 + heads);
  "random" uses a randomly initialised backbone with the shipped heads, which
  only makes sense for tests and the CPU demo, and says so in the log.
  """
  from lipsync_jax.models import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  model = lpips_lib.LPIPS(dtype=_dtype(config))
  backbone = config.lpips.backbone
  if backbone == "vgg16":
    if not config.lpips.checkpoint:
      raise ConfigError("LPIPS needs converted VGG16 weights: run "
                        f"`{LPIPS_CONVERT_COMMAND}` and set --config.lpips.checkpoint=<dir> "
                        "(or --config.lpips.backbone=random for a smoke test)")
    variables = load_variables(config.lpips.checkpoint, "lpips_vgg16", "lpips")
  elif backbone == "random":
    logging.warning("LPIPS backbone is RANDOM (config lpips.backbone='random'): the LPIPS "
                    "loss is not perceptual; only for tests and the CPU demo")
    variables = lpips_lib.random_lpips_variables(config.seed + 2)
  else:
    raise ConfigError(f"config.lpips.backbone must be 'vgg16' or 'random', got {backbone!r}")
  return (lambda v, x, y: model.apply(v, x, y)), variables


def _open_source(path: str, what: str):
  if not path:
    raise ConfigError(f"config.data.{what} is empty: give a directory of record shards")
  return sources.open_record_source(records.list_shards(path))


class Data:
  """Mesh and input pipeline of one training run.

  `kind` is "syncnet" or "generator". Each process reads its own clips
  (Grain sharding by process index) and its rows of every global batch.
  """

  def __init__(self, config: ml_collections.ConfigDict, kind: str):
    self.mesh = sharding.make_mesh(config.mesh.model_axis_size)
    sharding.check_batch_size(config.batch_size, self.mesh)
    sharding.check_batch_size(config.eval_batch_size, self.mesh)
    self._config = config
    self._kind = kind
    self._train_source = _open_source(config.data.train_path, "train_path")
    self._eval_source = _open_source(config.data.eval_path, "eval_path")
    self.train_iterator = self._iterator(self._train_source, config.batch_size, config.seed,
                                         config.data.worker_count)

  def _iterator(self, source, batch_size: int, seed: int, worker_count: int):
    data = self._config.data
    make = sources.syncnet_iterator if self._kind == "syncnet" else sources.generator_iterator
    options = {} if self._kind == "syncnet" else {
        "mel_offset_frames": data.mel_offset_frames, "img_size": generator_img_size(self._config)}
    return make(source, batch_size=batch_size // jax.process_count(), seed=seed,
                channel_order=data.channel_order, worker_count=worker_count,
                shard_index=jax.process_index(), shard_count=jax.process_count(), **options)

  def eval_iterator(self):
    """A fresh eval iterator with a fixed seed: every eval sees the same batches."""
    return self._iterator(self._eval_source, self._config.eval_batch_size,
                          self._config.seed + 1, 0)

  def example_batch(self) -> dict[str, np.ndarray]:
    """Zero arrays with the shapes of one example (for initialisation)."""
    s, t = self._config.img_size, sources.WINDOW_FRAMES
    if self._kind == "syncnet":
      return {"mel": np.zeros((1, 80, 16, 1), np.float32),
              "faces": np.zeros((1, s // 2, s, 3 * t), np.float32)}
    s = generator_img_size(self._config)
    return {"mel_chunks": np.zeros((1, t, 80, 16, 1), np.float32),
            "inputs": np.zeros((1, t, s, s, 6), np.float32),
            "target": np.zeros((1, t, s, s, 3), np.float32)}

  def close(self) -> None:
    close = getattr(self.train_iterator, "close", None)
    if close is not None:
      close()


def _local(x: jax.Array) -> np.ndarray:
  """This process's first shard of a (batch-sharded) array, on the host."""
  return np.asarray(x.addressable_shards[0].data)


def mouth_crop(frames: np.ndarray) -> np.ndarray:
  """(..., H, W, 3) -> the mouth region (rows 5/8..15/16 H, columns 1/4..3/4 W)."""
  h, w = frames.shape[-3:-1]
  return frames[..., 5 * h // 8:15 * h // 16, w // 4:3 * w // 4, :]


def image_grid(inputs: np.ndarray, generated: np.ndarray, target: np.ndarray) -> np.ndarray:
  """One sample's T frames as rows of reference | masked | generated | ground truth.

  Args: (T, H, W, 6) inputs (masked ‖ reference), (T, H, W, 3) generated and target.
  Returns: (T * H, 4 * W, 3) float32 in [0, 1].
  """
  columns = [inputs[..., 3:], inputs[..., :3], generated, target]
  return np.concatenate([np.concatenate(list(c), axis=0) for c in columns], axis=1)


class Reporter:
  """TensorBoard (process 0 only) and console reporting with steps/s and ETA."""

  def __init__(self, logdir: pathlib.Path, num_train_steps: int):
    self._writer = (tensorboardX.SummaryWriter(str(logdir)) if jax.process_index() == 0
                    else None)
    self._num_train_steps = num_train_steps
    self._last = None

  def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
    if not values:
      return
    if prefix == "train":
      now = time.monotonic()
      if self._last is not None:
        rate = (step - self._last[0]) / max(now - self._last[1], 1e-9)
        values = {**values, "steps_per_second": rate}
        eta = (self._num_train_steps - step) / max(rate, 1e-9)
        logging.info("step %d/%d  %.2f steps/s  ETA %s", step, self._num_train_steps, rate,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))
      self._last = (step, now)
    logging.info("[%s] step %d: %s", prefix, step,
                 ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))
    if self._writer is not None:
      for k, v in values.items():
        self._writer.add_scalar(f"{prefix}/{k}", v, step)
      self._writer.flush()

  def image_grids(self, step: int, batch: dict[str, jax.Array], generated: jax.Array,
                  prefix: str) -> None:
    """Logs sample 0: the full grid and its mouth-region crops (2x upscaled)."""
    if self._writer is None:
      return
    inputs, gen, target = _local(batch["inputs"])[0], _local(generated)[0], _local(
        batch["target"])[0]
    grid = image_grid(inputs, gen, target)
    mouths = image_grid(mouth_crop(inputs), mouth_crop(gen), mouth_crop(target))
    mouths = mouths.repeat(2, axis=0).repeat(2, axis=1)
    self._writer.add_image(f"{prefix}/reference|masked|generated|target", grid, step,
                           dataformats="HWC")
    self._writer.add_image(f"{prefix}/mouths", np.clip(mouths, 0, 1), step, dataformats="HWC")
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
