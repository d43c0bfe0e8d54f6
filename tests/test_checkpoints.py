"""The one loading module: workdirs (best checkpoint), converted folders (channel order),
missing checkpoints, and the training components that load through it."""

import grain
import numpy as np
import pytest

from lipsync_jax import checkpoints, errors
from lipsync_jax.train import components, trainer
from lipsync_jax.train.state import ModelState


def _syncnet_state(value: float) -> dict:
  return {"syncnet": ModelState(params={"w": np.full(3, value, np.float32)},
                                batch_stats={"mean": np.zeros(3, np.float32)},
                                opt_state={"count": np.zeros((), np.int32)})}


def test_workdir_gives_the_best_checkpoint_by_eval_loss(tmp_path):
  checkpointer = trainer.Checkpointer(tmp_path / "checkpoints", keep=1, best_metric="loss")
  iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
  for step, (value, loss) in enumerate([(1.0, 0.9), (2.0, 0.4), (3.0, 0.7)], start=1):
    checkpointer.save(step, _syncnet_state(value), iterator, {"loss": loss})
  checkpointer.close()
  # Kept: the latest (3) and the best (2).
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == ["2", "3"]
  variables = checkpoints.load_variables(str(tmp_path), "syncnet", "syncnet")
  np.testing.assert_array_equal(variables["params"]["w"], [2.0, 2.0, 2.0])
  assert set(variables) == {"params", "batch_stats"}


def test_converted_dir_with_the_wrong_channel_order_is_refused(tmp_path):
  variables = {"params": {"w": np.ones(2, np.float32)}, "batch_stats": {}}
  checkpoints.save_converted(tmp_path / "expert", variables,
                         {"model": "syncnet", "channel_order": "bgr"})
  with pytest.raises(errors.CheckpointError, match="channel_order=bgr"):
    checkpoints.load_variables(str(tmp_path / "expert"), "syncnet", "syncnet",
                              channel_order="rgb")
  loaded = checkpoints.load_variables(str(tmp_path / "expert"), "syncnet", "syncnet",
                                     channel_order="bgr")
  np.testing.assert_array_equal(loaded["params"]["w"], [1.0, 1.0])


def test_missing_checkpoint_and_random_expert():
  with pytest.raises(errors.CheckpointError, match="nowhere.pth: no such checkpoint"):
    checkpoints.load_variables("/nowhere.pth", "syncnet", "syncnet")
  with pytest.raises(errors.ConfigError, match="'random'"):
    components.load_syncnet_variables("", "expert")
  assert components.load_syncnet_variables("random", "expert") is None
