"""Training reports: image grids and the mouth crop."""

import numpy as np

from lipsync_jax import losses
from lipsync_jax.train import reporting


def test_image_grid_columns_are_reference_masked_generated_target():
  t, h, w = 5, 4, 6
  inputs = np.concatenate([np.full((t, h, w, 3), 0.1), np.full((t, h, w, 3), 0.2)], -1)
  grid = reporting.image_grid(inputs, np.full((t, h, w, 3), 0.3), np.full((t, h, w, 3), 0.4))
  assert grid.shape == (t * h, 4 * w, 3)
  np.testing.assert_allclose(grid[0, ::w, 0], [0.2, 0.1, 0.3, 0.4])
  mouth = reporting.mouth_crop(np.arange(96 * 96, dtype=np.float32).reshape(1, 96, 96, 1))
  rows, columns = losses.mouth_slices(96, 96)  # One mouth region for losses and reports.
  assert mouth.shape == (1, rows.stop - rows.start, columns.stop - columns.start, 1)
  assert mouth[0, 0, 0, 0] == rows.start * 96 + columns.start
