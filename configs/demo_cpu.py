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
generator). Sizes are cut so the whole demo fits ~10 minutes on 2 CPU cores:
- SyncNet 0.25 wide (`syncnet_kwargs.width_multiplier`: 1.04 M parameters, 1/16
  of the FLOPs; the full 16.4 M one costs ~4.4 s per batch of 16 here), batch
  32, Adam 1e-3, 300 steps (~0.5 s/step). Measured (loaded machine): held-out
  accuracy 0.836 after 300 steps; 0.81-0.86 in scratch runs of 300-500 steps
  at widths 0.125-0.25 and lr 1e-3-3e-3 (the >= 0.9 target needs more steps).
- AttnWav2Lip widths (16, 32, 64, 128), one block per stage, batch 4 windows.
- lpips_weight 0: LPIPS here could only run on a RANDOM VGG16 backbone (no
  converted weights are shipped; `lpips.backbone="random"`), i.e. a
  random-feature matching loss, not the perceptual one, and its full-size VGG16
  on all 20 frames of a step costs more than the generator itself on CPU (with
  it, one run did not reach step 50 in 5 minutes). `tools/demo.py --ablations`
  trains with it (0.07) for comparison.
Measured with these settings (tools/demo.py, 96 train / 8 held-out clips, 2
loaded CPU cores, 2026-11-27): total 799 s (data 36, SyncNet 156, generator 585 at
~1.8 s/step, evaluation 21, video 1); SyncNet held-out accuracy 0.840; the
generator (mouth L1 0.059, PSNR 20.5 dB, open error 0.74) does NOT yet beat the
copy-the-reference baseline (0.040, 21.6 dB, 0.45); LSE-C real 0.48 / shifted
0.11 / generated 0.07. Targets (<= 10 min, accuracy >= 0.9, generator better
than the baseline) are open: fewer, cheaper generator steps are the next lever.
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
  config.num_train_steps = 300
  config.log_every_steps = 50
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 300
  config.init_checkpoint = ""
  config.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999})
  return config


def _generator() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  _common(config)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_eval_batches = 2
  config.num_train_steps = 300
  config.log_every_steps = 50
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 300
  config.image_every_steps = 100
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
  adam = {"learning_rate": 3e-4, "b1": 0.5, "b2": 0.999}
  config.optimizer = ml_collections.ConfigDict(adam)
  config.disc_optimizer = ml_collections.ConfigDict(adam)
  return config


def get_config(part: str = "generator") -> ml_collections.ConfigDict:
  parts = {"syncnet": _syncnet, "generator": _generator}
  if part not in parts:
    raise ValueError(f"demo_cpu.py: part must be one of {sorted(parts)}, got {part!r}")
  return parts[part]()
