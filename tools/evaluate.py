r"""Scores lip-synced clips: LSE-D / LSE-C with any SyncNet; PSNR, SSIM, LPIPS vs ground truth.

  python tools/evaluate.py --generated=results/ --syncnet=checkpoints/syncnet_flax \
      [--reference=data/test_videos/] [--lpips_weights=checkpoints/lpips_vgg16] \
      --output=results/eval.json

--generated: mp4 files and/or folders of them (with their audio muxed in, as tools/infer.py
writes them). --syncnet: an official `lipsync_expert.pth`, a tools/convert_torch.py folder
or a SyncNet training workdir; its name is recorded with the numbers (Wav2Lip's paper
numbers use the original SyncNet of Chung & Zisserman, which these are not). Face crops come
from a `<stem>.json` sidecar ("boxes") of the clip, else of its reference, else from the
face detector; padded by --pads like inference. LSE: for each offset in
-max_offset..+max_offset frames the mean SyncNet distance over the clip; LSE-D is the
minimum, LSE-C the median minus the minimum, av_offset where the minimum is (> 0: the
audio lags). With --reference (a folder holding videos of the same names) PSNR, SSIM and,
with --lpips_weights (a converted lpips_vgg16 folder or a VGG16 .pth), LPIPS are averaged
over the frames of the face crops (--region=face) or whole frames; --lpips_backbone=random
is for smoke tests only and is flagged in the output. Writes one JSON (per clip and
summary) and prints a table. Any error: one line on stderr, exit code 1, no output. The
console shows the detector's progress and the table only (--verbosity=0 adds the logs).
"""

import json
import os

from absl import app
from absl import flags
import numpy as np

from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import cli
from lipsync_jax import evaluation
from lipsync_jax import faces
from lipsync_jax import host_memory
from lipsync_jax import inference
from lipsync_jax import video

_GENERATED = flags.DEFINE_list("generated", None, "Clips (mp4) or folders of clips.",
                               required=True)
_SYNCNET = flags.DEFINE_string("syncnet", None, "SyncNet checkpoint.", required=True)
_REFERENCE = flags.DEFINE_string("reference", None, "Folder of ground-truth videos with the "
                                 "generated clips' file names.")
_OUTPUT = flags.DEFINE_string("output", "eval_results.json", "Output JSON.")
_MAX_OFFSET = flags.DEFINE_integer("max_offset", 15, "Offsets -N..N frames are searched.",
                                   lower_bound=0)
_PADS = flags.DEFINE_list("pads", ["0", "10", "0", "0"], "Face box pads top,bottom,left,right.")
_DETECT = flags.DEFINE_boolean("detect", False, "Ignore sidecars; always run the detector.")
_REGION = flags.DEFINE_enum("region", "face", ["face", "frame"], "Where PSNR/SSIM/LPIPS are "
                            "measured: the face crops (SyncNet size) or whole frames.")
_LPIPS_WEIGHTS = flags.DEFINE_string("lpips_weights", None, "Converted LPIPS VGG16 weights.")
_LPIPS_BACKBONE = flags.DEFINE_enum("lpips_backbone", "vgg16", ["vgg16", "random"],
                                    "random: NOT perceptual, smoke tests only.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Windows / frames per network call.",
                                   lower_bound=1)

RANDOM_LPIPS_WARNING = ("LPIPS uses a RANDOM VGG16 backbone (--lpips_backbone=random): the "
                        "LPIPS numbers are NOT perceptual distances")
COLUMNS = ("clip", "frames", "lse_d", "lse_c", "av_offset", "psnr", "ssim", "lpips")


def clip_paths(entries):
  """The mp4 files named, folders expanded (sorted)."""
  paths = []
  for entry in entries:
    if os.path.isdir(entry):
      paths += sorted(os.path.join(entry, n) for n in os.listdir(entry)
                      if n.lower().endswith(".mp4"))
    elif os.path.isfile(entry):
      paths.append(entry)
    else:
      raise inference.InferenceError(f"{entry}: no such clip or folder")
  if not paths:
    raise inference.InferenceError(f"no .mp4 clips in {','.join(entries)}")
  return paths


def boxes_for_clip(path, reference, frames, pads):
  """(crop boxes (T, 4), where they came from) for a clip's frames: from the clip's
  sidecar, else its reference's (`inference.crop_boxes` of their face boxes), else from
  the face detector; --detect skips the sidecars."""
  sidecars = [] if _DETECT.value else [inference.sidecar_path(p) for p in (path, reference) if p]
  sidecar = next((s for s in sidecars if s), None)
  if sidecar:
    face_boxes = inference.read_sidecar_boxes(sidecar)
    if len(face_boxes) < len(frames):
      raise inference.InferenceError(f"{sidecar}: {len(face_boxes)} boxes for the "
                                     f"{len(frames)} frames of {path}")
    boxes, _ = inference.crop_boxes(face_boxes[:len(frames)], pads, frames.shape[1:3],
                                    missing="interpolate")
    return boxes, sidecar
  boxes, _ = faces.detect_video_boxes(iter(frames), faces.FaceDetector(), pads=pads,
                                      missing="interpolate", total=len(frames))
  return boxes, "detector"


def evaluate_clip(path, expert, lpips_fn, pads):
  """The metrics of one generated clip, as a JSON-able dict."""
  frames, fps = video.read_video(path)
  reference = None
  if _REFERENCE.value:
    reference = os.path.join(_REFERENCE.value, os.path.basename(path))
    if not os.path.isfile(reference):
      raise inference.InferenceError(f"{reference}: no ground truth for {path}")
  if len(frames) < evaluation.SYNC_WINDOW:
    raise inference.InferenceError(f"{path}: {len(frames)} frame(s); LSE needs at least "
                                   f"{evaluation.SYNC_WINDOW}")
  boxes, box_source = boxes_for_clip(path, reference, frames, pads)
  mel = audio.melspectrogram(audio.load_audio(path))
  crops = evaluation.sync_crops(frames, boxes, expert.img_size, expert.channel_order)
  result = {"clip": os.path.basename(path), "path": path, "frames": len(frames), "fps": fps,
            "box_source": box_source}
  result.update(evaluation.clip_sync_scores(expert.embed, crops, mel, fps,
                                            _MAX_OFFSET.value, _BATCH_SIZE.value))
  if reference is None:
    return result
  truth, truth_fps = video.read_video(reference)
  if abs(truth_fps - fps) > 1e-3:
    raise inference.InferenceError(f"{reference}: {truth_fps:g} fps vs {fps:g} fps of {path}")
  count = min(len(frames), len(truth))
  if _REGION.value == "face":
    x = faces.crop_faces(frames[:count], boxes[:count], expert.img_size)
    y = faces.crop_faces(truth[:count], boxes[:count], expert.img_size)
  elif truth.shape[1:] != frames.shape[1:]:
    raise inference.InferenceError(f"{reference}: {truth.shape[2]}x{truth.shape[1]} frames vs "
                                   f"{frames.shape[2]}x{frames.shape[1]} of {path}")
  else:
    x, y = frames[:count], truth[:count]
  result["reference"] = reference
  result["compared_frames"] = count
  result.update(evaluation.clip_image_metrics(x / 255.0, y / 255.0, lpips_fn,
                                              _BATCH_SIZE.value))
  return result


def _pads():
  try:
    pads = [int(v) for v in _PADS.value]
  except ValueError:
    pads = []
  if len(pads) != 4:
    raise inference.InferenceError(f"--pads needs 4 comma-separated integers, got "
                                   f"{','.join(_PADS.value)}")
  return pads


def write_json(path, content):
  temp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(temp, "w") as f:
      json.dump(content, f, indent=2)
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)


@cli.tool("evaluate")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host_memory.reuse_freed_memory()  # before the first XLA computation
  warnings, lpips_fn, lpips_name = [], None, None
  output_dir = os.path.dirname(os.path.abspath(_OUTPUT.value))
  if not os.path.isdir(output_dir):
    raise inference.InferenceError(f"{_OUTPUT.value}: folder {output_dir} does not exist")
  pads = _pads()
  paths = clip_paths(_GENERATED.value)
  expert = checkpoints.load_syncnet(_SYNCNET.value)
  if _REFERENCE.value and (_LPIPS_WEIGHTS.value or _LPIPS_BACKBONE.value == "random"):
    lpips_fn = checkpoints.load_lpips(_LPIPS_WEIGHTS.value, _LPIPS_BACKBONE.value)
    lpips_name = ("random" if _LPIPS_BACKBONE.value == "random"
                  else f"vgg16 ({_LPIPS_WEIGHTS.value})")
    if _LPIPS_BACKBONE.value == "random":
      warnings.append(RANDOM_LPIPS_WARNING)
  elif _REFERENCE.value:
    warnings.append("no --lpips_weights: LPIPS not computed")
  clips = [evaluate_clip(path, expert, lpips_fn, pads) for path in paths]
  summary = evaluation.summarize(clips, ("lse_d", "lse_c", "psnr", "ssim", "lpips"))
  write_json(_OUTPUT.value, {
      "syncnet": expert.name, "syncnet_path": _SYNCNET.value,
      "syncnet_channel_order": expert.channel_order, "max_offset": _MAX_OFFSET.value,
      "pads": pads, "region": _REGION.value, "lpips": lpips_name, "warnings": warnings,
      "clips": clips, "summary": summary})
  print(f"SyncNet: {expert.name}; offsets -{_MAX_OFFSET.value}..{_MAX_OFFSET.value}")
  for warning in warnings:
    print(f"WARNING: {warning}")
  rows = clips + [dict(summary, clip=f"mean of {len(clips)}",
                       frames=int(np.sum([c["frames"] for c in clips])))]
  print(evaluation.format_table(rows, COLUMNS))
  print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main)
