"""AttnWav2Lip: shapes, jit, gradients, bf16 compute, ablation switches, audio dependence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax.models.attn_wav2lip import AttnWav2Lip
from lipsync_jax.models.wav2lip import Wav2Lip
from references import torch_wav2lip as torch_ref

# Small widths keep compilation fast. FULL_LAYOUT has the default four stages; SHALLOW
# (two stages, one block each) serves the tests that compile several functions.
FULL_LAYOUT = dict(widths=(8, 16, 16, 16, 32), cbam_reduction=4)
SHALLOW = dict(widths=(8, 16, 32), encoder_blocks=1, cbam_reduction=4)
# XLA's CPU backend at optimisation level 0 compiles these graphs in half the time.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _inputs(batch, size, seed=0):
  mel_key, face_key = jax.random.split(jax.random.key(seed))
  mel = jax.random.uniform(mel_key, (batch, 80, 16, 1), minval=-4.0, maxval=4.0)
  faces = jax.random.uniform(face_key, (batch, size, size, 6))
  return mel, faces


def _shapes(model, size):
  mel, faces = _inputs(1, size)
  return jax.eval_shape(model.init, jax.random.key(0), mel, faces)


def _paths(tree):
  return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


@functools.lru_cache(maxsize=None)
def _model_and_variables(size, layout):
  """Random variables for the variable shapes of `model.init`, without compiling init.

  Kernels N(0, 1/fan_in) (flax's lecun scaling; also the AdaIN kernels, which flax
  initialises to zero, so the audio path through AdaIN is exercised), biases
  N(0, 0.1^2), BatchNorm scale 1, running mean 0 and variance 1.
  """
  model = AttnWav2Lip(img_size=size, **dict(layout))
  rng = np.random.default_rng(size)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "kernel" in name:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), jnp.float32)
    if "scale" in name or "var" in name:
      return jnp.ones(leaf.shape, jnp.float32)
    if "mean" in name:
      return jnp.zeros(leaf.shape, jnp.float32)
    return jnp.asarray(rng.normal(0, 0.1, leaf.shape), jnp.float32)

  return model, jax.tree_util.tree_map_with_path(fill, _shapes(model, size))


@pytest.mark.parametrize("size", [96, 192])
def test_forward_shape_range_jit_and_audio_dependence(size):
  model, variables = _model_and_variables(size, tuple(FULL_LAYOUT.items()))
  mel, faces = _inputs(2, size, seed=2)
  apply = fast_jit(model.apply)
  out = apply(variables, mel, faces)
  assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32
  assert float(out.min()) > 0.0 and float(out.max()) < 1.0
  swapped = apply(variables, mel[::-1], faces)
  assert float(jnp.abs(out - swapped)[0].max()) > 1e-4
  assert float(jnp.abs(out - swapped)[1].max()) > 1e-4


def test_train_mode_updates_every_batch_statistic():
  model, variables = _model_and_variables(96, tuple(SHALLOW.items()))
  mel, faces = _inputs(2, 96, seed=3)
  out, updates = fast_jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      variables, mel, faces)
  assert out.shape == (2, 96, 96, 3)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))


def test_gradients_finite_and_nonzero_for_every_parameter():
  model, variables = _model_and_variables(96, tuple(SHALLOW.items()))
  mel, faces = _inputs(2, 96, seed=4)
  target = jax.random.uniform(jax.random.key(5), (2, 96, 96, 3))

  def loss(params):
    out = model.apply({**variables, "params": params}, mel, faces)
    return jnp.mean(jnp.abs(out - target))

  grads = fast_jit(jax.grad(loss))(variables["params"])
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    assert bool(jnp.all(jnp.isfinite(grad))), name
    assert float(jnp.max(jnp.abs(grad))) > 0, name


def test_bfloat16_compute_is_close_to_float32():
  model, variables = _model_and_variables(96, tuple(SHALLOW.items()))
  mel, faces = _inputs(2, 96, seed=6)
  out32 = fast_jit(model.apply)(variables, mel, faces)
  out16 = fast_jit(AttnWav2Lip(dtype=jnp.bfloat16, **SHALLOW).apply)(variables, mel, faces)
  assert out16.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out16 - out32))) < 0.1
  assert float(jnp.mean(jnp.abs(out16 - out32))) < 0.02


def test_audio_reaches_the_output_without_semantic_alignment():
  model, variables = _model_and_variables(
      96, tuple(dict(SHALLOW, use_semantic_alignment=False).items()))
  mel, faces = _inputs(2, 96, seed=7)
  apply = fast_jit(model.apply)
  delta = jnp.abs(apply(variables, mel, faces) - apply(variables, mel[::-1], faces))
  assert float(delta[0].max()) > 1e-4 and float(delta[1].max()) > 1e-4


def test_ablation_switches_change_the_parameter_tree():
  default = _shapes(AttnWav2Lip(), 96)["params"]
  no_cbam = _shapes(AttnWav2Lip(use_cbam=False), 96)["params"]
  no_sam = _shapes(AttnWav2Lip(use_semantic_alignment=False), 96)["params"]
  no_ffc = _shapes(AttnWav2Lip(use_ffc=False), 96)["params"]
  sams = {name for name in default if name.startswith("sam_")}
  assert sams == {"sam_bottleneck", "sam_dec0", "sam_dec1", "sam_dec2", "sam_dec3"}

  # CBAM off removes exactly the attention parameters of every residual block:
  # per block of width C with hidden h = C // 16: 2Ch + h + C (MLP) and 7*7*2 + 1 (conv).
  widths = [(int(name[3]), name) for name in default if "_block" in name]
  cbam_size = sum(2 * c * (c // 16) + c // 16 + c + 99
                  for c in (default[name]["conv"]["kernel"].shape[-1] for _, name in widths))
  assert len(widths) == 5 * 2 + 4 * 1
  assert not any("cbam" in p for p in _paths(no_cbam))
  assert _count(default) - _count(no_cbam) == cbam_size

  assert not any(name.startswith("sam_") for name in no_sam)
  assert set(default) - set(no_sam) == sams

  for name in sams:
    assert set(default[name]) == {"ffc", "adain"}
    assert set(no_ffc[name]) == {"conv", "adain"}
  assert not any("global_to_global" in p for p in _paths(no_ffc))


def test_larger_image_sizes_build_with_the_same_parameters():
  params96 = _shapes(AttnWav2Lip(), 96)["params"]
  params256 = _shapes(AttnWav2Lip(img_size=256), 256)["params"]
  assert jax.tree_util.tree_structure(params96) == jax.tree_util.tree_structure(params256)
  assert _count(params96) == _count(params256)


@pytest.mark.parametrize("img_size, widths", [(100, (8, 8, 8, 8, 8)), (32, (8,) * 6)])
def test_rejects_sizes_the_stages_cannot_divide(img_size, widths):
  mel, faces = _inputs(1, img_size)
  with pytest.raises(ValueError, match="img_size"):
    AttnWav2Lip(img_size=img_size, widths=widths).init(jax.random.key(0), mel, faces)


def test_rejects_faces_of_the_wrong_size():
  mel, faces = _inputs(1, 64)
  with pytest.raises(ValueError, match="faces must be"):
    AttnWav2Lip().init(jax.random.key(0), mel, faces)


# Parameter counts, derived independently of the flax modules: the audio encoder from the
# PyTorch reference (tests/references/torch_wav2lip.py, written from the original Wav2Lip),
# everything else in closed form from the layer facts documented in attn_wav2lip.py and
# attention.py. Only the "params" collection counts (BatchNorm running stats are state).
ORIGINAL_WAV2LIP_PARAMS = 36_298_035  # PyTorch Wav2Lip generator (models/wav2lip.py)
AUDIO_DIM = 512  # Width of the audio vector that conditions AdaIN and the fusion conv.


def _torch_count(module) -> int:
  return sum(p.numel() for p in module.parameters())


def _conv(k, cin, cout, bias=True):
  return k * k * cin * cout + (cout if bias else 0)


def _bn(c):
  return 2 * c  # scale and bias


def _conv_bn(k, cin, cout):  # ConvBlock / ConvTransposeBlock: conv with bias -> BN
  return _conv(k, cin, cout) + _bn(cout)


def _cbam(c, reduction):
  hidden = max(c // reduction, 1)
  mlp = (c * hidden + hidden) + (hidden * c + c)  # shared Dense C->h, Dense h->C, biases
  return mlp + _conv(7, 2, 1)  # 7x7 spatial conv over [mean; max] with bias


def _residual_block(c, use_cbam, reduction):
  # 3x3 conv-BN-ReLU -> 3x3 conv -> BN (-> CBAM), all C -> C.
  return (_conv_bn(3, c, c) + _conv(3, c, c) + _bn(c)
          + (_cbam(c, reduction) if use_cbam else 0))


def _ffc(c, ratio):
  c_global = int(c * ratio)
  c_local = c - c_global
  local = 9 * (c_local * c_local + c_global * c_local + c_local * c_global)  # no biases
  hidden = max(c_global // 2, 1)
  spectral = (c_global * hidden + _bn(hidden)  # 1x1 conv_in -> BN
              + (2 * hidden) * (2 * hidden) + _bn(2 * hidden)  # Fourier unit 1x1 on [re; im]
              + hidden * c_global)  # 1x1 conv_out
  return local + spectral


def _sam(c, use_ffc, ratio):
  transform = _ffc(c, ratio) if use_ffc else _conv(3, c, c, bias=False)
  adain = 2 * (AUDIO_DIM * c + c)  # Dense gamma and beta, with biases
  return transform + adain


def closed_form_attn_wav2lip_params(widths=(32, 64, 128, 256, 512), stem_kernel=7,
                                    encoder_blocks=2, decoder_blocks=1, use_cbam=True,
                                    use_semantic_alignment=True, use_ffc=True,
                                    cbam_reduction=16, ffc_global_ratio=0.5):
  res = lambda c: _residual_block(c, use_cbam, cbam_reduction)
  sam = lambda c: _sam(c, use_ffc, ffc_global_ratio) if use_semantic_alignment else 0
  total = _torch_count(torch_ref._audio_encoder(num_res_256=1))
  total += _conv_bn(stem_kernel, 6, widths[0]) + encoder_blocks * res(widths[0])
  for cin, cout in zip(widths[:-1], widths[1:]):  # stride-2 3x3 down, residual blocks
    total += _conv_bn(3, cin, cout) + encoder_blocks * res(cout)
  total += _conv_bn(3, widths[-1] + AUDIO_DIM, widths[-1]) + sam(widths[-1])  # bottleneck
  for cin, cout in zip(widths[:0:-1], widths[-2::-1]):  # decoder, deepest level first
    total += (_conv_bn(3, cin, cout)  # 3x3 stride-2 transposed conv -> BN
              + _conv_bn(3, 2 * cout, cout)  # fuse [up; skip]
              + decoder_blocks * res(cout) + sam(cout))
  return total + _conv(1, widths[0], 3)  # head


def test_original_wav2lip_parameter_count_matches_pytorch():
  torch_count = _torch_count(torch_ref.TorchWav2Lip())
  assert torch_count == ORIGINAL_WAV2LIP_PARAMS
  assert _count(_shapes(Wav2Lip(), 96)["params"]) == torch_count


@pytest.mark.parametrize("config", [
    {},  # the default
    dict(decoder_blocks=2),
    dict(use_cbam=False, use_ffc=False),
    dict(use_semantic_alignment=False, encoder_blocks=1),
    dict(widths=(26, 42, 74, 138, 266), cbam_reduction=8, ffc_global_ratio=0.75,
         stem_kernel=5),
])
def test_parameter_count_matches_closed_form(config):
  assert _count(_shapes(AttnWav2Lip(**config), 96)["params"]) == (
      closed_form_attn_wav2lip_params(**config))


def test_documented_parameter_counts():
  """The docstring's 30.1M (default) and 31.6M (two decoder blocks), vs Wav2Lip's 36.3M."""
  assert round(closed_form_attn_wav2lip_params() / 1e6, 1) == 30.1
  assert round(closed_form_attn_wav2lip_params(decoder_blocks=2) / 1e6, 1) == 31.6
  assert round(ORIGINAL_WAV2LIP_PARAMS / 1e6, 1) == 36.3
