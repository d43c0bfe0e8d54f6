"""The preprocessing job on Apache Beam, with the same per-video function.

  Create(unfinished inputs) | Reshuffle | Map(preprocess.process_video)
    -> per split: the records -> WriteToArrayRecord (and/or WriteToTFRecord)
       into <output_dir>/[<split>/]beam-<run>-SSSSS-of-NNNNN.<format>
    -> manifest lines -> a pending text file

Beam's file sinks write temporary files and rename them when the pipeline
finalises. After the pipeline has finished, this driver appends the run's lines
to manifest.jsonl (`data_pipeline.manifest`); shards of a run whose lines never
reached the manifest (a crash in between) are deleted by the next run, which
redoes those inputs. So, as with the local runner, a re-run resumes and
nothing is written twice.

Runs on the DirectRunner by default; `beam_options` points it elsewhere, e.g.
"--runner=FlinkRunner --flink_master=host:8081 --environment_type=LOOPBACK",
SparkRunner, or "--runner=DataflowRunner --project=P --region=R
--temp_location=gs://B/tmp --requirements_file=...". The input and output
directories are plain paths: they must be one filesystem seen by the driver and
every worker (NFS, or a bucket mounted with Cloud Storage FUSE); gs:// URLs are
not supported. Needs the `[beam]` extra (apache-beam).
"""

import json
import os
import pathlib
import shlex
import shutil
import time
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.options import pipeline_options
from array_record.beam import arrayrecordio

from data_pipeline import manifest
from data_pipeline import preprocess
from lipsync_jax import records

BEAM_PREFIX = "beam"


def _shard_pattern(output_dir: pathlib.Path, split: str, run: str) -> str:
  directory = manifest.split_dir(output_dir, split).relative_to(output_dir)
  return str(directory / f"{BEAM_PREFIX}-{run}-*")


def _records_of_split(result: preprocess.VideoResult, split: str
                      ) -> list[bytes]:
  return [result.record] if (result.record is not None and
                             result.task.split == split) else []


def _manifest_line(result: preprocess.VideoResult, output_dir: str,
                   run: str) -> str:
  task = result.task
  if result.record is None:
    entry = manifest.skipped_entry(task.split, task.clip_id, task.path,
                                   result.skip_reason)
  else:
    entry = manifest.written_entry(
        task.split, task.clip_id, task.path,
        _shard_pattern(pathlib.Path(output_dir), task.split, run),
        result.num_frames)
  return json.dumps(entry, sort_keys=True)


def _remove_orphans(output_dir: pathlib.Path, splits: Sequence[str],
                    entries: Sequence[dict[str, Any]]) -> None:
  """Deletes Beam shards, temporary directories and pending manifest files
  of runs that did not reach the manifest."""
  referenced = {e["shards"] for e in entries if e["status"] == "written"}
  for split in splits:
    directory = manifest.split_dir(output_dir, split)
    for path in directory.glob(f"{BEAM_PREFIX}-*"):
      if path.name.startswith(f"{BEAM_PREFIX}-temp-"):
        shutil.rmtree(path, ignore_errors=True)
        continue
      run = path.name[len(BEAM_PREFIX) + 1:].split("-")[0]
      if _shard_pattern(output_dir, split, run) not in referenced:
        path.unlink()
  for pending in output_dir.glob(f".{BEAM_PREFIX}-*-manifest*"):
    pending.unlink()


def run_beam(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
             config: preprocess.PreprocessConfig = preprocess.PreprocessConfig(),
             formats: Sequence[str] = ("array_record",),
             beam_options: str = "--runner=DirectRunner",
             num_shards: int = 0) -> manifest.JobSummary:
  """Preprocesses the unfinished inputs of `input_dir` on Apache Beam.

  Args:
    input_dir, output_dir, config, formats: as `preprocess.run_local`.
    beam_options: pipeline options as a command line string.
    num_shards: shards per split and format (0: the runner decides).

  Returns:
    The summary of this run; bad inputs are skipped and reported.
  """
  start = time.perf_counter()
  tasks = preprocess.find_inputs(input_dir)
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  with manifest.job_lock(output_dir):
    todo = preprocess.prepare_output(tasks, output_dir)
    splits = sorted({t.split for t in tasks})
    _remove_orphans(output_dir, splits, manifest.load_manifest(output_dir))
    run = time.strftime("%Y%m%d%H%M%S")
    pending = output_dir / f".{BEAM_PREFIX}-{run}-manifest"
    if todo:
      options = pipeline_options.PipelineOptions(shlex.split(beam_options))
      with beam.Pipeline(options=options) as pipeline:
        results = (pipeline
                   | "inputs" >> beam.Create(todo)
                   | "spread" >> beam.Reshuffle()
                   | "process" >> beam.Map(preprocess.process_video, config))
        for split in sorted({t.split for t in todo}):
          prefix = str(manifest.split_dir(output_dir, split) /
                       f"{BEAM_PREFIX}-{run}")
          split_records = results | f"records {split}" >> beam.FlatMap(
              _records_of_split, split)
          if "array_record" in formats:
            _ = split_records | f"array_record {split}" >> (
                arrayrecordio.WriteToArrayRecord(
                    prefix, file_name_suffix=".array_record",
                    num_shards=num_shards))
          if "tfrecord" in formats:
            _ = split_records | f"tfrecord {split}" >> beam.io.WriteToTFRecord(
                prefix, file_name_suffix=".tfrecord", num_shards=num_shards)
        _ = (results
             | "manifest lines" >> beam.Map(_manifest_line, str(output_dir),
                                            run)
             | "pending manifest" >> beam.io.WriteToText(str(pending)))
    lines = []
    for part in sorted(output_dir.glob(f"{pending.name}*")):
      lines += part.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    manifest.append_manifest(output_dir, entries)
    for part in output_dir.glob(f"{pending.name}*"):
      part.unlink()
    summary = manifest.JobSummary(num_inputs=len(tasks),
                                  num_already_finished=len(tasks) - len(todo))
    for entry in entries:
      if entry["status"] == "skipped":
        summary.add_skip(entry["reason"])
      else:
        summary.num_written += 1
        summary.num_frames_written += entry["num_frames"]
    for split in splits:
      summary.shards += sorted(manifest.split_dir(output_dir, split).glob(
          f"{BEAM_PREFIX}-{run}-*"))
    if "frame_store" in formats:  # Converted here, on the launcher, one shard at a time.
      for split in splits:
        records.write_frame_store(manifest.split_dir(output_dir, split))
    summary.report_path = manifest.write_report(
        output_dir, manifest.load_manifest(output_dir))
  summary.seconds = time.perf_counter() - start
  return summary
