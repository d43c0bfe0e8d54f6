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

Not yet trained to convergence here. `get_config("runlocal")`: a laptop smoke test.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, runlocal=False)
  config = base.get_config()
  config.model.name = "wav2lip"
  config.loss.lpips_weight = 0.0  # p: no LPIPS in the original
  config.loss.adversarial_weight = 0.07  # d: disc_wt
  if arg.runlocal:
    base.shrink_for_local_run(config)
  return config
