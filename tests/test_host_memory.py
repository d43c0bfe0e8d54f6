"""`host_memory.reuse_freed_memory`: a freed large buffer is reused without page faults."""

import os
import subprocess
import sys

import pytest

_CHILD = """
import ctypes, resource, sys
from lipsync_jax import host_memory
if sys.argv[1] == "reuse":
  assert host_memory.reuse_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults_of_one_allocation():
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  buffer = libc.malloc(200_000_000)
  ctypes.memset(buffer, 1, 200_000_000)  # touch every page
  libc.free(buffer)
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_allocation()
print(faults_of_one_allocation())
"""


def _second_allocation_faults(mode: str) -> int:
  result = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                          check=True)
  return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_second_large_allocation_reuses_freed_pages():
  pages = 200_000_000 // 4096
  assert _second_allocation_faults("default") > pages // 2  # a fresh mmap every time
  assert _second_allocation_faults("reuse") < pages // 20


def test_not_on_an_accelerator_backend(monkeypatch):
  """With a GPU or TPU the settings would only cost: nothing is changed."""
  from lipsync_jax import host_memory  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(host_memory, "default_platform", lambda: "gpu")
  monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda name: pytest.fail("mallopt called"))
  assert host_memory.reuse_freed_memory() is False


def test_an_installed_accelerator_plugin_asks_jax(monkeypatch):
  from lipsync_jax import host_memory  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(host_memory, "_jax_platforms", lambda: None)
  monkeypatch.setattr(host_memory, "_accelerator_plugin_installed", lambda: True)
  monkeypatch.setattr(host_memory.jax, "default_backend", lambda: "tpu")
  assert host_memory.default_platform() == "tpu"


_PLATFORM_CHILD = """
from jax._src import xla_bridge
from lipsync_jax import host_memory
print(host_memory.default_platform(), host_memory.reuse_freed_memory(),
      xla_bridge.backends_are_initialized())
"""


@pytest.mark.parametrize("platforms, expected", [("cuda", "gpu False False"),
                                                 ("tpu,cpu", "tpu False False"),
                                                 ("cpu", "cpu True False"),
                                                 ("", "cpu True False")])
def test_the_platform_is_known_without_creating_a_backend(platforms, expected):
  """Before the first computation JAX_PLATFORMS, or the absence of accelerator plugins
  (this machine's), names the platform: no backend (and no XLA thread) is created."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  if platforms:
    env["JAX_PLATFORMS"] = platforms
  result = subprocess.run([sys.executable, "-c", _PLATFORM_CHILD], capture_output=True,
                          text=True, check=True, env=env)
  assert result.stdout.split()[-3:] == expected.split()
