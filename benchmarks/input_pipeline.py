r"""Input pipeline speed on this machine: preprocessing videos/minute.

  python benchmarks/input_pipeline.py --num_clips=100 --seconds=3 --workers=1,2

Preprocessing: `data_pipeline.preprocess.run_local` over synthetic clips
(`data_pipeline.synthetic`), face boxes from the sidecars (as for a dataset
with tracked boxes) and from the BlazeFace detector (sidecars hidden), with 1
and 2 worker processes. Prints one table; each row is one measurement function.
There is no reference implementation to run beside it (Wav2Lip's original
preprocessing needs S3FD weights and OpenCV), so the ratio column compares with
the first row of the same boxes source.
"""

import pathlib
import shutil
import tempfile

from absl import app
from absl import flags

from data_pipeline import preprocess
from data_pipeline import synthetic

_NUM_CLIPS = flags.DEFINE_integer("num_clips", 100, "Synthetic clips.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Seconds per clip.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts to time.")
_DETECT = flags.DEFINE_bool(
    "detect", True, "Also time face detection (sidecar boxes hidden).")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "Where clips and shards go (default: a temp dir).")


def make_inputs(work_dir: pathlib.Path, num_clips: int, seconds: float
                ) -> dict[str, pathlib.Path]:
  """Synthetic clips with sidecars, and the same videos without them."""
  with_sidecars = work_dir / "videos"
  if not (with_sidecars / f"synth_{num_clips - 1:05d}.json").exists():
    synthetic.write_dataset(with_sidecars, num_clips, seconds=seconds, seed=0)
  without_sidecars = work_dir / "videos_no_sidecar"
  without_sidecars.mkdir(exist_ok=True)
  for path in with_sidecars.glob("*.mp4"):
    if not (without_sidecars / path.name).exists():
      (without_sidecars / path.name).symlink_to(path)
  return {"sidecar": with_sidecars, "detector": without_sidecars}


def measure_preprocessing(input_dir: pathlib.Path, output_dir: pathlib.Path,
                          num_workers: int) -> dict[str, float]:
  """One full job from scratch: videos/minute and frames/second."""
  shutil.rmtree(output_dir, ignore_errors=True)
  summary = preprocess.run_local(input_dir, output_dir,
                                 num_workers=num_workers, progress=False)
  if summary.skipped:
    raise RuntimeError(f"benchmark inputs were skipped: {summary.skipped}")
  return {"seconds": summary.seconds,
          "videos_per_minute": 60 * summary.num_written / summary.seconds,
          "frames_per_second": summary.num_frames_written / summary.seconds}


def print_table(rows: list[tuple[str, dict[str, float], float]]) -> None:
  print(f"{'measurement':<52} {'seconds':>8} {'videos/min':>11} "
        f"{'frames/s':>9} {'ratio':>6}")
  for name, result, ratio in rows:
    print(f"{name:<52} {result['seconds']:>8.1f} "
          f"{result['videos_per_minute']:>11.1f} "
          f"{result['frames_per_second']:>9.1f} {ratio:>6.2f}")


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as temp:
    work_dir = pathlib.Path(_WORK_DIR.value or temp)
    inputs = make_inputs(work_dir, _NUM_CLIPS.value, _SECONDS.value)
    sources = ["sidecar", "detector"] if _DETECT.value else ["sidecar"]
    rows = []
    for source in sources:
      first = None
      for workers in (int(w) for w in _WORKERS.value):
        result = measure_preprocessing(inputs[source], work_dir / "records",
                                       workers)
        first = first or result["videos_per_minute"]
        name = (f"preprocess {_NUM_CLIPS.value} x {_SECONDS.value:g} s, "
                f"{source} boxes, {workers} worker(s)")
        rows.append((name, result, result["videos_per_minute"] / first))
    print_table(rows)


if __name__ == "__main__":
  app.run(main)
