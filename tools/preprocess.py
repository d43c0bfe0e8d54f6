r"""Preprocesses a folder of videos into record shards (see data_pipeline.preprocess).

  python tools/preprocess.py --input_dir=/data/lrs2 --output_dir=/data/lrs2_records \
      --num_workers=2 --format=array_record

Re-running the same command resumes: finished inputs (manifest.jsonl) are
skipped. Bad inputs are skipped and listed in <output_dir>/report.tsv; the exit
code is 0 when the job completed, even with skipped inputs; a bad input folder, an
output folder another job is writing, or a worker process that died: one line on stderr,
exit code 1. The log is <output_dir>/logs/preprocess.log.

On Apache Beam (`pip install -e '.[beam]'`), the same per-video function:

  python tools/preprocess.py --runner=beam --input_dir=... --output_dir=... \
      --beam_options="--runner=DirectRunner --direct_num_workers=2"
"""

from concurrent import futures

from absl import app
from absl import flags

from data_pipeline import preprocess
from lipsync_jax import cli

_INPUT_DIR = flags.DEFINE_string(
    "input_dir", None, "LRS2-layout folder or any folder of videos.",
    required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where shards, manifest.jsonl and report.tsv go.",
    required=True)
_CROP_SIZE = flags.DEFINE_integer("crop_size", 96, "Face crop side in pixels.",
                                  lower_bound=1)
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", 1, "Worker processes (0: in the main process).", lower_bound=0)
_RECORDS_PER_SHARD = flags.DEFINE_integer(
    "records_per_shard", 128, "Records per shard file.", lower_bound=1)
_FORMAT = flags.DEFINE_enum(
    "format", "array_record", ["array_record", "tfrecord", "both"],
    "Record shard format(s) (tf.Example records; tf.data reads them).")
_FRAME_STORE = flags.DEFINE_bool(
    "frame_store", True, "Also write the frame store, the layout training reads fastest "
    "(docs/data.md); --noframe_store saves its disk space (about the records' size).")
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
flags.register_validator("fps", lambda fps: fps > 0, message="--fps must be positive")
_PADS = flags.DEFINE_list(
    "pads", ["0", "10", "0", "0"],
    "Face box padding top,bottom,left,right in pixels (as inference).")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality.", lower_bound=1,
                                     upper_bound=100)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def _log_file() -> str:
  return cli.workdir_log(_OUTPUT_DIR.value, "preprocess")


@cli.tool("preprocess", log_file=_log_file)
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    pads = tuple(int(p) for p in _PADS.value)
  except ValueError:
    pads = ()
  if len(pads) != 4:
    raise app.UsageError("--pads takes four integers: top,bottom,left,right")
  config = preprocess.PreprocessConfig(
      crop_size=_CROP_SIZE.value, fps=_FPS.value, min_frames=_MIN_FRAMES.value,
      min_face_fraction=_MIN_FACE_FRACTION.value,
      max_av_mismatch_s=_MAX_AV_MISMATCH_S.value, pads=pads,
      jpeg_quality=_JPEG_QUALITY.value)
  formats = (("array_record", "tfrecord") if _FORMAT.value == "both"
             else (_FORMAT.value,)) + (("frame_store",) if _FRAME_STORE.value else ())
  try:
    if _RUNNER.value == "local":
      summary = preprocess.run_local(
          _INPUT_DIR.value, _OUTPUT_DIR.value, config,
          num_workers=_NUM_WORKERS.value,
          records_per_shard=_RECORDS_PER_SHARD.value, formats=formats,
          progress=_PROGRESS.value)
    else:
      try:
        from data_pipeline import preprocess_beam  # pylint: disable=g-import-not-at-top
      except ImportError as error:
        raise app.UsageError(f"--runner=beam needs Apache Beam ({error}): "
                             "pip install -e '.[beam]'") from error
      summary = preprocess_beam.run_beam(
          _INPUT_DIR.value, _OUTPUT_DIR.value, config, formats=formats,
          beam_options=_BEAM_OPTIONS.value)
  except futures.BrokenExecutor as error:
    cli.fail("preprocess", f"a worker process died ({error}); the finished shards "
             "are kept: re-run the same command to resume")
  except RuntimeError as error:
    if not isinstance(error.__cause__, BlockingIOError):
      raise
    cli.fail("preprocess", error)  # Another job holds the output folder's lock.
  print("\n".join(summary.lines()))
  return 0


if __name__ == "__main__":
  cli.run(main)
