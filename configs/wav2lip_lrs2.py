r"""Original Wav2Lip (hq_wav2lip_train.py recipe) on LRS2, for comparison.

  python tools/train.py --config=configs/wav2lip_lrs2.py \
      --config.data.train_path=/data/lrs2_records/train \
      --config.data.eval_path=/data/lrs2_records/val \
      --config.expert.checkpoint=/ckpt/lipsync_expert.pth --workdir=/tmp/wav2lip_lrs2

Loss: (1 - s - d) * L1 + s * sync + d * adversarial with d = disc_wt 0.07, s 0
until the eval sync loss < 0.75, then 0.03; no LPIPS. Adam 1e-4, betas
(0.5, 0.999) for generator and discriminator; batch 16. The official
checkpoints were trained on BGR frames with the mel window one frame earlier:
to fine-tune them set `data.channel_order="bgr"`, `data.mel_offset_frames=-1`
and `init_checkpoint=wav2lip_gan.pth`.

Expected result (Wav2Lip paper): LSE-D about 6.4, LSE-C about 7.8 on LRS2 test.
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
  config.model.name = "wav2lip"
  config.model.kwargs = ml_collections.ConfigDict()

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
  config.loss.lpips_weight = 0.0  # p: no LPIPS in the original
  config.loss.adversarial_weight = 0.07  # d: disc_wt

  config.expert = ml_collections.ConfigDict()
  config.expert.checkpoint = ""  # our SyncNet workdir/checkpoint, or lipsync_expert.pth

  config.lpips = ml_collections.ConfigDict()
  config.lpips.backbone = "vgg16"  # unused while lpips_weight = 0
  config.lpips.checkpoint = ""

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
