r"""The base config: every field either trainer reads, with its default.

Experiment configs (`configs/*.py`) start from `get_config()` and override what differs;
`--config.<field>=<value>` overrides any field on the command line, and a field that is
not here is an error naming the closest ones. Fields a trainer does not use are ignored
by it (the SyncNet trainer reads no `model`, `expert` or `lpips`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # PRNG seed of initialisation, dropout-free steps and data order
  config.img_size = 96  # side of the records' face crops; the size SyncNet sees
  config.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (float32 weights always)
  config.batch_size = 16  # global batch, over all devices and hosts
  config.eval_batch_size = 16  # global eval batch
  config.num_eval_batches = 50  # eval batches per evaluation
  config.num_train_steps = 500_000  # length of the run (also the cosine schedule's end)

  config.model = ml_collections.ConfigDict()
  config.model.name = "attn_wav2lip"  # generator: "attn_wav2lip" or "wav2lip"
  config.model.img_size = 0  # generator face size in pixels; 0: img_size
  config.model.kwargs = ml_collections.ConfigDict()  # generator constructor fields

  config.syncnet_kwargs = ml_collections.ConfigDict()  # SyncNet constructor fields
  config.syncnet_kwargs.width_multiplier = 1.0  # channels of every SyncNet layer x this

  config.data = ml_collections.ConfigDict()
  config.data.train_path = ""  # directory of *.array_record shards (tools/preprocess.py)
  config.data.eval_path = ""  # the same, for evaluation
  config.data.channel_order = "rgb"  # "bgr" to fine-tune the official (OpenCV) checkpoints
  config.data.mel_offset_frames = 0  # generator mel window offset; -1: the original script's
  config.data.worker_count = 4  # Grain worker processes; 0: load in the training process

  config.loss = ml_collections.ConfigDict()
  config.loss.sync_weight = 0.03  # generator: weight s of the expert sync loss once on
  config.loss.sync_threshold = 0.75  # generator: s switches on when eval sync loss < this
  config.loss.sync_from_start = False  # generator: s from step 0 instead of the schedule
  config.loss.mouth_weight = 1.0  # generator: L1 weight of the mouth region; 1 = plain L1
  config.loss.lpips_weight = 0.07  # generator: weight p of LPIPS
  config.loss.adversarial_weight = 0.0  # generator: weight d of the discriminator's loss
  config.loss.contrastive_weight = 0.0  # SyncNet: weight of the in-batch InfoNCE term
  config.loss.temperature = 0.1  # SyncNet: InfoNCE temperature
  config.loss.in_batch_negatives_weight = 0.0  # SyncNet: weight of all-mismatched-pairs BCE

  config.expert = ml_collections.ConfigDict()
  config.expert.checkpoint = ""  # frozen SyncNet: our workdir, a converted or .pth; "random"

  config.lpips = ml_collections.ConfigDict()
  config.lpips.backbone = "vgg16"  # "vgg16", or "random" (tests and the CPU demo only)
  config.lpips.checkpoint = ""  # converted VGG16 + heads (tools/convert_torch.py)

  config.init_checkpoint = ""  # weights to fine-tune from (the trained network's), or ""

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4  # Adam's peak learning rate
  config.optimizer.b1 = 0.5  # Adam beta1
  config.optimizer.b2 = 0.999  # Adam beta2
  config.optimizer.warmup_steps = 0  # linear warm-up from 0
  config.optimizer.cosine_decay = False  # cosine decay to 0 at num_train_steps
  config.optimizer.grad_clip_norm = 0.0  # global-norm clipping; 0: none
  config.disc_optimizer = config.optimizer.copy_and_resolve_references()  # discriminator's

  config.log_every_steps = 100  # train metrics to TensorBoard and the log
  config.image_every_steps = 1000  # generator image grids to TensorBoard
  config.eval_every_steps = 3000  # evaluation (also saves a checkpoint)
  config.checkpoint_every_steps = 3000  # checkpoint saves
  config.keep_checkpoints = 3  # latest N kept, plus the best by the eval metric
  config.on_nonfinite = "stop"  # non-finite loss: "stop", or "skip" the update
  # Persistent compilation cache, shared by runs; a relative path is under the workdir; "": off
  config.compilation_cache_dir = "~/.cache/lipsync_jax/jax"
  config.profile_steps = ""  # "A-B": jax.profiler trace of steps A..B in <workdir>/profile
  # GPU only: XLA's conv/GEMM autotuner level, 0 off .. 4 with correctness checks (XLA's
  # default); 1 times every candidate without the checks (docs/benchmarks.md); -1: XLA's
  config.gpu_autotune_level = 1

  config.mesh = ml_collections.ConfigDict()
  config.mesh.model_axis_size = 1  # devices on the "model" axis; the rest is "data"
  config.mesh.shard_weights = False  # split large weights over "model" (train/sharding.py)

  config.distributed = ml_collections.ConfigDict()
  config.distributed.num_processes = 1  # > 1: jax.distributed.initialize; -1: auto-detect
  config.distributed.coordinator_address = ""  # host:port of process 0
  config.distributed.process_id = 0  # this process's index
  return config


def shrink_for_local_run(config: ml_collections.ConfigDict) -> None:
  """big_vision's `runlocal`: the same recipe as a smoke run on one laptop CPU."""
  config.batch_size = config.eval_batch_size = 2
  config.num_eval_batches = 1
  config.num_train_steps = 10
  config.log_every_steps = config.image_every_steps = 5
  config.eval_every_steps = config.checkpoint_every_steps = 10
  config.data.worker_count = 0


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """big_vision's config argument: "runlocal,variant=x" -> {runlocal: True, variant: "x"}.

  Keys must be among `defaults`; values take the type of their default.
  Raises ValueError naming an unknown key.
  """
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"config argument {key!r} unknown; expected one of {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      result[key] = value.lower() not in ("false", "0", "no") if value else True
    else:
      result[key] = type(default)(value) if value else default
  return result
