"""Bookkeeping of the preprocessing job: manifest, report, shard names, lock.

An output directory holds
  [<split>/]shard-NNNNN.array_record (and/or .tfrecord)   the shards;
  manifest.jsonl   one JSON line per finished input: {"split", "clip_id",
                   "input", "status": "written" | "skipped", "shards" (glob of
                   the input's shard files, relative to the output directory,
                   for "written"), "reason" (for "skipped"), "num_frames"};
  report.tsv       `input<TAB>reason` of every skipped input (all runs).

A shard's manifest lines are appended and fsync'd *before* the shard is renamed
into place, and a "written" line whose shard files are absent is dropped when
the manifest is loaded. So an input is finished exactly when its record is in
a complete shard (or it was skipped), and a re-run redoes only the unfinished
inputs: nothing is written twice, nothing is lost.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
from typing import Any, Iterable, Iterator, Sequence

from lipsync_jax import errors
from lipsync_jax import records

MANIFEST_NAME = "manifest.jsonl"
REPORT_NAME = "report.tsv"
SHARD_PREFIX = "shard"


def input_key(entry: dict[str, Any] | Any) -> tuple[str, str]:
  """(split, clip_id) of a manifest line or of a task with those attributes."""
  if isinstance(entry, dict):
    return (entry["split"], entry["clip_id"])
  return (entry.split, entry.clip_id)


def load_manifest(output_dir: pathlib.Path) -> list[dict[str, Any]]:
  """The finished inputs: skipped ones and written ones whose shards exist.

  Lines of unfinished inputs (a crash between the manifest append and the
  shard rename, or a line cut short) are dropped from the file, atomically.
  """
  path = output_dir / MANIFEST_NAME
  if not path.is_file():
    return []
  lines = path.read_text().splitlines()
  entries = []
  for line in lines:
    try:
      entry = json.loads(line)
    except ValueError:
      continue
    if entry["status"] == "skipped" or any(output_dir.glob(entry["shards"])):
      entries.append(entry)
  if len(entries) != len(lines):
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text("".join(json.dumps(e, sort_keys=True) + "\n"
                            for e in entries))
    os.replace(temp, path)
  return entries


def append_manifest(output_dir: pathlib.Path,
                    entries: Iterable[dict[str, Any]]) -> None:
  """Appends JSON lines to the manifest and fsyncs them."""
  lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
  if not lines:
    return
  with open(output_dir / MANIFEST_NAME, "a") as f:
    f.write(lines)
    f.flush()
    os.fsync(f.fileno())


def skipped_entry(split: str, clip_id: str, path: str, reason: str
                  ) -> dict[str, Any]:
  return {"split": split, "clip_id": clip_id, "input": path,
          "status": "skipped", "reason": reason}


def written_entry(split: str, clip_id: str, path: str, shards: str,
                  num_frames: int) -> dict[str, Any]:
  return {"split": split, "clip_id": clip_id, "input": path,
          "status": "written", "shards": shards, "num_frames": num_frames}


def write_report(output_dir: pathlib.Path,
                 entries: Iterable[dict[str, Any]]) -> pathlib.Path:
  """report.tsv: `input<TAB>reason` for every skipped input, atomically."""
  path = output_dir / REPORT_NAME
  temp = path.with_name(f".{path.name}.tmp")
  lines = ["input\treason\n"] + [
      f"{e['input']}\t{e['reason']}\n" for e in entries
      if e["status"] == "skipped"]
  temp.write_text("".join(lines))
  os.replace(temp, path)
  return path


def read_report(output_dir: pathlib.Path) -> dict[str, str]:
  """report.tsv as {input path: reason}."""
  lines = (output_dir / REPORT_NAME).read_text().splitlines()[1:]
  return dict(line.split("\t", 1) for line in lines)


def split_dir(output_dir: pathlib.Path, split: str) -> pathlib.Path:
  """Shards of an LRS2 split go to <output_dir>/<split>, others to the root."""
  return output_dir / split if split else output_dir


def next_shard_index(directory: pathlib.Path) -> int:
  """One past the largest `shard-NNNNN` index present in `directory`."""
  indices = []
  for path in directory.glob(f"{SHARD_PREFIX}-*.*"):
    number = path.name.split(".")[0].split("-")[1]
    if number.isdigit():
      indices.append(int(number))
  return max(indices, default=-1) + 1


def remove_temporaries(directory: pathlib.Path) -> None:
  """Deletes the temporary shard files an interrupted run left behind."""
  for temp in directory.glob(f".{SHARD_PREFIX}-*.tmp"):
    temp.unlink()


def fsync_directory(directory: pathlib.Path) -> None:
  descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


@contextlib.contextmanager
def job_lock(output_dir: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive lock on the output directory, or raises."""
  with open(output_dir / ".lock", "w") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
      raise errors.LipsyncError(f"{output_dir}: another preprocessing job is "
                         "writing there") from error
    yield


class SplitShards:
  """Writes the records of one split into consecutive shards.

  `add` puts a record into the open shard (opening one when needed) and keeps
  its manifest line; `finish` appends those lines to the manifest, then renames
  the shard into place.
  """

  def __init__(self, output_dir: pathlib.Path, split: str,
               formats: Sequence[str]):
    self.output_dir = output_dir
    self.directory = split_dir(output_dir, split)
    self.formats = formats
    self.writer = None
    self.pattern = ""
    self.entries = []

  @property
  def num_records(self) -> int:
    return 0 if self.writer is None else self.writer.num_records

  def add(self, record: bytes, split: str, clip_id: str, path: str,
          num_frames: int) -> None:
    if self.writer is None:
      index = next_shard_index(self.directory)
      stem = self.directory / f"{SHARD_PREFIX}-{index:05d}"
      self.writer = records.ShardWriter(stem, self.formats)
      self.pattern = f"{stem.relative_to(self.output_dir)}.*"
    self.writer.write(record)
    self.entries.append(
        written_entry(split, clip_id, path, self.pattern, num_frames))

  def finish(self) -> list[pathlib.Path]:
    """Closes the open shard (if any); returns its files."""
    if self.writer is None:
      return []
    append_manifest(self.output_dir, self.entries)
    paths = self.writer.close()
    fsync_directory(self.directory)
    self.writer, self.entries = None, []
    return paths


@dataclasses.dataclass
class JobSummary:
  """What a run of the job did (counts are of this run unless named)."""
  num_inputs: int = 0
  num_already_finished: int = 0
  num_written: int = 0
  num_frames_written: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)
  shards: list[pathlib.Path] = dataclasses.field(default_factory=list)
  report_path: pathlib.Path | None = None
  seconds: float = 0.0

  def add_skip(self, reason: str) -> None:
    kind = reason.split(":")[0]
    self.skipped[kind] = self.skipped.get(kind, 0) + 1

  def lines(self) -> list[str]:
    per_kind = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
    return [
        f"inputs: {self.num_inputs} ({self.num_already_finished} finished "
        f"by an earlier run)",
        f"written: {self.num_written} records, {self.num_frames_written} "
        f"frames, {len(self.shards)} shard files",
        f"skipped: {sum(self.skipped.values())} ({per_kind or 'none'}); "
        f"every skipped input and why: {self.report_path}",
        f"time: {self.seconds:.1f} s",
    ]
