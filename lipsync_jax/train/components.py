"""What the trainers are built from: networks, frozen weights and data.

- `build_*`: the networks a config names, with its compute dtype (float32
  parameters always).
- `load_syncnet_variables`, `load_generator_variables`, `load_lpips`: frozen or
  initial weights, through `lipsync_jax.checkpoints` (the one loading module).
- `Data`: the mesh, the train iterator (this host's part of each batch) and
  fresh eval iterators, over record shards.
"""

import logging
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lipsync_jax import checkpoints, input_pipeline
from lipsync_jax.errors import ConfigError
from lipsync_jax.models import lpips
from lipsync_jax.models.syncnet import SyncNet
from lipsync_jax.models.wav2lip import QualityDiscriminator
from lipsync_jax.train import sharding, state as state_lib
from lipsync_jax.types import PyTree


def _dtype(config: ml_collections.ConfigDict, dtype: str | None = None):
  name = dtype or config.dtype
  if name not in ("float32", "bfloat16"):
    raise ConfigError(f"config.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


def build_syncnet(config: ml_collections.ConfigDict, dtype: str | None = None) -> SyncNet:
  """SyncNet with `config.syncnet_kwargs` (e.g. `width_multiplier`)."""
  return SyncNet(img_size=config.img_size, dtype=_dtype(config, dtype), **config.syncnet_kwargs)


def generator_img_size(config: ml_collections.ConfigDict) -> int:
  """The generator's face size: `config.model.img_size`, default `config.img_size`.

  `config.img_size` is the records' crop size, which SyncNet sees. A smaller generator
  (the CPU demo's) gets its frames resized by the input pipeline, and the expert sees
  its output resized back (`train/steps.py`).
  """
  return int(config.model.img_size or config.img_size)


def build_generator(config: ml_collections.ConfigDict) -> nn.Module:
  """Wav2Lip or AttnWav2Lip (`config.model.name`) with `config.model.kwargs`."""
  if config.model.name not in checkpoints.GENERATORS:
    raise ConfigError(f"config.model.name must be one of {sorted(checkpoints.GENERATORS)}, "
                      f"got {config.model.name!r}")
  return checkpoints.build_generator(config.model.name, img_size=generator_img_size(config),
                                     dtype=_dtype(config), **config.model.kwargs)


def build_discriminator(config: ml_collections.ConfigDict) -> QualityDiscriminator:
  """The quality discriminator, at the generator's face size."""
  return QualityDiscriminator(img_size=generator_img_size(config), dtype=_dtype(config))


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
  return checkpoints.load_variables(path, "syncnet", channel_order=channel_order)


def init_expert(config: ml_collections.ConfigDict, variables: PyTree | None) -> PyTree:
  """The expert's variables, initialised from `config.seed` when none were loaded."""
  if variables is not None:
    return variables
  mel = jnp.zeros((1, 80, 16, 1), jnp.float32)
  faces = jnp.zeros((1, config.img_size // 2, config.img_size, 15), jnp.float32)
  return state_lib.jit_init(build_syncnet(config, "float32"))(
      jax.random.key(config.seed + 1), mel, faces)


def load_generator_variables(config: ml_collections.ConfigDict) -> PyTree:
  return checkpoints.load_variables(config.init_checkpoint, config.model.name, "generator",
                                    "l1_plus_sync", config.data.channel_order)


def load_lpips(config: ml_collections.ConfigDict) -> tuple[Callable, PyTree]:
  """(`fn(variables, x, y) -> (B,)`, variables) of LPIPS per `config.lpips`, x and y in
  [-1, 1] (see `checkpoints.load_lpips_variables`)."""
  model = lpips.LPIPS(dtype=_dtype(config))
  variables = checkpoints.load_lpips_variables(config.lpips.checkpoint, config.lpips.backbone,
                                               config.seed + 2)
  return (lambda v, x, y: model.apply(v, x, y)), variables


def _open_source(path: str, what: str):
  if not path:
    raise ConfigError(f"config.data.{what} is empty: give a directory of record shards")
  return input_pipeline.open_record_source(path)


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
    make = input_pipeline.syncnet_iterator if self._kind == "syncnet" else input_pipeline.generator_iterator
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
    s, t = self._config.img_size, input_pipeline.WINDOW_FRAMES
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
