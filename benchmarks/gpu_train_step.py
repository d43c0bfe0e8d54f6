r"""Generator training step on one GPU: step time, frames/s and FLOP/s against the peak.

  python benchmarks/gpu_train_step.py            # batch 16 and 64, float32 and bfloat16
  python benchmarks/gpu_train_step.py --tiny     # CPU smoke run: batch 1, one step

For AttnWav2Lip (configs/attn_wav2lip_lrs2.py: L1 + sync + LPIPS) and Wav2Lip
(configs/wav2lip_lrs2.py: L1 + sync + adversarial, then the discriminator
step), built by `benchmarks/train_step_setup.py` exactly as the trainer builds
them (random weights, T = 5 frames per sample, 96x96), prints per row: compile
time, ms per step (mean of `--iters` steps after `--warmup` ones, dispatched
back to back as in training, synchronised at the end), frames/s, FLOPs per step
and achieved TFLOP/s against the device's peak.

FLOPs per step: XLA's cost analysis (2 per multiply-add) of the compiled
generator step plus the discriminator step, `jit(...).lower(...).compile()
.cost_analysis()`; the count of the unoptimised HLO (`lower(...).cost_analysis()`)
is shown beside it as a check. They differ a little: XLA:GPU counts cuDNN
convolutions and cuBLAS matmuls like the HLO ones but elementwise ops by cycle
estimates (3 or more per element), and the optimised program may recompute.

Peak: `PEAK_TFLOPS` by `jax.devices()[0].device_kind`, dense (no 2:4 sparsity)
tensor-core numbers from NVIDIA's datasheets; bfloat16 rows use the BF16 peak,
float32 rows the TF32 peak (XLA's default precision lets cuDNN / cuBLAS run
float32 convolutions and matmuls on TF32 tensor cores on Ampere and later; with
`JAX_DEFAULT_MATMUL_PRECISION=highest` compare with the FP32 column instead).
`--peak_tflops` overrides the peak for every row (e.g. for an unlisted device).
Each row runs in its own subprocess, so one that runs out of memory fails alone
and peak memory (`memory_stats()["peak_bytes_in_use"]`, or the process's maxrss
on CPU) is per row.

On CPU the script runs too (`--tiny`), but the numbers say nothing about a GPU;
no peak is known for a CPU, so "% peak" needs `--peak_tflops` there.

Compilation is the long part on a GPU. On one H200 (jax 0.11.2, CUDA 13,
2026-11-27) no row was timed: the first three AttnWav2Lip rows together ran
330 s without the (then end-of-run) table being printed; Wav2Lip rows did not
finish in 95 s each; AttnWav2Lip bfloat16 batch 64 had not finished in 185 s,
its last log line a warning from XLA's GPU kernel timer (cuda_timer.cc), which
the autotuner uses. Rows are now printed as they finish, so a run cut short
keeps what it measured: time one row per call with `--timeout` of 400 s or more.
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

_MODELS = flags.DEFINE_list("models", ["attn_wav2lip", "wav2lip"], "Recipes to time.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16", "64"], "Samples per step (T = 5 frames).")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed steps per row.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s to compare with (all rows).")
_TINY = flags.DEFINE_bool("tiny", False, "Smoke run: batch 1, 1 warm-up + 1 timed step.")
_TIMEOUT = flags.DEFINE_integer("timeout", 900, "Seconds allowed per row's subprocess.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'model,dtype,batch' of one row.")

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


def _worker(spec: str, iters: int, warmup: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import train_step_setup  # pylint: disable=g-import-not-at-top
  model, dtype, batch = spec.split(",")
  started = time.perf_counter()
  train_step = train_step_setup.build_train_step(model, dtype, int(batch))
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
  batch_sizes = ["1"] if _TINY.value else _BATCH_SIZES.value
  iters, warmup = (1, 1) if _TINY.value else (_ITERS.value, _WARMUP.value)
  if _WORKER.value:
    train_bench_util.print_result(_worker(_WORKER.value, iters, warmup))
    return
  for model in _MODELS.value:
    if model not in train_bench_util.MODELS:
      sys.exit(f"benchmarks/gpu_train_step.py: unknown model {model!r} "
               f"(choose from {sorted(train_bench_util.MODELS)})")
  header = (f"{'generator':<12} {'losses':<24} {'compute':<9} {'batch':>5} {'frames':>6} "
            f"{'compile s':>9} {'ms/step':>9} {'frames/s':>9} {'GFLOP/step':>10} "
            f"{'(HLO)':>9} {'TFLOP/s':>8} {'peak':>7} {'% peak':>7} {'memory':>13}")
  print(f"Generator training step, 96x96, T=5 frames per sample, mean of {iters} steps after "
        f"{warmup} warm-up step(s); each row is printed when its subprocess ends")
  print(header)
  print("-" * len(header), flush=True)
  done, peak_notes = [], set()
  for model in _MODELS.value:
    for dtype in _DTYPES.value:
      for batch in batch_sizes:
        print(f"running {model} {dtype} batch {batch} ...", file=sys.stderr, flush=True)
        args = [f"--iters={iters}", f"--warmup={warmup}"]
        row = train_bench_util.run_worker(__file__, f"{model},{dtype},{batch}", args,
                                          _TIMEOUT.value)
        print(_format_row(model, dtype, int(batch), row, peak_notes), flush=True)
        if "error" not in row:
          done.append(row)
  if done:
    print(f"device: {done[0]['device']} ({done[0]['version']})")
    if done[0]["platform"] == "cpu":
      print("NOTE: running on CPU (smoke run); these numbers say nothing about a GPU.")
  print("GFLOP/step: XLA cost analysis of the compiled step(s), generator + discriminator "
        "(HLO: of the unoptimised program). TFLOP/s = GFLOP/step / step time.")
  for note in sorted(peak_notes):
    print(f"peak TFLOP/s for {note}")


def _format_row(model: str, dtype: str, batch: int, row: dict, peak_notes: set[str]) -> str:
  """One table line for a worker's result (or its error); adds the peak's source to the notes."""
  name = train_bench_util.NAMES[model]
  if "error" in row:
    return f"{name:<12} {'':<24} {dtype:<9} {batch:>5} FAILED: {row['error']}"
  if _PEAK_TFLOPS.value:
    peak, note = _PEAK_TFLOPS.value, "--peak_tflops"
  else:
    peak, note = device_peak(row["device"], dtype)
  peak_notes.add(f"{dtype}: {note}")
  flops = row["flops"] if math.isfinite(row["flops"]) and row["flops"] > 0 else row["flops_hlo"]
  achieved = flops / row["seconds"] / 1e12
  percent = f"{100 * achieved / peak:.1f}" if peak else "n/a"
  return (f"{name:<12} {row['recipe']:<24} {dtype:<9} {batch:>5} {row['frames']:>6} "
          f"{row['compile_s']:>9.1f} {1000 * row['seconds']:>9.1f} "
          f"{row['frames'] / row['seconds']:>9.1f} {flops / 1e9:>10.1f} "
          f"{row['flops_hlo'] / 1e9:>9.1f} {achieved:>8.2f} "
          f"{peak if peak else 'n/a':>7} {percent:>7} {row['memory']:>13}"
          f"{'' if math.isfinite(row['loss']) else '  loss not finite!'}")


if __name__ == "__main__":
  app.run(main)
