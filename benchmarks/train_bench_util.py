"""Helpers of the training-step benchmarks that import neither jax nor torch.

- The two LRS2 recipes (`MODELS`, `load_config`, `recipe_name`), read from the
  project's configs, so the JAX step and the PyTorch reference share weights.
- One benchmark row per subprocess, so peak memory and device state never mix:
  the parent runs `python <script> --worker=<spec> <flags>` (`run_worker`); the
  worker prints its result as one `RESULT {json}` line (`print_result`). The
  parent imports no framework, so it does not claim a device.
"""

import importlib.util
import json
import os
import pathlib
import resource
import subprocess
import sys
from typing import Sequence

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {"attn_wav2lip": "configs/attn_wav2lip_lrs2.py", "wav2lip": "configs/wav2lip_lrs2.py"}
NAMES = {"attn_wav2lip": "AttnWav2Lip", "wav2lip": "Wav2Lip"}
_PREFIX = "RESULT "


SYNCNET_CONFIG = "configs/syncnet_lrs2.py"


def load_config(model: str) -> ml_collections.ConfigDict:
  """`get_config()` of `model`'s LRS2 config file (a key of `MODELS`, or "syncnet")."""
  if model not in MODELS and model != "syncnet":
    raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
  path = SYNCNET_CONFIG if model == "syncnet" else MODELS[model]
  spec = importlib.util.spec_from_file_location("benchmark_config", REPO_ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def recipe_name(config: ml_collections.ConfigDict) -> str:
  """The generator's losses (and the discriminator step) of a config, for tables."""
  terms = ["L1", "sync"]
  if config.loss.lpips_weight:
    terms.append("LPIPS")
  if config.loss.adversarial_weight:
    terms.append("adv + D step")
  return " + ".join(terms)


def peak_rss_mib() -> float:
  """This process's peak resident set size so far (Linux maxrss), MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_result(row: dict) -> None:
  """Writes a worker's row for `run_worker` to read back."""
  print(_PREFIX + json.dumps(row), flush=True)


def run_worker(script: str, spec: str, args: Sequence[str], timeout_s: float) -> dict:
  """Runs `script --worker=spec *args` with the repo on PYTHONPATH; returns its row.

  A failed or timed-out worker gives {"error": "<one line>"} instead.
  """
  command = [sys.executable, str(pathlib.Path(script).resolve()), f"--worker={spec}", *args]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))}
  try:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s,
                          check=False)
  except subprocess.TimeoutExpired as e:  # e.stderr: bytes (or None) whatever `text` says.
    stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    return {"error": f"timed out after {timeout_s:.0f} s (last said: {_last_line(stderr)})"}
  for line in done.stdout.splitlines():
    if line.startswith(_PREFIX):
      return json.loads(line[len(_PREFIX):])
  return {"error": f"exit {done.returncode}: {_last_line(done.stderr)}"}


def _last_line(text: str) -> str:
  return (text.strip().splitlines() or ["no output"])[-1]
