"""Tests of the Grain samplers: reference semantics, determinism, state, errors."""

import numpy as np
from PIL import Image
import pytest

import grain
from lipsync_jax import input_pipeline
from data_pipeline import synthetic
from lipsync_jax import audio

T = input_pipeline.WINDOW_FRAMES
FPS = 25.0


def indexed_clip(seed: int, num_frames: int, size: int = 16) -> dict:
  """A clip whose frames are distinct noise images and whose mel row 0 is the column index."""
  rng = np.random.default_rng(seed)
  num_mel = int(num_frames * 80 / FPS) + 1
  mel = rng.normal(size=(80, num_mel)).astype(np.float32)
  mel[0] = np.arange(num_mel)
  return {"clip_id": f"clip{seed}", "fps": FPS,
          "frames": rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8),
          "mel": mel, "boxes": np.zeros((num_frames, 4), np.int32)}


def frame_indices(clip: dict, images: np.ndarray) -> list[int]:
  """Which frames of `clip` the uint8 images (K, h, W, 3) are (their top or bottom rows)."""
  frames = clip["frames"].astype(np.int32)
  h = images.shape[1]
  found = []
  for image in images:
    errors = [min(np.abs(f[:h] - image).max(), np.abs(f[-h:] - image).max()) for f in frames]
    assert min(errors) == 0
    found.append(int(np.argmin(errors)))
  return found


def mel_start(window: np.ndarray) -> int:
  return int(window[0, 0, 0])


@pytest.fixture(scope="module")
def clips():
  return [indexed_clip(seed, num_frames) for seed, num_frames in enumerate([40, 23, 16, 60])]


def test_syncnet_pairs_follow_reference(clips):
  sampler = input_pipeline.SyncNetPairs()
  labels = []
  for i in range(200):
    clip = clips[i % len(clips)]
    example = sampler.random_map(clip, np.random.default_rng(i))
    assert example["lower_halves"].shape == (T, 8, 16, 3) and example["mel"].shape == (80, 16, 1)
    faces = example["lower_halves"]
    frames = frame_indices(clip, faces)
    first = frames[0]
    assert frames == list(range(first, first + T))
    assert faces.dtype == np.uint8  # scaled to [0, 1] in the train step
    np.testing.assert_array_equal(faces, clip["frames"][first:first + T, 8:])
    start = mel_start(example["mel"])
    mel_frame = next(f for f in range(len(clip["frames"]))
                     if int(80 * f / FPS) == start)  # the frame whose window it is
    np.testing.assert_array_equal(example["mel"][..., 0], clip["mel"][:, start:start + 16])
    assert (first == mel_frame) == bool(example["label"])
    labels.append(float(example["label"]))
  assert 70 < sum(labels) < 130  # Bernoulli(1/2), 200 draws: > 4 sigma margin.


@pytest.mark.parametrize("mel_offset_frames", [0, -1])
def test_generator_windows_follow_reference(clips, mel_offset_frames):
  sampler = input_pipeline.GeneratorWindows(mel_offset_frames=mel_offset_frames)
  starts = set()
  for i in range(60):
    clip = clips[i % len(clips)]
    example = sampler.random_map(clip, np.random.default_rng(i))
    target = example["target"]
    assert target.shape == example["reference"].shape == (T, 16, 16, 3)
    assert target.dtype == example["reference"].dtype == np.uint8
    assert example["mel_chunks"].shape == (T, 80, 16, 1)
    first = frame_indices(clip, target)[0]
    np.testing.assert_array_equal(target, clip["frames"][first:first + T])
    reference = frame_indices(clip, example["reference"])
    assert reference[0] != first and reference == list(range(reference[0], reference[0] + T))
    for k in range(T):
      expected = audio.mel_window(clip["mel"], first + k, FPS, mel_offset_frames)
      np.testing.assert_array_equal(example["mel_chunks"][k, ..., 0], expected)
      assert mel_start(example["mel_chunks"][k]) == int(80 * (first + k + mel_offset_frames) / 25)
    assert mel_start(example["sync_mel"]) == int(80 * first / 25)
    starts.add((clip["clip_id"], first))
  if mel_offset_frames == -1:
    assert all(first >= 1 for _, first in starts)
  assert len(starts) > 30  # random windows, not a fixed one


def test_starts_cover_exactly_the_windows_inside_the_clip():
  """40 frames, 129 mel columns: windows start at 0..35 (frames 35..39, mel 112..127).

  Generator targets also need the chunk windows of frames f + offset .. f + 4 + offset.
  """
  clip = indexed_clip(0, 40, size=2)
  clip["frames"] = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None, None],
                                   (40, 2, 2, 3))
  assert clip["mel"].shape[1] == 129  # = 40 * 640 // 200 + 1, as melspectrogram gives
  seen = {"sync": set(), "off_mel": set(), "off_frames": set()}
  for i in range(1000):
    example = input_pipeline.SyncNetPairs().random_map(clip, np.random.default_rng(i))
    first = int(example["lower_halves"][0, 0, 0, 0])  # frame i is filled with i
    kind = "sync" if example["label"] else "off"
    if kind == "sync":
      seen["sync"].add(first)
    else:
      seen["off_frames"].add(first)
      seen["off_mel"].add(mel_start(example["mel"]))
  assert seen["sync"] == seen["off_frames"] == set(range(36))
  assert seen["off_mel"] == {int(80 * f / 25) for f in range(36)}
  for offset, expected in ((0, range(0, 32)), (-1, range(1, 33))):
    targets, references = set(), set()
    sampler = input_pipeline.GeneratorWindows(mel_offset_frames=offset)
    for i in range(600):
      example = sampler.random_map(clip, np.random.default_rng(i))
      targets.add(int(example["target"][0, 0, 0, 0]))
      references.add(int(example["reference"][0, 0, 0, 0]))
    assert targets == set(expected) and references == set(range(36))


@pytest.fixture(scope="module")
def synthetic_clips():
  """(SyntheticClip, clip dict) pairs: 32 x 32 crops by the sidecar boxes, the mel.

  Synthetic frames repeat (a still head in silence), so the bottom-right pixel of
  each crop is stamped with (frame index, clip index, 0) to identify it exactly.
  """
  pairs = []
  for seed in range(3):
    truth = synthetic.make_clip(seed, seconds=2.4, frame_size=64)
    crops = np.stack([
        np.asarray(Image.fromarray(frame[y1:y2, x1:x2]).resize((32, 32), Image.BILINEAR))
        for frame, (x1, y1, x2, y2) in zip(truth.frames, truth.boxes)])
    crops[:, -1, -1] = np.stack([np.arange(len(crops)), np.full(len(crops), seed),
                                 np.zeros(len(crops))], axis=-1)
    pairs.append((truth, {"clip_id": f"synth{seed}", "fps": truth.fps, "frames": crops,
                          "mel": audio.melspectrogram(truth.wav), "boxes": truth.boxes}))
  return pairs


def stamped_frames(images: np.ndarray) -> tuple[int, list[int]]:
  """(clip index, frame indices) of uint8 crops (K, h, W, 3) stamped by `synthetic_clips`."""
  stamps = images[:, -1, -1].astype(int)
  assert len(set(stamps[:, 1])) == 1
  return int(stamps[0, 1]), stamps[:, 0].tolist()


def sounding_vowels(truth, mel: np.ndarray, window: np.ndarray, times_after_s) -> np.ndarray:
  """Vowel classes sounding at the instant of the frame whose mel window is `window`
  (80, 16), plus `times_after_s` (the synthetic convention: frame i shows (i + 0.5) / fps).

  The window is located in `mel` by exact match; where silence repeats, every
  match is silent throughout, so the first is as good as any.
  """
  start = next(s for s in range(mel.shape[1] - audio.MEL_WINDOW + 1)
               if np.array_equal(mel[:, s:s + audio.MEL_WINDOW], window))
  frame = next(i for i in range(start + 1) if audio.mel_window_start(i, truth.fps) >= start)
  instant_s = synthetic.frame_times(frame + 1, truth.fps)[frame]
  return synthetic.vowel_at(truth.segments, instant_s + np.asarray(times_after_s))


def test_syncnet_pairs_on_synthetic_speech_are_in_sync(synthetic_clips):
  """The vowels the 5 frames show are those sounding under the mel window iff label 1."""
  truths, records = zip(*synthetic_clips)
  iterator = input_pipeline.syncnet_iterator(list(records), batch_size=40, seed=0)
  agreement = {0.0: [], 1.0: []}
  for batch in batches(iterator, 4):
    for lower_halves, mel, label in zip(batch["lower_halves"], batch["mel"], batch["label"]):
      clip_index, shown = stamped_frames(lower_halves)
      assert shown == list(range(shown[0], shown[0] + T))
      truth = truths[clip_index]
      sounding = sounding_vowels(truth, records[clip_index]["mel"], mel[..., 0],
                                 np.arange(T) / truth.fps)
      agreement[float(label)].append(np.mean(truth.vowel[shown] == sounding))
  assert len(agreement[1.0]) > 40 and len(agreement[0.0]) > 40
  assert np.mean(agreement[1.0]) > 0.95 and min(agreement[1.0]) >= 0.6
  assert np.mean(agreement[0.0]) < 0.5


@pytest.mark.parametrize("mel_offset_frames", [0, -1])
def test_generator_mel_chunks_on_synthetic_speech(synthetic_clips, mel_offset_frames):
  """Convention 0: chunk k sounds the vowel target frame k shows; -1: the frame before."""
  truth, record = synthetic_clips[0]
  sampler = input_pipeline.GeneratorWindows(mel_offset_frames=mel_offset_frames)
  for i in range(20):
    example = sampler.random_map(record, np.random.default_rng(i))
    _, shown = stamped_frames(example["target"])
    for k in range(T):
      sounding = sounding_vowels(truth, record["mel"], example["mel_chunks"][k, ..., 0], 0.0)
      assert sounding == truth.vowel[shown[k] + mel_offset_frames]


def test_bgr_flips_channels(clips):
  rng_seed = 3
  rgb = input_pipeline.GeneratorWindows().random_map(clips[0], np.random.default_rng(rng_seed))
  bgr = input_pipeline.GeneratorWindows(channel_order="bgr").random_map(
      clips[0], np.random.default_rng(rng_seed))
  np.testing.assert_array_equal(bgr["target"], rgb["target"][..., ::-1])
  np.testing.assert_array_equal(bgr["reference"], rgb["reference"][..., ::-1])
  with pytest.raises(ValueError, match="channel_order"):
    input_pipeline.SyncNetPairs(channel_order="rbg")


def test_resize_frames_is_antialiased_and_keeps_flat_colours():
  flat = np.full((2, 16, 16, 3), 200, np.uint8)
  np.testing.assert_array_equal(input_pipeline.resize_frames(flat, 8), np.full((2, 8, 8, 3), 200))
  assert input_pipeline.resize_frames(flat, 16) is flat
  # A one-pixel checkerboard halves to its mean: an antialiased kernel puts equal weight
  # on both colours; sampling without one would give pure black or white.
  board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
  board = np.repeat(board[None, :, :, None], 3, axis=-1)
  half = input_pipeline.resize_frames(board, 8)
  assert np.abs(half[:, 1:-1, 1:-1].astype(np.float32) - 127.5).max() <= 1.0
  # Floats in [0, 1] go through uint8 and come back float32.
  as_float = input_pipeline.resize_frames(board.astype(np.float32) / 255, 8)
  assert as_float.dtype == np.float32
  np.testing.assert_array_equal(as_float, half.astype(np.float32) / 255)


def test_generator_windows_at_the_generator_size(clips):
  rng_seed = 5
  full = input_pipeline.GeneratorWindows().random_map(clips[0], np.random.default_rng(rng_seed))
  small = input_pipeline.GeneratorWindows(img_size=8).random_map(clips[0],
                                                          np.random.default_rng(rng_seed))
  for key in ("target", "reference"):
    np.testing.assert_array_equal(small[key], input_pipeline.resize_frames(full[key], 8))
  for key in ("mel_chunks", "sync_mel"):
    np.testing.assert_array_equal(small[key], full[key])


def test_source_skips_short_clips_and_fails_on_empty(clips):
  source = input_pipeline.ClipSource(clips + [indexed_clip(9, 15)])
  assert len(source) == len(clips) and source.num_skipped == 1
  with pytest.raises(input_pipeline.DatasetError, match="no records"):
    input_pipeline.ClipSource([])
  with pytest.raises(input_pipeline.DatasetError, match="none of the 2 records"):
    input_pipeline.ClipSource([indexed_clip(0, 15), indexed_clip(1, 3)])
  decode = lambda raw: clips[0] if raw == b"a" else {}.pop(0)
  for scan in (True, False):
    with pytest.raises(input_pipeline.DatasetError, match="record 1 unreadable"):
      input_pipeline.ClipSource([b"a", b"b"], decode=decode, scan=scan)
  assert len(input_pipeline.ClipSource(clips + [indexed_clip(9, 15)], scan=False)) == len(clips) + 1
  assert len(input_pipeline.ClipSource(clips, frame_counts=[40, 23, 15, 60])) == len(clips) - 1


def test_missing_shards_fail_loudly(tmp_path):
  with pytest.raises(input_pipeline.DatasetError, match="cannot open record shards"):
    input_pipeline.open_record_source(tmp_path / "nothing_here")


def batches(iterator, count):
  out = [next(iterator) for _ in range(count)]
  return [{k: np.array(v) for k, v in b.items()} for b in out]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_epoch_shuffle_permutes_each_epoch_anew():
  dataset = input_pipeline.EpochShuffle(grain.MapDataset.range(10), seed=3).repeat(3)
  epochs = [[dataset[10 * e + i] for i in range(10)] for e in range(3)]
  assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
  assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(10))
  again = input_pipeline.EpochShuffle(grain.MapDataset.range(10), seed=3).repeat(3)
  assert [again[i] for i in reversed(range(30))] == sum(epochs, [])[::-1]


def test_iterator_is_deterministic_by_seed(clips):
  source = input_pipeline.ClipSource(clips)
  make = lambda seed: input_pipeline.generator_iterator(source, batch_size=3, seed=seed)
  first = batches(make(0), 4)
  assert first[0]["reference"].shape == first[0]["target"].shape == (3, T, 16, 16, 3)
  assert first[0]["mel_chunks"].shape == (3, T, 80, 16, 1)
  assert first[0]["sync_mel"].shape == (3, 80, 16, 1)
  assert first[0]["target"].dtype == np.uint8
  assert_same_batches(first, batches(make(0), 4))
  other = batches(make(1), 4)
  assert any(not np.array_equal(x["target"], y["target"]) for x, y in zip(first, other))


def test_shards_split_clips(clips):
  source = input_pipeline.ClipSource(clips)
  seen = []
  for shard_index in range(2):
    it = input_pipeline.syncnet_iterator(source, batch_size=1, seed=0, shard_index=shard_index,
                                  shard_count=2, num_epochs=1)
    ids = set()
    for batch in it:  # mel row 1 is noise, unique to its clip
      ids.add(next(c["clip_id"] for c in clips
                   if np.isin(batch["mel"][0, 1, :, 0], c["mel"][1]).all()))
    seen.append(ids)
  assert not seen[0] & seen[1] and seen[0] | seen[1] == {c["clip_id"] for c in clips}


@pytest.mark.parametrize("worker_count", [0, 1])
def test_state_restore_gives_same_next_batches(clips, worker_count):
  source = input_pipeline.ClipSource(clips)
  make = lambda: input_pipeline.syncnet_iterator(source, batch_size=2, seed=5,
                                          worker_count=worker_count)
  iterator = make()
  batches(iterator, 3)
  state = iterator.get_state()
  expected = batches(iterator, 4)
  restored = make()
  restored.set_state(state)
  assert_same_batches(batches(restored, 4), expected)
  iterator.close()
  restored.close()


def test_orbax_checkpoint_round_trip(clips, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  source = input_pipeline.ClipSource(clips)
  make = lambda: input_pipeline.syncnet_iterator(source, batch_size=2, seed=7)
  iterator = make()
  batches(iterator, 2)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(2, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointSave(iterator),
        step=ocp.args.JsonSave({"step": 2})))
    manager.wait_until_finished()
    expected = batches(iterator, 3)
    restored = manager.restore(2, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(make()),
        step=ocp.args.JsonRestore()))
  assert restored.step == {"step": 2}
  assert_same_batches(batches(restored.data, 3), expected)


def write_shards(directory, clips_per_shard):
  from lipsync_jax import records  # pylint: disable=g-import-not-at-top
  for shard, shard_clips in enumerate(clips_per_shard):
    with records.ShardWriter(directory / f"train-{shard:05d}") as writer:
      for clip in shard_clips:
        writer.write(clip if isinstance(clip, bytes) else records.encode_record(
            dict(clip, frames=records.encode_jpeg(clip["frames"]), crop_size=16)))


def test_shards_with_workers_equal_in_memory_clips(clips, tmp_path):
  from lipsync_jax import records  # pylint: disable=g-import-not-at-top
  write_shards(tmp_path, [clips[:2], clips[2:]])
  shard_source = input_pipeline.open_record_source(tmp_path)
  decoded = [records.decode_record(records.encode_record(
      dict(c, frames=records.encode_jpeg(c["frames"]), crop_size=16))) for c in clips]
  expected = batches(input_pipeline.generator_iterator(decoded, batch_size=2, seed=1), 3)
  iterator = input_pipeline.generator_iterator(shard_source, batch_size=2, seed=1, worker_count=1)
  assert_same_batches(batches(iterator, 3), expected)
  iterator.close()


def test_unreadable_record_fails_loudly(clips, tmp_path):
  write_shards(tmp_path, [[clips[0], b"not a record"]])
  with pytest.raises(input_pipeline.DatasetError, match="record 1 unreadable"):
    input_pipeline.open_record_source(tmp_path)


def test_samples_leave_the_host_as_uint8_images():
  """Bytes per 96 px sample (README): 307,200 for the generator, 74,244 for SyncNet."""
  clip = indexed_clip(0, 40, size=96)
  rng = np.random.default_rng(0)
  sizes = {}
  for name, sampler in (("generator", input_pipeline.GeneratorWindows()),
                        ("syncnet", input_pipeline.SyncNetPairs())):
    example = sampler.random_map(clip, rng)
    assert all(v.dtype == np.uint8 for k, v in example.items()
               if k in ("target", "reference", "lower_halves"))
    sizes[name] = sum(np.asarray(v).nbytes for v in example.values())
  assert sizes == {"generator": 2 * 5 * 96 * 96 * 3 + 6 * 80 * 16 * 4,
                   "syncnet": 5 * 48 * 96 * 3 + 80 * 16 * 4 + 4}
  assert sizes == {"generator": 307_200, "syncnet": 74_244}
