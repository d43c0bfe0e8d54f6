r"""Generator inference speed: jitted flax Wav2Lip / AttnWav2Lip vs the PyTorch reference.

  python benchmarks/inference_speed.py --batch=16 --iters=5

Prints frames/s of each generator's forward pass (96x96, random weights, train=False) in one
run, with the ratio to the eager PyTorch reference Wav2Lip (tests/references) on the same
machine. Thread count (`--threads`): torch gets `torch.set_num_threads(threads)`; XLA:CPU
always uses all cores, except with --threads=1, which turns its multi-threading off. So the
default (all cores) and 1 are the like-for-like settings. Each row is the fastest of `--iters`
passes after one warm-up (compilation) call; inputs already live on the device.
"""

import os
import pathlib
import sys
import time

from absl import app
from absl import flags

import cpu_threads  # benchmarks/ is on sys.path when run as a script

_BATCH = flags.DEFINE_integer("batch", 16, "Frames per forward pass.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed forward passes per model.")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "CPU threads for both frameworks.")
_IMG_SIZE = 96


def _time_calls(fn, iters: int) -> float:
  """Fastest of `iters` calls of `fn` (which must block until its result is ready), in s.

  After one warm-up call. The minimum, not the mean, because the machine may be shared.
  """
  fn()
  seconds = []
  for _ in range(iters):
    started = time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - started)
  return min(seconds)


def _flax_generators():
  """[(name, module class)]: Wav2Lip, and AttnWav2Lip when it is importable."""
  from lipsync_jax.models.wav2lip import Wav2Lip  # pylint: disable=g-import-not-at-top
  generators = [("Wav2Lip (flax, jit)", Wav2Lip)]
  try:
    from lipsync_jax.models.attn_wav2lip import AttnWav2Lip  # pylint: disable=g-import-not-at-top
    generators.append(("AttnWav2Lip (flax, jit)", AttnWav2Lip))
  except ImportError as e:
    print(f"AttnWav2Lip skipped: {e}")
  return generators


def main(argv):
  del argv
  threads, batch, iters = _THREADS.value, _BATCH.value, _ITERS.value
  cpu_threads.limit_cpu_threads(threads)
  # Imported here so that XLA_FLAGS is set first.
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
  from references import torch_wav2lip  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  rng = np.random.default_rng(0)
  mel = rng.uniform(-4, 4, size=(batch, 80, 16, 1)).astype(np.float32)
  faces = rng.uniform(size=(batch, _IMG_SIZE, _IMG_SIZE, 6)).astype(np.float32)

  rows = []
  torch_model = torch_wav2lip.randomize_(torch_wav2lip.TorchWav2Lip(), seed=0)
  torch_mel = torch.from_numpy(mel.transpose(0, 3, 1, 2).copy())
  torch_faces = torch.from_numpy(faces.transpose(0, 3, 1, 2).copy())

  def torch_forward():
    with torch.inference_mode():
      torch_model(torch_mel, torch_faces)

  torch_seconds = _time_calls(torch_forward, iters)
  rows.append(("Wav2Lip (PyTorch reference, eager)", "float32", torch_seconds))

  mel_j, faces_j = jnp.asarray(mel), jnp.asarray(faces)
  for name, cls in _flax_generators():
    variables = jax.jit(cls().init)(jax.random.key(0), mel_j[:1], faces_j[:1])
    for dtype in (jnp.float32, jnp.bfloat16):
      apply = jax.jit(cls(dtype=dtype).apply)
      seconds = _time_calls(lambda: apply(variables, mel_j, faces_j).block_until_ready(), iters)
      rows.append((name, jnp.dtype(dtype).name, seconds))

  print(f"\n{_IMG_SIZE}x{_IMG_SIZE}, batch {batch}, fastest of {iters} passes, {threads} threads, "
        f"{jax.devices()[0].device_kind} / torch {torch.__version__}, jax {jax.__version__}")
  header = f"{'model':<36} {'compute':<9} {'frames/s':>9} {'ms/frame':>9} {'vs torch':>9}"
  print(header)
  print("-" * len(header))
  for name, dtype, seconds in rows:
    fps = batch / seconds
    print(f"{name:<36} {dtype:<9} {fps:>9.1f} {1000 / fps:>9.2f} "
          f"{torch_seconds / seconds:>8.2f}x")


if __name__ == "__main__":
  app.run(main)
