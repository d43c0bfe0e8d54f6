"""Training reports: TensorBoard scalars and image grids (tensorboardX, no TensorFlow),
the log, and a console progress bar (steps/s, ETA)."""

import logging
import pathlib
import sys
import time

import jax
import numpy as np
import tensorboardX
import tqdm

from lipsync_jax import losses


def _local(x: jax.Array) -> np.ndarray:
  """This process's first shard of a (batch-sharded) array, on the host."""
  return np.asarray(x.addressable_shards[0].data)


def _unit(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [0, 1] (float images as they are)."""
  return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images


def mouth_crop(frames: np.ndarray) -> np.ndarray:
  """(..., H, W, 3) -> the mouth region (`losses.mouth_slices`)."""
  rows, columns = losses.mouth_slices(*frames.shape[-3:-1])
  return frames[..., rows, columns, :]


def image_grid(inputs: np.ndarray, generated: np.ndarray, target: np.ndarray) -> np.ndarray:
  """One sample's T frames as rows of reference | masked | generated | ground truth.

  Args: (T, H, W, 6) inputs (masked ‖ reference), (T, H, W, 3) generated and target.
  Returns: (T * H, 4 * W, 3) float32 in [0, 1].
  """
  columns = [inputs[..., 3:], inputs[..., :3], generated, target]
  return np.concatenate([np.concatenate(list(c), axis=0) for c in columns], axis=1)


class Reporter:
  """Reports of one training run.

  Process 0 writes TensorBoard and shows a tqdm bar on stderr: "compiling" from its
  creation until the first step is reported (the first step compiles the train step),
  then the steps done, steps/s, ETA and the latest loss. Every process logs its scalars
  (`logging.info`, "[<prefix>] step <n>: name=value, ...") with steps/s and ETA.

  The trainer reports each finished step with `advance(step)`; `scalars(step, ..., "train")`
  also moves the bar to `step`, so without `advance` the bar moves every log interval.
  `phase(text)` shows what runs between steps (e.g. "evaluating").
  """

  def __init__(self, logdir: pathlib.Path, num_train_steps: int):
    primary = jax.process_index() == 0
    self._writer = tensorboardX.SummaryWriter(str(logdir)) if primary else None
    self._num_train_steps = num_train_steps
    self._last = None
    self._started = False
    self._description = "compiling"
    self._bar = (tqdm.tqdm(total=num_train_steps, desc=self._description, unit="step",
                           file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
                 if primary else None)

  def advance(self, step: int) -> None:
    """Step `step` (1-based) has finished: the bar shows `step` steps done."""
    if self._bar is None or (self._started and step <= self._bar.n):
      return
    if not self._started:
      # Steps/s and ETA from here on, without the compilation and any resumed steps.
      self._started = True
      self._bar.initial = self._bar.n = self._bar.last_print_n = step
      self._bar.start_t = self._bar.last_print_t = time.time()
      self._phase("train")
      return
    self._phase("train", refresh=False)
    self._bar.update(step - self._bar.n)

  def phase(self, text: str) -> None:
    """Shows `text` as the bar's description until the next step."""
    if self._bar is not None:
      self._phase(text)

  def _phase(self, text: str, refresh: bool = True) -> None:
    if self._description != text:
      self._description = text
      self._bar.set_description(text, refresh=refresh)

  def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
    """Logs `values` of `step` (and TensorBoard `<prefix>/<name>` on process 0)."""
    if not values:
      return
    if prefix == "train":
      self.advance(step)
      now = time.monotonic()
      if self._last is not None:
        rate = (step - self._last[0]) / max(now - self._last[1], 1e-9)
        values = {**values, "steps_per_second": rate}
        eta = (self._num_train_steps - step) / max(rate, 1e-9)
        logging.info("step %d/%d  %.2f steps/s  ETA %s", step, self._num_train_steps, rate,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))
      self._last = (step, now)
      if self._bar is not None and "loss" in values:
        self._bar.set_postfix_str(f"loss={values['loss']:.4g}")
    elif self._bar is not None and self._started:
      self._phase("train")
    logging.info("[%s] step %d: %s", prefix, step,
                 ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))
    if self._writer is not None:
      for k, v in values.items():
        self._writer.add_scalar(f"{prefix}/{k}", v, step)
      self._writer.flush()

  def image_grids(self, step: int, batch: dict[str, jax.Array], generated: jax.Array,
                  prefix: str) -> None:
    """Logs sample 0: the full grid and its mouth-region crops (2x upscaled)."""
    if self._writer is None:
      return
    gen = _local(generated)[0]
    target, reference = (_unit(_local(batch[k])[0]) for k in ("target", "reference"))
    masked = target.copy()
    masked[:, target.shape[1] // 2:] = 0.0
    inputs = np.concatenate([masked, reference], axis=-1)
    grid = image_grid(inputs, gen, target)
    mouths = image_grid(mouth_crop(inputs), mouth_crop(gen), mouth_crop(target))
    mouths = mouths.repeat(2, axis=0).repeat(2, axis=1)
    self._writer.add_image(f"{prefix}/reference|masked|generated|target", grid, step,
                           dataformats="HWC")
    self._writer.add_image(f"{prefix}/mouths", np.clip(mouths, 0, 1), step, dataformats="HWC")
    self._writer.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer is not None:
      self._writer.close()
