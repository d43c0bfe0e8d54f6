r"""SyncNet lip-sync expert on LRS2 (Wav2Lip's `color_syncnet_train.py` recipe).

Preprocess LRS2 into record shards first (`tools/preprocess.py`), then:

  python tools/train_syncnet.py --config=configs/syncnet_lrs2.py \
      --config.data.train_path=/data/lrs2_records/train \
      --config.data.eval_path=/data/lrs2_records/val --workdir=/tmp/syncnet_lrs2

Expected result (Wav2Lip's report for this recipe, not yet reproduced here): the
eval loss leaves ln 2 = 0.69 after a few thousand steps and falls below 0.25
(eval accuracy above 90%) after roughly 200k-300k steps at batch 64. A loss
stuck at 0.69 with accuracy 0.5 means the pairs carry no sync signal (check the
data's audio/video offset). The best checkpoint by eval loss is the expert for
`configs/attn_wav2lip_lrs2.py` (`--config.expert.checkpoint=/tmp/syncnet_lrs2`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.img_size = 96
  config.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 master weights
  config.batch_size = 64  # global, over all devices and hosts
  config.eval_batch_size = 64
  config.num_eval_batches = 20
  config.num_train_steps = 300_000

  config.data = ml_collections.ConfigDict()
  config.data.train_path = ""  # directory of *.array_record shards
  config.data.eval_path = ""
  config.data.channel_order = "rgb"  # "bgr" to fine-tune the official checkpoints
  config.data.worker_count = 4

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999

  config.loss = ml_collections.ConfigDict()
  # Wav2Lip's recipe is the BCE of the cosine alone. Weights > 0 add an in-batch InfoNCE
  # term (`losses.in_batch_contrastive_loss`) and the BCE of every mismatched pair of the
  # batch (`losses.in_batch_negatives_bce`); the CPU demo uses both to learn in minutes.
  config.loss.contrastive_weight = 0.0
  config.loss.temperature = 0.1
  config.loss.in_batch_negatives_weight = 0.0

  config.init_checkpoint = ""  # optional: lipsync_expert.pth or our checkpoint, to fine-tune

  config.log_every_steps = 100
  config.eval_every_steps = 3000
  config.checkpoint_every_steps = 3000
  config.keep_checkpoints = 3  # latest N, plus the best by eval loss
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
