r"""Live lip sync of a prepared avatar: audio in as it arrives, frames out as they are made.

  python tools/stream.py --checkpoint=CKPT --avatar=avatars/speaker \
      --audio=speech.wav --realtime --outfile=out.mp4
  arecord -f S16_LE -r 16000 -c 1 -t raw | python tools/stream.py --checkpoint=CKPT \
      --avatar=avatars/speaker --audio=- --outfile=- > frames.rgb

--avatar is a folder written by tools/prepare_avatar.py. --audio is a file (any format
tools/infer.py reads), fed in --chunk_ms pieces: at 1x speed with --realtime, else as
fast as the stream takes it; or `-`: raw 16 kHz mono s16le PCM on stdin, each piece when
it is read. --outfile is an mp4 (frames and the audio; it appears complete or not at
all) or `-`: raw uint8 RGB frames (H x W x 3 each, the avatar's size) on stdout.
The generator runs on up to --batch_size ready frames per call.

At the end it prints what it wrote, then (on stderr when frames go to stdout) two lines
for scripts:
  sustained fps: N                   (frames - 1) / (last write - first write)
  latency ms p50/p95/max: A/B/C      per frame: from the arrival of the last audio
                                     sample its mel window needs to its write
Bad input (a missing or broken avatar folder, stdin that is not 16-bit PCM, a checkpoint
of another network, ...) ends it with one line on stderr and exit code 1.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax.numpy as jnp
import numpy as np

from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import cli
from lipsync_jax import host_memory
from lipsync_jax import inference
from lipsync_jax import streaming
from lipsync_jax import video

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generator checkpoint.", required=True)
_AVATAR = flags.DEFINE_string("avatar", None, "Folder from tools/prepare_avatar.py.",
                              required=True)
_AUDIO = flags.DEFINE_string("audio", None, "Audio file, or - for 16 kHz mono s16le PCM on "
                             "stdin.", required=True)
_OUTFILE = flags.DEFINE_string("outfile", "results/stream.mp4", "Output mp4, or - for raw "
                               "RGB frames on stdout.")
_REALTIME = flags.DEFINE_boolean("realtime", False, "Feed an audio file at 1x speed.")
_CHUNK_MS = flags.DEFINE_integer("chunk_ms", 20, "Audio piece size in ms (file input; the "
                                 "most read at once from stdin).", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Most frames per generator call.",
                                   lower_bound=1)
_BF16 = flags.DEFINE_boolean("bf16", False, "bfloat16 compute.")
_BLEND = flags.DEFINE_boolean("blend", True, "Feathered lower-face paste-back.")


class _ReceivedAudio:
  """The audio a `PcmReaderFeed` has read so far, as an array: `video.write_video` reads
  its audio when the first frame is written (channel layout) and after the last frame
  (to encode it), by which time the feed has read everything."""

  def __init__(self, feed):
    self.feed = feed

  def __array__(self, dtype=None, copy=None):
    return self.feed.received().astype(dtype or np.float32)


@cli.tool("stream")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host_memory.reuse_freed_memory()  # before the first XLA computation
  to_stdout = _OUTFILE.value == "-"
  if not to_stdout:
    cli.check_output_folder(_OUTFILE.value)
  avatar = inference.load_avatar(_AVATAR.value)
  generator = checkpoints.load_generator(_CHECKPOINT.value)
  chunk = max(1, _CHUNK_MS.value * audio.SAMPLE_RATE // 1000)
  name, wav = "stdin", None
  if _AUDIO.value != "-":
    name, wav = _AUDIO.value, audio.load_audio(_AUDIO.value)
  stream = streaming.LipsyncStream(generator, avatar, batch_size=_BATCH_SIZE.value,
                                   blend=_BLEND.value,
                                   dtype=jnp.bfloat16 if _BF16.value else None)
  stream.warmup()  # compile every batch shape before the audio starts
  # Audio arrives from here on (stdin: when read; a file: on its schedule from the first poll).
  if wav is None:
    feed = streaming.PcmReaderFeed(sys.stdin.buffer, chunk)
  else:
    feed = streaming.ArrayFeed(wav, chunk, realtime=_REALTIME.value)
  written = []
  frames = streaming.run(stream, feed, written)
  started = time.perf_counter()
  try:
    if to_stdout:
      for image in frames:
        sys.stdout.buffer.write(np.ascontiguousarray(image).tobytes())
        sys.stdout.buffer.flush()
    else:
      track = wav if wav is not None else _ReceivedAudio(feed)
      video.write_video(_OUTFILE.value, frames, avatar.fps, audio=track,
                        sample_rate=audio.SAMPLE_RATE)
  except audio.AudioError as e:  # name the input (stdin's errors already do)
    message = str(e)
    raise audio.AudioError(message if message.startswith(name) else f"{name}: {message}") from e
  seconds = time.perf_counter() - started
  stats = streaming.stream_stats(written)
  report = sys.stderr if to_stdout else sys.stdout
  height, width = avatar.frames.shape[1:3]
  target = "stdout (raw rgb24)" if to_stdout else _OUTFILE.value
  mode = ("read from stdin" if wav is None else
          "fed in real time" if _REALTIME.value else "fed all at once")
  print(f"wrote {target}: {stats.frames} frames of {width}x{height} at {avatar.fps:g} fps, "
        f"{stream.num_samples / audio.SAMPLE_RATE:.2f} s of audio {mode}, in {seconds:.2f} s",
        file=report)
  print(f"generator: {len(stream.generate_seconds)} calls of up to {stream.batch_size} "
        f"frames, {1000 * np.mean(stream.generate_seconds):.1f} ms per call; paste "
        f"{1000 * np.sum(stream.paste_seconds) / stats.frames:.1f} ms per frame", file=report)
  print(stats.lines(), file=report, flush=True)


if __name__ == "__main__":
  cli.run(main)
