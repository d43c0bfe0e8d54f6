r"""Trains a lip-sync generator (AttnWav2Lip or Wav2Lip) with a frozen expert SyncNet.

  python tools/train.py --config=configs/attn_wav2lip_lrs2.py \
      --config.batch_size=8 --workdir=/tmp/attn_wav2lip

Every config field can be overridden with --config.<field>=<value>; a field the config
does not have is an error naming the closest ones. Re-running with the same --workdir
resumes from its latest checkpoint. The console shows a progress bar; the log is
<workdir>/logs/train.log (--verbosity=0 shows it on the console too). Bad input: one
line on stderr, exit code 1. The logic is in `lipsync_jax.train.trainer` (importable
from a notebook).
"""

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from lipsync_jax import cli
from lipsync_jax import host_memory
from lipsync_jax.train import sharding
from lipsync_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def _log_file() -> str:
  return cli.workdir_log(_WORKDIR.value, "train", _CONFIG.value.distributed.process_id)


@cli.tool("train", log_file=_log_file)
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # jax.distributed first: reuse_freed_memory may create JAX's backends to learn the
  # platform (where an accelerator plugin is installed); the trainer's call is then a no-op.
  sharding.initialize_distributed(_CONFIG.value.distributed)
  host_memory.reuse_freed_memory()  # before the first XLA computation; CPU only
  state = trainer.train_generator(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    print(f"trained to step {int(state.step)}: checkpoints in {_WORKDIR.value}/checkpoints, "
          f"log {_log_file()}")


if __name__ == "__main__":
  cli.run(main)
