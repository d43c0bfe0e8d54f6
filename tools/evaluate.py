r"""Scores lip-synced videos: the published LSE-D / LSE-C and FID, PSNR, SSIM, LPIPS, expert sync.

  python tools/evaluate.py --videos=results/ --lse_model=syncnet_v2.model \
      [--protocol=lrs|real_videos] [--reference=data/test_videos/ \
      --fid_model=pt_inception-2015-12-05-6726825d.pth --lpips_weights=ckpt/lpips_vgg16] \
      [--expert=lipsync_expert.pth] --json_out=scores.json

--videos: mp4 files and/or folders of them (audio muxed in, as tools/infer.py writes them).
Each metric is computed only when what it needs is given, and the printed table names the
model behind each number:
- LSE-D, LSE-C, offset (--lse_model: syncnet_python's `syncnet_v2.model` or its
  tools/convert_torch.py folder): Wav2Lip's evaluation/scores_LSE protocol
  (`lipsync_jax.lse`): --protocol=lrs scores whole frames (LRS2-style face-crop videos,
  calculate_scores_LRS), --protocol=real_videos tracks and crops the face first
  (calculate_scores_real_videos; our face detector, not S3FD). These are the numbers
  papers publish; offset > 0: the audio leads.
- FID (--fid_model: pytorch-fid's `pt_inception-2015-12-05-*.pth` or its converted folder;
  needs --reference): over all frames of the videos vs all frames of their references.
- PSNR, SSIM and, with --lpips_weights, LPIPS (needs --reference: a folder of ground-truth
  videos with the same file names), averaged over frames of the face crops
  (--region=face) or whole frames; --lpips_backbone=random is for smoke tests only.
- expert_sync_d / expert_sync_c / expert_av_offset (--expert: a Wav2Lip-style lip-sync
  expert, e.g. `lipsync_expert.pth`, a converted folder or our SyncNet workdir): the same
  offset search with that expert; NOT comparable with published LSE numbers.
Face crops (--region=face, --expert) come from a `<stem>.json` sidecar ("boxes") of the
video, else of its reference, else from the face detector; padded by --pads like inference.
Writes --json_out atomically: {"videos": [{"video", "lse_d", "lse_c", "offset", ...}],
"mean": {...}, "fid", "models", ...}. Any error: one line on stderr, exit code 1, no output.
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
from lipsync_jax import lse
from lipsync_jax import video

_VIDEOS = flags.DEFINE_list("videos", None, "Videos (mp4) or folders of them.", required=True)
_LSE_MODEL = flags.DEFINE_string("lse_model", None, "syncnet_python's syncnet_v2.model (or "
                                 "its converted folder): published LSE-D / LSE-C.")
_PROTOCOL = flags.DEFINE_enum("protocol", "lrs", list(lse.PROTOCOLS), "LSE protocol: lrs "
                              "(whole frames) or real_videos (face tracked and cropped).")
_FID_MODEL = flags.DEFINE_string("fid_model", None, "pytorch-fid's pt_inception-2015-12-05-"
                                 "*.pth (or its converted folder): FID vs --reference.")
_EXPERT = flags.DEFINE_string("expert", None, "Wav2Lip-style lip-sync expert: "
                              "expert_sync_d / expert_sync_c (not LSE).")
_REFERENCE = flags.DEFINE_string("reference", None, "Folder of ground-truth videos with the "
                                 "videos' file names.")
_JSON_OUT = flags.DEFINE_string("json_out", "eval_results.json", "Output JSON.")
_MAX_OFFSET = flags.DEFINE_integer("max_offset", 15, "Offsets -N..N frames are searched "
                                   "(LSE and expert).", lower_bound=0)
_PADS = flags.DEFINE_list("pads", ["0", "10", "0", "0"], "Face box pads top,bottom,left,right.")
_DETECT = flags.DEFINE_boolean("detect", False, "Ignore sidecars; always run the detector.")
_REGION = flags.DEFINE_enum("region", "face", ["face", "frame"], "Where PSNR/SSIM/LPIPS are "
                            "measured: the face crops or whole frames.")
_CROP_SIZE = flags.DEFINE_integer("crop_size", None, "Face crop size for PSNR/SSIM/LPIPS; "
                                  "default: the expert's, else 96.", lower_bound=16)
_LPIPS_WEIGHTS = flags.DEFINE_string("lpips_weights", None, "Converted LPIPS VGG16 weights.")
_LPIPS_BACKBONE = flags.DEFINE_enum("lpips_backbone", "vgg16", ["vgg16", "random"],
                                    "random: NOT perceptual, smoke tests only.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Windows / frames per network call "
                                   "(LSE keeps the protocol's 20).", lower_bound=1)
flags.DEFINE_alias("generated", "videos")
flags.DEFINE_alias("output", "json_out")

RANDOM_LPIPS_WARNING = ("LPIPS uses a RANDOM VGG16 backbone (--lpips_backbone=random): the "
                        "LPIPS numbers are NOT perceptual distances")
VIDEO_COLUMNS = ("video", "frames", "lse_d", "lse_c", "offset", "psnr", "ssim", "lpips",
                 "expert_sync_d", "expert_sync_c", "expert_av_offset")
MEAN_KEYS = ("lse_d", "lse_c", "psnr", "ssim", "lpips", "expert_sync_d", "expert_sync_c")


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


def reference_path(path):
  """The ground truth of a video (--reference/<same name>), or None without --reference."""
  if not _REFERENCE.value:
    return None
  reference = os.path.join(_REFERENCE.value, os.path.basename(path))
  if not os.path.isfile(reference):
    raise inference.InferenceError(f"{reference}: no ground truth for {path}")
  return reference


def evaluate_video(path, models, pads, fid_features):
  """The metrics of one video, as a JSON-able dict; appends its and its reference's
  Inception features to `fid_features` ("videos", "reference") when FID is computed."""
  reference = reference_path(path)
  frames, fps = video.read_video(path)
  result = {"video": os.path.basename(path), "path": path, "frames": len(frames), "fps": fps}
  if models.get("lse"):
    scores = lse.video_scores(models["lse"].apply, path, _PROTOCOL.value, _MAX_OFFSET.value)
    result.update(scores)
  expert = models.get("expert")
  needs_boxes = expert is not None or (reference and _REGION.value == "face")
  boxes = None
  if needs_boxes:
    if len(frames) < evaluation.SYNC_WINDOW and expert is not None:
      raise inference.InferenceError(f"{path}: {len(frames)} frame(s); sync scores need at "
                                     f"least {evaluation.SYNC_WINDOW}")
    boxes, result["box_source"] = boxes_for_clip(path, reference, frames, pads)
  if expert is not None:
    mel = audio.melspectrogram(audio.load_audio(path))
    crops = evaluation.sync_crops(frames, boxes, expert.img_size, expert.channel_order)
    result.update(evaluation.clip_sync_scores(expert.embed, crops, mel, fps,
                                              _MAX_OFFSET.value, _BATCH_SIZE.value))
  if reference is None:
    return result
  truth, truth_fps = video.read_video(reference)
  if abs(truth_fps - fps) > 1e-3:
    raise inference.InferenceError(f"{reference}: {truth_fps:g} fps vs {fps:g} fps of {path}")
  count = min(len(frames), len(truth))
  if _REGION.value == "face":
    size = _CROP_SIZE.value or (expert.img_size if expert else 96)
    x = faces.crop_faces(frames[:count], boxes[:count], size)
    y = faces.crop_faces(truth[:count], boxes[:count], size)
  elif truth.shape[1:] != frames.shape[1:]:
    raise inference.InferenceError(f"{reference}: {truth.shape[2]}x{truth.shape[1]} frames vs "
                                   f"{frames.shape[2]}x{frames.shape[1]} of {path}")
  else:
    x, y = frames[:count], truth[:count]
  result["reference"] = reference
  result["compared_frames"] = count
  result.update(evaluation.clip_image_metrics(x / 255.0, y / 255.0, models.get("lpips"),
                                              _BATCH_SIZE.value))
  if models.get("fid"):
    fid_fn = models["fid"].apply
    fid_features["videos"].append(evaluation.inception_features(fid_fn, x, _BATCH_SIZE.value))
    fid_features["reference"].append(evaluation.inception_features(fid_fn, y,
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


def load_models(warnings):
  """The networks asked for, by role ("lse", "fid", "expert", "lpips"), and their names;
  every file is checked before any video is read."""
  if not (_LSE_MODEL.value or _EXPERT.value or _REFERENCE.value):
    raise app.UsageError("nothing to compute: give --lse_model, --expert and/or --reference "
                         "(with --fid_model, --lpips_weights)")
  if _FID_MODEL.value and not _REFERENCE.value:
    raise app.UsageError("--fid_model needs --reference (the ground-truth videos)")
  models, names = {}, {}
  if _LSE_MODEL.value:
    models["lse"] = checkpoints.load_syncnet_v2(_LSE_MODEL.value)
    names["lse"] = f"{models['lse'].name} (syncnet_python SyncNet v2, {_PROTOCOL.value} protocol)"
  if _FID_MODEL.value:
    models["fid"] = checkpoints.load_inception(_FID_MODEL.value)
    names["fid"] = f"{models['fid'].name} (pytorch-fid InceptionV3, pool features)"
  if _EXPERT.value:
    models["expert"] = checkpoints.load_syncnet(_EXPERT.value)
    names["expert"] = (f"{models['expert'].name} (Wav2Lip-style lip-sync expert, "
                       f"{models['expert'].channel_order.upper()})")
  if _REFERENCE.value and (_LPIPS_WEIGHTS.value or _LPIPS_BACKBONE.value == "random"):
    models["lpips"] = checkpoints.load_lpips(_LPIPS_WEIGHTS.value, _LPIPS_BACKBONE.value)
    names["lpips"] = ("random" if _LPIPS_BACKBONE.value == "random"
                      else f"vgg16 ({_LPIPS_WEIGHTS.value})")
    if _LPIPS_BACKBONE.value == "random":
      warnings.append(RANDOM_LPIPS_WARNING)
  elif _REFERENCE.value:
    warnings.append("no --lpips_weights: LPIPS not computed")
  return models, names


def paper_table(mean, fid, names):
  """Rows metric / value / model: LSE-D, LSE-C, FID, SSIM, PSNR, LPIPS, those computed."""
  rows = [("LSE-D", mean.get("lse_d"), "lse"), ("LSE-C", mean.get("lse_c"), "lse"),
          ("FID", fid, "fid"), ("SSIM", mean.get("ssim"), None),
          ("PSNR", mean.get("psnr"), None), ("LPIPS", mean.get("lpips"), "lpips")]
  return [{"metric": metric, "value": value,
           "model": names.get(role, "-") if role else f"vs {_REFERENCE.value}"}
          for metric, value, role in rows if value is not None]


@cli.tool("evaluate")
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host_memory.reuse_freed_memory()  # before the first XLA computation
  output_dir = os.path.dirname(os.path.abspath(_JSON_OUT.value))
  if not os.path.isdir(output_dir):
    raise inference.InferenceError(f"{_JSON_OUT.value}: folder {output_dir} does not exist")
  pads = _pads()
  paths = clip_paths(_VIDEOS.value)
  warnings = []
  models, names = load_models(warnings)
  fid_features = {"videos": [], "reference": []}
  videos = [evaluate_video(path, models, pads, fid_features) for path in paths]
  mean = evaluation.summarize(videos, MEAN_KEYS)
  fid = None
  if models.get("fid"):
    fid = evaluation.fid(np.concatenate(fid_features["videos"]),
                         np.concatenate(fid_features["reference"]))
  expert = models.get("expert")
  write_json(_JSON_OUT.value, {
      "videos": videos, "mean": mean, "fid": fid, "models": names,
      "protocol": _PROTOCOL.value if models.get("lse") else None,
      "expert_channel_order": expert.channel_order if expert else None,
      "max_offset": _MAX_OFFSET.value, "pads": pads, "region": _REGION.value,
      "warnings": warnings})
  for warning in warnings:
    print(f"WARNING: {warning}")
  columns = [c for c in VIDEO_COLUMNS if c in ("video", "frames")
             or any(c in v for v in videos)]
  rows = videos + [dict(mean, video=f"mean of {len(videos)}",
                        frames=int(np.sum([v["frames"] for v in videos])))]
  print(evaluation.format_table(rows, columns))
  table = paper_table(mean, fid, names)
  if table:
    print(evaluation.format_table(table, ("metric", "value", "model")))
  if expert is not None:
    print(f"expert_sync_d / expert_sync_c by {names['expert']}: not the published LSE-D / "
          "LSE-C (those need --lse_model=syncnet_v2.model)")
  print(f"wrote {_JSON_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
