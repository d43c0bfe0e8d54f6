"""The persistent compilation cache, the compile/step timing and profiler traces of the
training loop (`train/profiling.py`), on fake states and steps (fast)."""

import logging
import pathlib
import re
import time

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import pytest

from configs import base
from lipsync_jax.errors import ConfigError
from lipsync_jax.train import profiling, trainer

import fake_loop

_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


@pytest.fixture
def no_user_cache(monkeypatch):
  """JAX's cache settings and variables as a user who set none; restored after."""
  for variable in _VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  saved = {name: getattr(jax.config, name) for name in _SETTINGS}
  jax.config.update("jax_compilation_cache_dir", None)
  profiling.jax_compilation_cache.reset_cache()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  profiling.jax_compilation_cache.reset_cache()


def test_compilation_cache_dir_setting(tmp_path):
  assert profiling.compilation_cache_dir("", tmp_path) is None
  assert profiling.compilation_cache_dir(" None ", tmp_path) is None
  assert profiling.compilation_cache_dir("jax_cache", tmp_path) == str(tmp_path / "jax_cache")
  assert profiling.compilation_cache_dir("/abs/cache", tmp_path) == "/abs/cache"
  home = profiling.compilation_cache_dir("~/c", tmp_path)
  assert not home.startswith("~") and home.endswith("/c")
  assert base.get_config().compilation_cache_dir  # on by default


def _compile_counting_cache_hits(x):
  hits = []
  listener = lambda event, **kwargs: hits.append(event)
  jax.monitoring.register_event_listener(listener)
  try:
    jax.jit(lambda v: jnp.sin(v) * 3 + jnp.cos(v)[::-1])(x).block_until_ready()
  finally:
    jax.monitoring.unregister_event_listener(listener)
  return hits.count("/jax/compilation_cache/cache_hits")


def test_a_restart_loads_the_step_from_the_cache(no_user_cache, tmp_path):
  x = jnp.arange(7.0)
  with profiling.persistent_compilation_cache("jax_cache", tmp_path):
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax_cache")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    assert _compile_counting_cache_hits(x) == 0
  assert list((tmp_path / "jax_cache").iterdir())  # written, however fast it compiled
  # Restored on exit.
  assert jax.config.jax_compilation_cache_dir is None
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
  jax.clear_caches()  # as a new process: nothing compiled in memory
  with profiling.persistent_compilation_cache(str(tmp_path / "jax_cache"), "/elsewhere"):
    assert _compile_counting_cache_hits(x) == 1


def test_none_turns_the_cache_off(no_user_cache, tmp_path):
  with profiling.persistent_compilation_cache("none", tmp_path):
    assert jax.config.jax_compilation_cache_dir is None


def test_the_users_own_setting_wins(no_user_cache, monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
  with profiling.persistent_compilation_cache("jax_cache", tmp_path):
    assert jax.config.jax_compilation_cache_dir is None  # left to JAX (read at import)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
  with profiling.persistent_compilation_cache("jax_cache", tmp_path):
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "theirs")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


def test_the_fields_take_command_line_overrides():
  config_file = pathlib.Path(__file__).resolve().parents[2] / "configs" / "demo_cpu.py"
  argv = ["test", f"--config={config_file}:generator", "--config.profile_steps=10-15",
          "--config.compilation_cache_dir=jax_cache"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  assert profiling.parse_profile_steps(values.config.profile_steps) == (10, 15)
  assert values.config.compilation_cache_dir == "jax_cache"


@pytest.mark.parametrize("text, window", [("", None), ("10-15", (10, 15)), ("3", (3, 3)),
                                          (" 2 - 4 ", (2, 4))])
def test_parse_profile_steps(text, window):
  assert profiling.parse_profile_steps(text) == window


@pytest.mark.parametrize("text", ["10,15", "0-3", "5-2", "a", "1-2-3"])
def test_bad_profile_steps_are_refused_naming_the_field(text):
  with pytest.raises(ConfigError, match=r"config.profile_steps=.*\"A-B\""):
    profiling.parse_profile_steps(text)


def test_the_trainer_refuses_bad_profile_steps_before_building_anything(tmp_path):
  config = base.get_config()
  config.profile_steps = "10,15"
  config.data.train_path = str(tmp_path / "does_not_exist")
  with pytest.raises(ConfigError, match="profile_steps"):
    trainer.train_syncnet(config, str(tmp_path))


def _config(num_train_steps, **fields):
  config = base.get_config()
  config.num_train_steps = num_train_steps
  config.log_every_steps, config.eval_every_steps = 1, 1000
  config.checkpoint_every_steps = 1000
  config.update(fields)
  return config


@jax.jit
def _update(w):
  return w * 0.5 + 1.0, jnp.sum(w)


def _run(tmp_path, config, events=None, first_call_seconds=0.0, start_step=0):
  """`_train_loop` on a fake step (jitted) whose first call sleeps `first_call_seconds`;
  `events` gets each dispatched step number."""
  calls = []

  def train_step(state, batch):
    del batch
    if not calls and first_call_seconds:
      time.sleep(first_call_seconds)  # "compiling"
    calls.append(int(state.step) + 1)
    if events is not None:
      events.append(calls[-1])
    w, loss = _update(state.w)
    return state.replace(step=state.step + 1, w=w), {"loss": loss}, None

  state = fake_loop.FakeState(step=jnp.asarray(start_step, jnp.int32), w=jnp.ones(3))
  train_loop = trainer._train_loop  # pylint: disable=protected-access
  return train_loop(config, tmp_path, state, train_step, lambda s: {"loss": 0.0}, fake_loop.FakeData(),
                    "loss")


def _train_scalars(text):
  return {int(m.group(1)): m.group(2) for m in re.finditer(r"\[train\] step (\d+): (.*)", text)}


def test_compile_time_is_logged_apart_from_the_step_time(tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    _run(tmp_path, _config(4), first_call_seconds=0.5)
  scalars = _train_scalars(caplog.text)
  with_compile = [step for step, text in scalars.items() if "compile_seconds=" in text]
  assert with_compile == [2], scalars  # the first train scalars once step 2 is timed
  compile_seconds = float(re.search(r"compile_seconds=([0-9.e+-]+)", scalars[2]).group(1))
  assert 0.4 < compile_seconds < 3.0
  assert re.search(r"Step 1 \(compilation \+ one step\): [0-9.]+ s", caplog.text)
  assert re.search(r"Step 2 \(one step\): [0-9.]+ s; compilation took [0-9.]+ s", caplog.text)


def test_a_one_step_run_reports_its_first_step_time(tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    _run(tmp_path, _config(3), start_step=2)  # resumed at step 2: one step left
  assert "compile_seconds=" in _train_scalars(caplog.text)[3]


def test_profile_steps_write_a_trace_of_those_steps(tmp_path, monkeypatch):
  events = []
  start, stop = jax.profiler.start_trace, jax.profiler.stop_trace
  monkeypatch.setattr(jax.profiler, "start_trace",
                      lambda logdir: (events.append("start"), start(logdir)))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: (events.append("stop"), stop()))
  _run(tmp_path, _config(5, profile_steps="2-3"), events)
  assert events == [1, "start", 2, 3, "stop", 4, 5]
  traces = list((tmp_path / "profile").glob("plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_a_run_resumed_inside_the_window_traces_the_rest_of_it(tmp_path, monkeypatch):
  events = []
  monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: events.append("start"))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
  _run(tmp_path, _config(6, profile_steps="2-8"), events, start_step=3)
  assert events == ["start", 4, 5, 6, "stop"]
