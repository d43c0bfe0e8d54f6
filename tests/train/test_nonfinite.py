"""The training loop stops at the first non-finite step, not at the next log step."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from lipsync_jax.train import trainer

import fake_loop


@pytest.mark.parametrize("bad_step", [1, 3, 7])
def test_stops_at_the_first_nonfinite_step_naming_it(tmp_path, bad_step):
  config = base.get_config()
  config.num_train_steps = 50
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 1000
  dispatched = []

  def train_step(state, batch):
    del batch
    step = int(state.step) + 1
    dispatched.append(step)
    loss = jnp.float32(np.nan if step == bad_step else 1.0)
    return state.replace(step=state.step + 1), {"loss": loss, "l1": jnp.float32(0.5)}, None

  state = fake_loop.fake_state()
  with pytest.raises(trainer.NonFiniteLossError, match=rf"step {bad_step}: loss=nan"):
    trainer._train_loop(config, tmp_path, state, train_step, lambda s: {},  # pylint: disable=protected-access
                        fake_loop.FakeData(), "loss")
  # A step's metrics are read once computed (the host waits only when 2 steps are
  # unchecked): the loop stops within 3 steps of the bad one, not at the next log step
  # 1000 steps later.
  assert dispatched[:bad_step] == list(range(1, bad_step + 1))
  assert bad_step <= len(dispatched) <= bad_step + 3


def test_unfinished_steps_are_not_read_until_two_are_pending():
  class _Pending:
    def __init__(self, ready):
      self.ready = ready

    def is_ready(self):
      return self.ready

  unfinished = [(1, {"loss": _Pending(False)}), (2, {"loss": _Pending(False)})]
  assert trainer._check_finished_steps(list(unfinished)) == unfinished  # pylint: disable=protected-access


def test_skip_keeps_training_past_a_nonfinite_step(tmp_path):
  config = base.get_config()
  config.num_train_steps = 6
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 1000
  config.on_nonfinite = "skip"
  seen = []

  def train_step(state, batch):
    del batch
    seen.append(int(state.step) + 1)
    loss = jnp.float32(np.nan if int(state.step) == 2 else 1.0)
    return state.replace(step=state.step + 1), {"loss": loss}, None

  def eval_fn(state):
    del state
    return {"loss": 0.0}

  state = fake_loop.fake_state()
  final = trainer._train_loop(config, tmp_path, state, train_step, eval_fn,  # pylint: disable=protected-access
                              fake_loop.FakeData(), "loss")
  assert seen == [1, 2, 3, 4, 5, 6] and int(final.step) == 6
