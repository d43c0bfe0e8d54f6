r"""Converts a PyTorch checkpoint to an orbax checkpoint of flax variables.

  python tools/convert_torch.py --input=checkpoints/wav2lip_gan.pth --model=wav2lip \
      --output=checkpoints/wav2lip_gan_flax

Reads the file without torch and without unpickling arbitrary objects (zip and legacy
formats). Writes `<output>/variables/` (orbax, {"params", "batch_stats"}) and
`<output>/metadata.json` (model, channel_order, source), first under a temporary name, then
renamed; read it back with `lipsync_jax.checkpoints.restore_converted`. The official Wav2Lip and
SyncNet checkpoints were trained on BGR frames (OpenCV), hence the default channel order;
the `lpips` package's weights expect RGB. The evaluation networks: `syncnet_v2`
(syncnet_python's `syncnet_v2.model`, BGR) and `inception_fid` (pytorch-fid's
`pt_inception-2015-12-05-*.pth`, RGB). Bad input (a missing, unsafe or malformed
file, another network's weights, an existing output): one line on stderr, exit code 1,
nothing written.
"""

import os

from absl import app
from absl import flags

from lipsync_jax import checkpoints
from lipsync_jax import cli
from lipsync_jax import convert

_DEFAULT_CHANNEL_ORDER = {"wav2lip": "bgr", "syncnet": "bgr", "quality_discriminator": "bgr",
                          "lpips_vgg16": "rgb", "syncnet_v2": "bgr", "inception_fid": "rgb"}

_INPUT = flags.DEFINE_string("input", None, "PyTorch checkpoint (.pth/.pt).", required=True)
_MODEL = flags.DEFINE_enum("model", None, list(convert.MODELS), "Which network it holds.",
                           required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory (must not exist).",
                              required=True)
_CHANNEL_ORDER = flags.DEFINE_enum(
    "channel_order", None, ["rgb", "bgr"],
    "Channel order the weights were trained on; default: bgr for the official Wav2Lip "
    "checkpoints (wav2lip, syncnet, quality_discriminator) and syncnet_v2, rgb for "
    "lpips_vgg16 and inception_fid.")


@cli.tool("convert_torch")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  metadata = {
      "model": _MODEL.value,
      "channel_order": _CHANNEL_ORDER.value or _DEFAULT_CHANNEL_ORDER[_MODEL.value],
      "source": os.path.basename(_INPUT.value),
  }
  variables = convert.load_torch_checkpoint(_INPUT.value, model=_MODEL.value)
  checkpoints.save_converted(_OUTPUT.value, variables, metadata)
  print(f"wrote {_OUTPUT.value} ({metadata['model']}, {metadata['channel_order']})")


if __name__ == "__main__":
  cli.run(main)
