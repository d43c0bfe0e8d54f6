r"""Training steps on one GPU: compile time, step time, frames/s and FLOP/s against the peak.

  python benchmarks/gpu_train_step.py                    # the rows below, smallest first
  python benchmarks/gpu_train_step.py --autotune_levels=1,4,0 --rows=attn_wav2lip,bfloat16,16
  python benchmarks/gpu_train_step.py --tiny             # CPU smoke run: batch 1, one step

Rows (`--rows`, each "model,dtype,batch", in this order; a sample is T = 5 frames of
96 x 96): the SyncNet expert's step (configs/syncnet_lrs2.py) at batch 64, then
AttnWav2Lip (configs/attn_wav2lip_lrs2.py: L1 + sync + LPIPS) bfloat16 and float32
at batch 16, Wav2Lip (configs/wav2lip_lrs2.py: L1 + sync + adversarial, then the
discriminator's step) bfloat16 at 16, and AttnWav2Lip bfloat16 and float32 at 64.
Each step is built by `benchmarks/train_step_setup.py` exactly as the trainer builds it
(random weights, batches as the input pipeline sends them: uint8 images), compiled with
the trainer's XLA options (`--autotune_levels`: `config.gpu_autotune_level`, one row per
level given) under the persistent compilation cache (`--cache_dir`; a second run of
the same rows shows what a restart costs). Per row: compile s, ms per step (mean of
`--iters` steps after `--warmup`, dispatched back to back as in training), frames/s,
GFLOP per step, achieved TFLOP/s, % of the device's peak, peak memory. Each row runs
in its own subprocess, is printed as soon as it ends, and one that fails or runs out
of time (`--timeout`) fails alone.

FLOPs per step: XLA's cost analysis (2 per multiply-add) of the compiled program(s);
the count of the unoptimised HLO is shown beside it as a check. Peak: `PEAK_TFLOPS` by
`jax.devices()[0].device_kind`, dense tensor-core numbers from NVIDIA's datasheets;
bfloat16 rows use the BF16 peak, float32 rows the TF32 peak (XLA's default precision
runs float32 convolutions on TF32 tensor cores); `--peak_tflops` overrides it.
Peak memory: `memory_stats()["peak_bytes_in_use"]` (maxrss on CPU).

History: on one H200 (jax 0.11.2, 2026-11-27) the earlier version of this script
(biggest rows first, XLA's default autotuning level 4, no cache) timed no row: three
AttnWav2Lip rows ran 330 s without finishing; the last log line was from XLA's GPU
kernel timer, which the autotuner uses (docs/benchmarks.md).
"""

import math
import pathlib
import re
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position

NAMES = {**train_bench_util.NAMES, "syncnet": "SyncNet"}
DEFAULT_ROWS = ("syncnet,float32,64", "attn_wav2lip,bfloat16,16", "attn_wav2lip,float32,16",
                "wav2lip,bfloat16,16", "attn_wav2lip,bfloat16,64", "attn_wav2lip,float32,64")
_ROWS = flags.DEFINE_multi_string("rows", list(DEFAULT_ROWS),
                                  "Rows 'model,dtype,batch' (model: syncnet, attn_wav2lip, "
                                  "wav2lip), in the order given.")
_AUTOTUNE_LEVELS = flags.DEFINE_list("autotune_levels", ["1"],
                                     "xla_gpu_autotune_level(s) (-1: XLA's default); "
                                     "every row is run at each.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "~/.cache/lipsync_jax/jax",
                                 "Persistent compilation cache ('' off).")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed steps per row.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s to compare with (all rows).")
_TINY = flags.DEFINE_bool("tiny", False, "Smoke run: batch 1, 1 warm-up + 1 timed step.")
_TIMEOUT = flags.DEFINE_integer("timeout", 900, "Seconds allowed per row's subprocess.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'model,dtype,batch,level' of one row.")

# Dense peak TFLOP/s (fp32 = CUDA cores, tf32 / bf16 = tensor cores without sparsity), from
# NVIDIA's product datasheets (sparsity figures halved). The first pattern found (re.search)
# in the lower-cased device_kind wins, so specific names come first. bf16 None: no bf16
# tensor cores (V100, T4); bf16 rows are then compared with the fp32 peak.
PEAK_TFLOPS = (
    (r"h100 pcie", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0}, "H100 PCIe datasheet"),
    (r"h100 nvl", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}, "H100 NVL datasheet"),
    (r"h200 nvl", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}, "H200 NVL datasheet"),
    (r"gh200", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}, "GH200 datasheet"),
    (r"h200", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}, "H200 SXM datasheet"),
    (r"h100", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}, "H100 SXM datasheet"),
    (r"a100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}, "A100 datasheet (SXM and PCIe)"),
    (r"\bl40s\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0}, "L40S datasheet"),
    (r"\bl4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}, "L4 datasheet"),
    (r"\ba10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0}, "A10 datasheet"),
    (r"v100-pcie", {"fp32": 14.0, "tf32": None, "bf16": None}, "V100 PCIe datasheet"),
    (r"v100", {"fp32": 15.7, "tf32": None, "bf16": None}, "V100 SXM2 datasheet"),
    (r"\bt4\b", {"fp32": 8.1, "tf32": None, "bf16": None}, "T4 datasheet"),
)


def device_peak(device_kind: str, dtype: str) -> tuple[float | None, str]:
  """(peak TFLOP/s for `dtype` compute on `device_kind`, which number it is) or (None, why)."""
  kind = device_kind.lower()
  for pattern, peaks, source in PEAK_TFLOPS:
    if re.search(pattern, kind):
      key = "bf16" if dtype == "bfloat16" else "tf32"
      if peaks[key] is None:
        key = "fp32"
      return peaks[key], f"{key} dense, {source}"
  return None, f"no peak known for {device_kind!r}: pass --peak_tflops"


def _worker(spec: str, iters: int, warmup: int, cache_dir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import train_step_setup  # pylint: disable=g-import-not-at-top
  from lipsync_jax.train import profiling  # pylint: disable=g-import-not-at-top
  model, dtype, batch, level = spec.split(",")
  with profiling.persistent_compilation_cache(cache_dir, "."):
    started = time.perf_counter()
    if model == "syncnet":
      train_step = train_step_setup.build_syncnet_step(dtype, int(batch),
                                                       gpu_autotune_level=int(level))
    else:
      train_step = train_step_setup.build_train_step(model, dtype, int(batch),
                                                     gpu_autotune_level=int(level))
    print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    compiled = train_step.compile()
  print(f"compiled in {compiled['compile_s']:.0f} s", file=sys.stderr, flush=True)
  state = train_step.state
  for _ in range(warmup):
    state, loss = train_step.run(state)
  jax.block_until_ready(state)
  started = time.perf_counter()
  for _ in range(iters):
    state, loss = train_step.run(state)
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - started) / iters
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  memory = (f"{stats['peak_bytes_in_use'] / 2**30:.2f} GiB" if "peak_bytes_in_use" in stats
            else f"{train_bench_util.peak_rss_mib() / 1024:.2f} GiB RSS")
  return {"recipe": train_step.recipe, "frames": train_step.frames_per_step,
          "seconds": seconds, "loss": float(loss), "memory": memory,
          "device": device.device_kind, "platform": device.platform,
          "version": f"jax {jax.__version__}", **compiled}


def main(argv):
  del argv
  iters, warmup = (1, 1) if _TINY.value else (_ITERS.value, _WARMUP.value)
  if _WORKER.value:
    train_bench_util.print_result(_worker(_WORKER.value, iters, warmup, _CACHE_DIR.value))
    return
  rows = []
  for row in _ROWS.value:
    model, dtype, batch = (row.split(",") + ["", ""])[:3]
    if model not in NAMES or dtype not in ("float32", "bfloat16") or not batch.isdigit():
      sys.exit(f"benchmarks/gpu_train_step.py: bad --rows {row!r} (model,dtype,batch with "
               f"model in {sorted(NAMES)}, dtype float32 or bfloat16)")
    rows.append((model, dtype, "1" if _TINY.value else batch))
  header = (f"{'step':<12} {'losses':<24} {'compute':<9} {'batch':>5} {'tune':>4} "
            f"{'frames':>6} {'compile s':>9} {'ms/step':>9} {'frames/s':>9} {'GFLOP/step':>10} "
            f"{'(HLO)':>9} {'TFLOP/s':>8} {'peak':>7} {'% peak':>7} {'memory':>13}")
  print(f"Training steps, 96x96, T=5 frames per sample, mean of {iters} steps after "
        f"{warmup} warm-up step(s); each row is printed when its subprocess ends", flush=True)
  print(header)
  print("-" * len(header), flush=True)
  done, peak_notes = [], set()
  for model, dtype, batch in rows:
    for level in _AUTOTUNE_LEVELS.value:
      print(f"running {model} {dtype} batch {batch} autotune {level} ...", file=sys.stderr,
            flush=True)
      args = [f"--iters={iters}", f"--warmup={warmup}", f"--cache_dir={_CACHE_DIR.value}"]
      row = train_bench_util.run_worker(__file__, f"{model},{dtype},{batch},{level}", args,
                                        _TIMEOUT.value)
      print(_format_row(model, dtype, int(batch), level, row, peak_notes), flush=True)
      if "error" not in row:
        done.append(row)
  if done:
    print(f"device: {done[0]['device']} ({done[0]['version']})")
    if done[0]["platform"] == "cpu":
      print("NOTE: running on CPU (smoke run); these numbers say nothing about a GPU.")
  print("GFLOP/step: XLA cost analysis of the compiled step(s), generator + discriminator "
        "(HLO: of the unoptimised program). TFLOP/s = GFLOP/step / step time. "
        "tune: xla_gpu_autotune_level (-1: XLA's default).")
  for note in sorted(peak_notes):
    print(f"peak TFLOP/s for {note}")


def _format_row(model: str, dtype: str, batch: int, level: str, row: dict,
                peak_notes: set[str]) -> str:
  """One table line for a worker's result (or its error); adds the peak's source to the notes."""
  name = NAMES[model]
  if "error" in row:
    return f"{name:<12} {'':<24} {dtype:<9} {batch:>5} {level:>4} FAILED: {row['error']}"
  if _PEAK_TFLOPS.value:
    peak, note = _PEAK_TFLOPS.value, "--peak_tflops"
  else:
    peak, note = device_peak(row["device"], dtype)
  peak_notes.add(f"{dtype}: {note}")
  flops = row["flops"] if math.isfinite(row["flops"]) and row["flops"] > 0 else row["flops_hlo"]
  achieved = flops / row["seconds"] / 1e12
  percent = f"{100 * achieved / peak:.1f}" if peak else "n/a"
  return (f"{name:<12} {row['recipe']:<24} {dtype:<9} {batch:>5} {level:>4} {row['frames']:>6} "
          f"{row['compile_s']:>9.1f} {1000 * row['seconds']:>9.1f} "
          f"{row['frames'] / row['seconds']:>9.1f} {flops / 1e9:>10.1f} "
          f"{row['flops_hlo'] / 1e9:>9.1f} {achieved:>8.2f} "
          f"{peak if peak else 'n/a':>7} {percent:>7} {row['memory']:>13}"
          f"{'' if math.isfinite(row['loss']) else '  loss not finite!'}")


if __name__ == "__main__":
  app.run(main)
