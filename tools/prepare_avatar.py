r"""Prepares a face video or photo once for live lip sync (tools/stream.py).

  python tools/prepare_avatar.py --face=speaker.mp4 --avatar=avatars/speaker

Decodes the frames, finds the face crop boxes (--box, else --boxes_json or a
`<face stem>.json` sidecar, else the face detector: the box logic of tools/infer.py,
with the same flags) and the generator-sized crops, and writes them to the --avatar
folder (avatar.npz, avatar.json). A stream loops the frames forward then backward, so
any length of audio fits. The folder appears complete or not at all; an older avatar
folder there is replaced, anything else is left alone (error).
"""

from absl import app
from absl import flags

from lipsync_jax import cli
from lipsync_jax import inference

_FACE = flags.DEFINE_string("face", None, "Video or image with the face.", required=True)
_AVATAR = flags.DEFINE_string("avatar", None, "Output avatar folder.", required=True)
_MAX_FRAMES = flags.DEFINE_integer("max_frames", None, "Use at most this many frames.",
                                   lower_bound=1)
_IMG_SIZE = flags.DEFINE_integer("img_size", 96, "The generator's input size.", lower_bound=16)
_FACE_FLAGS = cli.FaceFlags()


@cli.tool("prepare_avatar")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  avatar = inference.prepare_avatar(_FACE.value, img_size=_IMG_SIZE.value,
                                    max_frames=_MAX_FRAMES.value, **_FACE_FLAGS.options())
  folder = inference.save_avatar(avatar, _AVATAR.value)
  height, width = avatar.frames.shape[1:3]
  print(f"wrote {folder}: {len(avatar.frames)} frames of {width}x{height} at "
        f"{avatar.fps:g} fps, boxes from {avatar.box_source}")


if __name__ == "__main__":
  cli.run(main)
