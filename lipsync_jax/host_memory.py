"""Host-memory reuse for XLA:CPU training and inference processes (glibc Linux).

XLA:CPU runs each compiled step in one temporary buffer holding the step's
intermediates, which it allocates and frees on every call. glibc serves an
allocation of that size with a fresh `mmap` (from any thread other than the main
one, whatever `M_MMAP_THRESHOLD` says: a thread arena's heap is at most 64 MB), so
the kernel zero-fills every page of it again on each step, as system time inside
the step. `reuse_freed_memory` sets glibc to one arena, no `mmap` and a high trim
threshold: freed memory stays in the process and the next step reuses it without
page faults. The measurements behind this (page faults, system time and step time
with and without it) are in docs/benchmarks.md.

The price: up to `TRIM_THRESHOLD_BYTES` of freed memory is kept instead of being
returned to the system, and all threads share one malloc arena. So it applies only when
JAX computes on the CPU: with a GPU or TPU the steps' buffers are in device memory and
the settings would only cost.
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

import jax

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int.


def _accelerator_plugin_installed() -> bool:
  """Whether JAX could find a GPU or TPU backend: a PJRT plugin (the `jax_plugins`
  namespace package or entry points, `PJRT_NAMES_AND_LIBRARY_PATHS`) or libtpu."""
  if os.environ.get("PJRT_NAMES_AND_LIBRARY_PATHS") or os.environ.get("TPU_LIBRARY_PATH"):
    return True
  if importlib.util.find_spec("libtpu") is not None:
    return True
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  try:
    import jax_plugins  # pylint: disable=import-outside-toplevel
  except ImportError:
    return False
  return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


def _jax_platforms() -> str | None:
  return jax.config.jax_platforms


def default_platform() -> str:
  """JAX's default platform ("cpu", "gpu", "tpu", ...), without creating a backend when
  that can be avoided.

  `JAX_PLATFORMS` (the `jax_platforms` setting) names it first; with no accelerator
  plugin installed it can only be "cpu"; otherwise JAX's backends are created to ask
  (`jax.default_backend()`), so in a multi-process run call it after
  `jax.distributed.initialize`.
  """
  platforms = _jax_platforms()
  if platforms:
    first = platforms.split(",")[0].strip().lower()
    return "gpu" if first in ("cuda", "rocm") else first
  if not _accelerator_plugin_installed():
    return "cpu"
  return jax.default_backend()


def reuse_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse (see the module docstring), on the CPU
  backend only.

  Call it early in a process, before the first computation creates XLA's threads (it
  creates no backend unless an accelerator plugin is installed and `JAX_PLATFORMS` is
  unset: see `default_platform`). Returns True when glibc accepted all three settings;
  False, changing nothing, when JAX's default platform is not the CPU, or elsewhere (not
  Linux, another C library).
  """
  if not sys.platform.startswith("linux") or default_platform() != "cpu":
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
  return all(mallopt(option, value) == 1 for option, value in settings)
