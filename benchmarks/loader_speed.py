"""Input-pipeline speed: samples/s of the Grain samplers over ArrayRecord shards.

  python benchmarks/loader_speed.py [--clips=24] [--batches=12] [--workers=0,1,2]

Writes synthetic clips (3 s, 96 x 96 JPEG face crops, the mel) to shards in a
temporary directory, then times `input_pipeline.syncnet_iterator` (batch 64) and
`input_pipeline.generator_iterator` (batch 16) with 0, 1, 2 Grain worker processes, against
a PyTorch `DataLoader` running the same sampler over the same shards with the same
worker counts (spawned workers, as Grain's). Start-up is the time to the first batch;
samples/s is measured after it. Ratio = Grain samples/s / DataLoader samples/s.
"""

import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from lipsync_jax import records
from lipsync_jax import input_pipeline
from data_pipeline import synthetic
from lipsync_jax import audio

_CLIPS = flags.DEFINE_integer("clips", 24, "synthetic clips of 3 s in the shards")
_BATCHES = flags.DEFINE_integer("batches", 12, "timed batches per row (after the first)")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "worker process counts")
_READ_THREADS = flags.DEFINE_integer("read_threads", 1, "Grain threads per process")

BATCH_SIZES = {"syncnet": 64, "generator": 16}


def write_synthetic_shards(directory: str, num_clips: int, crop_size: int = 96) -> None:
  """`num_clips` synthetic clips as records in two ArrayRecord shards."""
  writers = [records.ShardWriter(f"{directory}/bench-{i:05d}") for i in range(2)]
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


def _sampler(kind: str):
  return input_pipeline.SyncNetPairs() if kind == "syncnet" else input_pipeline.GeneratorWindows()


class TorchReferenceDataset:
  """The same sampler behind a PyTorch map-style dataset (one sample per index)."""

  def __init__(self, source, kind: str):
    self.source, self.sampler = source, _sampler(kind)

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


def loader_speed(shard_dir: str, worker_counts, num_batches: int, read_threads: int):
  """Rows (pipeline, workers, grain start s, grain samples/s, torch start s, torch
  samples/s, ratio) for both samplers."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  source = input_pipeline.open_record_source(shard_dir)
  rows = []
  for kind, batch_size in BATCH_SIZES.items():
    make = input_pipeline.syncnet_iterator if kind == "syncnet" else input_pipeline.generator_iterator
    for workers in worker_counts:
      iterator = make(source, batch_size=batch_size, seed=0, worker_count=workers,
                      read_threads=read_threads)
      grain_first, grain_rate = _time_iterator(iterator, num_batches, batch_size)
      iterator.close()
      loader = torch.utils.data.DataLoader(
          TorchReferenceDataset(source, kind), batch_size=batch_size, num_workers=workers,
          multiprocessing_context="spawn" if workers else None)
      torch_iterator = iter(loader)
      torch_first, torch_rate = _time_iterator(torch_iterator, num_batches, batch_size)
      del torch_iterator
      rows.append((kind, workers, grain_first, grain_rate, torch_first, torch_rate,
                   grain_rate / torch_rate))
  return rows


def main(argv):
  del argv
  worker_counts = [int(w) for w in _WORKERS.value]
  with tempfile.TemporaryDirectory() as shard_dir:
    start = time.perf_counter()
    write_synthetic_shards(shard_dir, _CLIPS.value)
    print(f"wrote {_CLIPS.value} clips of 75 frames in {time.perf_counter() - start:.1f} s")
    rows = loader_speed(shard_dir, worker_counts, _BATCHES.value, _READ_THREADS.value)
  print(f"\nloader samples/s (read_threads={_READ_THREADS.value}; start = s to first batch)")
  print(f"{'pipeline':<10} {'batch':>5} {'workers':>7} {'grain start':>11} {'grain/s':>8} "
        f"{'torch start':>11} {'torch/s':>8} {'ratio':>6}")
  for kind, workers, g_first, g_rate, t_first, t_rate, ratio in rows:
    print(f"{kind:<10} {BATCH_SIZES[kind]:>5} {workers:>7} {g_first:>11.2f} {g_rate:>8.1f} "
          f"{t_first:>11.2f} {t_rate:>8.1f} {ratio:>6.2f}")


if __name__ == "__main__":
  app.run(main)
