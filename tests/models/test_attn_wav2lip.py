"""AttnWav2Lip: shapes, jit, gradients, bf16 compute, ablation switches, audio dependence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax.models.attn_wav2lip import AttnWav2Lip

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
