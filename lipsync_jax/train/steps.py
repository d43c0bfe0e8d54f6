"""Pure train and eval steps of SyncNet, generator and quality discriminator.

Each `make_*` function closes over the static parts (modules, optimizer, loss
weights that are config constants) and returns a pure function of arrays that
`train/sharding.py` jits with explicit shardings. Frozen networks (the expert
SyncNet, LPIPS) come in as the `frozen` argument, a dict of their variables,
so they are device arrays rather than constants baked into the program.

Batches as the input pipeline makes them (NHWC, T = 5 frames; images uint8, or float
in [0, 1]; mel windows float32):
  SyncNet: {"mel": (B, 80, 16, 1), "lower_halves": (B, T, H/2, W, 3), "label": (B,)}
    (or "faces": (B, H/2, W, 3T), the halves already stacked as SyncNet takes them).
  Generator: {"target": (B, T, H, W, 3), "reference": (B, T, H, W, 3),
    "mel_chunks": (B, T, 80, 16, 1), "sync_mel": (B, 80, 16, 1)}, H = W = the
    generator's size; the expert sees generated frames at its own (`resize_for_expert`).
Inside the step `device_batch` scales the images to float32 [0, 1], stacks SyncNet's
frames on channels and builds the generator's input (masked target + reference), so the
host sends 1 byte per pixel and does no layout work.

Non-finite losses: every train step applies its update only when all its
losses are finite and otherwise returns the state unchanged (except the step
counter); the metrics carry each loss, so the trainer can stop and name the
offending one or count the skip, as the config says.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lipsync_jax import losses
from lipsync_jax.train.state import GeneratorTrainState, ModelState, SyncNetTrainState, step_key
from lipsync_jax.types import Batch, Metrics, PyTree, at_least_float32


# k / 255 correctly rounded, as numpy divides (XLA compiles `x / 255` to `x * (1 / 255)`,
# 1 ulp off for half the levels): the step sees the floats the host pipeline used to send.
_UNIT_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)


def unit_images(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 images -> float32 k / 255 in [0, 1] (a 256-entry lookup); floats as they are."""
  if images.dtype == jnp.uint8:
    return jnp.asarray(_UNIT_LEVELS)[images]
  return images


def device_batch(batch: Batch) -> Batch:
  """A host batch (module docstring) -> float images in [0, 1]: for SyncNet "faces"
  (B, H/2, W, 3T); for the generator also "inputs" (B, T, H, W, 6), the target with
  rows H/2.. zeroed, then the reference."""
  if "lower_halves" in batch:
    batch = dict(batch)
    return {**batch, "faces": channel_stack(unit_images(batch.pop("lower_halves")))}
  if "faces" in batch:
    return {**batch, "faces": unit_images(batch["faces"])}
  target, reference = unit_images(batch["target"]), unit_images(batch["reference"])
  masked = target.at[:, :, target.shape[2] // 2:].set(0)
  return {**batch, "target": target, "reference": reference,
          "inputs": jnp.concatenate([masked, reference], axis=-1)}


def channel_stack(frames: jnp.ndarray) -> jnp.ndarray:
  """(B, T, h, W, 3) -> (B, h, W, 3T), frame-major channels: channels 3t..3t+2 hold
  frame t, as Wav2Lip's `torch.cat([g[:, :, t] ...], 1)`."""
  b, t, h, w, c = frames.shape
  return jnp.transpose(frames, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c)


def lower_half_stack(frames: jnp.ndarray) -> jnp.ndarray:
  """(B, T, H, W, 3) frames -> (B, H/2, W, 3T): their lower halves, `channel_stack`ed."""
  return channel_stack(frames[:, :, frames.shape[2] // 2:])


def resize_for_expert(frames: jnp.ndarray, size: int) -> jnp.ndarray:
  """(B, T, h, w, 3) generated frames at the expert's (size, size), in [0, 1].

  Bicubic with antialiasing (as the input pipeline's `input_pipeline.resize_frames`); the
  frames as they are when h == w == size. A generator smaller than the expert (the
  CPU demo's 48 px one under a 96 px SyncNet) is judged on its upsampled output, as
  it is pasted into videos.
  """
  b, t, h, w, c = frames.shape
  if (h, w) == (size, size):
    return frames
  return jnp.clip(jax.image.resize(frames, (b, t, size, size, c), "cubic"), 0.0, 1.0)


def _apply_update(model_state: ModelState, grads: PyTree, batch_stats: PyTree,
                  tx: optax.GradientTransformation) -> ModelState:
  updates, opt_state = tx.update(grads, model_state.opt_state, model_state.params)
  return ModelState(params=optax.apply_updates(model_state.params, updates),
                    batch_stats=batch_stats, opt_state=opt_state)


def _keep_if_not_finite(old: PyTree, new: PyTree, loss_values: Metrics) -> tuple[PyTree, Any]:
  finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in loss_values.values()]))
  return jax.tree.map(lambda o, n: jnp.where(finite, n, o), old, new), finite


def _apply_train(model: nn.Module, model_state: ModelState, params: PyTree,
                 *inputs, rng: jax.Array):
  """Runs `model` in train mode; returns (output, new batch_stats)."""
  variables = {"params": params}
  if model_state.batch_stats:
    variables["batch_stats"] = model_state.batch_stats
    out, updated = model.apply(variables, *inputs, train=True, mutable=["batch_stats"],
                               rngs={"dropout": rng})
    return out, updated["batch_stats"]
  return model.apply(variables, *inputs, train=True, rngs={"dropout": rng}), {}


def make_syncnet_train_step(syncnet: nn.Module, tx: optax.GradientTransformation,
                            contrastive_weight: float = 0.0, temperature: float = 0.1,
                            in_batch_negatives_weight: float = 0.0):
  """SyncNet update: BCE of the embeddings' cosine against the in-sync label.

  With `contrastive_weight` c > 0 the loss is BCE + c * `losses.in_batch_contrastive_loss`
  (the batch's other faces and audio as extra negatives, at `temperature`): not in
  Wav2Lip's recipe, an option that makes small SyncNets learn in hundreds of steps
  (`configs/demo_cpu.py`).

  Returns `step(state, batch) -> (state, metrics)`; metrics: loss, bce, accuracy,
  (contrastive,) skipped (1.0 when a non-finite loss left the state unchanged).
  """

  def step(state: SyncNetTrainState, batch: Batch):
    batch = device_batch(batch)

    def loss_fn(params):
      (audio_emb, face_emb), batch_stats = _apply_train(
          syncnet, state.syncnet, params, batch["mel"], batch["faces"],
          rng=step_key(state.rng, state.step))
      bce, accuracy = losses.sync_loss(audio_emb, face_emb, batch["label"])
      parts = {"bce": bce}
      if contrastive_weight:
        parts["contrastive"] = losses.in_batch_contrastive_loss(
            audio_emb, face_emb, batch["label"], temperature)
      if in_batch_negatives_weight:
        parts["in_batch_negatives"] = losses.in_batch_negatives_bce(audio_emb, face_emb)
      loss = (bce + contrastive_weight * parts.get("contrastive", 0.0)
              + in_batch_negatives_weight * parts.get("in_batch_negatives", 0.0))
      return loss, (parts, accuracy, batch_stats)

    (loss, (parts, accuracy, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.syncnet.params)
    updated = _apply_update(state.syncnet, grads, batch_stats, tx)
    syncnet_state, finite = _keep_if_not_finite(state.syncnet, updated, {"loss": loss})
    metrics = {"loss": loss, **parts, "accuracy": accuracy,
               "skipped": 1.0 - finite.astype(jnp.float32)}
    return state.replace(step=state.step + 1, syncnet=syncnet_state), metrics

  return step


def make_syncnet_eval_step(syncnet: nn.Module) -> Callable[[SyncNetTrainState, Batch], Metrics]:
  """Eval loss and accuracy of SyncNet (running BatchNorm statistics)."""

  def step(state: SyncNetTrainState, batch: Batch) -> Metrics:
    batch = device_batch(batch)
    audio_emb, face_emb = syncnet.apply(state.syncnet.variables(), batch["mel"],
                                        batch["faces"], train=False)
    loss, accuracy = losses.sync_loss(audio_emb, face_emb, batch["label"])
    return {"loss": loss, "accuracy": accuracy}

  return step


def _generate(generator: nn.Module, batch: Batch, apply_fn) -> tuple[jnp.ndarray, Any]:
  """Runs the generator on all T frames of a batch; returns (B, T, H, W, 3) f32."""
  b, t = batch["inputs"].shape[:2]
  faces = batch["inputs"].reshape((b * t,) + batch["inputs"].shape[2:])
  mels = batch["mel_chunks"].reshape((b * t,) + batch["mel_chunks"].shape[2:])
  out, aux = apply_fn(mels, faces)
  return at_least_float32(out).reshape((b, t) + out.shape[1:]), aux


def _generator_losses(generated: jnp.ndarray, batch: Batch, frozen: PyTree,
                      expert: nn.Module, lpips_fn, discriminator: nn.Module | None,
                      discriminator_variables: PyTree | None,
                      mouth_weight: float) -> Metrics:
  """All generator losses of (B, T, H, W, 3) generated frames, float32 scalars."""
  target = batch["target"]
  parts = {"l1": losses.l1_loss(generated, target, mouth_weight)}
  expert_frames = resize_for_expert(generated, expert.img_size)
  audio_emb, face_emb = expert.apply(frozen["expert"], batch["sync_mel"],
                                     lower_half_stack(expert_frames), train=False)
  parts["sync"], parts["sync_accuracy"] = losses.sync_loss(audio_emb, face_emb, 1.0)
  frames = generated.reshape((-1,) + generated.shape[2:])
  if lpips_fn is not None:
    parts["lpips"] = losses.lpips_loss(lambda x, y: lpips_fn(frozen["lpips"], x, y), frames,
                                       target.reshape(frames.shape))
  if discriminator is not None:
    probability = discriminator.apply(discriminator_variables, frames, train=False)
    parts["adversarial"] = losses.adversarial_loss(probability, is_real=True)
  return parts


def make_generator_train_step(generator: nn.Module, tx: optax.GradientTransformation,
                              expert: nn.Module, lpips_fn: Callable | None,
                              discriminator: nn.Module | None, lpips_weight: float,
                              adversarial_weight: float, mouth_weight: float = 1.0):
  """Generator update with (1 - s - p - d) L1 + s sync + p LPIPS + d adversarial.

  Args:
    generator: Wav2Lip or AttnWav2Lip.
    tx: the generator's optimizer.
    expert: the frozen SyncNet; its variables are `frozen["expert"]`.
    lpips_fn: `(lpips_variables, x, y) -> (B,)` for images in [-1, 1], or None
      when `lpips_weight` is 0; its variables are `frozen["lpips"]`.
    discriminator: the quality discriminator, or None when `adversarial_weight`
      is 0; its variables come from `state.discriminator`.
    lpips_weight: p; adversarial_weight: d (config constants). The sync weight
      s is the state's `sync_weight`.
    mouth_weight: weight of the mouth region in the L1 term (`losses.l1_loss`);
      1 is Wav2Lip's plain L1.

  Returns:
    `step(state, frozen, batch) -> (state, metrics, generated (B, T, H, W, 3))`;
    `generated` (before the update) feeds the discriminator step.
  """
  if (lpips_fn is None) != (not lpips_weight):
    raise ValueError("lpips_fn must be given exactly when lpips_weight > 0")
  if (discriminator is None) != (not adversarial_weight):
    raise ValueError("discriminator must be given exactly when adversarial_weight > 0")

  def step(state: GeneratorTrainState, frozen: PyTree, batch: Batch):
    batch = device_batch(batch)
    rng = step_key(state.rng, state.step)
    disc_variables = state.discriminator.variables() if discriminator is not None else None

    def loss_fn(params):
      generated, batch_stats = _generate(
          generator, batch,
          lambda m, f: _apply_train(generator, state.generator, params, m, f, rng=rng))
      parts = _generator_losses(generated, batch, frozen, expert, lpips_fn, discriminator,
                                disc_variables, mouth_weight)
      total = losses.weighted_generator_loss(parts, state.sync_weight, lpips_weight,
                                             adversarial_weight)
      return total, (parts, batch_stats, generated)

    (total, (parts, batch_stats, generated)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.generator.params)
    updated = _apply_update(state.generator, grads, batch_stats, tx)
    loss_values = {"loss": total, **{k: v for k, v in parts.items() if k != "sync_accuracy"}}
    generator_state, finite = _keep_if_not_finite(state.generator, updated, loss_values)
    metrics = {**loss_values, "sync_accuracy": parts["sync_accuracy"],
               "sync_weight": state.sync_weight,
               "skipped": 1.0 - finite.astype(jnp.float32)}
    new_state = state.replace(step=state.step + 1, generator=generator_state)
    return new_state, metrics, generated

  return step


def make_discriminator_train_step(discriminator: nn.Module, tx: optax.GradientTransformation):
  """Quality discriminator update: BCE(D(real), 1) + BCE(D(generated), 0).

  Returns `step(state, generated (B, T, H, W, 3), target (B, T, H, W, 3))
  -> (state, metrics)`; `generated` is treated as a constant (detached).
  """

  def step(state: GeneratorTrainState, generated: jnp.ndarray, target: jnp.ndarray):
    rng = step_key(state.rng, state.step)
    fake = jax.lax.stop_gradient(generated).reshape((-1,) + generated.shape[2:])
    real = unit_images(target).reshape(fake.shape).astype(fake.dtype)

    def loss_fn(params):
      both = jnp.concatenate([real, fake], axis=0)
      probability, batch_stats = _apply_train(discriminator, state.discriminator, params,
                                              both, rng=rng)
      p_real, p_fake = jnp.split(at_least_float32(probability), 2)
      real_loss = losses.adversarial_loss(p_real, is_real=True)
      fake_loss = losses.adversarial_loss(p_fake, is_real=False)
      accuracy = 0.5 * (jnp.mean(p_real > 0.5) + jnp.mean(p_fake < 0.5))
      return real_loss + fake_loss, (real_loss, fake_loss, accuracy, batch_stats)

    (total, (real_loss, fake_loss, accuracy, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.discriminator.params)
    updated = _apply_update(state.discriminator, grads, batch_stats, tx)
    loss_values = {"disc_loss": total, "disc_real_loss": real_loss, "disc_fake_loss": fake_loss}
    disc_state, finite = _keep_if_not_finite(state.discriminator, updated, loss_values)
    metrics = {**loss_values, "disc_accuracy": accuracy,
               "disc_skipped": 1.0 - finite.astype(jnp.float32)}
    return state.replace(discriminator=disc_state), metrics

  return step


def make_generator_eval_step(generator: nn.Module, expert: nn.Module, lpips_fn: Callable | None,
                             mouth_weight: float = 1.0):
  """Eval of the generator (running BN statistics): L1 (as trained), sync loss/accuracy, LPIPS.

  Returns `step(state, frozen, batch) -> (metrics, generated (B, T, H, W, 3))`.
  """

  def step(state: GeneratorTrainState, frozen: PyTree, batch: Batch):
    batch = device_batch(batch)
    variables = state.generator.variables()
    generated, _ = _generate(
        generator, batch, lambda m, f: (generator.apply(variables, m, f, train=False), None))
    metrics = _generator_losses(generated, batch, frozen, expert, lpips_fn, None, None,
                                mouth_weight)
    return metrics, generated

  return step
