r"""Trains a lip-sync generator (AttnWav2Lip or Wav2Lip) with a frozen expert SyncNet.

  python tools/train.py --config=configs/attn_wav2lip_lrs2.py \
      --config.batch_size=8 --workdir=/tmp/attn_wav2lip

Every config field can be overridden with --config.<field>=<value>. Re-running
with the same --workdir resumes from its latest checkpoint. The logic is in
`lipsync_jax.train.trainer` (importable from a notebook).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from data_pipeline.sources import DatasetError
from lipsync_jax import host_memory
from lipsync_jax.train import components, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  host_memory.reuse_freed_memory()  # before the first XLA computation
  try:
    trainer.train_generator(_CONFIG.value, _WORKDIR.value)
  except (components.ConfigError, DatasetError, trainer.NonFiniteLossError,
          FileNotFoundError) as e:
    print(f"train.py: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
