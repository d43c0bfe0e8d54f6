r"""Generator training-step speed on this CPU: the project's jitted step vs PyTorch.

  python benchmarks/train_step.py [--batch=2] [--iters=3] [--threads=N]

Times one full training step (forward, losses, backward, Adam update; plus the
quality discriminator's step where the recipe has one) at 96x96, T = 5 frames
per sample, and prints frames/s, the ratio JAX / PyTorch and the peak resident
set size. Rows:
- AttnWav2Lip, configs/attn_wav2lip_lrs2.py (L1 + sync + LPIPS), JAX at
  float32 and bfloat16 compute (float32 master weights), against the PyTorch
  Wav2Lip generator with the same losses: there is no PyTorch AttnWav2Lip (the
  authors' code is not available), so that ratio compares different generators
  of about equal size (30.1M vs 36.3M parameters; FLOPs in docs/model.md).
- Wav2Lip, configs/wav2lip_lrs2.py (L1 + sync + adversarial, then the
  discriminator step), JAX float32 / bfloat16 against the PyTorch reference
  modules of tests/references/torch_wav2lip.py with the same losses.
The JAX step is `benchmarks/train_step_setup.py`, i.e. the trainer's own
`train/steps.py` functions jitted as `train/sharding.py` jits them. The PyTorch
step is eager, float32, with the frozen SyncNet / LPIPS (and, during the
generator's update, the discriminator) excluded from autograd as in ours.
Random weights everywhere; sync weight 0.03 (switched on).

Each row runs in its own subprocess (so peak RSS, `getrusage` maxrss, is per
row; the RSS after the imports and after the set-up are shown too), pinned
to `--threads` CPUs with `sched_setaffinity`, which both XLA and torch's
thread pools follow; torch also gets `set_num_threads`. Times: compile (JAX)
then one warm-up step, then the median of `--iters` steps. The machine may be
shared; the load average before and after is printed.
"""

import os
import pathlib
import platform
import statistics
import sys
import time

from absl import app
from absl import flags

from lipsync_jax import host_memory

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cpu_threads  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position

_BATCH = flags.DEFINE_integer("batch", 2, "Samples per step (each T = 5 frames).")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed steps per row (the median is shown).")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "CPUs for both frameworks.")
_MODELS = flags.DEFINE_list("models", ["attn_wav2lip", "wav2lip"], "Recipes to time.")
_TIMEOUT = flags.DEFINE_integer("timeout", 1200, "Seconds allowed per row's subprocess.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'model,framework,dtype' of one row.")

REPO_ROOT = train_bench_util.REPO_ROOT
_IMG_SIZE = 96
_T = 5


def _time_steps(step, state, iters: int):
  """Runs one warm-up step then `iters` timed ones; returns (seconds list, final state)."""
  state = step(state)
  seconds = []
  for _ in range(iters):
    started = time.perf_counter()
    state = step(state)
    seconds.append(time.perf_counter() - started)
  return seconds, state


def _jax_row(model: str, dtype: str, batch: int, iters: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import train_step_setup  # pylint: disable=g-import-not-at-top
  base = train_bench_util.peak_rss_mib()
  train_step = train_step_setup.build_train_step(model, dtype, batch)
  compiled = train_step.compile()
  setup = train_bench_util.peak_rss_mib()

  def step(carry):
    state, _ = carry
    state, loss = train_step.run(state)
    jax.block_until_ready(state)
    return state, loss

  seconds, (_, loss) = _time_steps(step, (train_step.state, None), iters)
  return {"recipe": train_step.recipe, "seconds": seconds, "compile_s": compiled["compile_s"],
          "loss": float(loss), "base_mib": base, "setup_mib": setup,
          "version": f"jax {jax.__version__}"}


def _torch_row(model: str, batch: int, iters: int, threads: int) -> dict:
  """The same losses in eager PyTorch around the reference Wav2Lip (NCHW, float32)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO_ROOT))
  from tests.references import torch_lpips, torch_wav2lip  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  base = train_bench_util.peak_rss_mib()
  torch.manual_seed(0)
  config = train_bench_util.load_config(model)
  sync_w, lpips_w, adv_w = (config.loss.sync_weight, config.loss.lpips_weight,
                            config.loss.adversarial_weight)
  l1_w = 1.0 - sync_w - lpips_w - adv_w
  n, s = batch * _T, _IMG_SIZE
  generator = torch_wav2lip.TorchWav2Lip().train()
  expert = torch_wav2lip.randomize_(torch_wav2lip.TorchSyncNet(), seed=1).requires_grad_(False)

  def adam(parameters, settings):
    return torch.optim.Adam(parameters, lr=settings.learning_rate, betas=(settings.b1, settings.b2))

  optimizer = adam(generator.parameters(), config.optimizer)
  lpips = disc = disc_optimizer = None
  if lpips_w:  # random backbone and heads, as the JAX side (values do not change the speed)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1).numpy()
             for i, c in enumerate((64, 128, 256, 512, 512))}
    lpips = torch_lpips.TorchLPIPS(heads).randomize_(seed=2).requires_grad_(False)
  if adv_w:
    disc = torch_wav2lip.TorchQualityDiscriminator().train()
    disc_optimizer = adam(disc.parameters(), config.disc_optimizer)
  gen = torch.Generator().manual_seed(0)
  faces = torch.rand(n, 6, s, s, generator=gen)
  mels = torch.randn(n, 1, 80, 16, generator=gen)
  sync_mel = torch.randn(batch, 1, 80, 16, generator=gen)
  target = torch.rand(n, 3, s, s, generator=gen)
  setup = train_bench_util.peak_rss_mib()

  def bce(p, label):
    return F.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), torch.full_like(p, label))

  def step(_):
    generated = generator(mels, faces)
    lower = generated.view(batch, _T, 3, s, s)[..., s // 2:, :].reshape(batch, 3 * _T, s // 2, s)
    audio_emb, face_emb = expert(sync_mel, lower)
    loss = (l1_w * F.l1_loss(generated, target)
            + sync_w * bce(F.cosine_similarity(audio_emb, face_emb), 1.0))
    if lpips is not None:
      loss = loss + lpips_w * lpips(generated * 2 - 1, target * 2 - 1).mean()
    if disc is not None:
      disc.requires_grad_(False)
      loss = loss + adv_w * bce(disc(generated).view(-1), 1.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if disc is not None:
      disc.requires_grad_(True)
      p_real, p_fake = disc(torch.cat([target, generated.detach()])).view(-1).split(n)
      disc_optimizer.zero_grad(set_to_none=True)
      (bce(p_real, 1.0) + bce(p_fake, 0.0)).backward()
      disc_optimizer.step()
    return float(loss)

  seconds, loss = _time_steps(step, None, iters)
  return {"recipe": train_bench_util.recipe_name(config), "seconds": seconds,
          "compile_s": None, "loss": loss, "base_mib": base,
          "setup_mib": setup, "version": f"torch {torch.__version__}"}


def _worker(spec: str, batch: int, iters: int, threads: int) -> None:
  """Runs one row in this process and prints it as a `RESULT {json}` line."""
  model, framework, dtype = spec.split(",")
  cpu_threads.limit_cpu_threads(threads)
  host_memory.reuse_freed_memory()  # as the training tools do; both frameworks alike
  row = (_jax_row(model, dtype, batch, iters) if framework == "jax"
         else _torch_row(model, batch, iters, threads))
  row["peak_mib"] = train_bench_util.peak_rss_mib()
  train_bench_util.print_result(row)


def _cpu_name() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def main(argv):
  del argv
  if _WORKER.value:
    _worker(_WORKER.value, _BATCH.value, _ITERS.value, _THREADS.value)
    return
  for model in _MODELS.value:
    if model not in train_bench_util.MODELS:
      sys.exit(f"benchmarks/train_step.py: unknown model {model!r} "
               f"(choose from {sorted(train_bench_util.MODELS)})")
  load_before = os.getloadavg()
  rows = []
  for model in _MODELS.value:
    for framework, dtype in (("torch", "float32"), ("jax", "float32"), ("jax", "bfloat16")):
      print(f"running {model} {framework} {dtype} ...", file=sys.stderr, flush=True)
      args = [f"--batch={_BATCH.value}", f"--iters={_ITERS.value}",
              f"--threads={_THREADS.value}"]
      rows.append((model, framework, dtype, train_bench_util.run_worker(
          __file__, f"{model},{framework},{dtype}", args, _TIMEOUT.value)))
  load_after = os.getloadavg()

  frames = _BATCH.value * _T
  versions = sorted({r["version"] for *_, r in rows if "version" in r})
  print(f"\nGenerator training step, {_IMG_SIZE}x{_IMG_SIZE}, batch {_BATCH.value} x T={_T} "
        f"= {frames} frames, median of {_ITERS.value} steps after a warm-up, "
        f"{_THREADS.value} thread(s) of {os.cpu_count()}; {_cpu_name()}; {', '.join(versions)}")
  print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        "(shared machine: other processes compete for the same cores)")
  header = (f"{'generator':<13} {'losses':<26} {'implementation':<24} {'compute':<9} "
            f"{'compile s':>9} {'ms/step':>9} {'frames/s':>9} {'JAX/PyTorch':>11} "
            f"{'peak MiB':>9} {'setup MiB':>9} {'base MiB':>9}")
  print(header)
  print("-" * len(header))
  reference_fps = {}
  for model, framework, dtype, row in rows:
    name = (train_bench_util.NAMES[model] if framework == "jax"
            else "Wav2Lip" + ("*" if model != "wav2lip" else ""))
    losses = row.get("recipe", "")
    implementation = "JAX jit (train/steps.py)" if framework == "jax" else "PyTorch eager (ref.)"
    if "error" in row:
      print(f"{name:<13} {losses:<26} {implementation:<24} {dtype:<9} FAILED: {row['error']}")
      continue
    seconds = statistics.median(row["seconds"])
    fps = frames / seconds
    if framework == "torch":
      reference_fps[model] = fps
    ratio = fps / reference_fps[model] if model in reference_fps else float("nan")
    compile_s = "-" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
    ratio_text = "1 (ref.)" if framework == "torch" else f"{ratio:.2f}x"
    finite = "" if row["loss"] == row["loss"] and abs(row["loss"]) != float("inf") else "  NaN!"
    print(f"{name:<13} {losses:<26} {implementation:<24} {dtype:<9} {compile_s:>9} "
          f"{1000 * seconds:>9.0f} {fps:>9.2f} {ratio_text:>11} {row['peak_mib']:>9.0f} "
          f"{row['setup_mib']:>9.0f} {row['base_mib']:>9.0f}{finite}")
  if "attn_wav2lip" in _MODELS.value:
    print("* No PyTorch AttnWav2Lip exists (authors' code unavailable): the AttnWav2Lip rows "
          "are compared with the PyTorch Wav2Lip generator under the same losses.")
  print("JAX/PyTorch = frames/s of the row / frames/s of the PyTorch float32 row of the same "
        "losses (> 1: JAX faster). Memory is the maxrss of the row's process: peak = at the "
        "end, setup = before the first step (models, state, batch built; JAX: compiled), "
        "base = after the imports (the JAX process also imports torch, via tensorboardX).")


if __name__ == "__main__":
  app.run(main)
