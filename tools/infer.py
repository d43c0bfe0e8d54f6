r"""Lip-syncs a face video (or photo) to an audio track and writes an mp4.

  python tools/infer.py --checkpoint=checkpoints/wav2lip_gan.pth \
      --face=speaker.mp4 --audio=speech.wav --outfile=results/out.mp4

--checkpoint takes an official `wav2lip*.pth` (converted on the fly, BGR) or a folder written
by `lipsync_jax.checkpoints.save_converted` (`tools/convert_torch.py`): orbax `variables/` and
`metadata.json` {"model": "wav2lip"|"attn_wav2lip", "channel_order", "model_config"}.
Options of the original inference script keep their names; lists are comma-separated
(`--pads=0,20,0,0`, `--box=top,bottom,left,right`). Face boxes come from --box, else
from --boxes_json or a `<face stem>.json` sidecar with per-frame "boxes" [x1, y1, x2, y2]
(null = no face; what `data_pipeline` writes), else from the face detector. The output has
the input's frame rate (25 for a still image unless --fps), one frame per mel window of
the audio, and the audio muxed in. On any error: one line on stderr, exit code 1, no
output file. The console shows the face detector's progress and the result only
(--verbosity=0 adds the library logs).

  python tools/infer.py --checkpoint=... --export=generator_b16.stablehlo [--bf16]

writes the fixed-shape generator (--batch_size frames, RGB in and out) as a serialised
`jax.export` artifact; with --face/--audio as well it then also lip-syncs.
"""

import os

from absl import app
from absl import flags
import jax.numpy as jnp

from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import cli
from lipsync_jax import host_memory
from lipsync_jax import inference
from lipsync_jax import video

_FACE = flags.DEFINE_string("face", None, "Video or image with the face.")
_AUDIO = flags.DEFINE_string("audio", None, "Audio (wav, mp3, m4a, or a video's track).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generator checkpoint.", required=True)
_OUTFILE = flags.DEFINE_string("outfile", "results/result_voice.mp4", "Output mp4.")
_STATIC = flags.DEFINE_boolean("static", False, "Use only the first frame of the video.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Frames per generator/detector call.",
                                   lower_bound=1)
_BLEND = flags.DEFINE_boolean("blend", True, "Feathered lower-face paste-back; --noblend "
                              "pastes the whole box as the original does.")
_BF16 = flags.DEFINE_boolean("bf16", False, "bfloat16 compute.")
_EXPORT = flags.DEFINE_string("export", None, "Also write the fixed-shape generator as a "
                              "serialised jax.export (StableHLO) artifact to this path.")
_FACE_FLAGS = cli.FaceFlags()


def _export(generator, path, dtype):
  cli.check_output_folder(path)
  data = inference.export_inference_fn(generator.model, generator.variables,
                                       _BATCH_SIZE.value, generator.channel_order, dtype)
  temp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(temp, "wb") as f:
      f.write(data)
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)
  print(f"wrote {path}: jax.export of the generator, batch {_BATCH_SIZE.value}, "
        f"{generator.img_size}x{generator.img_size}, {len(data) / 2**20:.1f} MiB")


@cli.tool("infer")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host_memory.reuse_freed_memory()  # before the first XLA computation
  if not _EXPORT.value and not (_FACE.value and _AUDIO.value):
    raise app.UsageError("--face and --audio are required (unless --export)")
  if bool(_FACE.value) != bool(_AUDIO.value):
    raise app.UsageError("--face and --audio go together")
  dtype = jnp.bfloat16 if _BF16.value else None
  generator = checkpoints.load_generator(_CHECKPOINT.value)
  if _EXPORT.value:
    _export(generator, _EXPORT.value, dtype)
    if not _FACE.value:
      return
  cli.check_output_folder(_OUTFILE.value)
  job = inference.LipsyncJob(
      _FACE.value, _AUDIO.value, generator, batch_size=_BATCH_SIZE.value, static=_STATIC.value,
      blend=_BLEND.value, dtype=dtype, **_FACE_FLAGS.options())
  video.write_video(_OUTFILE.value, job.frames(), job.fps, audio=job.wav,
                    sample_rate=audio.SAMPLE_RATE)
  faceless = int((~job.has_face).sum())
  note = f", {faceless} frame(s) without a face passed through" if faceless else ""
  print(f"wrote {_OUTFILE.value}: {job.num_frames} frames at {job.fps:g} fps, boxes from "
        f"{job.box_source}{note}")


if __name__ == "__main__":
  cli.run(main)
