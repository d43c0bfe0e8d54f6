"""CBAM, FFC, AdaIN and semantic alignment against NumPy written from the papers' formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax.models import attention


def _sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def _conv(x, kernel, pad):
  """Zero-padded stride-1 cross-correlation, x (B, H, W, Cin), kernel (kh, kw, Cin, Cout)."""
  kh, kw = kernel.shape[:2]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  return sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w], kernel[i, j])
             for i in range(kh) for j in range(kw))


def _bn(x, params, stats, eps=1e-5):
  return (x - stats["mean"]) / np.sqrt(stats["var"] + eps) * params["scale"] + params["bias"]


def _np(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def _randomise(variables, seed):
  """Random values for every leaf; BatchNorm variances positive."""
  rng = np.random.default_rng(seed)
  def leaf(path, value):
    if "var" in jax.tree_util.keystr(path):
      return jnp.asarray(rng.uniform(0.5, 2.0, value.shape), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.5, value.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, variables)


def _channel_attention(x, p):
  mlp = lambda v: np.maximum(v @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0) @ (
      p["out"]["kernel"]) + p["out"]["bias"]
  return _sigmoid(mlp(x.mean(axis=(1, 2), keepdims=True)) + mlp(x.max(axis=(1, 2),
                                                                      keepdims=True)))


def _spatial_attention(x, p):
  pooled = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
  return _sigmoid(_conv(pooled, p["conv"]["kernel"], 3) + p["conv"]["bias"])


def _fourier_unit(x, p, s):
  spectrum = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
  y = np.concatenate([spectrum.real, spectrum.imag], -1)
  y = np.maximum(_bn(_conv(y, p["conv"]["kernel"], 0), p["bn"], s["bn"]), 0)
  c = y.shape[-1] // 2
  return np.fft.irfft2(y[..., :c] + 1j * y[..., c:], s=x.shape[1:3], axes=(1, 2), norm="ortho")


def _spectral_transform(x, p, s):
  h = np.maximum(_bn(_conv(x, p["conv_in"]["kernel"], 0), p["bn_in"], s["bn_in"]), 0)
  h = h + _fourier_unit(h, p["fourier"], s["fourier"])
  return _conv(h, p["conv_out"]["kernel"], 0)


def _ffc(x, p, s, in_local):
  x_l, x_g = x[..., :in_local], x[..., in_local:]
  y_l = _conv(x_l, p["local_to_local"]["kernel"], 1) + _conv(x_g, p["global_to_local"]["kernel"],
                                                             1)
  y_g = _conv(x_l, p["local_to_global"]["kernel"], 1) + _spectral_transform(
      x_g, p["global_to_global"], s["global_to_global"])
  return np.concatenate([y_l, y_g], -1)


def _instance_norm(x, eps=1e-5):
  return (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True)
                                                             + eps)


X = np.random.default_rng(0).normal(size=(2, 6, 5, 8)).astype(np.float32)
AUDIO = np.random.default_rng(1).normal(size=(2, 12)).astype(np.float32)


def test_channel_attention_matches_numpy():
  module = attention.ChannelAttention(reduction=4)
  params = _randomise(module.init(jax.random.key(0), X), 1)["params"]
  assert params["hidden"]["kernel"].shape == (8, 2)
  got = module.apply({"params": params}, X)
  assert got.shape == (2, 1, 1, 8)
  np.testing.assert_allclose(np.asarray(got), _channel_attention(X, _np(params)), atol=1e-5)


def test_spatial_attention_matches_numpy():
  module = attention.SpatialAttention()
  params = _randomise(module.init(jax.random.key(0), X), 2)["params"]
  got = module.apply({"params": params}, X)
  assert got.shape == (2, 6, 5, 1)
  np.testing.assert_allclose(np.asarray(got), _spatial_attention(X, _np(params)), atol=1e-5)


def test_cbam_applies_channel_then_spatial_attention():
  module = attention.CBAM(reduction=4)
  params = _randomise(module.init(jax.random.key(0), X), 3)["params"]
  p = _np(params)
  after_channel = X * _channel_attention(X, p["channel"])
  expected = after_channel * _spatial_attention(after_channel, p["spatial"])
  np.testing.assert_allclose(np.asarray(module.apply({"params": params}, X)), expected,
                             atol=1e-5)


@pytest.mark.parametrize("use_cbam", [True, False])
def test_residual_cbam_block_matches_numpy(use_cbam):
  module = attention.ResidualCBAMBlock(8, use_cbam=use_cbam, reduction=4)
  variables = _randomise(module.init(jax.random.key(0), X), 4)
  p, s = _np(variables["params"]), _np(variables["batch_stats"])
  assert ("cbam" in p) == use_cbam
  h = np.maximum(_bn(_conv(X, p["conv_block"]["conv"]["kernel"], 1) + p["conv_block"]["conv"]
                     ["bias"], p["conv_block"]["bn"], s["conv_block"]["bn"]), 0)
  h = _bn(_conv(h, p["conv"]["kernel"], 1) + p["conv"]["bias"], p["bn"], s["bn"])
  if use_cbam:
    h = h * _channel_attention(h, p["cbam"]["channel"])
    h = h * _spatial_attention(h, p["cbam"]["spatial"])
  np.testing.assert_allclose(np.asarray(module.apply(variables, X)), np.maximum(X + h, 0),
                             atol=1e-4)


def test_spectral_transform_matches_numpy_fft():
  module = attention.SpectralTransform(6)
  variables = _randomise(module.init(jax.random.key(0), X), 5)
  expected = _spectral_transform(X, _np(variables["params"]), _np(variables["batch_stats"]))
  got = module.apply(variables, X)
  assert got.shape == (2, 6, 5, 6)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)


def test_fast_fourier_conv_matches_numpy_and_sees_the_whole_plane():
  module = attention.FastFourierConv(8, global_ratio=0.5)
  variables = _randomise(module.init(jax.random.key(0), X), 6)
  expected = _ffc(X, _np(variables["params"]), _np(variables["batch_stats"]), in_local=4)
  got = np.asarray(module.apply(variables, X))
  np.testing.assert_allclose(got, expected, atol=1e-4)
  # A change of the global inputs at one pixel reaches the global outputs at every pixel,
  # the local outputs only within the 3x3 neighbourhood.
  poked = X.copy()
  poked[:, 0, 0, 4:] += 3.0
  delta = np.abs(np.asarray(module.apply(variables, poked)) - got)
  assert delta[:, 4:, 3:, 4:].max(axis=-1).min() > 1e-5
  assert delta[:, 4:, 3:, :4].max() == 0


def test_fast_fourier_conv_rejects_an_empty_branch():
  with pytest.raises(ValueError, match="global_ratio"):
    attention.FastFourierConv(8, global_ratio=0.0).init(jax.random.key(0), X)


def test_adain_matches_closed_form():
  module = attention.AdaIN(eps=1e-3)
  params = _randomise(module.init(jax.random.key(0), X, AUDIO), 7)["params"]
  p = _np(params)
  gamma = 1 + AUDIO @ p["gamma"]["kernel"] + p["gamma"]["bias"]
  beta = AUDIO @ p["beta"]["kernel"] + p["beta"]["bias"]
  expected = gamma[:, None, None] * _instance_norm(X, 1e-3) + beta[:, None, None]
  got = np.asarray(module.apply({"params": params}, X, AUDIO))
  np.testing.assert_allclose(got, expected, atol=1e-4)
  np.testing.assert_allclose(got.mean(axis=(1, 2)), beta, atol=1e-4)


@pytest.mark.parametrize("use_ffc", [True, False])
def test_semantic_alignment_depends_on_audio(use_ffc):
  module = attention.SemanticAlignment(use_ffc=use_ffc)
  variables = _randomise(module.init(jax.random.key(0), X, AUDIO), 8)
  assert ("ffc" in variables["params"]) == use_ffc
  out = np.asarray(module.apply(variables, X, AUDIO))
  assert out.shape == X.shape and out.min() >= 0
  assert np.abs(out - np.asarray(module.apply(variables, X, AUDIO[::-1]))).max() > 1e-2


@pytest.mark.parametrize("use_ffc", [True, False])
def test_semantic_alignment_with_zero_audio_dense_is_instance_normalised_residual(use_ffc):
  module = attention.SemanticAlignment(use_ffc=use_ffc)
  variables = _randomise(module.init(jax.random.key(0), X, AUDIO), 9)
  variables["params"]["adain"] = jax.tree_util.tree_map(jnp.zeros_like,
                                                        variables["params"]["adain"])
  p, s = _np(variables["params"]), _np(variables.get("batch_stats", {}))
  features = (_ffc(X, p["ffc"], s["ffc"], in_local=4) if use_ffc
              else _conv(X, p["conv"]["kernel"], 1))
  expected = np.maximum(X + _instance_norm(features), 0)
  got = np.asarray(module.apply(variables, X, AUDIO))
  np.testing.assert_allclose(got, expected, atol=1e-4)
  np.testing.assert_allclose(got, np.asarray(module.apply(variables, X, 3 * AUDIO)), atol=1e-6)


def test_adain_starts_as_instance_normalisation():
  module = attention.AdaIN()
  variables = module.init(jax.random.key(0), X, AUDIO)
  np.testing.assert_allclose(np.asarray(module.apply(variables, X, AUDIO)), _instance_norm(X),
                             atol=1e-4)
