"""Grain input pipeline: a random-access clip source and the two Wav2Lip samplers.

A clip (one record of `lipsync_jax.records`, or of its frame store) is a dict
`{"clip_id": str, "fps": float, "frames": sequence of JPEG bytes | uint8 (H, W, 3) RGB,
"mel": float32 (80, N)}`. Frames stay encoded (and, from a frame store, unread) until a
sampler has picked the few it needs; JPEGs are decoded with libjpeg-turbo (simplejpeg).

Samplers (`grain.transforms.RandomMap`, seeded per element by Grain) follow the
original Wav2Lip training scripts (`color_syncnet_train.py`, `hq_wav2lip_train.py`):

- `SyncNetPairs`: a random start frame f gives the mel window of f; with probability
  1/2 the 5 frames start at f (label 1), else at a different random start g of the same
  clip (label 0; the frames are shifted, the mel stays at f). Output
  `{"mel": (80, 16, 1), "lower_halves": (5, H/2, W, 3), "label": ()}`, the lower halves
  (rows H/2..H) of the 5 frames (the train step stacks them on channels for SyncNet).
- `GeneratorWindows`: a 5-frame window at f is the target, a window at a different
  random start g the reference (the train step builds the generator's input from them:
  the target with its lower half zeroed, then the reference, on channels). Frame f + k
  gets the mel window of frame f + k + `mel_offset_frames` (0: this project's
  convention, the one inference uses; -1: the original training script); `sync_mel` is
  the window of frame f. Output `{"target": (5, H, W, 3), "reference": (5, H, W, 3),
  "mel_chunks": (5, 80, 16, 1), "sync_mel": (80, 16, 1)}`, H = W = the generator's
  `img_size` (frames resized when the records store another size).

Images leave the host as uint8 RGB (BGR with `channel_order="bgr"`, for official
checkpoints), mel windows as float32; the jitted steps scale images to [0, 1]
(`lipsync_jax.train.steps.device_batch`).
Starts are drawn uniformly among those whose frames and mel windows lie inside the clip,
which is the distribution of the original rejection loops; the SyncNet label is a
fair coin (the original's redraws skew it by a fraction of a percent). Clips with
<= 3T frames are dropped when the source is built (as the original does); an empty
or unreadable dataset raises `DatasetError`.

The trainer builds an iterator with `syncnet_iterator` / `generator_iterator`; its
`get_state()` / `set_state()` round-trip, and with orbax:
`ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it), ...)` to save and
`grain.checkpoint.CheckpointRestore(it)` on a freshly built iterator to restore.
Worker processes start by spawn, so this module has no import-time side effects.
"""

import bisect
import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

from absl import flags
import grain
import numpy as np
from PIL import Image
import simplejpeg

from lipsync_jax import audio, errors, frame_store, records

WINDOW_FRAMES = 5  # T: frames per SyncNet / generator window.
CHANNEL_ORDERS = ("rgb", "bgr")

Clip = dict[str, Any]


class DatasetError(errors.LipsyncError, ValueError):
  """The dataset is empty, unreadable or inconsistent."""


class ClipSource:
  """Random access to the usable clips of a record collection.

  `records[i]` is a clip dict, or whatever `decode` turns into one (e.g. serialized
  bytes from an ArrayRecord reader with `decode=records.decode_record`). Clips with
  fewer than `min_frames` frames are dropped here, by `frame_counts` when given,
  else by reading every record once, which also proves them readable. `scan=False` skips that read and keeps every record (for shards from
  `data_pipeline.preprocess`, which already drops short clips); then only the first
  and last records are read as a check. A `grain.sources.RandomAccessDataSource`;
  picklable whenever `records` and `decode` are (Grain worker processes).
  """

  def __init__(self, records: Sequence[Any], *, decode: Callable[[Any], Clip] | None = None,
               frame_counts: Sequence[int] | None = None, scan: bool = True,
               min_frames: int = 3 * WINDOW_FRAMES + 1, name: str = "dataset"):
    self._records = records
    self._decode = decode
    num_records = len(records)
    if num_records == 0:
      raise DatasetError(f"{name}: no records")
    if frame_counts is None and not scan:
      for i in {0, num_records - 1}:
        self._read(i, name)
      frame_counts = [min_frames] * num_records
    elif frame_counts is None:
      frame_counts = [len(self._read(i, name)["frames"]) for i in range(num_records)]
    elif len(frame_counts) != num_records:
      raise DatasetError(f"{name}: {len(frame_counts)} frame counts for {num_records} records")
    self._indices = [i for i, n in enumerate(frame_counts) if n >= min_frames]
    if not self._indices:
      raise DatasetError(f"{name}: none of the {num_records} records has >= {min_frames} frames")
    self.num_skipped = num_records - len(self._indices)

  def _read(self, record_index: int, name: str = "dataset") -> Clip:
    try:
      record = self._records[record_index]
      return self._decode(record) if self._decode is not None else record
    except Exception as e:  # pylint: disable=broad-except
      raise DatasetError(f"{name}: record {record_index} unreadable: {e}") from e

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Clip:
    return self._read(self._indices[index])


def open_record_source(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike], *,
                       scan: bool = True) -> "ClipSource | frame_store.FrameStore":
  """The clips of a directory of records or a list of ArrayRecord shards.

  A directory with a frame store (`lipsync_jax.frame_store`, written by preprocessing)
  opens as one: start-up reads its index only, samples read only their frames. Otherwise
  a ClipSource over the ArrayRecord shards of `lipsync_jax.records` (`scan`: see
  `ClipSource`). Raises DatasetError when they are missing or unreadable.
  """
  if isinstance(paths_or_dir, (str, os.PathLike)) and frame_store.is_frame_store(paths_or_dir):
    try:
      store = frame_store.FrameStore(paths_or_dir, min_frames=3 * WINDOW_FRAMES + 1)
    except frame_store.FrameStoreError as e:
      raise DatasetError(str(e)) from e
    if not len(store):
      raise DatasetError(f"{paths_or_dir}: no clip of the frame store has >= "
                         f"{3 * WINDOW_FRAMES + 1} frames")
    return store
  name = str(paths_or_dir) if isinstance(paths_or_dir, (str, os.PathLike)) else (
      f"{len(paths_or_dir)} shards")
  try:
    reader = records.open_shards(paths_or_dir, decode=False)
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"{name}: cannot open record shards: {e}") from e
  return ClipSource(reader, decode=records.decode_record, scan=scan, name=name)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """(N, H, W, 3) frames -> (N, size, size, 3), resampled as `faces.crop_faces` resamples
  crops (antialiased bicubic). uint8 stays uint8; floats in [0, 1] go through uint8 (as
  a video would) and come back float32. Frames already of that size are returned as they are.
  """
  if frames.shape[1:3] == (size, size):
    return frames
  is_float = frames.dtype != np.uint8
  pixels = np.round(np.clip(frames, 0.0, 1.0) * 255).astype(np.uint8) if is_float else frames
  out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize(
      (size, size), Image.Resampling.BICUBIC)) for f in pixels])
  return out.astype(np.float32) / 255.0 if is_float else out


def read_frames(clip: Clip, indices: Sequence[int], channel_order: str = "rgb",
                size: int | None = None) -> np.ndarray:
  """Frames `indices` of `clip` as uint8 (len(indices), H, W, 3), RGB or BGR.

  With `size`, frames are resized to (size, size) (`resize_frames`) when stored at another size.
  """
  encoded = [clip["frames"][i] for i in indices]
  if isinstance(encoded[0], (bytes, bytearray, memoryview)):
    height, width = simplejpeg.decode_jpeg_header(encoded[0])[:2]
    frames = np.empty((len(encoded), height, width, 3), np.uint8)
    for data, out in zip(encoded, frames):  # decoded in place, no copies
      simplejpeg.decode_jpeg(data, colorspace=channel_order.upper(), buffer=out)
  else:
    frames = np.stack(encoded)
    if channel_order == "bgr":
      frames = frames[..., ::-1]
  return frames if size is None else resize_frames(frames, size)


@functools.lru_cache(maxsize=4096)
def _fitting_range(count: int, num_mel: int, fps: float, offsets: tuple[int, ...]
                   ) -> tuple[int, int]:
  low, high = min(offsets), max(offsets)
  first = 0 if low >= 0 else bisect.bisect_left(
      range(count), True, key=lambda f: audio.mel_window_start(f + low, fps) >= 0)
  end = bisect.bisect_left(
      range(count), True,
      key=lambda f: audio.mel_window_start(f + high, fps) + audio.MEL_WINDOW > num_mel)
  return first, max(first, end)


def fitting_starts(clip: Clip, count: int, offsets: Sequence[int] = (0,)) -> np.ndarray:
  """Frames f in [0, count) whose mel windows of frames f + o (o in `offsets`) all lie
  inside the clip's mel. Window starts grow with the frame index, so this is a range."""
  return np.arange(*_fitting_range(count, clip["mel"].shape[1], clip["fps"], tuple(offsets)))


@functools.lru_cache(maxsize=4096)
def _mel_start(frame_index: int, fps: float, offset_frames: int) -> int:
  return audio.mel_window_start(frame_index, fps, offset_frames)


def _mels(clip: Clip, frame_indices: Sequence[int], offset_frames: int = 0) -> np.ndarray:
  """The (K, 80, 16, 1) float32 mel windows of frames `frame_indices` (`audio.mel_window`)."""
  starts = np.array([_mel_start(f, clip["fps"], offset_frames) for f in frame_indices])
  if starts.min() < 0 or starts.max() + audio.MEL_WINDOW > clip["mel"].shape[1]:
    raise DatasetError(f"clip {clip.get('clip_id')!r}: mel windows of frames {frame_indices} "
                       f"outside its {clip['mel'].shape[1]} mel frames")
  windows = clip["mel"][:, starts[:, None] + np.arange(audio.MEL_WINDOW)]  # (80, K, 16)
  return np.asarray(windows.transpose(1, 0, 2), np.float32)[..., None]


def _num_window_starts(clip: Clip) -> int:
  return max(0, len(clip["frames"]) - WINDOW_FRAMES + 1)


def _no_start(clip: Clip, what: str) -> DatasetError:
  return DatasetError(f"clip {clip.get('clip_id')!r}: no {what} (mel {clip['mel'].shape[1]} "
                      f"frames for {len(clip['frames'])} video frames at {clip['fps']} fps)")


def _draw(rng: np.random.Generator, starts: np.ndarray, clip: Clip, what: str) -> int:
  """A uniform element of `starts`."""
  if starts.size == 0:
    raise _no_start(clip, what)
  return int(starts[rng.integers(starts.size)])


def _draw_distinct_pair(rng: np.random.Generator, first_starts: np.ndarray,
                        second_starts: np.ndarray, clip: Clip, what: str) -> tuple[int, int]:
  """(a, b), uniform over first_starts x second_starts with a != b.

  The distribution of the original's loop: two random frames, redrawn until distinct
  and both usable.
  """
  ends = {int(x) for starts in (first_starts, second_starts) if starts.size
          for x in (starts[0], starts[-1])}
  if first_starts.size == 0 or len(ends) < 2:  # (sorted starts: fewer than 2 distinct)
    raise _no_start(clip, what)
  while True:
    first, second = _draw(rng, first_starts, clip, what), _draw(rng, second_starts, clip, what)
    if first != second:
      return first, second


def _check_channel_order(channel_order: str) -> None:
  if channel_order not in CHANNEL_ORDERS:
    raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")


@dataclasses.dataclass(frozen=True)
class SyncNetPairs(grain.transforms.RandomMap):
  """Clip -> SyncNet example: 5 lower halves, one mel window, in/off-sync label."""
  channel_order: str = "rgb"

  def __post_init__(self):
    _check_channel_order(self.channel_order)

  def random_map(self, clip: Clip, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frame_starts = np.arange(_num_window_starts(clip))
    mel_starts = fitting_starts(clip, len(clip["frames"]))
    in_sync = bool(rng.integers(2))
    if in_sync:
      mel_start = frames_start = _draw(
          rng, mel_starts[mel_starts < frame_starts.size], clip, "in-sync start")
    else:
      mel_start, frames_start = _draw_distinct_pair(
          rng, mel_starts, frame_starts, clip, "off-sync pair")
    frames = read_frames(clip, range(frames_start, frames_start + WINDOW_FRAMES),
                         self.channel_order)
    return {"mel": _mels(clip, [mel_start])[0], "lower_halves": frames[:, frames.shape[1] // 2:],
            "label": np.float32(in_sync)}


@dataclasses.dataclass(frozen=True)
class GeneratorWindows(grain.transforms.RandomMap):
  """Clip -> generator example: masked target + reference window, mel chunks, target.

  Frames come at the generator's `img_size` (None: as stored, the records' crop size);
  the SyncNet expert's `sync_mel` does not depend on it.
  """
  mel_offset_frames: int = 0
  channel_order: str = "rgb"
  img_size: int | None = None

  def __post_init__(self):
    _check_channel_order(self.channel_order)

  def random_map(self, clip: Clip, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frame_starts = np.arange(_num_window_starts(clip))
    # The SyncNet window of f and the chunk windows of f + k + offset, k = 0..T-1.
    target_starts = fitting_starts(
        clip, frame_starts.size,
        (0, self.mel_offset_frames, WINDOW_FRAMES - 1 + self.mel_offset_frames))
    start, reference_start = _draw_distinct_pair(
        rng, target_starts, frame_starts, clip, "target window with its mel windows")
    target = read_frames(clip, range(start, start + WINDOW_FRAMES), self.channel_order,
                         self.img_size)
    reference = read_frames(clip, range(reference_start, reference_start + WINDOW_FRAMES),
                            self.channel_order, self.img_size)
    mel_chunks = _mels(clip, range(start, start + WINDOW_FRAMES), self.mel_offset_frames)
    return {"target": target, "reference": reference, "mel_chunks": mel_chunks,
            "sync_mel": _mels(clip, [start])[0]}


class EpochShuffle(grain.MapDataset):
  """The parent's elements in a new random order each epoch (epoch = index // len).

  Same contract as `MapDataset.shuffle`, but one numpy permutation per epoch instead
  of Grain's per-index `index_shuffle`, whose per-element cost is high on the small
  datasets common here (synthetic clips, tests; docs/benchmarks.md).
  """
  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    self._seed = seed
    self._permutations = {}  # epoch -> permutation; the two latest epochs.

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"EpochShuffle(seed={self._seed})"

  def _shuffled_index(self, index: int) -> int:
    length = len(self._parent)
    epoch, index_in_epoch = divmod(index, length)
    permutation = self._permutations.get(epoch)
    if permutation is None:
      permutation = np.random.default_rng([self._seed, epoch]).permutation(length)
      self._permutations = {e: p for e, p in self._permutations.items() if e == epoch - 1}
      self._permutations[epoch] = permutation
    return int(permutation[index_in_epoch]) + epoch * length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._shuffled_index(index)]

  def _getitems(self, indices: Sequence[int]):
    return self._parent._getitems([self._shuffled_index(i) for i in indices])  # pylint: disable=protected-access


def ensure_absl_flags_parsed() -> None:
  """Lets Grain read its absl flags outside `absl.app.run` (tests, notebooks).

  Grain's worker processes read `--grain_*` flags; unparsed flags raise
  `UnparsedFlagAccessError`. Under `app.run` flags are parsed and this does nothing;
  elsewhere the defaults are marked parsed.
  """
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_dataset(source: Sequence[Clip], sampler: grain.transforms.RandomMap, *,
                 batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1,
                 num_epochs: int | None = None,
                 drop_remainder: bool = True) -> grain.MapDataset:
  """Clips -> shuffled (per epoch), sampled, batched `MapDataset` for one host.

  Host `shard_index` of `shard_count` takes clips shard_index, shard_index +
  shard_count, ... (use `jax.process_index()`, `jax.process_count()`). Element i is
  the same for any worker count. `num_epochs=None` repeats forever.
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  shuffle_seed, sampler_seed = np.random.SeedSequence([seed, shard_index]).generate_state(2)
  if isinstance(source, frame_store.FrameStore):  # Reads only this host's index rows.
    dataset = grain.MapDataset.source(source.shard(shard_index, shard_count))
  else:
    dataset = grain.MapDataset.source(source)[shard_index::shard_count]
  if len(dataset) < 1:
    raise DatasetError(f"{len(source)} clips cannot feed {shard_count} shards")
  dataset = EpochShuffle(dataset, seed=int(shuffle_seed)).repeat(num_epochs)
  dataset = dataset.random_map(sampler, seed=int(sampler_seed))
  return dataset.batch(batch_size, drop_remainder=drop_remainder)


def make_iterator(dataset: grain.MapDataset, *, worker_count: int = 0,
                  read_threads: int = 1, prefetch_batches: int = 2) -> grain.DatasetIterator:
  """Iterator over `dataset` with `worker_count` processes (0: in this process).

  Each process computes whole batches in `read_threads` threads, keeping
  `prefetch_batches` ready. Close it (`it.close()`) to stop workers promptly.
  """
  read_options = grain.ReadOptions(num_threads=read_threads,
                                   prefetch_buffer_size=prefetch_batches)
  iter_dataset = dataset.to_iter_dataset(read_options)
  if worker_count > 0:
    ensure_absl_flags_parsed()
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_dataset)


def syncnet_iterator(source: Sequence[Clip], *, batch_size: int, seed: int,
                     channel_order: str = "rgb", worker_count: int = 0,
                     shard_index: int = 0, shard_count: int = 1,
                     num_epochs: int | None = None, **iterator_options) -> grain.DatasetIterator:
  """Batches `{"mel": (B, 80, 16, 1), "lower_halves": (B, 5, H/2, W, 3) uint8,
  "label": (B,)}`."""
  dataset = make_dataset(source, SyncNetPairs(channel_order), batch_size=batch_size, seed=seed,
                         shard_index=shard_index, shard_count=shard_count,
                         num_epochs=num_epochs)
  return make_iterator(dataset, worker_count=worker_count, **iterator_options)


def generator_iterator(source: Sequence[Clip], *, batch_size: int, seed: int,
                       mel_offset_frames: int = 0, channel_order: str = "rgb",
                       img_size: int | None = None, worker_count: int = 0,
                       shard_index: int = 0, shard_count: int = 1,
                       num_epochs: int | None = None,
                       **iterator_options) -> grain.DatasetIterator:
  """Batches `{"target": (B, 5, H, W, 3) uint8, "reference": (B, 5, H, W, 3) uint8,
  "mel_chunks": (B, 5, 80, 16, 1), "sync_mel": (B, 80, 16, 1)}`, H = W = `img_size`
  (None: as stored)."""
  dataset = make_dataset(source, GeneratorWindows(mel_offset_frames, channel_order, img_size),
                         batch_size=batch_size, seed=seed, shard_index=shard_index,
                         shard_count=shard_count, num_epochs=num_epochs)
  return make_iterator(dataset, worker_count=worker_count, **iterator_options)
