"""Videos -> utterance records: the per-video function and the local job.

Inputs: a folder in the LRS2 layout (split lists `train.txt`, `val.txt`,
`test.txt`, `pretrain.txt` with lines `<spk>/<id> ...` and the videos in
`main/<spk>/<id>.mp4`, or `pretrain/...` for the pretrain list), or any folder,
searched recursively for video files (clip id = relative path without suffix).

Per video (`process_video`, a module-level function so that spawned worker
processes and Apache Beam can run it): probe, decode resampled to 25 fps,
load the audio track and compute its mel spectrogram, take face boxes from a
sidecar `<video stem>.json` (key "boxes", per source frame, `null` where no
face) or from `lipsync_jax.faces` detection, turn them into crop boxes with
`faces.face_crop_box` (the one crop geometry, shared with inference), crop,
JPEG-encode and serialise one record (`lipsync_jax.records`). A bad input is
never an error: it comes back with a skip reason (`SKIP_REASONS`).

Outputs (`run_local` here, `data_pipeline.preprocess_beam.run_beam` on Apache
Beam): shards under `<output_dir>/[<split>/]`, `manifest.jsonl` of finished
inputs (a re-run resumes) and `report.tsv` of skipped inputs; see
`data_pipeline.manifest`.
"""

import collections
from concurrent import futures
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import pathlib
import time
from typing import Iterator, Sequence

import numpy as np
import tqdm

from data_pipeline import manifest
from lipsync_jax import records
from lipsync_jax import audio
from lipsync_jax import faces
from lipsync_jax import video

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg",
                  ".mpeg", ".flv")
LRS2_SPLITS = {"train": "main", "val": "main", "test": "main",
               "pretrain": "pretrain"}
# The skip reasons, the first word of every `VideoResult.skip_reason`.
SKIP_REASONS = ("missing", "unreadable", "truncated", "no_audio", "too_short",
                "av_mismatch", "bad_sidecar", "no_face", "failed")
SYNC_T = 5


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """What `process_video` does to each input.

  Attributes:
    crop_size: side of the square face crops, in pixels.
    fps: frame rate the video is resampled to.
    min_frames: fewest frames a kept clip has (Wav2Lip skips <= 3 T, T = 5).
    min_face_fraction: fewest frames with a face, as a fraction of all frames;
      the missing boxes are filled from their neighbours.
    max_av_mismatch_s: largest allowed |audio duration - video duration|.
    pads: (top, bottom, left, right) pixels added to each face box by
      `faces.face_crop_box`; the default is inference's default.
    smooth_window: running-mean window over detected boxes (1: none).
    jpeg_quality: JPEG quality of the stored crops.
  """
  crop_size: int = 96
  fps: float = 25.0
  min_frames: int = 3 * SYNC_T + 1
  min_face_fraction: float = 0.8
  max_av_mismatch_s: float = 0.2
  pads: tuple[int, int, int, int] = (0, 10, 0, 0)
  smooth_window: int = 5
  jpeg_quality: int = records.DEFAULT_JPEG_QUALITY


@dataclasses.dataclass(frozen=True)
class VideoTask:
  """One input: its split, clip id and path."""
  split: str
  clip_id: str
  path: str


@dataclasses.dataclass(frozen=True)
class VideoResult:
  """A serialised record, or the reason the input was skipped."""
  task: VideoTask
  record: bytes | None = None
  skip_reason: str | None = None
  num_frames: int = 0


class _Skip(Exception):
  """Raised inside `process_video` to skip the input with a reason."""

  def __init__(self, kind: str, detail: str):
    assert kind in SKIP_REASONS, kind
    super().__init__(f"{kind}: {detail}")


def find_inputs(input_dir: str | os.PathLike) -> list[VideoTask]:
  """The inputs of a folder: LRS2 split lists if present, else every video."""
  root = pathlib.Path(input_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: no such input directory")
  tasks = []
  for split, folder in LRS2_SPLITS.items():
    split_list = root / f"{split}.txt"
    if not split_list.is_file():
      continue
    for line in split_list.read_text().splitlines():
      if line.strip():
        clip_id = line.split()[0]
        tasks.append(VideoTask(split, clip_id,
                               str(root / folder / f"{clip_id}.mp4")))
  if tasks:
    return tasks
  for path in sorted(root.rglob("*")):
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
      clip_id = path.relative_to(root).with_suffix("").as_posix()
      tasks.append(VideoTask("", clip_id, str(path)))
  return tasks


def resample_indices(num_source: int, source_fps: float, fps: float
                     ) -> np.ndarray:
  """Source frame shown at each output frame time i / fps (nearest earlier)."""
  num_out = math.ceil(num_source * fps / source_fps - 1e-6)
  indices = np.floor(np.arange(num_out) * source_fps / fps + 1e-6)
  return np.minimum(indices.astype(np.int64), num_source - 1)


def _sidecar_boxes(sidecar: pathlib.Path, source_fps: float, fps: float,
                   num_frames: int) -> list[np.ndarray | None]:
  """Per-frame face boxes from `<stem>.json`, resampled to `fps`."""
  try:
    content = json.loads(sidecar.read_text())
    boxes = [None if box is None else np.asarray(box, np.float64)[:4]
             for box in content["boxes"]]
  except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
    raise _Skip("bad_sidecar", f"{sidecar}: {error}") from error
  sidecar_fps = float(content.get("fps", source_fps))
  if abs(sidecar_fps - fps) > 1e-3:
    boxes = [boxes[i] for i in resample_indices(len(boxes), sidecar_fps, fps)]
  # Resampling may round differently at the very end; allow one frame.
  if abs(len(boxes) - num_frames) > 1 or not boxes:
    raise _Skip("bad_sidecar", f"{sidecar}: {len(boxes)} boxes for "
                f"{num_frames} frames")
  return (boxes + boxes[-1:])[:num_frames]


@functools.lru_cache(maxsize=1)
def _face_detector() -> "faces.FaceDetector":
  """One detector per process, built on first use, one thread (the job
  parallelises over processes)."""
  return faces.FaceDetector(num_threads=1)


def _detected_boxes(frames: np.ndarray) -> list[np.ndarray | None]:
  detector = _face_detector()
  boxes = []
  for start in range(0, len(frames), detector.max_batch):
    for detections in detector.detect(frames[start:start + detector.max_batch]):
      boxes.append(faces.select_face(detections))
  return boxes


def _face_boxes(task: VideoTask, frames: np.ndarray, source_fps: float,
                config: PreprocessConfig) -> np.ndarray:
  """Crop boxes int32 (T, 4), from the sidecar or the detector, made as
  `faces.detect_video_boxes` makes them at inference: fill the faceless
  frames, pad with `face_crop_box`, smooth (detections only)."""
  sidecar = pathlib.Path(task.path).with_suffix(".json")
  if sidecar.is_file():
    boxes = _sidecar_boxes(sidecar, source_fps, config.fps, len(frames))
  else:
    boxes = _detected_boxes(frames)
  found = sum(box is not None for box in boxes)
  if found == 0 or found < config.min_face_fraction * len(boxes):
    raise _Skip("no_face", f"{task.path}: a face in {found} of {len(boxes)} "
                f"frames (need {config.min_face_fraction:.0%})")
  filled, _ = faces.fill_missing(boxes, mode="interpolate")
  crop = np.array([faces.face_crop_box(box, config.pads, frames.shape[1:3])
                   for box in filled], np.float64)
  if not sidecar.is_file() and config.smooth_window > 1:
    crop = faces.smooth_boxes(crop, config.smooth_window)
  return np.round(crop).astype(np.int32)


def _decode(task: VideoTask, config: PreprocessConfig
            ) -> tuple[np.ndarray, float, np.ndarray]:
  """Frames uint8 (T, H, W, 3) at config.fps, the source fps, the wav."""
  if not os.path.isfile(task.path):
    raise _Skip("missing", f"{task.path}: no such file")
  try:
    info = video.probe_video(task.path)
  except video.VideoError as error:
    raise _Skip("unreadable", str(error)) from error
  if not info.has_audio:
    raise _Skip("no_audio", f"{task.path}: no audio stream")
  try:
    frames, _ = video.read_video(task.path, fps=config.fps)
  except video.VideoError as error:
    raise _Skip("truncated", str(error)) from error
  expected = info.duration_s * config.fps
  if len(frames) < expected - max(2.0, config.max_av_mismatch_s * config.fps):
    raise _Skip("truncated", f"{task.path}: decoded {len(frames)} of "
                f"{expected:.0f} frames")
  if len(frames) < config.min_frames:
    raise _Skip("too_short", f"{task.path}: {len(frames)} frames, need "
                f">= {config.min_frames}")
  try:
    wav = audio.load_audio(task.path)
  except audio.AudioError as error:
    raise _Skip("unreadable", str(error)) from error
  audio_s = len(wav) / audio.SAMPLE_RATE
  video_s = len(frames) / config.fps
  if abs(audio_s - video_s) > config.max_av_mismatch_s:
    raise _Skip("av_mismatch", f"{task.path}: audio {audio_s:.2f} s, video "
                f"{video_s:.2f} s")
  return frames, info.fps, wav


def process_video(task: VideoTask, config: PreprocessConfig) -> VideoResult:
  """One input video -> a serialised record, or a skip reason. Never raises
  for a bad input (a bug shows up as a "failed: <Error>" skip reason)."""
  try:
    frames, source_fps, wav = _decode(task, config)
    mel = audio.melspectrogram(wav)
    boxes = _face_boxes(task, frames, source_fps, config)
    crops = faces.crop_faces(frames, boxes, size=config.crop_size)
    record = records.encode_record({
        "clip_id": task.clip_id,
        "source_path": task.path,
        "fps": config.fps,
        "crop_size": config.crop_size,
        "frames": records.encode_jpeg(crops, quality=config.jpeg_quality),
        "mel": mel,
        "boxes": boxes,
    })
    return VideoResult(task, record=record, num_frames=len(frames))
  except _Skip as skip:
    return VideoResult(task, skip_reason=str(skip))
  except Exception as error:  # pylint: disable=broad-except
    # Never die on one input: any other error is reported as a failure.
    return VideoResult(task, skip_reason=f"failed: {type(error).__name__}: "
                       f"{error}")


def _ordered_results(tasks: list[VideoTask], config: PreprocessConfig,
                     num_workers: int) -> Iterator[VideoResult]:
  """`process_video` over tasks, in task order, on `num_workers` spawned
  processes (0: in this process), at most 2 * num_workers in flight."""
  if num_workers == 0:
    for task in tasks:
      yield process_video(task, config)
    return
  context = multiprocessing.get_context("spawn")
  with futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    in_flight = collections.deque()
    remaining = iter(tasks)
    for task in remaining:
      in_flight.append(pool.submit(process_video, task, config))
      if len(in_flight) >= 2 * num_workers:
        break
    while in_flight:
      result = in_flight.popleft().result()
      task = next(remaining, None)
      if task is not None:
        in_flight.append(pool.submit(process_video, task, config))
      yield result


def prepare_output(tasks: list[VideoTask], output_dir: pathlib.Path
                   ) -> list[VideoTask]:
  """The unfinished tasks; creates the split directories and removes the
  temporary shards of an interrupted run."""
  for split in sorted({t.split for t in tasks}):
    directory = manifest.split_dir(output_dir, split)
    directory.mkdir(parents=True, exist_ok=True)
    manifest.remove_temporaries(directory)
  done = {manifest.input_key(e) for e in manifest.load_manifest(output_dir)}
  return [t for t in tasks if manifest.input_key(t) not in done]


def run_local(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
              config: PreprocessConfig = PreprocessConfig(),
              num_workers: int = 1, records_per_shard: int = 128,
              formats: Sequence[str] = ("array_record", "frame_store"),
              progress: bool = True) -> manifest.JobSummary:
  """Preprocesses every unfinished input of `input_dir` into `output_dir`.

  Args:
    input_dir: LRS2-layout or any folder of videos (module docstring).
    output_dir: where shards, manifest.jsonl and report.tsv go.
    config: per-video settings.
    num_workers: spawned worker processes (0: run in this process).
    records_per_shard: records per shard file.
    formats: some of `records.SHARD_FORMATS`; with "frame_store" each split directory
      gets the training layout of `lipsync_jax.frame_store` and its index (record shards
      of earlier runs without one are converted).
    progress: show a tqdm progress bar.

  Returns:
    The summary of this run. Bad inputs are skipped and reported, not raised.
    An interruption (KeyboardInterrupt, a killed worker) closes the open
    shards with the records finished so far and re-raises; a re-run resumes.
  """
  start = time.perf_counter()
  tasks = find_inputs(input_dir)
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  with manifest.job_lock(output_dir):
    todo = prepare_output(tasks, output_dir)
    summary = manifest.JobSummary(num_inputs=len(tasks),
                                  num_already_finished=len(tasks) - len(todo))
    shards_by_split = {}
    try:
      for result in tqdm.tqdm(_ordered_results(todo, config, num_workers),
                              total=len(todo), unit="video",
                              disable=not progress):
        task = result.task
        if result.record is None:
          manifest.append_manifest(output_dir, [manifest.skipped_entry(
              task.split, task.clip_id, task.path, result.skip_reason)])
          summary.add_skip(result.skip_reason)
          continue
        shards = shards_by_split.setdefault(
            task.split, manifest.SplitShards(output_dir, task.split, formats))
        shards.add(result.record, task.split, task.clip_id, task.path,
                   result.num_frames)
        summary.num_written += 1
        summary.num_frames_written += result.num_frames
        if shards.num_records >= records_per_shard:
          summary.shards += shards.finish()
    finally:
      for shards in shards_by_split.values():
        summary.shards += shards.finish()
    if "frame_store" in formats:
      for split in sorted({t.split for t in tasks}):
        directory = manifest.split_dir(output_dir, split)
        if any(directory.glob(f"*{records.ARRAY_RECORD_SUFFIX}")) or any(
            directory.glob("*.clips.npy")):
          records.write_frame_store(directory)
    summary.report_path = manifest.write_report(
        output_dir, manifest.load_manifest(output_dir))
  summary.seconds = time.perf_counter() - start
  return summary
