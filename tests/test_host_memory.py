"""`host_memory.reuse_freed_memory`: a freed large buffer is reused without page faults."""

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
