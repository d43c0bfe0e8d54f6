r"""Lip-syncs a face video (or photo) to an audio track and writes an mp4.

  python tools/infer.py --checkpoint=checkpoints/wav2lip_gan.pth \
      --face=speaker.mp4 --audio=speech.wav --outfile=results/out.mp4

--checkpoint takes an official `wav2lip*.pth` (converted on the fly, BGR), a folder written
by `tools/convert_torch.py`, or the generator the trainer exports (`<workdir>/export/generator`).
Options of the original inference script keep their names; lists are comma-separated
(`--pads=0,20,0,0`, `--box=top,bottom,left,right`). The output has the input's frame rate
(25 for a still image unless --fps), one frame per mel window of the audio, and the
audio muxed in. On any error: one line on stderr, exit code 1, no output file.
"""

import os
import sys

from absl import app
from absl import flags
import jax.numpy as jnp

from lipsync_jax import audio
from lipsync_jax import faces
from lipsync_jax import inference
from lipsync_jax import video

_FACE = flags.DEFINE_string("face", None, "Video or image with the face.", required=True)
_AUDIO = flags.DEFINE_string("audio", None, "Audio (wav, mp3, m4a, or a video's track).",
                             required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generator checkpoint.", required=True)
_OUTFILE = flags.DEFINE_string("outfile", "results/result_voice.mp4", "Output mp4.")
_PADS = flags.DEFINE_list("pads", ["0", "10", "0", "0"],
                          "Pixels added to the face box: top,bottom,left,right.")
_BOX = flags.DEFINE_list("box", None, "Fixed face box top,bottom,left,right: no detection.")
_RESIZE_FACTOR = flags.DEFINE_integer("resize_factor", 1, "Downscale the input by this factor.")
_NOSMOOTH = flags.DEFINE_boolean("nosmooth", False, "Do not smooth boxes over 5 frames.")
_STATIC = flags.DEFINE_boolean("static", False, "Use only the first frame of the video.")
_FPS = flags.DEFINE_float("fps", None, "Frame rate for a still image (default 25).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Frames per generator/detector call.")
_BLEND = flags.DEFINE_boolean("blend", True, "Feathered lower-face paste-back; --noblend "
                              "pastes the whole box as the original does.")
_MISSING = flags.DEFINE_enum("missing", "error", ["error", "interpolate", "passthrough"],
                             "Frames without a face: fail naming them, interpolate boxes, "
                             "or copy the frame through unchanged.")
_FACE_INDEX = flags.DEFINE_integer("face_index", None, "Which face (from the left) when "
                                   "several are found; default the largest.")
_BF16 = flags.DEFINE_boolean("bf16", False, "bfloat16 compute.")


def _ints(values, name, count):
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    numbers = []
  if len(numbers) != count:
    raise inference.InferenceError(f"--{name} needs {count} comma-separated integers, "
                                   f"got {','.join(values)}")
  return numbers


def _check_outfile(path):
  folder = os.path.dirname(os.path.abspath(path)) or "."
  if not os.path.isdir(folder):
    raise inference.InferenceError(f"{path}: output folder {folder} does not exist")
  if not os.access(folder, os.W_OK):
    raise inference.InferenceError(f"{path}: output folder {folder} is not writable")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    _check_outfile(_OUTFILE.value)
    box = None
    if _BOX.value:
      top, bottom, left, right = _ints(_BOX.value, "box", 4)
      box = (left, top, right, bottom)
    generator = inference.load_generator(_CHECKPOINT.value)
    job = inference.LipsyncJob(
        _FACE.value, _AUDIO.value, generator, fps=_FPS.value, batch_size=_BATCH_SIZE.value,
        pads=_ints(_PADS.value, "pads", 4), box=box, smooth=not _NOSMOOTH.value,
        static=_STATIC.value, resize_factor=_RESIZE_FACTOR.value, blend=_BLEND.value,
        missing=_MISSING.value, face_index=_FACE_INDEX.value,
        dtype=jnp.bfloat16 if _BF16.value else None)
    video.write_video(_OUTFILE.value, job.frames(), job.fps, audio=job.wav,
                      sample_rate=audio.SAMPLE_RATE)
  except (ValueError, faces.FaceDetectorError, OSError) as e:  # All input errors.
    print(f"infer: {e}", file=sys.stderr)
    sys.exit(1)
  faceless = int((~job.has_face).sum())
  note = f", {faceless} frame(s) without a face passed through" if faceless else ""
  print(f"wrote {_OUTFILE.value}: {job.num_frames} frames at {job.fps:g} fps{note}")


if __name__ == "__main__":
  app.run(main)
