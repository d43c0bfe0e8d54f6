"""Small networks and synthetic clips shared by the inference and evaluation tests.

Random weights are drawn with numpy over `jax.eval_shape` of `init`: jitting `init`
of a generator takes about a minute on these CPUs, numpy a fraction of a second.
"""

import importlib.util
import os
import pathlib

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import checkpoints
from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
from lipsync_jax.models.syncnet import SyncNet

# A 3.1 M-parameter AttnWav2Lip (96x96, three stages, no FFC): compiles in seconds.
TINY_GENERATOR = {"widths": (8, 16, 32), "encoder_blocks": 1, "decoder_blocks": 1,
                  "use_ffc": False}


def random_variables(model, *inputs, seed=0):
  """Variables of `model.init(key, *inputs)` drawn with numpy.

  Kernels ~ N(0, 1/fan_in) (fan_in = all but the last axis), BatchNorm scale and variance
  1, biases and means 0.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)

  def draw(path, leaf):
    name = str(path[-1].key)
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in))
    fill = 1.0 if name in ("scale", "var") else 0.0
    return jnp.full(leaf.shape, fill, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def tiny_generator(seed=0):
  """(AttnWav2Lip module, variables) of `TINY_GENERATOR`."""
  model = AttnWav2Lip(**TINY_GENERATOR)
  inputs = (jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 96, 96, 6)))
  return model, random_variables(model, *inputs, seed=seed)


def save_tiny_generator(path, seed=0, channel_order="rgb"):
  """Writes the tiny generator as `save_converted` does; returns (model, variables)."""
  model, variables = tiny_generator(seed)
  checkpoints.save_converted(path, variables, {"model": "attn_wav2lip",
                                           "channel_order": channel_order,
                                           "model_config": TINY_GENERATOR})
  return model, variables


def random_syncnet(seed=0):
  """(SyncNet module, random variables)."""
  model = SyncNet()
  inputs = (jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 48, 96, 15)))
  return model, random_variables(model, *inputs, seed=seed)


def save_random_syncnet(path, seed=0):
  model, variables = random_syncnet(seed)
  checkpoints.save_converted(path, variables, {"model": "syncnet", "channel_order": "rgb",
                                           "source": f"random seed {seed}"})
  return model, variables


class InProcessTool:
  """A `tools/<name>.py` absl script loaded as a module, run in this process.

  `run(*args)` parses `args` into the global flags and calls `main`, returning the exit
  code (0 when main returns). `close()` removes the script's flags again, so scripts
  that define flags of the same names can be tested in one pytest process.
  """

  def __init__(self, name):
    path = pathlib.Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    self.module = importlib.util.module_from_spec(spec)
    before = set(flags.FLAGS)
    spec.loader.exec_module(self.module)
    self.flag_names = set(flags.FLAGS) - before
    self.name = name

  def run(self, *args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS([f"{self.name}.py", *args])
    try:
      self.module.main([f"{self.name}.py"])
    except SystemExit as e:
      return e.code
    return 0

  def close(self):
    for name in self.flag_names:
      delattr(flags.FLAGS, name)


def convert_with_tool(path, model, output):
  """Runs `tools/convert_torch.py --input=path --model=model --output=output`; asserts exit 0."""
  tool = InProcessTool("convert_torch")
  try:
    assert tool.run(f"--input={path}", f"--model={model}", f"--output={output}") == 0
  finally:
    tool.close()
