r"""The CPU demo: SyncNet and a narrow AttnWav2Lip on synthetic talking heads.

`tools/demo.py` makes the synthetic clips, preprocesses them to record shards and
fills in the data paths and the expert; by hand (after the shards exist):

  python tools/train_syncnet.py --config=configs/demo_cpu.py:syncnet \
      --config.data.train_path=DIR/records/train \
      --config.data.eval_path=DIR/records/eval --workdir=DIR/syncnet
  python tools/train.py --config=configs/demo_cpu.py:generator \
      --config.data.train_path=DIR/records/train \
      --config.data.eval_path=DIR/records/eval \
      --config.expert.checkpoint=DIR/syncnet --workdir=DIR/generator

The argument after ":" picks the part ("syncnet" or "generator"; default
generator). Sizes are cut so the whole demo fits 10 minutes on 2 CPU cores:
- SyncNet 0.25 wide (`syncnet_kwargs.width_multiplier`: 1.04 M parameters, 1/16
  of the FLOPs; the full 16.4 M one costs ~4.4 s per batch of 16 here), batch
  32, Adam 2e-3 with warm-up and cosine decay, 600 steps (~4 steps/s). Wav2Lip's
  BCE of the cosine alone stalled at 0.83-0.84 held-out accuracy (300-800 steps,
  lr 1e-3-3e-3, widths 0.125-0.5); the in-batch InfoNCE and all-pairs BCE terms
  (`loss`) reach 0.94 in 600 steps.
- AttnWav2Lip widths (16, 32, 64, 128), one block per stage, batch 4 windows
  (20 frames, 97 GFLOP and ~0.94 s per step here), Adam 3e-3 (b1 0.5) with warm-up
  and cosine decay over 288 steps. Eval L1 after 300 steps (single runs):
  0.043 / 0.036 / 0.034 at peak learning rates 1e-3 / 2e-3 / 3e-3; halving every
  width (0.54 s per step) learned slower per step than it saved.
- lpips_weight 0: LPIPS here could only run on a RANDOM VGG16 backbone (no
  converted weights are shipped; `lpips.backbone="random"`), i.e. a
  random-feature matching loss, not the perceptual one, and its full-size VGG16
  on all 20 frames of a step costs more than the generator itself on CPU.
  `tools/demo.py --ablations` trains with it (0.07) for comparison.
- The sync loss follows the recipe (on once the eval sync loss < 0.75); on the
  demo's blurry early outputs the expert's sync loss stays near 3, so it stays off.
Measured (`python tools/demo.py`, 96 train / 8 held-out clips, 2 quiet CPU cores,
2026-11-27; the run is deterministic): 9 min 16 s (data 17, SyncNet 153, generator
359, evaluation 21, video 1); SyncNet held-out accuracy 0.939; the generator's mouth
open error beats the copy-the-reference baseline (0.390 vs 0.454) but its mouth L1
and PSNR do not (0.052 / 21.08 dB vs 0.040 / 21.70 dB): the face is still blurry
(upper-half L1 ~0.03 although those pixels are an input). 320 steps gave 0.047 /
21.46 dB / 0.386 but took 9 min 45 s to 10 min 8 s in all (the generator stage
varies by ~20 s between runs here); 1000 steps still lose: 0.044 / 21.53 dB / 0.406.
One 2400-step run (cosine over 2400; 45 min of generator training here), evaluated
at its checkpoints 600 / 1200 / 1800 / 2400: mouth L1 0.0465 / 0.0425 / 0.0411 /
0.0401 (baseline 0.0398), PSNR 21.33 / 21.79 / 22.04 / 22.06 dB (above the baseline's
21.70 from step 1200), open error 0.395 / 0.404 / 0.406 / 0.401. So more L1 training
sharpens the face but does not make the mouth follow the audio: the open error is flat
from step 600. That is the recipe's sync loss's job, and here it never switches on
(the eval sync loss stays at 3.2-3.3 against the 0.75 threshold). Forced on from
step 12 (weight 0.03, 288 steps), it gives the best open error yet, 0.321, at the
cost of the image: 0.070 / 19.50 dB; at weight 0.01, 0.054 / 21.26 dB / 0.382.
Tried and dropped (320 steps each, same data): an output head that corrects the
copy-the-reference composite (in logit or pixel space, or a GANimation-style blend
with a learned mask) starts at the baseline and, under L1, stays there (4 of 5 runs
ended within 2e-4 of it; one reached 0.038 / 22.05 dB / 0.372, not reproducible
with a narrower audio encoder); the expert's audio encoder as the generator's
initialisation gave 0.047 / 21.41 dB / 0.409; the sync loss switched on at step 160
(weight 0.03) gave 0.053 / 21.36 dB / 0.399 with the plain head and, with the
logit-space head, 0.049 / 19.22 dB / 0.351 (streaks that fool the small expert); pasting the input's upper half over the output (so the
loss is the lower half's) gave 0.047 / 21.72 dB / 0.395; SAM without its FFC
(`use_ffc=False`) is 15% faster per step but 0.049 / 21.31 dB / 0.389.
"""

import ml_collections


def _common(config: ml_collections.ConfigDict) -> None:
  config.seed = 0
  config.img_size = 96
  config.dtype = "float32"
  config.data = ml_collections.ConfigDict()
  config.data.train_path = ""
  config.data.eval_path = ""
  config.data.channel_order = "rgb"
  config.data.worker_count = 0  # 2 cores: in-process loading is fastest
  config.log_every_steps = 20
  config.on_nonfinite = "stop"
  config.keep_checkpoints = 1
  config.mesh = ml_collections.ConfigDict({"model_axis_size": 1})
  config.distributed = ml_collections.ConfigDict(
      {"num_processes": 1, "coordinator_address": "", "process_id": 0})
  # The SyncNet trained by the syncnet part is the generator part's expert.
  config.syncnet_kwargs = ml_collections.ConfigDict({"width_multiplier": 0.25})


def _syncnet() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  _common(config)
  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_eval_batches = 4
  config.num_train_steps = 600
  config.log_every_steps = 100
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 600
  config.init_checkpoint = ""
  config.optimizer = ml_collections.ConfigDict({
      "learning_rate": 2e-3, "b1": 0.9, "b2": 0.999, "warmup_steps": 30,
      "cosine_decay": True})
  # Wav2Lip's BCE of the cosine learns too slowly for a CPU budget (0.84 held-out
  # accuracy after 300-800 steps); the in-batch terms use the batch's other pairs.
  config.loss = ml_collections.ConfigDict({"contrastive_weight": 1.0, "temperature": 0.1,
                                           "in_batch_negatives_weight": 1.0})
  return config


def _generator() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  _common(config)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_eval_batches = 2
  config.num_train_steps = 288
  config.log_every_steps = 40
  config.eval_every_steps = 144
  config.checkpoint_every_steps = 288
  config.image_every_steps = 144
  config.data.mel_offset_frames = 0
  config.model = ml_collections.ConfigDict()
  config.model.name = "attn_wav2lip"
  config.model.kwargs = ml_collections.ConfigDict({
      "widths": (16, 32, 64, 128), "encoder_blocks": 1, "decoder_blocks": 1,
      "use_cbam": True, "use_semantic_alignment": True, "use_ffc": True,
      "cbam_reduction": 4})
  config.loss = ml_collections.ConfigDict({
      "sync_weight": 0.03, "sync_threshold": 0.75, "lpips_weight": 0.0,
      "adversarial_weight": 0.0})
  config.expert = ml_collections.ConfigDict({"checkpoint": ""})
  config.lpips = ml_collections.ConfigDict({"backbone": "random", "checkpoint": ""})
  config.init_checkpoint = ""
  adam = {"learning_rate": 3e-3, "b1": 0.5, "b2": 0.999}
  config.optimizer = ml_collections.ConfigDict({**adam, "warmup_steps": 20,
                                                "cosine_decay": True})
  config.disc_optimizer = ml_collections.ConfigDict(adam)
  return config


def get_config(part: str = "generator") -> ml_collections.ConfigDict:
  parts = {"syncnet": _syncnet, "generator": _generator}
  if part not in parts:
    raise ValueError(f"demo_cpu.py: part must be one of {sorted(parts)}, got {part!r}")
  return parts[part]()
