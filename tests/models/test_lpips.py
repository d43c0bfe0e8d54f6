"""LPIPS against a PyTorch implementation of the reference package's math (tests/references)."""

import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lipsync_jax.models import lpips
from lipsync_jax.torch_checkpoint import read_state_dict
from references.torch_lpips import TorchLPIPS

LPIPS_WHEEL_VERSION = "0.1.4"


@pytest.fixture(scope="module")
def models():
  """A random torchvision-style backbone (random biases too) + shipped heads, both sides."""
  reference = TorchLPIPS(lpips.load_lpips_heads()).randomize_(seed=0)
  state_dict = {k: v.numpy() for k, v in reference.features.state_dict(prefix="features.").items()}
  variables = lpips.lpips_variables_from_state_dict(state_dict)
  return reference, variables


def _torch_distance(reference, x, y, spatial=False):
  nchw = lambda a: torch.from_numpy(np.asarray(a).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    out = reference(nchw(x), nchw(y), spatial=spatial).numpy()
  return out.transpose(0, 2, 3, 1) if spatial else out


_distance = jax.jit(lambda variables, x, y: lpips.LPIPS().apply(variables, x, y))


def _structured_pair(size, seed):
  """Smooth shapes and edges; the second image shifted, brightened and blurred a little."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  channels = [np.sin(2 * np.pi * (f * xx + g * yy)) for f, g in rng.uniform(0.5, 4, (3, 2))]
  image = 0.6 * np.stack(channels, -1)
  image[size // 4:size // 2, size // 3:2 * size // 3] = [0.9, -0.8, 0.2]  # A sharp box.
  other = np.roll(image, 2, axis=1) + 0.1
  other = 0.5 * other + 0.25 * (np.roll(other, 1, axis=0) + np.roll(other, -1, axis=0))
  return image[None].astype(np.float32), np.clip(other, -1, 1)[None].astype(np.float32)


def _assert_parity(models, x, y):
  reference, variables = models
  ours = np.asarray(_distance(variables, x, y))
  expected = _torch_distance(reference, x, y)
  assert ours.shape == (x.shape[0],) and np.all(expected > 0)
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=0)


def test_parity_on_random_pairs(models):
  rng = np.random.default_rng(1)
  x, y = rng.uniform(-1, 1, (2, 2, 64, 64, 3)).astype(np.float32)
  _assert_parity(models, x, y)


def test_parity_on_structured_pairs(models):
  pairs = [_structured_pair(64, seed) for seed in (2, 3)]
  x, y = (np.concatenate(images) for images in zip(*pairs))
  _assert_parity(models, x, y)
  _assert_parity(models, *_structured_pair(96, 4))


def test_spatial_map_matches_reference(models):
  reference, variables = models
  x, y = _structured_pair(40, 5)  # 40 -> 20 -> 10 -> 5 -> 2: uneven upsampling factors.
  ours = np.asarray(jax.jit(lpips.LPIPS(spatial=True).apply)(variables, x, y))
  assert ours.shape == (1, 40, 40, 1)
  np.testing.assert_allclose(ours, _torch_distance(reference, x, y, spatial=True),
                             rtol=1e-5, atol=1e-7)


def test_identical_images_give_zero(models):
  _, variables = models
  x = np.concatenate([_structured_pair(64, 6)[0], _structured_pair(64, 7)[1]])
  distances = np.asarray(_distance(variables, x, x))
  assert distances.shape == (2,)
  np.testing.assert_allclose(distances, 0.0, atol=1e-10)  # Typical distances are ~0.1.


def test_distance_grows_with_noise(models):
  _, variables = models
  image = np.repeat(_structured_pair(64, 8)[0], 2, axis=0)
  noise = np.random.default_rng(9).normal(size=image.shape).astype(np.float32)
  levels = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
  distances = []
  for low, high in zip(levels[::2], levels[1::2]):
    noisy = image + np.array([low, high], np.float32)[:, None, None, None] * noise
    distances.extend(np.asarray(_distance(variables, image, noisy)))
  assert np.all(np.diff(distances) > 0), distances


def test_gradients_are_finite_also_at_identical_inputs(models):
  _, variables = models
  x, y = _structured_pair(32, 10)
  grad_fn = jax.jit(jax.grad(lambda x, y: lpips.LPIPS().apply(variables, x, y).sum()))
  grad = np.asarray(grad_fn(x, y))
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
  assert np.all(np.isfinite(np.asarray(grad_fn(x, x))))


def test_bfloat16_compute_is_close_to_float32(models):
  _, variables = models
  x, y = _structured_pair(32, 11)
  full = _distance(variables, x, y)
  half = jax.jit(lpips.LPIPS(dtype=jnp.bfloat16).apply)(variables, x, y)
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, full, rtol=0.05)


def test_lpips_module_state_dict_and_errors(models):
  reference, variables = models
  heads = lpips.load_lpips_heads()
  state_dict = {"scaling_layer.shift": np.array([-.030, -.088, -.188], np.float32),
                "scaling_layer.scale": np.array([.458, .448, .450], np.float32)}
  for key, value in reference.features.state_dict().items():
    index = int(key.split(".")[0])
    stage = 1 + sum(index >= start for start in (4, 9, 16, 23))
    state_dict[f"net.slice{stage}.{key}"] = value.numpy()
  for layer in range(5):
    state_dict[f"lin{layer}.model.1.weight"] = 2 * heads[f"lin{layer}.model.1.weight"]
    state_dict[f"lins.{layer}.model.1.weight"] = 2 * heads[f"lin{layer}.model.1.weight"]
  converted = lpips.lpips_variables_from_state_dict(state_dict)["params"]
  jax.tree.map(np.testing.assert_array_equal, converted["features"],
               variables["params"]["features"])
  np.testing.assert_array_equal(converted["lin3"]["kernel"],
                                2 * variables["params"]["lin3"]["kernel"])

  broken = {k: v for k, v in state_dict.items() if k != "net.slice3.12.bias"}
  broken["net.slice1.0.weight"] = np.zeros((64, 3, 5, 5), np.float32)
  broken["extra.weight"] = np.zeros(1)
  pattern = r"net.slice3.12.bias.*extra.weight.*net.slice1.0.weight \(64, 3, 5, 5\)"
  with pytest.raises(lpips.LPIPSWeightsError, match=pattern):
    lpips.lpips_variables_from_state_dict(broken)


def test_random_backbone_variables_have_the_module_structure():
  variables = lpips.random_lpips_variables(seed=0)
  x = jnp.zeros((1, 16, 16, 3))
  expected = jax.eval_shape(lpips.LPIPS().init, jax.random.key(0), x, x)
  assert jax.tree.map(lambda a: a.shape, variables) == jax.tree.map(lambda a: a.shape, expected)
  kernel = variables["params"]["features"]["conv4_2"]["kernel"]  # He normal, fan_out 4608.
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / 4608), rtol=0.01)
  np.testing.assert_array_equal(variables["params"]["lin0"]["kernel"][0, 0, :, 0],
                                lpips.load_lpips_heads()["lin0.model.1.weight"][0, :, 0, 0])


def test_lpips_j_h5_files(models, tmp_path):
  """lpips-j's layout: flaxmodels VGG groups conv{s}_{i}/{weight,bias} and lin0..lin4."""
  import h5py  # pylint: disable=g-import-not-at-top
  _, variables = models
  params = jax.tree.map(np.asarray, variables["params"])
  with h5py.File(tmp_path / "vgg16_weights.h5", "w") as f:
    for name, conv in params["features"].items():
      f.create_dataset(f"{name}/weight", data=conv["kernel"])
      f.create_dataset(f"{name}/bias", data=conv["bias"])
    f.create_dataset("fc6/weight", data=np.zeros((4, 2), np.float32))
  with h5py.File(tmp_path / "lpips_lin.h5", "w") as f:
    for layer in range(5):
      f.create_dataset(f"lin{layer}", data=3 * params[f"lin{layer}"]["kernel"])
  loaded = lpips.lpips_variables_from_h5(tmp_path / "vgg16_weights.h5", tmp_path / "lpips_lin.h5")
  jax.tree.map(np.testing.assert_array_equal, loaded["params"]["features"], params["features"])
  np.testing.assert_array_equal(loaded["params"]["lin2"]["kernel"], 3 * params["lin2"]["kernel"])
  shipped = lpips.lpips_variables_from_h5(tmp_path / "vgg16_weights.h5")
  np.testing.assert_array_equal(shipped["params"]["lin2"]["kernel"], params["lin2"]["kernel"])

  with h5py.File(tmp_path / "lpips_lin.h5", "a") as f:
    del f["lin0"]
    f.create_dataset("lin0", data=np.zeros((1, 1, 32, 1), np.float32))
  with pytest.raises(lpips.LPIPSWeightsError, match=r"lpips_lin.h5.*lin0.* \(1, 32, 1, 1\)"):
    lpips.lpips_variables_from_h5(tmp_path / "vgg16_weights.h5", tmp_path / "lpips_lin.h5")
  with h5py.File(tmp_path / "vgg16_weights.h5", "a") as f:
    del f["conv4_2/bias"]
  with pytest.raises(lpips.LPIPSWeightsError, match="vgg16_weights.h5: no group 'conv4_2'"):
    lpips.lpips_variables_from_h5(tmp_path / "vgg16_weights.h5")


def test_shipped_heads_equal_the_registry_wheel(tmp_path):
  """Re-reads lpips/weights/v0.1/vgg.pth from the registry wheel with our reader."""
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             f"lpips=={LPIPS_WHEEL_VERSION}", "-d", str(tmp_path)]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
  if result.returncode != 0:
    pytest.fail(f"`{' '.join(command)}` failed (is the package registry reachable?):\n"
                f"{result.stderr[-2000:]}")
  wheel, = tmp_path.glob("lpips-*.whl")
  with zipfile.ZipFile(wheel) as archive:
    (tmp_path / "vgg.pth").write_bytes(archive.read("lpips/weights/v0.1/vgg.pth"))
  from_wheel = read_state_dict(tmp_path / "vgg.pth")
  shipped = lpips.load_lpips_heads()
  assert sorted(from_wheel) == sorted(shipped)
  assert sum(v.size for v in shipped.values()) == 1472
  for key, value in from_wheel.items():
    assert shipped[key].dtype == np.float32
    np.testing.assert_array_equal(shipped[key], value)
