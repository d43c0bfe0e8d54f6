r"""LPIPS-AttnWav2Lip on LRS2: the paper's losses and Wav2Lip's sync schedule.

Needs an expert SyncNet (ours, `configs/syncnet_lrs2.py`, or the official
`lipsync_expert.pth`) and the converted LPIPS VGG16 weights:

  python tools/convert_torch.py --model=lpips_vgg16 --input=vgg16.pth \
      --output=/ckpt/lpips_vgg16
  python tools/train.py --config=configs/attn_wav2lip_lrs2.py \
      --config.data.train_path=/data/lrs2_records/train \
      --config.data.eval_path=/data/lrs2_records/val \
      --config.expert.checkpoint=/tmp/syncnet_lrs2 \
      --config.lpips.checkpoint=/ckpt/lpips_vgg16 --workdir=/tmp/attn_wav2lip_lrs2

Loss: (1 - s - p - d) * L1 + s * sync + p * LPIPS + d * adversarial.
- s: 0 until the eval sync loss (expert on generated frames) falls below 0.75,
  then 0.03 (Wav2Lip's schedule; the switch is saved in checkpoints).
- p = 0.07: LPIPS takes the place of Wav2Lip's adversarial term (paper), so it
  gets that term's share of the loss (disc_wt 0.07); the L1 weight stays 0.93
  before and 0.90 after the sync switch, and the LPIPS-vs-GAN ablation changes
  one term at equal weight.
- d = 0: no quality discriminator (the paper's recipe); > 0 adds it back.

Expected result (paper, unverified): LSE-C about 7.3 on LRS2 test after
convergence; the eval sync loss crosses 0.75 within the first 10-20k steps.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.img_size = 96
  config.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 master weights
  config.batch_size = 16  # global, over all devices and hosts
  config.eval_batch_size = 16
  config.num_eval_batches = 50
  config.num_train_steps = 500_000

  config.model = ml_collections.ConfigDict()
  config.model.name = "attn_wav2lip"  # or "wav2lip"
  config.model.kwargs = ml_collections.ConfigDict({
      "widths": (32, 64, 128, 256, 512), "encoder_blocks": 2, "decoder_blocks": 1,
      "use_cbam": True, "use_semantic_alignment": True, "use_ffc": True,
      "ffc_global_ratio": 0.5})

  config.data = ml_collections.ConfigDict()
  config.data.train_path = ""  # directory of *.array_record shards
  config.data.eval_path = ""
  config.data.channel_order = "rgb"
  config.data.mel_offset_frames = 0  # -1: the original training script's convention
  config.data.worker_count = 4

  config.loss = ml_collections.ConfigDict()
  config.loss.sync_weight = 0.03  # s once switched on
  config.loss.sync_threshold = 0.75  # switch when eval sync loss < this
  config.loss.sync_from_start = False  # True: s from step 0 (configs/demo_cpu.py)
  config.loss.mouth_weight = 1.0  # weight of the mouth region in L1; 1 = plain L1
  config.loss.lpips_weight = 0.07  # p
  config.loss.adversarial_weight = 0.0  # d

  config.expert = ml_collections.ConfigDict()
  config.expert.checkpoint = ""  # our SyncNet workdir/checkpoint, or lipsync_expert.pth

  config.lpips = ml_collections.ConfigDict()
  config.lpips.backbone = "vgg16"  # "random" only for tests and the demo
  config.lpips.checkpoint = ""  # orbax checkpoint from tools/convert_torch.py

  config.init_checkpoint = ""  # optional generator weights to fine-tune from

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  config.disc_optimizer = ml_collections.ConfigDict()
  config.disc_optimizer.learning_rate = 1e-4
  config.disc_optimizer.b1 = 0.5
  config.disc_optimizer.b2 = 0.999

  config.log_every_steps = 100
  config.image_every_steps = 1000
  config.eval_every_steps = 3000
  config.checkpoint_every_steps = 3000
  config.keep_checkpoints = 3  # latest N, plus the best by eval L1 + sync
  config.on_nonfinite = "stop"  # or "skip": leave the state unchanged for that step

  config.mesh = ml_collections.ConfigDict()
  config.mesh.model_axis_size = 1
  # With model_axis_size > 1: split large weights over "model" (train/sharding.py).
  config.mesh.shard_weights = False
  config.distributed = ml_collections.ConfigDict()
  config.distributed.num_processes = 1  # > 1: jax.distributed.initialize; -1: auto
  config.distributed.coordinator_address = ""
  config.distributed.process_id = 0
  return config
