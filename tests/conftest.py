"""Shared test set-up: keep PyTorch references to few threads on the 2-core machines."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _limit_torch_threads():
  try:
    import torch
  except ImportError:
    yield
    return
  torch.set_num_threads(1)
  yield
