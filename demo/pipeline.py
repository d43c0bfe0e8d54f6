r"""The CPU demo, end to end: synthetic talking heads -> records -> SyncNet ->
AttnWav2Lip -> lip-synced held-out clips -> a table, scored by an independent judge.

  python tools/demo.py --workdir=workdir/demo   (tools/demo.py runs `main`)

Stages (each timed; a re-run with the same workdir resumes: preprocessing skips
finished clips, training resumes from its checkpoints):
  1. `data_pipeline.synthetic.write_dataset`: training clips (seed 0), held-out clips
     (seed 1) and the judge's clips (seed 2), mp4 + sidecar.
  2. `data_pipeline.preprocess.run_local`: face crops + mel into record shards.
  3. SyncNet (`configs/demo_cpu.py:syncnet`, on the 96 px crops), 4. AttnWav2Lip
     (`:generator`, on 48 px faces: the crops resized) with that SyncNet as its expert,
     5. the judge (`:judge`: a SyncNet from another seed, trained on the judge's clips
     only, never seen by the generator), all with `lipsync_jax.train.trainer` and
     exported with `checkpoints.save_converted`.
  6. Held-out evaluation: both SyncNets' accuracy; the generator and the
     copy-the-reference baseline on every frame of the held-out clips (target lower half
     masked, reference = the frame half a clip away; generated at 48 px and resized to
     the crops' 96), scored by `demo.metrics` (mouth L1, PSNR, mouth-open error; also the
     generator fed audio 20 frames late, whose mouths are no worse than with the real
     audio unless it follows the audio) and sync scores (`lipsync_jax.evaluation`'s
     offset search; not the published LSE) of real, shifted and generated audio-video
     pairs, by the judge and by the expert.
  7. One held-out face lip-synced to another clip's audio with `inference.LipsyncJob`
     -> `lipsync.mp4`.
Outputs under --workdir: clips/, records/, syncnet/, generator/ and judge/ (checkpoints
and TensorBoard logs), export/, lipsync.mp4, demo_table.json, frame_strip.png (six
held-out frames: reference / generated / ground truth, for the README) and
logs/demo.log. The console shows the stages' progress bars and the final table only
(--verbosity=0 adds the log); bad input: one line on stderr, exit code 1.
"""

import json
import logging
import os
import pathlib
import time

from absl import app, flags
import numpy as np
from PIL import Image, ImageDraw
import tqdm

from configs import demo_cpu
from data_pipeline import preprocess, synthetic
from demo import metrics as demo_metrics
from lipsync_jax import (audio, checkpoints, cli, evaluation, host_memory, inference,
                         input_pipeline, records, video)
from lipsync_jax.train import components, steps, trainer

_WORKDIR = flags.DEFINE_string("workdir", "workdir/demo", "Where everything is written.")
_NUM_TRAIN_CLIPS = flags.DEFINE_integer("num_train_clips", 96, "Synthetic training clips.")
_NUM_EVAL_CLIPS = flags.DEFINE_integer("num_eval_clips", 8, "Held-out clips.")
_NUM_JUDGE_CLIPS = flags.DEFINE_integer("num_judge_clips", 48,
                                        "Clips the judge SyncNet trains on (no one else).")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Length of each clip in seconds.")
_SYNCNET_STEPS = flags.DEFINE_integer("syncnet_steps", None,
                                     "Override the config's SyncNet (and judge) training steps.")
_GENERATOR_STEPS = flags.DEFINE_integer("generator_steps", None,
                                       "Override the config's generator training steps.")
_ABLATIONS = flags.DEFINE_bool(
    "ablations", False, "Also train and score one generator per ablation switch "
    "(use_cbam, use_semantic_alignment, use_ffc off; lpips_weight 0.07, the demo's is 0; "
  "adversarial_weight 0.07: Wav2Lip's quality discriminator, the term LPIPS replaces).")
SHIFT_FRAMES = 20  # Beyond the +-15 frames the sync scores search: out of sync at every offset.
ABLATIONS = {"no_cbam": ("model.kwargs.use_cbam", False),
             "no_semantic_alignment": ("model.kwargs.use_semantic_alignment", False),
             "no_ffc": ("model.kwargs.use_ffc", False),
             "with_lpips": ("loss.lpips_weight", 0.07),
             "adversarial": ("loss.adversarial_weight", 0.07)}
SPLITS = (("train", 0), ("eval", 1), ("judge", 2))  # (clip folder, synthetic seed)


class Stopwatch:
  """Wall time per named stage, and a console bar over the stages."""

  def __init__(self, num_stages: int):
    self.seconds = {}
    self._bar = tqdm.tqdm(total=num_stages, unit="stage", dynamic_ncols=True,
                          bar_format="{desc}[{n_fmt}/{total_fmt} stages, {elapsed}]")

  def run(self, name, fn, *args, **kwargs):
    start = time.perf_counter()
    logging.info("=== %s", name)
    self._bar.set_description(f"demo {name}")
    result = fn(*args, **kwargs)
    self.seconds[name] = round(time.perf_counter() - start, 1)
    logging.info("=== %s: %.1f s", name, self.seconds[name])
    self._bar.update(1)
    return result

  def close(self) -> None:
    if self._bar.n == self._bar.total:
      self._bar.set_description("demo done", refresh=False)
    self._bar.close()


def make_data(workdir: pathlib.Path) -> None:
  """Stages 1-2: the `SPLITS`' clips and their record shards."""
  counts = {"train": _NUM_TRAIN_CLIPS.value, "eval": _NUM_EVAL_CLIPS.value,
            "judge": _NUM_JUDGE_CLIPS.value}
  for split, seed in SPLITS:
    count = counts[split]
    clip_dir = workdir / "clips" / split
    synthetic.write_dataset(clip_dir, count, _SECONDS.value, seed=seed, show_progress=True)
    summary = preprocess.run_local(clip_dir, workdir / "records" / split, num_workers=0,
                                   progress=True)
    if summary.skipped:
      raise input_pipeline.DatasetError(
          f"{clip_dir}: preprocessing skipped clips: {summary.skipped}")


def demo_config(part: str):
  """`configs/demo_cpu.py:<part>`."""
  return demo_cpu.get_config(part)


def _set(config, dotted: str, value) -> None:
  *parents, name = dotted.split(".")
  for parent in parents:
    config = config[parent]
  config[name] = value


def _data_paths(config, workdir: pathlib.Path, steps: int | None, split: str = "train"):
  if steps is not None:  # The learning-rate decay ends with the run.
    config.num_train_steps = steps
  config.data.train_path = str(workdir / "records" / split)
  config.data.eval_path = str(workdir / "records" / "eval")
  return config


def _export(path: pathlib.Path, variables, metadata) -> str:
  if not path.exists():
    checkpoints.save_converted(path, variables, metadata)
  return str(path)


def train_syncnet(workdir: pathlib.Path, part: str = "syncnet") -> str:
  """Stage 3 (the expert, on the training clips) or 5 (part "judge", on the judge's
  clips); returns the exported SyncNet folder `<workdir>/export/<part>`."""
  config = _data_paths(demo_config(part), workdir, _SYNCNET_STEPS.value,
                       split="judge" if part == "judge" else "train")
  trainer.train_syncnet(config, str(workdir / part))
  final = workdir / part / "checkpoints" / str(config.num_train_steps)
  variables = checkpoints.load_variables(str(final), "syncnet", "syncnet")
  return _export(workdir / "export" / part, variables, {
      "model": "syncnet", "channel_order": "rgb", "source": "tools/demo.py",
      "model_config": dict(config.syncnet_kwargs)})


def train_generator(workdir: pathlib.Path, name: str = "generator",
                    overrides: tuple = ()) -> str:
  """Stage 4 (or an ablation); returns the exported generator folder."""
  config = _data_paths(demo_config("generator"), workdir,
                       _GENERATOR_STEPS.value)
  config.expert.checkpoint = str(workdir / "export" / "syncnet")
  for dotted, value in overrides:
    _set(config, dotted, value)
  trainer.train_generator(config, str(workdir / name))
  # The final step (the end of the learning-rate decay), not the best by eval
  # l1_plus_sync: on a few eval batches the sync term is mostly noise.
  final = workdir / name / "checkpoints" / str(config.num_train_steps)
  variables = checkpoints.load_variables(str(final), config.model.name, "generator")
  model_config = {"img_size": components.generator_img_size(config),
                  **dict(config.model.kwargs)}
  return _export(workdir / "export" / name, variables, {
      "model": config.model.name, "channel_order": "rgb", "source": "tools/demo.py",
      "model_config": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in model_config.items()}})


def held_out_clips(workdir: pathlib.Path):
  """[(crops (T, 96, 96, 3) in [0, 1], mel (80, n), fps, mouth.open (T,))] held out."""
  clips = []
  for clip in input_pipeline.open_record_source(records.list_shards(workdir / "records" / "eval")):
    crops = input_pipeline.read_frames(clip, range(len(clip["frames"]))).astype(np.float32) / 255
    sidecar = workdir / "clips" / "eval" / f"{clip['clip_id']}.json"
    mouth_open = np.asarray(json.loads(sidecar.read_text())["mouth"]["open"], np.float32)
    clips.append((crops, np.asarray(clip["mel"]), float(clip["fps"]), mouth_open[:len(crops)]))
  return clips


def syncnet_accuracy(syncnet: checkpoints.SyncExpert, workdir: pathlib.Path,
                     num_batches: int = 16, batch_size: int = 32) -> float:
  """In/off-sync accuracy (cosine > 0.5) on held-out pairs of the training sampler."""
  source = input_pipeline.open_record_source(records.list_shards(workdir / "records" / "eval"))
  iterator = input_pipeline.syncnet_iterator(source, batch_size=batch_size, seed=123)
  correct = []
  for _ in range(num_batches):
    batch = next(iterator)
    audio_emb, face_emb = syncnet.embed(batch["mel"], steps.device_batch(batch)["faces"])
    cosine = np.sum(np.asarray(audio_emb) * np.asarray(face_emb), axis=-1)
    correct.append((cosine > 0.5) == (batch["label"] > 0.5))
  return float(np.mean(np.concatenate(correct)))


def generate_held_out(generator: checkpoints.Generator, clips) -> list[np.ndarray]:
  """Generated crops per clip: masked target, reference = the frame T/2 further on.

  A generator smaller than the crops (the demo's) gets them resized to its size, and
  its output is resized back (`input_pipeline.resize_frames`, as videos are made), so every
  method is scored at the crops' size.
  """
  fn = inference.make_inference_fn(generator.model, generator.variables, batch_size=25)
  out = []
  for crops, mel, fps, _ in clips:
    n, size = len(crops), crops.shape[1]
    faces = input_pipeline.resize_frames(crops, generator.img_size)
    reference = faces[(np.arange(n) + n // 2) % n]
    masked = faces.copy()
    masked[:, faces.shape[1] // 2:] = 0.0
    mels = np.stack([audio.mel_window(mel, i, fps, clamp=True) for i in range(n)])[..., None]
    generated = np.asarray(fn(mels, np.concatenate([masked, reference], axis=-1)))
    out.append(input_pipeline.resize_frames(generated, size))
  return out


def mouth_rows(clips, outputs: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
  """Mouth metrics per method; the calibration is fitted on the ground-truth frames."""
  truth = [c[0] for c in clips]
  mouth_open = [c[3] for c in clips]
  calibration = demo_metrics.OpeningCalibration.fit(
      np.concatenate([demo_metrics.mouth_opening(t) for t in truth]),
      np.concatenate(mouth_open))
  rows = {}
  for name, frames in {"ground truth": truth, **outputs}.items():
    rows[name] = demo_metrics.mean_scores([
        demo_metrics.mouth_scores(f, t, o, calibration)
        for f, t, o in zip(frames, truth, mouth_open)])
  rows["ground truth"]["mouth_psnr"] = None  # Identical frames: infinite.
  return rows


def sync_rows(syncnets: dict[str, checkpoints.SyncExpert], clips,
              generated: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
  """Sync scores (mean over clips; the LSE offset search, not the published LSE) of real,
  shifted and generated audio-video pairs, by each of `syncnets` ({"judge": ...,
  "expert": ...}): columns `<name>_sync_d`, `<name>_sync_c`, `<name>_in_sync` (the clips
  whose best offset is 0)."""
  cases = {"real audio": [(c[0], c[1]) for c in clips],
           f"audio shifted {SHIFT_FRAMES} frames": [
               (c[0], demo_metrics.shifted_mel(c[1], SHIFT_FRAMES, c[2])) for c in clips]}
  for name, frames in generated.items():
    label = "generated" if name == "generator" else f"generated ({name})"
    cases[label] = [(g, c[1]) for g, c in zip(frames, clips)]
  rows = {name: {} for name in cases}
  for scorer, syncnet in syncnets.items():
    for name, pairs in cases.items():
      scores = [evaluation.clip_sync_scores(syncnet.embed, faces, mel, clips[0][2])
                for faces, mel in pairs]
      summary = evaluation.summarize(scores, ("expert_sync_d", "expert_sync_c"))
      rows[name].update({
          f"{scorer}_sync_d": summary["expert_sync_d"],
          f"{scorer}_sync_c": summary["expert_sync_c"],
          f"{scorer}_in_sync": sum(s["expert_av_offset"] == 0 for s in scores)})
  return rows


STRIP_ROWS = ("reference", "generated", "ground truth")


def strip_frames(clips, generated: list[np.ndarray], count: int = 6
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """(reference, generated, ground truth) crops of `count` held-out frames, evenly spaced
  over all clips' frames (reference: the frame half a clip away, as `generate_held_out`)."""
  lengths = [len(c[0]) for c in clips]
  starts = np.cumsum([0] + lengths)
  picked = []
  for position in np.linspace(0, starts[-1] - 1, count + 2)[1:-1].round().astype(int):
    index = int(np.searchsorted(starts, position, side="right")) - 1
    crops, frame = clips[index][0], int(position - starts[index])
    n = len(crops)
    picked.append((crops[(frame + n // 2) % n], generated[index][frame], crops[frame]))
  return picked


def frame_strip(frames: list[tuple[np.ndarray, ...]], label_width: int = 84,
                gap: int = 2) -> Image.Image:
  """One row per `STRIP_ROWS` entry, one column per frame, labels on the left: RGB."""
  size = frames[0][0].shape[0]
  width = label_width + len(frames) * (size + gap)
  height = len(STRIP_ROWS) * (size + gap) - gap
  image = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(image)
  for row, label in enumerate(STRIP_ROWS):
    top = row * (size + gap)
    draw.text((4, top + size // 2 - 6), label, fill="black")
    for column, crops in enumerate(frames):
      pixels = np.clip(np.asarray(crops[row]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
      image.paste(Image.fromarray(pixels), (label_width + column * (size + gap), top))
  return image


def write_lipsync_video(generator: checkpoints.Generator, workdir: pathlib.Path) -> str:
  """Held-out clip 0's face lip-synced to held-out clip 1's audio (tools/infer.py's path)."""
  face, speech = (workdir / "clips" / "eval" / f"synth_{i:05d}.mp4" for i in (0, 1))
  job = inference.LipsyncJob(str(face), str(speech), generator, batch_size=25)
  return video.write_video(workdir / "lipsync.mp4", job.frames(), job.fps, audio=job.wav)


def evaluate(workdir: pathlib.Path, syncnet_dirs: dict[str, str],
             generator_dirs: dict[str, str]) -> dict:
  """Stage 6: the table (a JSON-able dict). syncnet_dirs: {"judge": ..., "expert": ...}."""
  syncnets = {name: checkpoints.load_syncnet(path) for name, path in syncnet_dirs.items()}
  clips = held_out_clips(workdir)
  generators = {name: checkpoints.load_generator(path) for name, path in generator_dirs.items()}
  generated = {name: generate_held_out(g, clips) for name, g in generators.items()}
  # The same generator fed audio SHIFT_FRAMES late: if its mouths follow the audio,
  # they are worse against the ground truth than with the real audio.
  shifted_audio = [(crops, demo_metrics.shifted_mel(mel, SHIFT_FRAMES, fps), fps, mouth_open)
                   for crops, mel, fps, mouth_open in clips]
  generated_shifted = generate_held_out(generators["generator"], shifted_audio)
  frame_strip(strip_frames(clips, generated["generator"])).save(workdir / "frame_strip.png")
  baseline = [demo_metrics.copy_reference(c[0], c[0][(np.arange(len(c[0])) + len(c[0]) // 2)
                                                     % len(c[0])]) for c in clips]
  mouth = mouth_rows(clips, {**generated, "copy reference": baseline,
                             f"generator, audio {SHIFT_FRAMES} frames late": generated_shifted})
  return {"syncnet_heldout_accuracy": {name: syncnet_accuracy(s, workdir)
                                       for name, s in syncnets.items()},
          "syncnets": {name: s.name for name, s in syncnets.items()},
          "num_heldout_clips": len(clips),
          "num_heldout_frames": int(sum(len(c[0]) for c in clips)),
          "mouth": mouth, "sync": sync_rows(syncnets, clips, generated),
          "generator_beats_baseline": demo_metrics.beats_baseline(
              mouth["generator"], mouth["copy reference"])}


SYNC_COLUMNS = ("audio-video pair", "judge_sync_d", "judge_sync_c", "judge_in_sync",
                "expert_sync_d", "expert_sync_c", "expert_in_sync")


ABLATION_COLUMNS = ("generator", "mouth_l1", "mouth_psnr", "open_error", "judge_sync_d",
                    "judge_sync_c", "judge_in_sync")


def ablation_rows(table: dict) -> list[dict]:
  """One row per trained generator (the demo's first, then `ABLATIONS` in order): its mouth
  metrics and the judge's sync scores of its clips; [] without ablations."""
  names = [n for n in ("generator", *ABLATIONS) if n in table["mouth"]]
  if len(names) < 2:
    return []
  rows = []
  for name in names:
    sync = table["sync"]["generated" if name == "generator" else f"generated ({name})"]
    rows.append({"generator": "demo" if name == "generator" else name, **table["mouth"][name],
                 **{k: sync[k] for k in ABLATION_COLUMNS[4:]}})
  return rows


def format_report(table: dict, seconds: dict) -> str:
  mouth = [{"method": k, **v} for k, v in table["mouth"].items()]
  sync = [{"audio-video pair": k, **v} for k, v in table["sync"].items()]
  accuracy = table["syncnet_heldout_accuracy"]
  ablations = ablation_rows(table)
  return "\n".join([
      "SyncNet held-out accuracy: " + ", ".join(
          f"{name} {value:.3f} ({table['syncnets'][name]})" for name, value in accuracy.items()),
      f"Held-out: {table['num_heldout_clips']} clips, {table['num_heldout_frames']} frames "
      "(mouth region; open_error in mouth.open units, 0 closed .. 1 wide)",
      evaluation.format_table(mouth, ("method", "mouth_l1", "mouth_psnr", "open_error")),
      f"generator beats copy-reference baseline: {table['generator_beats_baseline']}",
      "Sync (the LSE offset search over +-15 frames, not the published LSE): by the judge, "
      "a SyncNet trained on clips of its own, and by the expert the generator trained "
      "against; *_in_sync: clips whose best offset is 0",
      evaluation.format_table(sync, SYNC_COLUMNS),
      *(["Ablations (each one switch away from the demo's generator; sync by the judge)",
         evaluation.format_table(ablations, ABLATION_COLUMNS)] if ablations else []),
      "wall time (s): " + ", ".join(f"{k} {v}" for k, v in seconds.items())])


def _log_file() -> str:
  return cli.workdir_log(_WORKDIR.value, "demo")


@cli.tool("demo", log_file=_log_file)
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  host_memory.reuse_freed_memory()  # before the first XLA computation
  workdir = pathlib.Path(_WORKDIR.value)
  watch = Stopwatch(6 + (len(ABLATIONS) if _ABLATIONS.value else 0))
  start = time.perf_counter()
  try:
    watch.run("data", make_data, workdir)
    syncnet_dir = watch.run("syncnet", train_syncnet, workdir)
    generators = {"generator": watch.run("generator", train_generator, workdir)}
    if _ABLATIONS.value:
      for name, override in ABLATIONS.items():
        generators[name] = watch.run(name, train_generator, workdir, name, (override,))
    judge_dir = watch.run("judge", train_syncnet, workdir, "judge")
    table = watch.run("evaluate", evaluate, workdir,
                      {"judge": judge_dir, "expert": syncnet_dir}, generators)
    table["video"] = watch.run("video", write_lipsync_video,
                               checkpoints.load_generator(generators["generator"]), workdir)
  finally:
    watch.close()
  watch.seconds["total"] = round(time.perf_counter() - start, 1)
  table["seconds"] = watch.seconds
  report = format_report(table, watch.seconds)
  temp = workdir / "demo_table.json.tmp"
  temp.write_text(json.dumps(table, indent=2))
  os.replace(temp, workdir / "demo_table.json")
  print(report)
