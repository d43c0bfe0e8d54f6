"""The preprocessing job: bad inputs skipped and reported, records right, resumable."""

from concurrent import futures
import json
import multiprocessing
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import broken_inputs
from data_pipeline import manifest
from data_pipeline import preprocess
from lipsync_jax import frame_store
from lipsync_jax import records
from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import faces
from lipsync_jax import video

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
NUM_GOOD = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[pathlib.Path, dict[str, str]]:
  """4 synthetic clips of 1.5 s and the 10 broken inputs, in one folder."""
  root = tmp_path_factory.mktemp("videos")
  synthetic.write_dataset(root, NUM_GOOD, seconds=1.5, seed=3)
  return root, broken_inputs.write_broken_inputs(root)


@pytest.fixture(scope="module")
def finished_job(inputs, tmp_path_factory):
  """The job run once over `inputs` with 2 spawned workers, all formats."""
  out = tmp_path_factory.mktemp("records")
  summary = preprocess.run_local(
      inputs[0], out, num_workers=2, records_per_shard=3, formats=records.SHARD_FORMATS,
      progress=False)
  return out, summary


def test_report_lists_exactly_the_broken_inputs(inputs, finished_job):
  out, summary = finished_job
  _, expected = inputs
  report = manifest.read_report(out)
  assert {path: reason.split(":")[0] for path, reason in report.items()} == (
      expected)
  assert summary.num_written == NUM_GOOD
  assert sum(summary.skipped.values()) == len(expected)
  assert summary.num_frames_written == NUM_GOOD * 38


def test_records_hold_the_clips(inputs, finished_job):
  root, _ = inputs
  out, _ = finished_job
  source = records.open_shards(out)
  assert len(source) == NUM_GOOD
  by_id = {source[i]["clip_id"]: source[i] for i in range(len(source))}
  assert sorted(by_id) == [f"synth_{i:05d}" for i in range(NUM_GOOD)]
  record = by_id["synth_00002"]
  path = root / "synth_00002.mp4"
  assert record["source_path"] == str(path)
  np.testing.assert_array_equal(
      record["mel"], audio.melspectrogram(audio.load_audio(path)))
  frames, _ = video.read_video(path, fps=25)
  sidecar = json.loads(path.with_suffix(".json").read_text())
  boxes = np.array([faces.face_crop_box(b, (0, 10, 0, 0), frames.shape[1:3])
                    for b in sidecar["boxes"]])
  np.testing.assert_array_equal(record["boxes"], boxes)
  crops = faces.crop_faces(frames, boxes, size=96)
  decoded = records.decode_frames(record["frames"])
  assert decoded.shape == (38, 96, 96, 3)
  assert np.abs(decoded.astype(float) - crops).mean() < 2.0
  assert record["fps"] == 25.0 and record["crop_size"] == 96


def test_tfrecord_shards_hold_the_same_records(finished_job):
  out, summary = finished_job
  assert sorted(p.name for p in summary.shards) == sorted(
      f"shard-0000{i}{suffix}" for i in range(2)
      for suffix in (".array_record", ".tfrecord", ".frames", ".offsets.npy", ".mel.npy",
                     ".clips.npy"))
  from_array_record = list(records.open_shards(out, decode=False)[i]
                           for i in range(NUM_GOOD))
  from_tfrecord = [data for name in ("shard-00000", "shard-00001")
                   for data in records.read_tfrecord(out / f"{name}.tfrecord")]
  assert from_tfrecord == from_array_record


def _listing(directory: pathlib.Path) -> dict[str, tuple[int, int]]:
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob("*") if p.is_file() and p.name != ".lock"
          and p.name != manifest.REPORT_NAME}


def test_rerun_writes_nothing(inputs, finished_job):
  out, _ = finished_job
  before = _listing(out)
  summary = preprocess.run_local(inputs[0], out, num_workers=0, formats=records.SHARD_FORMATS,
                                 progress=False)
  assert summary.num_already_finished == NUM_GOOD + len(inputs[1])
  assert summary.num_written == 0 and not summary.skipped
  assert _listing(out) == before


def _assert_each_clip_once(out: pathlib.Path) -> None:
  source = records.open_shards(out)
  ids = sorted(source[i]["clip_id"] for i in range(len(source)))
  assert ids == [f"synth_{i:05d}" for i in range(NUM_GOOD)]
  store = frame_store.FrameStore(out)  # the training layout, complete after a resume
  assert sorted(store[i]["clip_id"] for i in range(len(store))) == ids
  entries = manifest.load_manifest(out)
  assert len({manifest.input_key(e) for e in entries}) == len(entries)
  assert not list(out.rglob("*.tmp"))


def test_crash_before_rename_is_redone(inputs, finished_job, tmp_path):
  """A crash after a shard's manifest lines but before its rename: the lines
  are dropped, the temporary shard removed, and its clips done again."""
  out = tmp_path / "out"
  shutil.copytree(finished_job[0], out)
  for path in out.glob("shard-00001.*"):
    path.rename(path.with_name(f".{path.name}.tmp"))
  with open(out / manifest.MANIFEST_NAME, "a") as f:
    f.write('{"cut short')
  summary = preprocess.run_local(inputs[0], out, num_workers=0,
                                 records_per_shard=3, progress=False)
  assert summary.num_written == NUM_GOOD - 3
  _assert_each_clip_once(out)


def test_killed_run_resumes(inputs, tmp_path):
  good = tmp_path / "good"
  good.mkdir()
  for path in sorted(inputs[0].glob("synth_*")):
    shutil.copy(path, good)
  out = tmp_path / "out"
  command = [sys.executable, str(REPO_ROOT / "tools" / "preprocess.py"),
             f"--input_dir={good}", f"--output_dir={out}", "--num_workers=1",
             "--records_per_shard=1", "--noprogress"]
  process = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline and process.poll() is None:
    lines = (out / manifest.MANIFEST_NAME).read_text().splitlines() if (
        out / manifest.MANIFEST_NAME).exists() else []
    if lines:
      break
    time.sleep(0.01)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  finished = manifest.load_manifest(out)
  assert len(finished) < NUM_GOOD  # killed before the end
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert f"inputs: {NUM_GOOD} ({len(finished)} finished" in result.stdout
  _assert_each_clip_once(out)


def test_killed_worker_keeps_finished_shards_and_resumes(inputs, tmp_path):
  out = tmp_path / "out"

  def kill_first_worker():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
      workers = [p for p in multiprocessing.active_children()
                 if p.name.startswith("SpawnProcess")]
      if workers:
        os.kill(workers[0].pid, signal.SIGKILL)
        return
      time.sleep(0.01)

  killer = threading.Thread(target=kill_first_worker)
  killer.start()
  with pytest.raises(futures.BrokenExecutor):
    preprocess.run_local(inputs[0], out, num_workers=1, records_per_shard=1,
                         progress=False)
  killer.join()
  finished = len(manifest.load_manifest(out))
  summary = preprocess.run_local(inputs[0], out, num_workers=0,
                                 progress=False)
  assert summary.num_already_finished == finished
  _assert_each_clip_once(out)
  assert len(manifest.read_report(out)) == len(inputs[1])


def test_without_sidecar_the_detector_finds_the_face(inputs, tmp_path):
  shutil.copy(inputs[0] / "synth_00001.mp4", tmp_path)
  result = preprocess.process_video(
      preprocess.VideoTask("", "synth_00001", str(tmp_path / "synth_00001.mp4")),
      preprocess.PreprocessConfig(pads=(0, 0, 0, 0)))
  assert result.skip_reason is None
  detected = records.decode_record(result.record)["boxes"].astype(float)
  truth = np.array(json.loads(
      (inputs[0] / "synth_00001.json").read_text())["boxes"], float)
  overlap = (np.clip(np.minimum(detected[:, 2:], truth[:, 2:]) -
                     np.maximum(detected[:, :2], truth[:, :2]), 0, None)
             .prod(axis=1))
  areas = [(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in (detected, truth)]
  iou = overlap / (areas[0] + areas[1] - overlap)
  assert iou.min() > 0.5, iou.min()


def test_lrs2_layout(tmp_path):
  (tmp_path / "main" / "spk1").mkdir(parents=True)
  (tmp_path / "train.txt").write_text("spk1/00001\nspk1/00002\n")
  (tmp_path / "test.txt").write_text("spk1/00003 NF\n")
  tasks = preprocess.find_inputs(tmp_path)
  assert tasks == [
      preprocess.VideoTask("train", "spk1/00001",
                           str(tmp_path / "main/spk1/00001.mp4")),
      preprocess.VideoTask("train", "spk1/00002",
                           str(tmp_path / "main/spk1/00002.mp4")),
      preprocess.VideoTask("test", "spk1/00003",
                           str(tmp_path / "main/spk1/00003.mp4"))]
  result = preprocess.process_video(tasks[0], preprocess.PreprocessConfig())
  assert result.record is None and result.skip_reason.startswith("missing:")
  assert manifest.split_dir(tmp_path, "train") == tmp_path / "train"


def test_sidecar_resampling_follows_the_video_resampling(tmp_path):
  """Frame k of a 30 fps video, read at 25 fps, is source frame
  resample_indices(...)[k]: the sidecar boxes follow the same frames."""
  levels = np.arange(0, 24 * 10, 10, dtype=np.uint8)
  frames = np.broadcast_to(levels[:, None, None, None], (24, 32, 32, 3))
  path = tmp_path / "levels.mp4"
  video.write_video(path, frames, fps=30)
  resampled, _ = video.read_video(path, fps=25)
  shown = np.round(resampled.reshape(len(resampled), -1).mean(1) / 10)
  indices = preprocess.resample_indices(24, 30.0, 25.0)
  np.testing.assert_array_equal(shown, indices)


def test_beam_runner_writes_the_same_records(inputs, finished_job, tmp_path):
  pytest.importorskip("apache_beam", reason="the [beam] extra is not installed")
  from data_pipeline import preprocess_beam  # pylint: disable=g-import-not-at-top
  out = tmp_path / "beam"
  summary = preprocess_beam.run_beam(inputs[0], out, num_shards=2)
  assert summary.num_written == NUM_GOOD
  assert manifest.read_report(out) == manifest.read_report(finished_job[0])
  local = records.open_shards(finished_job[0], decode=False)
  beam = records.open_shards(out, decode=False)
  assert sorted(beam[i] for i in range(len(beam))) == sorted(
      local[i] for i in range(len(local)))
  again = preprocess_beam.run_beam(inputs[0], out)
  assert again.num_written == 0 and again.num_already_finished == 14


def test_tfds_builder_writes_array_record_without_tensorflow(
    inputs, finished_job, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets",
                             reason="tensorflow-datasets is not installed")
  from data_pipeline import tfds_lrs2  # pylint: disable=g-import-not-at-top
  builder = tfds_lrs2.Lrs2Lipsync(data_dir=tmp_path, config="crop96",
                                  file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=inputs[0]))
  source = builder.as_data_source(split="train")
  assert len(source) == NUM_GOOD
  ours = records.open_shards(finished_job[0])
  ours = {ours[i]["clip_id"]: ours[i] for i in range(len(ours))}
  for i in range(len(source)):
    example = source[i]
    record = ours[example["clip_id"].decode()]
    np.testing.assert_array_equal(example["mel"], record["mel"])
    np.testing.assert_array_equal(example["boxes"], record["boxes"])
    np.testing.assert_array_equal(np.stack(example["frames"]),
                                  records.decode_frames(record["frames"]))
  assert "tensorflow" not in sys.modules
