r"""End-to-end speed of tools/infer.py's pipeline, split into stages.

  python benchmarks/inference_e2e.py [--seconds=10] [--frame_size=256] [--batch_size=16]

Writes a synthetic talking-head clip (`data_pipeline.synthetic`, 25 fps, audio muxed),
then for Wav2Lip and AttnWav2Lip (default configs, random weights: speed does not depend
on the values) runs exactly what tools/infer.py runs: `LipsyncJob` (audio, mel, face
detection with BlazeFace over every frame) and `video.write_video` of its streamed frames.
Stage seconds come from `LipsyncJob.timings` (detect, decode, generate, paste; detect
includes its own decoding pass over the video, decode is the second, streaming pass);
encode is the time spent inside `write_video` outside those stages (H.264 + AAC).
Generation is timed after a warm-up job on a 1 s clip, which compiles the generator
(jobs with the same model share the compiled function); compile time is reported apart.
Prints a table: seconds per stage and frames/s, per stage and end to end.
"""

import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline import synthetic
from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import evaluation
from lipsync_jax import faces
from lipsync_jax import inference
from lipsync_jax import video

_SECONDS = flags.DEFINE_float("seconds", 10.0, "Length of the benchmark clip.")
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 256, "Side of the square input frames.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Frames per generator/detector call.")

STAGES = ("decode", "detect", "generate", "paste", "encode")


def random_generator(name: str) -> checkpoints.Generator:
  """A generator with numpy-drawn weights (jitting init takes a minute on a CPU)."""
  model = checkpoints.build_generator(name)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                          jnp.zeros((1, 96, 96, 6)))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    if str(path[-1].key) == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in)
    return np.full(leaf.shape, 1.0 if str(path[-1].key) in ("scale", "var") else 0.0,
                   np.float32)

  return checkpoints.Generator(model, jax.tree_util.tree_map_with_path(draw, shapes), "rgb")


def write_clip(folder: str, seconds: float, frame_size: int) -> str:
  clip = synthetic.make_clip(seed=7, seconds=seconds, frame_size=frame_size)
  path = os.path.join(folder, f"clip_{seconds:g}s.mp4")
  video.write_video(path, clip.frames, clip.fps, audio=clip.wav)
  return path


def run_job(face: str, generator: checkpoints.Generator, detector, out: str) -> dict:
  """Stage seconds of one tools/infer.py-equivalent run (detection forced, no sidecar)."""
  started = time.perf_counter()
  job = inference.LipsyncJob(face, face, generator, batch_size=_BATCH_SIZE.value,
                             use_sidecar=False, detector=detector)
  setup = time.perf_counter() - started
  started = time.perf_counter()
  video.write_video(out, job.frames(), job.fps, audio=job.wav, sample_rate=audio.SAMPLE_RATE)
  writing = time.perf_counter() - started
  seconds = dict(job.timings)
  seconds["encode"] = writing - sum(seconds[s] for s in ("decode", "generate", "paste"))
  seconds["audio+mel"] = setup - seconds["detect"]
  seconds["total"] = setup + writing
  seconds["frames"] = job.num_frames
  return seconds


def main(argv):
  del argv
  detector = faces.FaceDetector()
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    warmup_clip = write_clip(folder, 1.0, _FRAME_SIZE.value)
    clip = write_clip(folder, _SECONDS.value, _FRAME_SIZE.value)
    for name in checkpoints.GENERATORS:
      generator = random_generator(name)
      warmup = run_job(warmup_clip, generator, detector, os.path.join(folder, "warm.mp4"))
      seconds = run_job(clip, generator, detector, os.path.join(folder, "out.mp4"))
      frames = seconds["frames"]
      row = {"model": name, "frames": frames, "compile+1s": warmup["generate"],
             "audio+mel": seconds["audio+mel"]}
      for stage in STAGES:
        row[stage] = seconds[stage]
        row[f"{stage} fps"] = frames / seconds[stage]
      row["total"] = seconds["total"]
      row["e2e fps"] = frames / seconds["total"]
      rows.append(row)
  print(f"{_SECONDS.value:g} s synthetic clip, {_FRAME_SIZE.value}x{_FRAME_SIZE.value} frames "
        f"at 25 fps, batch {_BATCH_SIZE.value}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPU(s); seconds per stage, then frames/s")
  columns = (["model", "frames", "compile+1s", "audio+mel"] + list(STAGES) + ["total"])
  print(evaluation.format_table(rows, columns))
  print()
  print(evaluation.format_table(rows, ["model"] + [f"{s} fps" for s in STAGES] + ["e2e fps"]))


if __name__ == "__main__":
  app.run(main)
