r"""Writes synthetic talking-head clips (mp4 with AAC audio + JSON ground truth).

  python tools/make_synthetic.py --out_dir=/tmp/synthetic --num_clips=100 \
      --seconds=3 --seed=0

Each clip `synth_<index>.mp4` (25 fps, H.264, 16 kHz audio) has a sidecar
`synth_<index>.json` with the face box, mouth parameters and vowel class per frame
(see data_pipeline.synthetic). The same flags always give the same clips. A flag out of
range or an unwritable folder: one line on stderr, exit code 1.
"""

import time

from absl import flags

from data_pipeline import synthetic
from lipsync_jax import cli

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder.", required=True)
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 100, "Number of clips.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Duration of each clip in seconds (at least "
                              "one frame: 0.04).", lower_bound=0.04)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the whole dataset.")
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 128, "Side of the square frames in px.",
                                   lower_bound=64)


@cli.tool("make_synthetic")
def main(argv):
  del argv
  started = time.perf_counter()
  paths = synthetic.write_dataset(_OUT_DIR.value, _NUM_CLIPS.value, _SECONDS.value,
                                  _SEED.value, frame_size=_FRAME_SIZE.value,
                                  show_progress=True)
  elapsed = time.perf_counter() - started
  print(f"wrote {len(paths)} clips to {_OUT_DIR.value} in {elapsed:.1f} s "
        f"({len(paths) / max(elapsed, 1e-9):.1f} clips/s)")


if __name__ == "__main__":
  cli.run(main)
