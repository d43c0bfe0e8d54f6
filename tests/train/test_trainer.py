"""End-to-end training on tiny configs: the loss falls; a SIGKILLed run resumes bit-exactly."""

import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import demo_cpu
from data_pipeline import synthetic
from lipsync_jax import records
from lipsync_jax import audio, checkpoints, faces
from lipsync_jax.train import components, trainer

REPO = pathlib.Path(__file__).resolve().parents[2]


def _write_shard(directory: pathlib.Path, seeds) -> None:
  directory.mkdir(parents=True)
  with records.ShardWriter(directory / "clips") as writer:
    for seed in seeds:
      clip = synthetic.make_clip(seed, seconds=1.2, frame_size=64)
      writer.write(records.encode_record({
          "clip_id": f"clip{seed}", "fps": clip.fps,
          "frames": records.encode_jpeg(faces.crop_faces(clip.frames, clip.boxes, 96)),
          "mel": audio.melspectrogram(clip.wav), "boxes": np.asarray(clip.boxes, np.int32),
          "crop_size": 96}))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("records")
  _write_shard(root / "train", [1, 2, 3])
  _write_shard(root / "eval", [4])
  return root


def _overrides(dataset: pathlib.Path, **fields) -> list[str]:
  settings = {"data.train_path": dataset / "train", "data.eval_path": dataset / "eval",
              "batch_size": 1, "eval_batch_size": 1, "num_eval_batches": 1,
              "model.kwargs.widths": "(8,8,16)", "loss.lpips_weight": 0.0,
              "expert.checkpoint": "random", "log_every_steps": 1, **fields}
  return [f"--config.{k}={v}" for k, v in settings.items()]


def _params(workdir: pathlib.Path):
  manager = ocp.CheckpointManager((workdir / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  state = ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) /
                                              "state").absolute())
  return step, state["generator"]["params"], state["sync_weight"]


def _command(dataset, workdir, **fields):
  """The training tool, with its logs on stderr (`--verbosity=0`) for these tests to read."""
  return [sys.executable, str(REPO / "tools" / "train.py"), "--verbosity=0",
          f"--config={REPO / 'configs' / 'demo_cpu.py'}:generator", f"--workdir={workdir}",
          *_overrides(dataset, **fields)]


def test_generator_resumes_bit_exactly_after_sigkill(dataset, tmp_path):
  # One shared persistent compilation cache: the three runs compile once (at -O0).
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0",
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  fields = {"checkpoint_every_steps": 3, "eval_every_steps": 1000}
  straight = tmp_path / "straight"
  subprocess.run(_command(dataset, straight, num_train_steps=6, **fields), env=env,
                 check=True, capture_output=True, timeout=600)

  killed = tmp_path / "killed"
  # Would train far past 6 steps; SIGKILLed as soon as checkpoint 3 is committed.
  process = subprocess.Popen(_command(dataset, killed, num_train_steps=1000, **fields),
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 600
  while not (killed / "checkpoints" / "3" / "state").is_dir():
    assert process.poll() is None and time.monotonic() < deadline, "no checkpoint 3"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert _params(killed)[0] == 3

  resumed = subprocess.run(_command(dataset, killed, num_train_steps=6, **fields), env=env,
                           check=True, capture_output=True, text=True, timeout=600)
  assert "Resumed from" in resumed.stderr and "at step 3" in resumed.stderr
  step_a, params_a, _ = _params(straight)
  step_b, params_b, _ = _params(killed)
  assert step_a == step_b == 6
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def _demo_config(part: str):
  return demo_cpu.get_config(part)


def test_generator_loss_falls(dataset, tmp_path, caplog):
  config = _demo_config("generator")
  config.data.train_path, config.data.eval_path = str(dataset / "train"), str(dataset / "eval")
  config.batch_size = config.eval_batch_size = 1
  config.num_eval_batches = 1
  config.model.kwargs.widths = (8, 8, 16)
  config.loss.lpips_weight = 0.0
  config.expert.checkpoint = "random"
  config.optimizer.learning_rate = 1e-3
  config.num_train_steps, config.log_every_steps = 16, 4
  config.eval_every_steps = config.checkpoint_every_steps = 1000
  with caplog.at_level(logging.INFO):
    trainer.train_generator(config, str(tmp_path))
  train_l1 = [float(m.group(1)) for m in
              re.finditer(r"\[train\] step \d+: .*?\bl1=([0-9.e+-]+)", caplog.text)]
  assert len(train_l1) == 4, caplog.text
  assert train_l1[-1] < 0.85 * train_l1[0], train_l1
  assert re.search(r"\[eval\] step 16: .*sync_accuracy=", caplog.text)
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_lpips_without_converted_weights_names_the_conversion_command(dataset, tmp_path):
  result = subprocess.run(
      _command(dataset, tmp_path, **{"loss.lpips_weight": 0.07, "lpips.backbone": "vgg16"}),
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "tools/convert_torch.py --model=lpips_vgg16" in result.stderr


def _two_process_syncnet_run(dataset, workdir, num_train_steps, env):
  """tools/train_syncnet.py in two processes joined by jax.distributed; their stderr."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
  # The eval split has one clip, too few for two processes' shards.
  settings = {"data.train_path": dataset / "train", "data.eval_path": dataset / "train",
              "batch_size": 2, "eval_batch_size": 2, "num_eval_batches": 1,
              "num_train_steps": num_train_steps, "checkpoint_every_steps": 2,
              "eval_every_steps": 1000, "log_every_steps": 1,
              "distributed.num_processes": 2, "distributed.coordinator_address": address}
  base = [sys.executable, str(REPO / "tools" / "train_syncnet.py"), "--verbosity=0",
          f"--config={REPO / 'configs' / 'demo_cpu.py'}:syncnet", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in settings.items()]]
  processes = [subprocess.Popen(base + [f"--config.distributed.process_id={pid}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for pid in range(2)]
  logs = [process.communicate(timeout=600)[1] for process in processes]
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-3000:]
  return logs


def test_two_process_syncnet_training_resumes_exactly(dataset, tmp_path):
  """Multi-host path: per-process data shards, one checkpoint, resume across processes."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  straight = _two_process_syncnet_run(dataset, tmp_path / "straight", 4, env)
  # Both processes report the same global metrics, each step.
  losses = [re.findall(r"\[train\] step \d+: .*?\bloss=([0-9.e+-]+)", log) for log in straight]
  assert len(losses[0]) == 4 and losses[0] == losses[1], losses
  _two_process_syncnet_run(dataset, tmp_path / "resumed", 2, env)
  resumed = _two_process_syncnet_run(dataset, tmp_path / "resumed", 4, env)
  assert all("at step 2" in log for log in resumed)

  # Read in this single process, as a notebook would read a pod's checkpoint.
  params = lambda workdir: checkpoints.load_variables(
      str(workdir / "checkpoints" / "4"), "syncnet", "syncnet")["params"]
  jax.tree.map(np.testing.assert_array_equal, params(tmp_path / "straight"),
               params(tmp_path / "resumed"))


def test_generator_with_weights_split_over_the_model_axis_resumes_exactly(dataset, tmp_path):
  """2 fake devices as a (data 1, model 2) mesh with `mesh.shard_weights`: the state is
  saved and restored split, and a single process reads the checkpoint whole."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0 "
                       "--xla_force_host_platform_device_count=2",
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  fields = {"checkpoint_every_steps": 2, "eval_every_steps": 1000,
            "mesh.model_axis_size": 2, "mesh.shard_weights": True}
  run = lambda workdir, steps: subprocess.run(
      _command(dataset, workdir, num_train_steps=steps, **fields), env=env, check=True,
      capture_output=True, text=True, timeout=600)
  split = re.search(r"Train state: (\d+) of \d+ arrays split", run(tmp_path / "straight", 4).stderr)
  assert split and int(split.group(1)) > 0
  run(tmp_path / "resumed", 2)
  assert "at step 2" in run(tmp_path / "resumed", 4).stderr
  params = lambda workdir: checkpoints.load_variables(
      str(workdir / "checkpoints" / "4"), "wav2lip", "generator")["params"]
  straight, resumed = params(tmp_path / "straight"), params(tmp_path / "resumed")
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)
  # The steps trained (the weights moved between steps 2 and 4).
  initial = checkpoints.load_variables(str(tmp_path / "resumed" / "checkpoints" / "2"),
                                      "wav2lip", "generator")["params"]
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(initial),
                                             jax.tree.leaves(straight)))


def test_training_console_is_quiet_and_the_log_file_has_the_logs(dataset, tmp_path):
  """A tiny SyncNet run: the console has the progress bar and the result, no log lines
  (library INFO included); <workdir>/logs/train_syncnet.log has them."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  settings = {"data.train_path": dataset / "train", "data.eval_path": dataset / "eval",
              "batch_size": 2, "eval_batch_size": 2, "num_eval_batches": 1,
              "num_train_steps": 2, "log_every_steps": 1}
  result = subprocess.run(
      [sys.executable, str(REPO / "tools" / "train_syncnet.py"),
       f"--config={REPO / 'configs' / 'demo_cpu.py'}:syncnet", f"--workdir={tmp_path}",
       *[f"--config.{k}={v}" for k, v in settings.items()]],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  console = [line.strip() for line in (result.stdout + result.stderr).replace("\r", "\n")
             .splitlines() if line.strip()]
  assert not [line for line in console if re.match(r"[IWEF]\d{4} ", line)
              or re.match(r"(INFO|DEBUG)\b", line)], console
  assert any(line.startswith("compiling") for line in console), console
  assert any(line.startswith("train: 100%") and "2/2" in line for line in console), console
  assert result.stdout.startswith("trained to step 2: ")
  log = (tmp_path / "logs" / "train_syncnet.log").read_text()
  assert re.search(r"\[train\] step 2: .*loss=", log) and "[eval] step 2:" in log
  assert "Saving checkpoint at step 2" in log  # orbax's INFO: in the file only.
