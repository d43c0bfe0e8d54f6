"""Puts JAX and PyTorch on the same number of CPU threads for a benchmark process."""

import os


def limit_cpu_threads(threads: int) -> None:
  """Pins this process to `threads` CPUs; call before importing jax.

  Both XLA's and PyTorch's thread pools follow the affinity mask. With one thread XLA's
  multi-threaded Eigen kernels are also turned off (set torch's count with
  `torch.set_num_threads`).
  """
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
  if threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false")
