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
_PADS = flags.DEFINE_list("pads", ["0", "10", "0", "0"],
                          "Pixels added to the face box: top,bottom,left,right.")
_BOX = flags.DEFINE_list("box", None, "Fixed face box top,bottom,left,right: no detection.")
_BOXES_JSON = flags.DEFINE_string("boxes_json", None, "JSON file with per-frame face "
                                  "\"boxes\": no detection (default: <face stem>.json).")
_SIDECAR = flags.DEFINE_boolean("sidecar", True, "Use a <face stem>.json sidecar's boxes "
                                "when there is one; --nosidecar always detects.")
_RESIZE_FACTOR = flags.DEFINE_integer("resize_factor", 1, "Downscale the input by this factor.",
                                      lower_bound=1)
_NOSMOOTH = flags.DEFINE_boolean("nosmooth", False, "Do not smooth boxes over 5 frames.")
_FPS = flags.DEFINE_float("fps", None, "Frame rate for a still image (default 25).")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", None, "Use at most this many frames.",
                                   lower_bound=1)
_IMG_SIZE = flags.DEFINE_integer("img_size", 96, "The generator's input size.", lower_bound=16)
_MISSING = flags.DEFINE_enum("missing", "error", ["error", "interpolate", "passthrough"],
                             "Frames without a face: fail naming them, interpolate boxes, "
                             "or copy the frame through unchanged.")
_FACE_INDEX = flags.DEFINE_integer("face_index", None, "Which face (from the left) when "
                                   "several are found; default the largest.", lower_bound=0)
flags.register_validator("fps", lambda fps: fps is None or fps > 0,
                         message="--fps must be positive")


@cli.tool("prepare_avatar")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  box = None
  if _BOX.value:
    top, bottom, left, right = cli.int_list(_BOX.value, "box", 4)
    box = (left, top, right, bottom)
  avatar = inference.prepare_avatar(
      _FACE.value, fps=_FPS.value, img_size=_IMG_SIZE.value, max_frames=_MAX_FRAMES.value,
      box=box, face_boxes=_BOXES_JSON.value, use_sidecar=_SIDECAR.value,
      pads=cli.int_list(_PADS.value, "pads", 4), smooth=not _NOSMOOTH.value,
      resize_factor=_RESIZE_FACTOR.value, missing=_MISSING.value, face_index=_FACE_INDEX.value)
  folder = inference.save_avatar(avatar, _AVATAR.value)
  height, width = avatar.frames.shape[1:3]
  print(f"wrote {folder}: {len(avatar.frames)} frames of {width}x{height} at "
        f"{avatar.fps:g} fps, boxes from {avatar.box_source}")


if __name__ == "__main__":
  cli.run(main)
