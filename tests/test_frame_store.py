"""Tests of the frame store: same clips as the records, per-host index rows, atomic shards."""

import io
import json

import numpy as np
from PIL import Image
import pytest

from lipsync_jax import frame_store, input_pipeline, records


def make_clip(seed: int, num_frames: int, size: int = 24) -> dict:
  """A record dict with smooth random frames (JPEG-friendly) and a random mel."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (num_frames, 4, 4, 3), dtype=np.uint8)
  frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR))
                     for f in base])
  num_mel = int(num_frames * 80 / 25) + 1
  return {"clip_id": f"clip{seed}", "fps": 25.0, "crop_size": size,
          "frames": records.encode_jpeg(frames), "boxes": np.zeros((num_frames, 4), np.int32),
          "mel": rng.normal(size=(80, num_mel)).astype(np.float32)}


def write(directory, clips_per_shard, formats=("array_record", "frame_store")):
  for shard, clips in enumerate(clips_per_shard):
    with records.ShardWriter(directory / f"shard-{shard:05d}", formats) as writer:
      for clip in clips:
        writer.write(records.encode_record(clip))


@pytest.fixture(scope="module")
def clips():
  return [make_clip(seed, n) for seed, n in enumerate([40, 23, 16, 60, 31, 12, 50])]


@pytest.fixture()
def store_dir(tmp_path, clips):
  write(tmp_path, [clips[:3], clips[3:5], clips[5:]])
  assert frame_store.write_index(tmp_path) == len(clips)
  return tmp_path


def test_store_clips_equal_the_records(store_dir, clips):
  store = frame_store.FrameStore(store_dir)
  assert len(store) == len(clips)
  for clip, stored in zip(clips, (store[i] for i in range(len(store)))):
    assert stored["clip_id"] == clip["clip_id"] and stored["fps"] == clip["fps"]
    assert [bytes(f) for f in stored["frames"]] == clip["frames"]
    np.testing.assert_array_equal(stored["mel"], clip["mel"])


def test_libjpeg_turbo_decodes_as_pil(store_dir, clips):
  """The sampler's decoder (simplejpeg) gives PIL's pixels, bit for bit."""
  clip = frame_store.FrameStore(store_dir)[3]
  frames = input_pipeline.read_frames(clip, range(len(clip["frames"])))
  pil = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in clips[3]["frames"]])
  np.testing.assert_array_equal(frames, pil)
  bgr = input_pipeline.read_frames(clip, [0, 5], channel_order="bgr")
  np.testing.assert_array_equal(bgr, pil[[0, 5], ..., ::-1])


def test_raw_store_holds_the_decoded_frames(tmp_path, clips):
  write(tmp_path, [clips[:2]], formats=("array_record",))
  assert records.write_frame_store(tmp_path, "raw") == [tmp_path / "shard-00000.array_record"]
  raw = frame_store.FrameStore(tmp_path)[1]
  jpeg_frames = input_pipeline.read_frames({"frames": clips[1]["frames"]}, range(23))
  np.testing.assert_array_equal(np.stack(list(raw["frames"])), jpeg_frames)
  assert records.write_frame_store(tmp_path, "raw") == []  # resumable: nothing left to convert


def test_samplers_give_the_same_batches_from_store_and_records(store_dir):
  from_records = input_pipeline.open_record_source(records.list_shards(store_dir))
  from_store = input_pipeline.open_record_source(store_dir)
  assert isinstance(from_store, frame_store.FrameStore) and len(from_store) == len(from_records)
  # The generator's batches from a worker process (the store is pickled and mapped again).
  for make, workers in ((input_pipeline.generator_iterator, 1),
                        (input_pipeline.syncnet_iterator, 0)):
    expected = make(from_records, batch_size=3, seed=4)
    with_workers = make(from_store, batch_size=3, seed=4, worker_count=workers)
    for _ in range(3):
      a, b = next(expected), next(with_workers)
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with_workers.close()


def test_each_host_reads_its_own_rows(store_dir, clips):
  long_enough = [c["clip_id"] for c in clips if len(c["frames"]) >= 16]
  store = frame_store.FrameStore(store_dir, min_frames=16)
  assert [store[i]["clip_id"] for i in range(len(store))] == long_enough
  hosts = [frame_store.FrameStore(store_dir, i, 3, min_frames=16) for i in range(3)]
  for i, host in enumerate(hosts):  # host i: clips i, i + 3, ... of the index, then filtered
    expected = [c["clip_id"] for c in clips[i::3] if len(c["frames"]) >= 16]
    assert [host[k]["clip_id"] for k in range(len(host))] == expected
    assert store.shard(i, 3)._rows.tobytes() == host._rows.tobytes()  # pylint: disable=protected-access
  # Two hosts' iterators see disjoint clips covering the store.
  seen = []
  for host in range(2):
    iterator = input_pipeline.syncnet_iterator(store, batch_size=1, seed=0, shard_index=host,
                                               shard_count=2, num_epochs=1)
    seen.append({next(c["clip_id"] for c in clips if np.isin(b["mel"][0, 1, :, 0], c["mel"][1]).all())
                 for b in iterator})
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(long_enough)


def test_an_aborted_shard_leaves_nothing_and_the_index_skips_it(tmp_path, clips):
  write(tmp_path, [clips[:2]])
  writer = records.ShardWriter(tmp_path / "shard-00001", ("array_record", "frame_store"))
  writer.write(records.encode_record(clips[2]))
  assert frame_store.write_index(tmp_path) == 2  # the open shard is not complete
  writer.abort()
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["shard-00000.array_record", "shard-00000.frames", "shard-00000.offsets.npy",
       "shard-00000.mel.npy", "shard-00000.clips.npy", "index.npy", "frame_store.json"])


def test_a_stale_index_is_refused(store_dir, clips):
  with records.ShardWriter(store_dir / "shard-00003", ("array_record", "frame_store")) as writer:
    writer.write(records.encode_record(clips[0]))  # a shard the index does not know
  with pytest.raises(input_pipeline.DatasetError, match="stale"):
    input_pipeline.open_record_source(store_dir)
  assert frame_store.write_index(store_dir) == len(clips) + 1
  assert len(input_pipeline.open_record_source(store_dir)) == len(clips)  # one is 12 frames


def test_a_bad_store_fails_in_one_line(store_dir):
  meta = json.loads((store_dir / frame_store.META_NAME).read_text())
  (store_dir / frame_store.META_NAME).write_text(json.dumps(dict(meta, num_clips=99)))
  with pytest.raises(input_pipeline.DatasetError, match="7 rows.*says 99"):
    input_pipeline.open_record_source(store_dir)
  (store_dir / frame_store.META_NAME).write_text("{")
  with pytest.raises(input_pipeline.DatasetError, match="not a readable frame store"):
    input_pipeline.open_record_source(store_dir)
  with pytest.raises(frame_store.FrameStoreError, match="no frame store shards"):
    frame_store.write_index(store_dir / "missing")
