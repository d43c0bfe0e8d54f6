"""Weight loading (best checkpoint, converted dirs, channel order) and image grids."""

import grain
import numpy as np
import pytest

from lipsync_jax import convert
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
  variables = components.load_variables(str(tmp_path), "syncnet", "syncnet")
  np.testing.assert_array_equal(variables["params"]["w"], [2.0, 2.0, 2.0])
  assert set(variables) == {"params", "batch_stats"}


def test_converted_dir_with_the_wrong_channel_order_is_refused(tmp_path):
  variables = {"params": {"w": np.ones(2, np.float32)}, "batch_stats": {}}
  convert.save_converted(tmp_path / "expert", variables,
                         {"model": "syncnet", "channel_order": "bgr"})
  with pytest.raises(components.ConfigError, match="channel_order=bgr"):
    components.load_variables(str(tmp_path / "expert"), "syncnet", "syncnet",
                              channel_order="rgb")
  loaded = components.load_variables(str(tmp_path / "expert"), "syncnet", "syncnet",
                                     channel_order="bgr")
  np.testing.assert_array_equal(loaded["params"]["w"], [1.0, 1.0])


def test_missing_checkpoint_and_random_expert():
  with pytest.raises(FileNotFoundError, match="nowhere.pth"):
    components.load_variables("/nowhere.pth", "syncnet", "syncnet")
  with pytest.raises(components.ConfigError, match="'random'"):
    components.load_syncnet_variables("", "expert")
  assert components.load_syncnet_variables("random", "expert") is None


def test_image_grid_columns_are_reference_masked_generated_target():
  t, h, w = 5, 4, 6
  inputs = np.concatenate([np.full((t, h, w, 3), 0.1), np.full((t, h, w, 3), 0.2)], -1)
  grid = components.image_grid(inputs, np.full((t, h, w, 3), 0.3), np.full((t, h, w, 3), 0.4))
  assert grid.shape == (t * h, 4 * w, 3)
  np.testing.assert_allclose(grid[0, ::w, 0], [0.2, 0.1, 0.3, 0.4])
  assert components.mouth_crop(np.zeros((2, 96, 96, 3))).shape == (2, 30, 48, 3)
