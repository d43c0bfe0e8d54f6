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
  python tools/train_syncnet.py --config=configs/demo_cpu.py:judge \
      --config.data.train_path=DIR/records/judge \
      --config.data.eval_path=DIR/records/eval --workdir=DIR/judge

The argument after ":" picks the part ("syncnet", "generator" or "judge"; default
generator). The judge is a second SyncNet that only scores: the expert's recipe from
another seed, for 300 steps, on clips of its own (`records/judge`, disjoint from the
generator's and the expert's), so the generator never trained against it.
Sizes are cut so the whole demo fits 10 minutes on 2 CPU cores: a 0.25-wide SyncNet
with in-batch contrastive terms (450 steps; the judge 300); AttnWav2Lip on 48 px faces (the 96 px crops
resized; the expert judges its output resized back) with the sync loss on from
the first step and a 5x mouth weight in L1; no LPIPS (only a random backbone is
available offline). Expected: the table of docs/demo.md, where the runs behind
these choices are recorded.
"""

import ml_collections

from configs import base

JUDGE_SEED = 1  # The expert's is base's 0.


def _common() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.data.worker_count = 0  # 2 cores: in-process loading is fastest
  config.keep_checkpoints = 1
  # The SyncNet trained by the syncnet part is the generator part's expert.
  config.syncnet_kwargs.width_multiplier = 0.25
  return config


def _syncnet() -> ml_collections.ConfigDict:
  config = _common()
  config.batch_size = config.eval_batch_size = 32
  config.num_eval_batches = 4
  config.num_train_steps = 450
  config.log_every_steps = 75
  config.eval_every_steps = config.checkpoint_every_steps = 450
  config.optimizer.update(learning_rate=2e-3, b1=0.9, warmup_steps=30, cosine_decay=True)
  # Wav2Lip's BCE of the cosine learns too slowly for a CPU budget; the in-batch
  # terms use the batch's other pairs.
  config.loss.update(contrastive_weight=1.0, in_batch_negatives_weight=1.0)
  return config


def _generator() -> ml_collections.ConfigDict:
  config = _common()
  config.batch_size = config.eval_batch_size = 8
  config.num_eval_batches = 2
  config.num_train_steps = 352
  config.log_every_steps = 44
  config.eval_every_steps = config.image_every_steps = 176
  config.checkpoint_every_steps = 352
  config.model.name = "attn_wav2lip"
  config.model.img_size = 48  # The crops (config.img_size, SyncNet's) stay 96.
  config.model.kwargs.update({
      "widths": (16, 32, 64, 128), "encoder_blocks": 1, "decoder_blocks": 1,
      "use_cbam": True, "use_semantic_alignment": True, "use_ffc": True,
      "cbam_reduction": 4})
  config.loss.update(sync_from_start=True, mouth_weight=5.0, lpips_weight=0.0)
  config.lpips.backbone = "random"
  config.optimizer.update(learning_rate=3e-3, warmup_steps=20, cosine_decay=True)
  config.disc_optimizer.learning_rate = 3e-3
  return config


def _judge() -> ml_collections.ConfigDict:
  config = _syncnet()
  config.seed = JUDGE_SEED
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 300
  config.log_every_steps = 75
  return config


def get_config(part: str = "generator") -> ml_collections.ConfigDict:
  parts = {"syncnet": _syncnet, "generator": _generator, "judge": _judge}
  if part not in parts:
    raise ValueError(f"demo_cpu.py: part must be one of {sorted(parts)}, got {part!r}")
  return parts[part]()
