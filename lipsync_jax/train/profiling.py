"""Compilation and step speed of a training run: the persistent compilation cache, the
first step's compile time apart from the step time, and `jax.profiler` traces.

- `persistent_compilation_cache(setting, workdir)`: JAX's persistent compilation cache
  (`config.compilation_cache_dir`) for the duration of a training call, so a restarted
  or resumed run loads its compiled steps instead of compiling them again.
- `StepTimer`: the wall time of the run's first step (compilation, or loading from the
  cache, plus one step) and of its second (one step), hence the compile time.
- `Profiler`: a `jax.profiler` trace of the steps `config.profile_steps` names, in
  `<workdir>/profile` (TensorBoard's profile plugin reads it).
"""

import contextlib
import logging
import os
import re
import time
from typing import Any, Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_compilation_cache

from lipsync_jax.errors import ConfigError

DISABLED = ("", "none")  # `compilation_cache_dir` values that turn the cache off

# JAX's settings this module sets, each with the value a run uses and the environment
# variable through which a user's own choice overrides it. Entries are written however
# short their compilation and however small (JAX's defaults skip computations that
# compile in under 1 s, which are most of a CPU run's small ones).
_CACHE_DIR = ("jax_compilation_cache_dir", "JAX_COMPILATION_CACHE_DIR")
_THRESHOLDS = {
    "jax_persistent_cache_min_compile_time_secs": (0.0,
                                                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"),
    "jax_persistent_cache_min_entry_size_bytes": (-1, "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"),
}


def compilation_cache_dir(setting: str, workdir: str | os.PathLike) -> str | None:
  """The directory `config.compilation_cache_dir = setting` names, or None (cache off).

  "" and "none" (any case) turn the cache off; "~" is expanded; a relative path is
  taken under `workdir` (e.g. "jax_cache" -> "<workdir>/jax_cache").
  """
  setting = setting.strip()
  if setting.lower() in DISABLED:
    return None
  return os.path.join(os.fspath(workdir), os.path.expanduser(setting))


def _set(name: str, value: Any) -> None:
  jax.config.update(name, value)
  if name == _CACHE_DIR[0]:
    # JAX opens its cache once, at the first compilation after a directory is set;
    # this makes it open the new one (or none) at the next.
    jax_compilation_cache.reset_cache()


def compiler_options(gpu_autotune_level: int) -> dict[str, int] | None:
  """XLA options of the train and eval programs: on a GPU, the convolution / GEMM
  autotuner's level (`config.gpu_autotune_level`; docs/benchmarks.md says why); None
  (XLA's defaults) elsewhere or for a negative level."""
  if jax.default_backend() != "gpu" or gpu_autotune_level < 0:
    return None
  return {"xla_gpu_autotune_level": int(gpu_autotune_level)}


@contextlib.contextmanager
def persistent_compilation_cache(setting: str, workdir: str | os.PathLike) -> Iterator[None]:
  """Within: JAX's persistent compilation cache in `compilation_cache_dir(setting, workdir)`.

  Every computation compiled within is written to the cache (no minimum compile time
  or size; `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` / `..._MIN_ENTRY_SIZE_BYTES` in
  the environment keep theirs) and a computation found there is loaded instead of
  compiled. The cache is keyed by the computation, the JAX version, the device kind and
  the XLA flags, so one directory can serve any number of runs.

  JAX's settings are left as they are when the user made the choice: the environment
  sets `JAX_COMPILATION_CACHE_DIR` (even to ""), or the process set
  `jax_compilation_cache_dir` before. On exit the settings changed are restored.
  Must be entered before the run's first compilation.
  """
  directory = compilation_cache_dir(setting, workdir)
  name, variable = _CACHE_DIR
  if variable in os.environ or getattr(jax.config, name) is not None:
    logging.info("Persistent compilation cache: %s (set outside the config)",
                 getattr(jax.config, name) or "off")
    yield
    return
  if directory is None:
    logging.info("Persistent compilation cache: off")
    yield
    return
  changes = {name: directory}
  changes.update({n: value for n, (value, env) in _THRESHOLDS.items() if env not in os.environ})
  saved = {n: getattr(jax.config, n) for n in changes}
  try:
    for n, value in changes.items():
      _set(n, value)
    logging.info("Persistent compilation cache: %s", directory)
    yield
  finally:
    for n, value in saved.items():
      _set(n, value)


class StepTimer:
  """Times a run's first two steps by waiting for their outputs; later steps stay async.

  The first step's wall time is the compilation of the step (or its loading from the
  persistent cache) plus one step; the second's is one step; their difference is
  reported as the compile time. For each of the two steps call `start(step)` right
  before dispatching it and `stop(step, outputs)` right after.
  """

  def __init__(self, first_step: int):
    """`first_step`: the first step this run trains (1, or the resumed step + 1)."""
    self._steps = (first_step, first_step + 1)
    self._start = 0.0
    self.first_step_seconds: float | None = None
    self.step_seconds: float | None = None
    self._reported = False

  def start(self, step: int) -> None:
    if step in self._steps:
      self._start = time.perf_counter()

  def stop(self, step: int, outputs: Any) -> None:
    """Waits for `outputs` of `step` if it is one of the two timed; logs the times."""
    if step not in self._steps:
      return
    jax.block_until_ready(outputs)
    seconds = time.perf_counter() - self._start
    if step == self._steps[0]:
      self.first_step_seconds = seconds
      logging.info("Step %d (compilation + one step): %.2f s", step, seconds)
    else:
      self.step_seconds = seconds
      logging.info("Step %d (one step): %.3f s; compilation took %.2f s", step, seconds,
                   self.compile_seconds)

  @property
  def compile_seconds(self) -> float | None:
    """First step minus second; the first step's time while the second is not timed."""
    if self.first_step_seconds is None:
      return None
    return max(self.first_step_seconds - (self.step_seconds or 0.0), 0.0)

  def scalars(self, last: bool = False) -> dict[str, float]:
    """`{"compile_seconds": ...}` once: as soon as both steps are timed, or at the `last`
    step of a run whose second step never came; {} otherwise."""
    if self._reported or self.first_step_seconds is None or (
        self.step_seconds is None and not last):
      return {}
    self._reported = True
    return {"compile_seconds": self.compile_seconds}


def parse_profile_steps(text: str) -> tuple[int, int] | None:
  """`config.profile_steps` -> (first, last) step, both traced; None for "" (no trace).

  Formats: "A-B" (steps A to B inclusive, 1 <= A <= B) or "A" (step A alone).
  Raises ConfigError naming the field for anything else.
  """
  text = text.strip()
  if not text:
    return None
  window = None
  if match := re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text):
    window = int(match.group(1)), int(match.group(2) or match.group(1))
  if window is None or not 1 <= window[0] <= window[1]:
    raise ConfigError(f"config.profile_steps={text!r}: expected \"A-B\" (steps A to B, "
                      f"1 <= A <= B) or \"A\" (one step), e.g. \"10-15\"")
  return window


class Profiler:
  """A `jax.profiler` trace of the steps `config.profile_steps` names (process 0 only).

  The trace starts before the first named step this run trains is dispatched (a
  resumed run past it starts at its own first step) and stops once the last named step
  (or the run's last step) has finished, and is written under `logdir` as
  `plugins/profile/<time>/<host>.xplane.pb`: `tensorboard --logdir <workdir>` shows it
  in the profile plugin (run "profile"). Call `before(step)` before dispatching each
  step, `after(step, outputs, last)` after it, and `close()` at the end (it stops a
  trace still running, e.g. after an error).
  """

  def __init__(self, profile_steps: str, logdir: str | os.PathLike):
    self._window = parse_profile_steps(profile_steps)
    self._logdir = os.fspath(logdir)
    self._active = False
    self._first = 0  # the first step traced
    if jax.process_index() != 0:
      self._window = None

  def before(self, step: int) -> None:
    if self._window and not self._active and self._window[0] <= step <= self._window[1]:
      jax.profiler.start_trace(self._logdir)
      self._active = True
      self._first = step

  def after(self, step: int, outputs: Any, last: bool = False) -> None:
    if self._active and (step >= self._window[1] or last):
      jax.block_until_ready(outputs)
      self._stop()
      logging.info("Profiled steps %d-%d: trace in %s", self._first, step, self._logdir)
      self._window = None

  def _stop(self) -> None:
    self._active = False
    jax.profiler.stop_trace()

  def close(self) -> None:
    if self._active:
      self._stop()
