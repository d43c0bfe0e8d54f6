r"""LPIPS (VGG16) forward + backward speed: jitted flax vs the PyTorch reference.

  python benchmarks/lpips_speed.py --batch=8 --iters=3 [--threads=1]

Times one LPIPS loss step as training uses it: distances of a batch of 96x96
pairs, summed, and the gradient with respect to the first image (the generator's
output); the backbone is frozen on both sides. Prints ms per pair for the flax
module (float32 and bfloat16 compute) and the eager PyTorch reference of
tests/references/torch_lpips.py, in one run, with the speed ratio to PyTorch.
Random backbone, shipped heads; timings exclude compilation (one warm-up call)
and host-device transfers. Both frameworks get `--threads` CPU threads.
"""

import os
import pathlib
import sys
import time

from absl import app
from absl import flags

import cpu_threads  # benchmarks/ is on sys.path when run as a script

_BATCH = flags.DEFINE_integer("batch", 8, "Image pairs per call.")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed calls per row (the mean is shown).")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "CPU threads for both frameworks.")
_IMG_SIZE = 96


def _seconds_per_call(fn, iters: int) -> float:
  """Mean seconds per call of `fn` (which blocks until its result is ready), after a warm-up."""
  fn()
  started = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - started) / iters


def main(argv):
  del argv
  threads, batch, iters = _THREADS.value, _BATCH.value, _ITERS.value
  cpu_threads.limit_cpu_threads(threads)
  # Imported here so that XLA_FLAGS is set first.
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from lipsync_jax.models import lpips  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
  from references.torch_lpips import TorchLPIPS  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  rng = np.random.default_rng(0)
  x, y = rng.uniform(-1, 1, (2, batch, _IMG_SIZE, _IMG_SIZE, 3)).astype(np.float32)

  reference = TorchLPIPS(lpips.load_lpips_heads()).randomize_(seed=0).requires_grad_(False)
  torch_y = torch.from_numpy(y.transpose(0, 3, 1, 2).copy())
  torch_x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

  def torch_step():
    image = torch_x.clone().requires_grad_(True)
    reference(image, torch_y).sum().backward()
    return image.grad

  rows = [("LPIPS (PyTorch reference, eager)", "float32", _seconds_per_call(torch_step, iters))]
  state_dict = {k: v.numpy() for k, v in reference.features.state_dict(prefix="features.").items()}
  variables = lpips.lpips_variables_from_state_dict(state_dict)
  x_j, y_j = jnp.asarray(x), jnp.asarray(y)
  for dtype in (jnp.float32, jnp.bfloat16):
    module = lpips.LPIPS(dtype=dtype)
    step = jax.jit(jax.value_and_grad(lambda v, a, b: module.apply(v, a, b).sum(), argnums=1))
    seconds = _seconds_per_call(lambda: jax.block_until_ready(step(variables, x_j, y_j)), iters)
    rows.append(("LPIPS (flax, jit)", jnp.dtype(dtype).name, seconds))

  torch_seconds = rows[0][2]
  print(f"\nLPIPS forward + backward (grad w.r.t. the first image), {_IMG_SIZE}x{_IMG_SIZE}, "
        f"batch {batch}, {iters} timed calls, {threads} threads, "
        f"{jax.devices()[0].device_kind} / torch {torch.__version__}, jax {jax.__version__}")
  header = f"{'implementation':<34} {'compute':<9} {'ms/pair':>9} {'pairs/s':>9} {'vs torch':>9}"
  print(header)
  print("-" * len(header))
  for name, dtype, seconds in rows:
    print(f"{name:<34} {dtype:<9} {1000 * seconds / batch:>9.2f} {batch / seconds:>9.1f} "
          f"{torch_seconds / seconds:>8.2f}x")


if __name__ == "__main__":
  app.run(main)
