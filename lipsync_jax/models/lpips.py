"""LPIPS perceptual distance (Zhang et al., CVPR 2018), VGG16 variant, version 0.1.

Matches the reference `lpips` package (`lpips.LPIPS(net="vgg", version="0.1")`):

  x' = (x - shift) / scale                       per RGB channel, x in [-1, 1]
  f_l = VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
  u_l = f_l / (||f_l||_channels + 1e-10)
  d(x, y) = sum_l mean_hw( sum_c w_lc (u_l(x) - u_l(y))_c^2 )

The linear heads w_l (1,472 floats) are the reference package's v0.1 VGG weights,
shipped in `lipsync_jax/weights/` (BSD-2-Clause, see `LICENSE_lpips.txt`). The
VGG16 backbone comes from a torchvision `vgg16` state dict (ImageNet weights are
not shipped): `lpips_variables_from_state_dict`, or through
`lipsync_jax.convert.load_torch_checkpoint(path, model="lpips_vgg16")`, or
from lpips-j's h5 files (`lpips_variables_from_h5`). lpips-j itself is not used:
it downloads its weights from a model hub when constructed.
`random_lpips_variables` builds a random backbone for tests and demos only.

Parameter tree: `params/features/conv{stage}_{i}/{kernel,bias}` (the 13 VGG
convs, VGG's own names) and `params/lin{l}/kernel` (1, 1, C_l, 1).
"""

import importlib.resources
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lipsync_jax.errors import CheckpointError

Dtype = Any

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
HEADS_FILE = "lpips_vgg_v0.1_heads.npz"
# (channels, convolutions) of VGG16's five stages; a 2x2 max pool precedes stages 2-5.
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# Our conv names and their index in torchvision's `vgg16().features`.
VGG16_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10,
    "conv3_2": 12, "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}
NUM_HEADS = len(VGG16_STAGES)


class LPIPSWeightsError(CheckpointError):
  """A state dict does not hold the LPIPS / VGG16 weights (missing, unexpected, mis-shaped)."""


class VGG16Features(nn.Module):
  """torchvision's `vgg16().features` up to relu5_3 (3x3 convs, padding 1, ReLU).

  Input (B, H, W, 3); returns the five stage outputs relu1_2 ... relu5_3, of
  shapes (B, H / 2^s, W / 2^s, C_s) for s = 0..4 (max pools floor odd sizes).
  Random init is torchvision's: He normal (fan_out), zero bias.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> list[jnp.ndarray]:
    names = iter(VGG16_CONV_INDEX)
    taps = []
    for stage, (features, num_convs) in enumerate(VGG16_STAGES):
      if stage:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for _ in range(num_convs):
        x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                    kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                    dtype=self.dtype, param_dtype=self.param_dtype, name=next(names))(x)
        x = nn.relu(x)
      taps.append(x)
    return taps


class LPIPS(nn.Module):
  """LPIPS distance between image pairs.

  `__call__(x, y)`: x, y (B, H, W, 3) RGB in [-1, 1], H, W >= 16. Returns (B,)
  float32 distances, or with `spatial=True` the (B, H, W, 1) map: each layer's
  head output bilinearly upsampled to (H, W) (align_corners=False, as the
  reference), summed over layers. `dtype` is the backbone's compute dtype; the
  normalisation, differences and heads always run in float32.
  """
  spatial: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"LPIPS expects two (B, H, W, 3) images, got {x.shape} and {y.shape}")
    batch, height, width, _ = x.shape
    backbone = VGG16Features(self.dtype, self.param_dtype, name="features")
    # Two passes rather than one over the concatenation: when only x needs a gradient
    # (a loss against a fixed target), the backward pass then skips y's half.
    taps_x, taps_y = (backbone((image - jnp.asarray(SHIFT)) / jnp.asarray(SCALE))
                      for image in (x, y))
    total = 0.0
    for layer, (tap_x, tap_y) in enumerate(zip(taps_x, taps_y)):
      squared_diff = (_unit_channels(tap_x) - _unit_channels(tap_y))**2
      weighted = nn.Conv(1, (1, 1), use_bias=False, dtype=jnp.float32,
                         param_dtype=self.param_dtype, name=f"lin{layer}")(squared_diff)
      if self.spatial:
        total = total + jax.image.resize(weighted, (batch, height, width, 1), "bilinear")
      else:
        total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def _unit_channels(features: jnp.ndarray) -> jnp.ndarray:
  """Each pixel's channel vector divided by (its L2 norm + 1e-10), in float32."""
  features = features.astype(jnp.float32)
  return features / (jnp.sqrt(jnp.sum(features**2, axis=-1, keepdims=True)) + NORM_EPS)


def load_lpips_heads() -> dict[str, np.ndarray]:
  """The shipped v0.1 VGG heads: {"lin{l}.model.1.weight": float32 (1, C_l, 1, 1)}.

  Keys and layout are the reference package's (`lpips/weights/v0.1/vgg.pth`).
  """
  resource = importlib.resources.files("lipsync_jax") / "weights" / HEADS_FILE
  with resource.open("rb") as f, np.load(f) as data:
    return {key: data[key] for key in data.files}


def _conv_stages() -> list[tuple[int, int]]:
  """The (channels, convolutions) stage entry of each of the 13 convs, in order."""
  return [stage for stage in VGG16_STAGES for _ in range(stage[1])]


def _head_key(layer: int) -> str:
  return f"lin{layer}.model.1.weight"


def _backbone_keys(state_dict: Mapping[str, Any]) -> dict[str, str]:
  """Maps each of our conv names to the state dict's key prefix (lpips module or torchvision)."""
  prefixes = {}
  for name, index in VGG16_CONV_INDEX.items():
    lpips_prefix = f"net.slice{name[4]}.{index}"  # conv{stage}_{i} lives in slice{stage}.
    prefixes[name] = lpips_prefix if f"{lpips_prefix}.weight" in state_dict else f"features.{index}"
  return prefixes


def lpips_variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """LPIPS variables {"params": ...} from a PyTorch-style state dict.

  Args:
    state_dict: numpy arrays (e.g. from `torch_checkpoint.read_state_dict`) with
      the backbone as torchvision's `vgg16` (`features.N.weight|bias`; the
      `classifier.*` keys are ignored) or as an `lpips.LPIPS` module's
      (`net.sliceK.N.weight|bias`, `scaling_layer.*`, `lins.L.*` aliases). The
      heads `linL.model.1.weight` are taken from it when present, else the
      shipped v0.1 heads are used.
  Returns:
    {"params": {"features": {conv name: {"kernel", "bias"}}, "lin0".."lin4": {"kernel"}}},
    float32 jnp arrays, kernels (kH, kW, Cin, Cout).
  Raises:
    LPIPSWeightsError naming missing, unexpected or mis-shaped keys.
  """
  state_dict = dict(state_dict)
  for layer in range(NUM_HEADS):  # An lpips.LPIPS module stores each head twice.
    alias = state_dict.pop(f"lins.{layer}.model.1.weight", None)
    if alias is not None:
      own = state_dict.setdefault(_head_key(layer), alias)
      if not np.array_equal(own, alias):
        raise LPIPSWeightsError(f"'{_head_key(layer)}' and its alias 'lins.{layer}...' differ")
  for name, constant in (("shift", SHIFT), ("scale", SCALE)):
    value = state_dict.pop(f"scaling_layer.{name}", None)
    if value is not None and not np.allclose(np.ravel(value), constant):
      raise LPIPSWeightsError(f"'scaling_layer.{name}' is {np.ravel(value)}, expected {constant}")
  if not any(_head_key(layer) in state_dict for layer in range(NUM_HEADS)):
    state_dict.update(load_lpips_heads())

  expected_shapes, in_channels = {}, 3
  prefixes = _backbone_keys(state_dict)
  for name, (features, _) in zip(VGG16_CONV_INDEX, _conv_stages()):
    expected_shapes[f"{prefixes[name]}.weight"] = (features, in_channels, 3, 3)
    expected_shapes[f"{prefixes[name]}.bias"] = (features,)
    in_channels = features
  for layer, (features, _) in enumerate(VGG16_STAGES):
    expected_shapes[_head_key(layer)] = (1, features, 1, 1)

  missing = sorted(set(expected_shapes) - set(state_dict))
  unexpected = sorted(k for k in set(state_dict) - set(expected_shapes)
                      if not k.startswith("classifier."))
  mis_shaped = [f"{k} {tuple(np.shape(state_dict[k]))} != {shape}"
                for k, shape in expected_shapes.items()
                if k in state_dict and tuple(np.shape(state_dict[k])) != shape]
  if missing or unexpected or mis_shaped:
    raise LPIPSWeightsError(f"not a VGG16/LPIPS state dict: missing {missing}, "
                            f"unexpected {unexpected}, mis-shaped {mis_shaped}")

  features = {name: {"kernel": _as_kernel(state_dict[f"{prefix}.weight"]),
                     "bias": jnp.asarray(np.asarray(state_dict[f"{prefix}.bias"], np.float32))}
              for name, prefix in prefixes.items()}
  return {"params": {"features": features, **_head_params(state_dict)}}


def _as_kernel(weight: Any) -> jnp.ndarray:
  """PyTorch Conv2d weight (O, I, kH, kW) -> flax kernel (kH, kW, I, O), float32."""
  return jnp.asarray(np.asarray(weight, np.float32).transpose(2, 3, 1, 0))


def _head_params(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  return {f"lin{layer}": {"kernel": _as_kernel(state_dict[_head_key(layer)])}
          for layer in range(NUM_HEADS)}


def lpips_variables_from_h5(vgg_path: str | os.PathLike,
                            lin_path: str | os.PathLike | None = None) -> dict[str, Any]:
  """LPIPS variables from lpips-j's two h5 files (needs `h5py`, not a runtime dependency).

  Args:
    vgg_path: `vgg16_weights.h5` of flaxmodels/lpips-j: groups `conv{s}_{i}` holding
      `weight` (3, 3, Cin, Cout) and `bias`; the `fc*` groups are ignored.
    lin_path: `lpips_lin.h5`: datasets `lin0` .. `lin4` of shape (1, 1, C, 1), or
      None for the shipped v0.1 heads.
  Raises:
    LPIPSWeightsError naming the file and the missing or mis-shaped entry.
  """
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading lpips-j's h5 weight files needs h5py: "
                      "pip install 'h5py>=3.8'") from e
  to_torch = lambda kernel: np.asarray(kernel, np.float32).transpose(3, 2, 0, 1)
  state_dict = {}
  with h5py.File(vgg_path, "r") as f:
    for name, index in VGG16_CONV_INDEX.items():
      if not isinstance(f.get(name), h5py.Group) or not {"weight", "bias"} <= set(f[name]):
        raise LPIPSWeightsError(
            f"{os.fspath(vgg_path)}: no group '{name}' with 'weight' and 'bias'")
      state_dict[f"features.{index}.weight"] = to_torch(f[name]["weight"][()])
      state_dict[f"features.{index}.bias"] = np.asarray(f[name]["bias"][()], np.float32)
  if lin_path is not None:
    with h5py.File(lin_path, "r") as f:
      for layer in range(NUM_HEADS):
        if not isinstance(f.get(f"lin{layer}"), h5py.Dataset):
          raise LPIPSWeightsError(f"{os.fspath(lin_path)}: no dataset 'lin{layer}'")
        state_dict[_head_key(layer)] = to_torch(f[f"lin{layer}"][()])
  try:
    return lpips_variables_from_state_dict(state_dict)
  except LPIPSWeightsError as e:
    raise LPIPSWeightsError(f"{os.fspath(vgg_path)}, {lin_path}: {e} (keys in torchvision "
                            "naming, shapes (O, I, kH, kW))") from e


def random_lpips_variables(seed: int = 0) -> dict[str, Any]:
  """LPIPS variables with a random VGG16 backbone and the shipped heads.

  For tests and demos only (`lpips.backbone = "random"`); logs a warning, since
  the distance is then not a perceptual one. The backbone follows torchvision's
  init (He normal over fan_out, zero bias), drawn with numpy from `seed`: 14.7 M
  values, which jax's counter-based generator takes many seconds for on a CPU.
  """
  logging.warning("LPIPS uses a RANDOM VGG16 backbone (backbone='random'): its distances "
                  "are not perceptual. Convert torchvision vgg16 weights for real use.")
  rng = np.random.default_rng(seed)
  state_dict, in_channels = {}, 3
  for index, (channels, _) in zip(VGG16_CONV_INDEX.values(), _conv_stages()):
    std = np.sqrt(2.0 / (channels * 9))
    state_dict[f"features.{index}.weight"] = std * rng.standard_normal(
        (channels, in_channels, 3, 3), np.float32)
    state_dict[f"features.{index}.bias"] = np.zeros(channels, np.float32)
    in_channels = channels
  return lpips_variables_from_state_dict(state_dict)
