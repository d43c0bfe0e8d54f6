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
`get_config("runlocal")`: a laptop smoke test.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, runlocal=False)
  config = base.get_config()
  config.batch_size = config.eval_batch_size = 64
  config.num_eval_batches = 20
  config.num_train_steps = 300_000
  config.optimizer.b1 = 0.9
  if arg.runlocal:
    base.shrink_for_local_run(config)
  return config
