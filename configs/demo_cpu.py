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
- AttnWav2Lip on 48 px faces (`model.img_size`; the records' crops, which
  SyncNet sees, stay 96 px: the input pipeline resizes the generator's frames,
  the expert judges its output resized back to 96, and the demo scores it at
  96), widths (16, 32, 64, 128), one block per stage, Adam 3e-3 (b1 0.5) with
  warm-up and cosine decay; batch 8 windows (40 frames, ~0.72 s per step here),
  384 steps. At 96 px the same model costs 1.62 GFLOPs per frame forward and
  2.6 s per step: the 112 steps that fit did not beat the baseline (below);
  448 steps did, in 19.5 minutes. Peak learning rates 1e-3 / 2e-3 / 3e-3 gave
  eval L1 0.043 / 0.036 / 0.034 after 300 steps (96 px, batch 4); halving
  every width instead of the image (0.54 s per step) learned slower per step
  than it saved.
- The expert sync loss is on from the first step (`loss.sync_from_start`;
  Wav2Lip switches it on once the eval sync loss < 0.75, which these budgets
  never reach: it stays near 3) and L1 weighs the mouth region 5x
  (`loss.mouth_weight`). Without them the generator ignores the audio: trained
  on L1 alone it draws the REFERENCE's mouth (the opening of its output
  correlates 0.62 with the reference's and -0.13 with the target's after 600
  steps, 0.90 and -0.04 after 2400), and shuffling its audio changes its mouth
  region by 0.003 (mean absolute, 0..1 pixels) against 0.022 for shuffling the
  reference. With both (128 steps): 0.031-0.046 against 0.030-0.035.
- lpips_weight 0: LPIPS here could only run on a RANDOM VGG16 backbone (no
  converted weights are shipped; `lpips.backbone="random"`), i.e. a
  random-feature matching loss, not the perceptual one, and its full-size VGG16
  on all 40 frames of a step costs more than the generator itself on CPU.
  `tools/demo.py --ablations` trains with it (0.07) for comparison.
Generator runs on the same data (96 train / 8 held-out clips; mouth L1 / PSNR dB /
open error on the 600 held-out frames at 96 px; copy-the-reference 0.040 / 21.70 /
0.454; single runs, 2 CPU cores; +-0.003 / 0.3 dB between otherwise equal runs):
  96 px, batch 4, 288 steps, L1 only (an earlier demo)   0.052 / 21.08 / 0.390
  the same, 2400 steps (45 min)                          0.040 / 22.06 / 0.401
  96 px, batch 4, 288, sync 0.03 from step 12            0.070 / 19.50 / 0.321
  96 px, batch 4, 288, sync 0.01 from step 12            0.054 / 21.26 / 0.382
  96 px, batch 4, 288, sync 0.03 + mouth 5x + upper half pasted
                                                         0.061 / 20.76 / 0.287
  96 px, batch 8, 144, sync 0.03 + mouth 5x              0.050 / 21.74 / 0.287
  96 px, batch 8, 128, the same                          0.052 / 21.05 / 0.226
  96 px, batch 8, 112, the same (the previous demo)      0.054 / 21.00 / 0.303
  96 px, batch 8, 448, the same (19.5 min of training)   0.036 / 23.84 / 0.148
  96 px, 1-frame windows, batch 20, 288, L1 + mouth 5x   0.039 / 22.43 / 0.394
  96 px, 4 windows + 20 single frames, 112, sync + mouth 5x
                                                         0.065 / 20.27 / 0.447
  96 px, batch 8, 112, output = reference lower half corrected in logit space
                                                         0.040 / 21.70 / 0.454
  48 px, batch 8, 336, sync 0.03 + mouth 5x (4.7 min)    0.037 / 24.51 / 0.154
  48 px, batch 8, 384, the same (this config, tools/demo.py)
                                                         0.036 / 24.54 / 0.189
At 96 px the 1-frame run shows where image fidelity comes from (20 clips per
step), but a 1-frame window leaves nothing for the sync loss and its mouths ignore
the audio (shuffling the audio changes its mouth region by 0.0001-0.005); mixing
single frames into the windows' batch, or starting from the reference's lower half
(it stays there: sync loss 2.3 after 112 steps), did not help within the budget.
The 48 px generator gets 3.6x the steps; its sync loss falls faster per step too
(eval 0.22 after 168 steps; 96 px: 1.14 after 64, 0.64 after 224). Its faces are
blurry (upper-half L1 0.046 at 48 px; videos paste only the feathered lower face):
what beats the reference is the mouth's shape, which follows the audio (with the
audio 20 frames late: 0.048 / 21.07 / 0.385).
Also tried and dropped earlier (320 steps each, batch 4): an output head that
corrects the copy-the-reference composite (in logit or pixel space, or a
GANimation-style blend with a learned mask) stays at the baseline under L1; the
expert's audio encoder as the generator's initialisation: 0.047 / 21.41 / 0.409;
SAM without its FFC (`use_ffc=False`) is 15% faster per step but 0.049 / 21.31 /
0.389.
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
  config.mesh = ml_collections.ConfigDict({"model_axis_size": 1, "shard_weights": False})
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
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_eval_batches = 2
  config.num_train_steps = 384
  config.log_every_steps = 48
  config.eval_every_steps = 192
  config.checkpoint_every_steps = 384
  config.image_every_steps = 192
  config.data.mel_offset_frames = 0
  config.model = ml_collections.ConfigDict()
  config.model.name = "attn_wav2lip"
  config.model.img_size = 48  # The crops (config.img_size, SyncNet's) stay 96.
  config.model.kwargs = ml_collections.ConfigDict({
      "widths": (16, 32, 64, 128), "encoder_blocks": 1, "decoder_blocks": 1,
      "use_cbam": True, "use_semantic_alignment": True, "use_ffc": True,
      "cbam_reduction": 4})
  config.loss = ml_collections.ConfigDict({
      "sync_weight": 0.03, "sync_threshold": 0.75, "sync_from_start": True,
      "mouth_weight": 5.0, "lpips_weight": 0.0, "adversarial_weight": 0.0})
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
