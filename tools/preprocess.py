r"""Preprocesses a folder of videos into record shards (see data_pipeline.preprocess).

  python tools/preprocess.py --input_dir=/data/lrs2 --output_dir=/data/lrs2_records \
      --num_workers=2 --format=array_record

Re-running the same command resumes: finished inputs (manifest.jsonl) are
skipped. Bad inputs are skipped and listed in <output_dir>/report.tsv; the exit
code is 0 when the job completed, even with skipped inputs.

On Apache Beam (`pip install -e '.[beam]'`), the same per-video function:

  python tools/preprocess.py --runner=beam --input_dir=... --output_dir=... \
      --beam_options="--runner=DirectRunner --direct_num_workers=2"
"""

from concurrent import futures
import sys

from absl import app
from absl import flags

from data_pipeline import preprocess

_INPUT_DIR = flags.DEFINE_string(
    "input_dir", None, "LRS2-layout folder or any folder of videos.",
    required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where shards, manifest.jsonl and report.tsv go.",
    required=True)
_CROP_SIZE = flags.DEFINE_integer("crop_size", 96, "Face crop side in pixels.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", 1, "Worker processes (0: in the main process).")
_RECORDS_PER_SHARD = flags.DEFINE_integer(
    "records_per_shard", 128, "Records per shard file.")
_FORMAT = flags.DEFINE_enum(
    "format", "array_record", ["array_record", "tfrecord", "both"],
    "Shard format(s); training reads array_record.")
_RUNNER = flags.DEFINE_enum(
    "runner", "local", ["local", "beam"],
    "local: a process pool here; beam: an Apache Beam pipeline.")
_BEAM_OPTIONS = flags.DEFINE_string(
    "beam_options", "--runner=DirectRunner",
    "Beam pipeline options (e.g. for Dataflow, Flink or Spark).")
_MIN_FACE_FRACTION = flags.DEFINE_float(
    "min_face_fraction", 0.8,
    "Skip a clip when fewer frames than this fraction have a face.")
_MIN_FRAMES = flags.DEFINE_integer(
    "min_frames", 16, "Skip clips with fewer frames (Wav2Lip: > 3 * 5).")
_MAX_AV_MISMATCH_S = flags.DEFINE_float(
    "max_av_mismatch_s", 0.2,
    "Skip a clip whose audio and video durations differ by more seconds.")
_FPS = flags.DEFINE_float("fps", 25.0, "Frame rate videos are resampled to.")
_PADS = flags.DEFINE_list(
    "pads", ["0", "10", "0", "0"],
    "Face box padding top,bottom,left,right in pixels (as inference).")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if len(_PADS.value) != 4:
    raise app.UsageError("--pads takes four integers: top,bottom,left,right")
  config = preprocess.PreprocessConfig(
      crop_size=_CROP_SIZE.value, fps=_FPS.value, min_frames=_MIN_FRAMES.value,
      min_face_fraction=_MIN_FACE_FRACTION.value,
      max_av_mismatch_s=_MAX_AV_MISMATCH_S.value,
      pads=tuple(int(p) for p in _PADS.value),
      jpeg_quality=_JPEG_QUALITY.value)
  formats = (("array_record", "tfrecord") if _FORMAT.value == "both"
             else (_FORMAT.value,))
  try:
    if _RUNNER.value == "local":
      summary = preprocess.run_local(
          _INPUT_DIR.value, _OUTPUT_DIR.value, config,
          num_workers=_NUM_WORKERS.value,
          records_per_shard=_RECORDS_PER_SHARD.value, formats=formats,
          progress=_PROGRESS.value)
    else:
      from data_pipeline import preprocess_beam  # pylint: disable=g-import-not-at-top
      summary = preprocess_beam.run_beam(
          _INPUT_DIR.value, _OUTPUT_DIR.value, config, formats=formats,
          beam_options=_BEAM_OPTIONS.value)
  except futures.BrokenExecutor as error:
    print(f"preprocess: a worker process died ({error}); the finished shards "
          "are kept: re-run the same command to resume", file=sys.stderr)
    return 1
  except (OSError, RuntimeError, ImportError, ValueError) as error:
    print(f"preprocess: {error}", file=sys.stderr)
    return 1
  print("\n".join(summary.lines()))
  return 0


if __name__ == "__main__":
  app.run(main)
