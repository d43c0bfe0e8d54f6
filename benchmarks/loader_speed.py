"""Input-pipeline speed: what one CPU core feeds, by record layout, decoder and workers.

  python benchmarks/loader_speed.py [--clips=24] [--batches=24] [--workers=0,1,2]
                                    [--startup_records=1000,10000]

Four tables, on synthetic clips (3 s, 96 x 96 JPEG face crops at quality 95, the mel):
1. Per-frame read + decode: PIL and libjpeg-turbo (simplejpeg) on the JPEGs, and raw
   uint8 frames, each with its bytes per frame and disk per hour of 25 fps video; one
   ArrayRecord record read against a slice of the memory-mapped frame file.
2. Samplers: samples/s of `input_pipeline.generator_iterator` (batch 16) and
   `syncnet_iterator` (batch 64) over the clip records (each sample parses its whole
   record), the frame store with JPEG frames and with raw frames, for 0/1/2 Grain worker
   processes, against a PyTorch `DataLoader` running the same sampler over the same
   frame store with the same workers. Per core = samples/s / max(1, workers).
3. Bytes per sample leaving the host: the float32 batches this project sent before
   against the uint8 ones it sends now.
4. Start-up: seconds from opening the dataset to the first generator batch, at 1k and
   10k records (one-second clips of 16 px frames: start-up does not read frames), for
   the frame store and for the records as the trainer opened them before (scanning
   every record).
Ends with three lines for scripts: `generator samples/s/core: N`,
`syncnet samples/s/core: N` (the frame store's best per-core rate) and
`start-up s at 1k/10k records: A/B` (frame store).
"""

import io
import os
import pathlib
import tempfile
import time

from absl import app
from absl import flags
from array_record.python import array_record_data_source
import numpy as np
from PIL import Image
import simplejpeg

from data_pipeline import synthetic
from lipsync_jax import audio, frame_store, input_pipeline, records

_CLIPS = flags.DEFINE_integer("clips", 24, "synthetic clips of 3 s in the shards")
_BATCHES = flags.DEFINE_integer("batches", 24, "timed batches per row (after the first)")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "worker process counts")
_STARTUP_RECORDS = flags.DEFINE_list("startup_records", ["1000", "10000"],
                                     "dataset sizes for the start-up table")

BATCH_SIZES = {"generator": 16, "syncnet": 64}
FRAMES_PER_HOUR = 25 * 3600


def write_synthetic_shards(directory: str, num_clips: int, crop_size: int = 96) -> None:
  """`num_clips` synthetic clips as records (and their frame store) in two shards."""
  writers = [records.ShardWriter(f"{directory}/bench-{i:05d}", ("array_record", "frame_store"))
             for i in range(2)]
  for index in range(num_clips):
    clip = synthetic.make_clip(index, seconds=3.0, frame_size=128)
    crops = np.stack([
        np.asarray(Image.fromarray(f[y1:y2, x1:x2]).resize((crop_size, crop_size)))
        for f, (x1, y1, x2, y2) in zip(clip.frames, clip.boxes)])
    writers[index % 2].write(records.encode_record({
        "clip_id": f"bench{index}", "fps": clip.fps, "crop_size": crop_size,
        "frames": records.encode_jpeg(crops), "boxes": clip.boxes,
        "mel": audio.melspectrogram(clip.wav)}))
  for writer in writers:
    writer.close()
  frame_store.write_index(directory)


def _per_call_us(fn, items) -> float:
  start = time.perf_counter()
  for item in items:
    fn(item)
  return (time.perf_counter() - start) / len(items) * 1e6


def decoder_rows(record_dir: str, raw_dir: str) -> list[tuple]:
  """(what, us per frame, bytes per frame, GB per hour) rows."""
  jpeg_store, raw_store = frame_store.FrameStore(record_dir), frame_store.FrameStore(raw_dir)
  clips = [jpeg_store[i] for i in range(len(jpeg_store))]
  jpegs = [bytes(f) for c in clips for f in c["frames"]][:1000]
  jpeg_bytes = np.mean([len(j) for j in jpegs])
  raw = [raw_store[i]["frames"] for i in range(len(raw_store))]
  raw_frames = [(frames, k) for frames in raw for k in range(len(frames))][:1000]
  raw_bytes = raw_frames[0][0][0].nbytes
  ar_paths = [str(p) for p in records.list_shards(record_dir)]
  frames_source = array_record_data_source.ArrayRecordDataSource(ar_paths)
  whole_record_bytes = np.mean([len(frames_source[i]) for i in range(len(frames_source))])
  pil = lambda j: np.asarray(Image.open(io.BytesIO(j)).convert("RGB"))
  turbo = lambda j: simplejpeg.decode_jpeg(j, colorspace="RGB")
  copy_raw = lambda fk: np.array(fk[0][fk[1]])
  per_hour = lambda b: b * FRAMES_PER_HOUR / 1e9
  rows = [("JPEG q95, PIL decode", _per_call_us(pil, jpegs), jpeg_bytes, per_hour(jpeg_bytes)),
          ("JPEG q95, libjpeg-turbo (simplejpeg)", _per_call_us(turbo, jpegs), jpeg_bytes,
           per_hour(jpeg_bytes)),
          ("raw uint8 frames (copy out of the map)", _per_call_us(copy_raw, raw_frames),
           raw_bytes, per_hour(raw_bytes))]
  store_frames = [c["frames"] for c in clips]
  picks = [(store_frames[i % len(store_frames)], i % 70) for i in range(1000)]
  rows.append(("read 1 frame: slice of the mapped store", _per_call_us(
      lambda fk: bytes(fk[0][fk[1]]), picks), jpeg_bytes, float("nan")))
  rows.append(("read 1 record: ArrayRecord random access", _per_call_us(
      lambda i: frames_source[i], [i % len(frames_source) for i in range(200)]),
      whole_record_bytes, float("nan")))
  return rows


class TorchReferenceDataset:
  """The same sampler behind a PyTorch map-style dataset (one sample per index)."""

  def __init__(self, source, kind: str):
    self.source = source
    self.sampler = (input_pipeline.SyncNetPairs() if kind == "syncnet"
                    else input_pipeline.GeneratorWindows())

  def __len__(self):
    return 1 << 30

  def __getitem__(self, index):
    clip = self.source[index % len(self.source)]
    return self.sampler.random_map(clip, np.random.default_rng([0, index]))


def _time_iterator(iterator, num_batches: int, batch_size: int) -> tuple[float, float]:
  """(seconds to the first batch, samples/s over the next `num_batches`)."""
  start = time.perf_counter()
  next(iterator)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return first, num_batches * batch_size / (time.perf_counter() - start)


def sampler_rows(sources: dict, worker_counts, num_batches: int) -> list[tuple]:
  """(sampler, layout, workers, samples/s, per core, torch samples/s) rows."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  rows = []
  for kind, batch_size in BATCH_SIZES.items():
    make = (input_pipeline.syncnet_iterator if kind == "syncnet"
            else input_pipeline.generator_iterator)
    for layout, source in sources.items():
      for workers in worker_counts:
        iterator = make(source, batch_size=batch_size, seed=0, worker_count=workers)
        _, rate = _time_iterator(iterator, num_batches, batch_size)
        iterator.close()
        torch_rate = float("nan")
        if layout == "frame store, JPEG":
          loader = torch.utils.data.DataLoader(
              TorchReferenceDataset(source, kind), batch_size=batch_size, num_workers=workers,
              multiprocessing_context="spawn" if workers else None)
          torch_iterator = iter(loader)
          _, torch_rate = _time_iterator(torch_iterator, num_batches, batch_size)
          del torch_iterator
        rows.append((kind, layout, workers, rate, rate / max(1, workers), torch_rate))
        print(f"  {kind:<9} {layout:<28} workers {workers}: {rate:8.1f} samples/s", flush=True)
  return rows


def bytes_rows(img_size: int = 96) -> list[tuple]:
  """(sampler, float32 bytes before, uint8 bytes now) per sample."""
  t, s, mel = input_pipeline.WINDOW_FRAMES, img_size, 80 * 16 * 4
  before = {"generator": t * s * s * 6 * 4 + t * s * s * 3 * 4 + t * mel + mel,
            "syncnet": (s // 2) * s * 3 * t * 4 + mel + 4}
  now = {"generator": 2 * t * s * s * 3 + t * mel + mel,
         "syncnet": t * (s // 2) * s * 3 + mel + 4}
  return [(k, before[k], now[k]) for k in BATCH_SIZES]


def write_startup_dataset(directory: pathlib.Path, num_records: int) -> None:
  """`num_records` one-second clips of 16 px frames (records + frame store, 128 a shard)."""
  frames = records.encode_jpeg(np.full((25, 16, 16, 3), 128, np.uint8))
  mel = np.zeros((80, 81), np.float32)
  for shard_start in range(0, num_records, 128):
    with records.ShardWriter(directory / f"shard-{shard_start // 128:05d}",
                             ("array_record", "frame_store")) as writer:
      for i in range(shard_start, min(num_records, shard_start + 128)):
        writer.write(records.encode_record({
            "clip_id": f"c{i}", "fps": 25.0, "crop_size": 16, "frames": frames,
            "boxes": np.zeros((25, 4), np.int32), "mel": mel}))
  frame_store.write_index(directory)


def startup_seconds(open_source) -> float:
  start = time.perf_counter()
  iterator = input_pipeline.generator_iterator(open_source(), batch_size=16, seed=0)
  next(iterator)
  return time.perf_counter() - start


def main(argv):
  del argv
  worker_counts = [int(w) for w in _WORKERS.value]
  with tempfile.TemporaryDirectory() as root:
    record_dir, raw_dir = f"{root}/jpeg", f"{root}/raw"
    os.makedirs(record_dir)
    os.makedirs(raw_dir)
    start = time.perf_counter()
    write_synthetic_shards(record_dir, _CLIPS.value)
    for path in records.list_shards(record_dir):  # the same records, raw frame store
      os.symlink(path, f"{raw_dir}/{path.name}")
    records.write_frame_store(raw_dir, "raw")
    print(f"wrote {_CLIPS.value} clips of 75 frames in {time.perf_counter() - start:.1f} s")

    print("\n1. one 96 px frame: read + decode (per hour: 25 fps)")
    print(f"{'':<44} {'us/frame':>9} {'bytes':>8} {'GB/hour':>8}")
    for what, us, nbytes, gb in decoder_rows(record_dir, raw_dir):
      print(f"{what:<44} {us:>9.1f} {nbytes:>8.0f} {gb:>8.2f}")

    print("\n2. samplers (one process per worker; per core = samples/s / max(1, workers))")
    sources = {"records (whole record/sample)": input_pipeline.open_record_source(
                   records.list_shards(record_dir)),
               "frame store, JPEG": input_pipeline.open_record_source(record_dir),
               "frame store, raw uint8": input_pipeline.open_record_source(raw_dir)}
    rows = sampler_rows(sources, worker_counts, _BATCHES.value)
    print(f"{'sampler':<10} {'layout':<30} {'workers':>7} {'samples/s':>9} {'per core':>8} "
          f"{'torch/s':>8} {'ratio':>6}")
    for kind, layout, workers, rate, per_core, torch_rate in rows:
      print(f"{kind:<10} {layout:<30} {workers:>7} {rate:>9.1f} {per_core:>8.1f} "
            f"{torch_rate:>8.1f} {rate / torch_rate:>6.2f}")

    print("\n3. bytes per sample leaving the host (96 px)")
    print(f"{'sampler':<10} {'float32 before':>14} {'uint8 now':>10} {'ratio':>6}")
    for kind, before, now in bytes_rows():
      print(f"{kind:<10} {before:>14,} {now:>10,} {before / now:>6.1f}")

    print("\n4. start-up: open + first generator batch (16 px frames, 25 per record)")
    print(f"{'records':>8} {'frame store s':>13} {'records, scanned s':>18}")
    startup = {}
    for count in [int(n) for n in _STARTUP_RECORDS.value]:
      directory = pathlib.Path(root) / f"startup{count}"
      directory.mkdir()
      write_startup_dataset(directory, count)
      startup[count] = startup_seconds(lambda: input_pipeline.open_record_source(directory))
      scanned = startup_seconds(
          lambda: input_pipeline.open_record_source(records.list_shards(directory)))
      print(f"{count:>8} {startup[count]:>13.2f} {scanned:>18.2f}")

  best = {kind: max(r[4] for r in rows if r[0] == kind and r[1].startswith("frame store, JPEG"))
          for kind in BATCH_SIZES}
  print(f"\ngenerator samples/s/core: {best['generator']:.0f}")
  print(f"syncnet samples/s/core: {best['syncnet']:.0f}")
  print("start-up s at 1k/10k records: " + "/".join(f"{s:.2f}" for s in startup.values()))


if __name__ == "__main__":
  app.run(main)
