"""Broken input videos, one per way the preprocessing job must skip an input.

Used by the tests, the benchmark and the acceptance run of the preprocessing
job: `write_broken_inputs(dir)` writes the files and returns, for each, the skip
reason (`data_pipeline.preprocess.SKIP_REASONS`) the job must report.

  python -m data_pipeline.broken_inputs --out_dir=/tmp/videos
"""

import json
import os
import pathlib

from absl import app
from absl import flags
import av
import numpy as np

from data_pipeline import synthetic
from lipsync_jax import video


def _write_faststart_mp4(path: pathlib.Path, clip: synthetic.SyntheticClip
                         ) -> None:
  """H.264 + AAC mp4 with its index (moov) before the data, as streaming
  files are: cut short, its frames still decode up to the cut."""
  height, width = clip.frames.shape[1:3]
  with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
    stream = container.add_stream("h264", rate=int(clip.fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    audio_stream = container.add_stream("aac", rate=synthetic.SAMPLE_RATE)
    audio_stream.layout = "mono"
    for frame in clip.frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
    container.mux(stream.encode())
    samples = av.AudioFrame.from_ndarray(clip.wav[None].astype(np.float32),
                                         format="flt", layout="mono")
    samples.sample_rate = synthetic.SAMPLE_RATE
    container.mux(audio_stream.encode(samples))
    container.mux(audio_stream.encode())


def _write_clip(path: pathlib.Path, clip: synthetic.SyntheticClip,
                audio: bool = True, boxes: list | None = None) -> None:
  video.write_video(path, clip.frames, clip.fps,
                    audio=clip.wav if audio else None,
                    sample_rate=synthetic.SAMPLE_RATE)
  if boxes is not None:
    path.with_suffix(".json").write_text(
        json.dumps({"fps": clip.fps, "boxes": boxes}))


def write_broken_inputs(out_dir: str | os.PathLike, seed: int = 1000,
                        seconds: float = 1.5) -> dict[str, str]:
  """Writes 10 broken inputs into `out_dir`; returns {path: skip reason}."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  clip = synthetic.make_clip(seed, seconds)
  boxes = clip.boxes.tolist()
  expected = {}

  def path(name: str, reason: str) -> pathlib.Path:
    expected[str(out_dir / name)] = reason
    return out_dir / name

  _write_clip(out_dir / "whole.tmp.mp4", clip)
  whole = (out_dir / "whole.tmp.mp4").read_bytes()
  (out_dir / "whole.tmp.mp4").unlink()
  # The index (moov) comes last in our mp4s: cut short, nothing is readable.
  path("broken_cut_index.mp4", "unreadable").write_bytes(
      whole[:len(whole) * 3 // 5])
  _write_faststart_mp4(out_dir / "whole.tmp.mp4", clip)
  whole = (out_dir / "whole.tmp.mp4").read_bytes()
  (out_dir / "whole.tmp.mp4").unlink()
  path("broken_truncated.mp4", "truncated").write_bytes(whole[:len(whole) // 2])
  path("broken_text.mp4", "unreadable").write_text("not a video\n")
  audio_only = path("broken_audio_only.mp4", "unreadable")
  with av.open(str(audio_only), "w", format="mp4") as container:
    stream = container.add_stream("aac", rate=synthetic.SAMPLE_RATE)
    stream.layout = "mono"
    samples = av.AudioFrame.from_ndarray(clip.wav[None], format="flt",
                                         layout="mono")
    samples.sample_rate = synthetic.SAMPLE_RATE
    container.mux(stream.encode(samples))
    container.mux(stream.encode())
  _write_clip(path("broken_no_audio.mp4", "no_audio"), clip, audio=False,
              boxes=boxes)
  short = synthetic.make_clip(seed + 1, seconds=0.4)
  _write_clip(path("broken_too_short.mp4", "too_short"), short,
              boxes=short.boxes.tolist())
  rng = np.random.default_rng(seed)
  faceless = synthetic.SyntheticClip(
      **{**vars(clip), "frames": np.broadcast_to(
          rng.integers(0, 256, (1,) + clip.frames.shape[1:], np.uint8),
          clip.frames.shape)})
  _write_clip(path("broken_no_face.mp4", "no_face"), faceless)
  mostly_faceless = [box if i % 3 == 0 else None for i, box in enumerate(boxes)]
  _write_clip(path("broken_face_lost.mp4", "no_face"), clip,
              boxes=mostly_faceless)
  half_audio = synthetic.SyntheticClip(
      **{**vars(clip), "wav": clip.wav[:len(clip.wav) // 2]})
  _write_clip(path("broken_av_mismatch.mp4", "av_mismatch"), half_audio,
              boxes=boxes)
  _write_clip(path("broken_sidecar.mp4", "bad_sidecar"), clip,
              boxes=boxes[:len(boxes) // 2])
  return expected


_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the files.")


def main(argv):
  del argv
  for name, reason in write_broken_inputs(_OUT_DIR.value).items():
    print(f"{name}\t{reason}")


if __name__ == "__main__":
  flags.mark_flag_as_required("out_dir")
  app.run(main)
