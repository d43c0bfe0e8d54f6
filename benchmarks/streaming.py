r"""Live lip sync (`lipsync_jax.streaming`): throughput and latency per model and batch size.

  python benchmarks/streaming.py [--seconds=6] [--batch_sizes=1,2,4,8] \
      [--models=wav2lip,attn_wav2lip] [--dtypes=float32,bfloat16] [--frame_size=256] \
      [--face_cache=on,off]

For each generator (full size, random weights: speed does not depend on the values), compute
dtype, face path and batch size, over a prepared 2 s synthetic avatar of
frame_size x frame_size (per-frame face boxes) and `--seconds` of synthetic speech, after
compiling every batch shape and (Wav2Lip, `faces` = cached) encoding the avatar's faces once
(`streaming.FaceFeatureCache`; `faces` = full: the whole generator per call, as before the
cache; AttnWav2Lip is always full):
- as fast as possible (all audio at once): `fps` = (frames - 1) / (last frame - first frame),
  the generator's mean ms per call and the paste-back's ms per frame;
- fed at 1x speed in 20 ms pieces (`streaming.ArrayFeed`): the frames per second delivered
  and the latency p50 / p95 / max, from the arrival of the last audio sample a frame's mel
  window needs to the frame being handed out (mp4 encoding not included: tools/stream.py
  reports that end to end).
Everything after the avatar is prepared is inside: mel, generator, paste-back.
"""

import functools
import itertools
import os
import pathlib
import sys
import time

from absl import app
from absl import flags

_SECONDS = flags.DEFINE_float("seconds", 6.0, "Seconds of audio per run.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8"], "Stream batch sizes.")
_MODELS = flags.DEFINE_list("models", ["wav2lip", "attn_wav2lip"], "Generators: wav2lip, "
                            "attn_wav2lip, or attn_tiny (the tests' 3.1M-parameter "
                            "AttnWav2Lip: what the loop costs when the network is cheap).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes (float32, bfloat16).")
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 256, "Avatar frame side in pixels.")
_FACE_CACHE = flags.DEFINE_list("face_cache", ["on"], "Wav2Lip's face path: on (face "
                                "encoder once per avatar frame, the stream's default), off "
                                "(the whole generator per call), or on,off (both rows).")
_CHUNK_MS = 20


def _busy_seconds():
  """CPU seconds the whole machine has been busy (Linux /proc/stat), or None."""
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except OSError:
    return None
  idle = fields[3] + fields[4]  # idle, iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _consume(stream, feed):
  from lipsync_jax import streaming  # pylint: disable=g-import-not-at-top
  written = []
  for _ in streaming.run(stream, feed, written):
    pass
  return streaming.stream_stats(written)


def main(argv):
  del argv
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipeline import synthetic  # pylint: disable=g-import-not-at-top
  from lipsync_jax import audio, checkpoints, inference, streaming  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
  import lipsync_fixtures  # pylint: disable=g-import-not-at-top

  load = os.getloadavg()[0]
  busy_start, own_start, wall_start = _busy_seconds(), os.times(), time.perf_counter()
  clip = synthetic.make_clip(seed=1, seconds=2.0, frame_size=_FRAME_SIZE.value)
  avatar = inference.prepare_avatar(clip.frames, face_boxes=list(clip.boxes))
  wav = synthetic.make_clip(seed=2, seconds=_SECONDS.value, frame_size=64).wav
  chunk = _CHUNK_MS * audio.SAMPLE_RATE // 1000
  rows = []
  header = (f"{'model':<13} {'compute':<9} {'faces':<6} {'batch':>5} {'fps':>6} "
            f"{'gen ms/call':>11} {'paste ms':>8} {'1x fps':>7} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'max ms':>7}")
  notes = []
  print(header)
  print("-" * len(header))
  for name in _MODELS.value:
    if name == "attn_tiny":
      model = checkpoints.build_generator("attn_wav2lip", **lipsync_fixtures.TINY_GENERATOR)
    else:
      model = checkpoints.build_generator(name)
    variables = lipsync_fixtures.random_variables(
        model, jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 96, 96, 6)))
    generator = checkpoints.Generator(model, variables)
    caches = [c == "on" for c in _FACE_CACHE.value]
    if not streaming.supports_face_cache(model):
      caches = [False]
    for dtype_name, cache, batch in itertools.product(
        _DTYPES.value, caches, [int(b) for b in _BATCH_SIZES.value]):
      dtype = None if dtype_name == "float32" else jnp.dtype(dtype_name)
      make = functools.partial(streaming.LipsyncStream, generator, avatar, batch_size=batch,
                               dtype=dtype, face_cache=cache)
      stream = make()
      stream.warmup()
      if stream.face_cache is not None and batch == int(_BATCH_SIZES.value[0]):
        notes.append(f"{name} {dtype_name} face cache: {len(stream.face_cache)} frames, "
                     f"{stream.face_cache.nbytes / 2**20:.1f} MiB, encoded in "
                     f"{stream.face_cache.seconds:.2f} s (compile included)")
      fast = _consume(stream, streaming.ArrayFeed(wav, chunk, realtime=False))
      generate_ms = 1000 * np.mean(stream.generate_seconds)
      paste_ms = 1000 * np.sum(stream.paste_seconds) / fast.frames
      live_stream = make()
      live_stream.warmup()  # compiles are shared; this builds its face cache off the clock
      live = _consume(live_stream, streaming.ArrayFeed(wav, chunk, realtime=True))
      p50, p95, worst = live.latency_ms
      row = (f"{name:<13} {dtype_name:<9} {'cached' if cache else 'full':<6} {batch:>5} "
             f"{fast.sustained_fps:>6.1f} {generate_ms:>11.1f} {paste_ms:>8.2f} "
             f"{live.sustained_fps:>7.1f} {p50:>7.0f} {p95:>7.0f} {worst:>7.0f}")
      rows.append(row)
      print(row, flush=True)
  if notes:
    print("\n" + "\n".join(notes))
  import jax  # pylint: disable=g-import-not-at-top
  busy, own = _busy_seconds(), os.times()
  if busy is not None:
    others = (busy - busy_start) - (own.user + own.system - own_start.user - own_start.system)
    print(f"\nother processes used {100 * others / (time.perf_counter() - wall_start):.0f}% "
          f"of one CPU on average during the runs ({os.cpu_count()} CPUs in all)")
  print(f"\n{_FRAME_SIZE.value}x{_FRAME_SIZE.value} avatar, 96x96 generator input, "
        f"{_SECONDS.value:g} s of audio at {avatar.fps:g} fps ({len(wav)} samples), "
        f"{os.cpu_count()} CPUs, {jax.devices()[0].device_kind}, jax {jax.__version__}, "
        f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
  app.run(main)
