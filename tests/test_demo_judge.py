"""The demo's independent judge (demo/pipeline.py): its clips are no one else's, and its
scores are reported under its own name."""

import numpy as np

from configs import demo_cpu
from data_pipeline import synthetic
from demo import pipeline
from lipsync_jax import checkpoints


def test_judge_trains_on_clips_no_other_stage_sees():
  counts = {"train": 96, "eval": 8, "judge": 48}
  seeds = {split: {synthetic.clip_seed(seed, i) for i in range(counts[split])}
           for split, seed in pipeline.SPLITS}
  assert sum(map(len, seeds.values())) == len(set().union(*seeds.values())) == 152
  judge, expert = demo_cpu.get_config("judge"), demo_cpu.get_config("syncnet")
  assert judge.seed != expert.seed
  for field in ("seed", "num_train_steps", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps"):
    judge[field] = expert[field]
  assert judge.to_dict() == expert.to_dict()  # The same recipe from another seed.


def _projection_syncnet(seed: int, name: str) -> checkpoints.SyncExpert:
  """A stand-in SyncNet: unit-norm random projections of the mel and the faces."""
  rng = np.random.default_rng(seed)
  audio_w, face_w = rng.normal(size=(80 * 16, 8)), rng.normal(size=(48 * 96 * 15, 8))

  def embed(mels, halves):
    a = np.reshape(mels, (len(mels), -1)) @ audio_w
    f = np.reshape(halves, (len(halves), -1)) @ face_w
    return (a / np.linalg.norm(a, axis=-1, keepdims=True),
            f / np.linalg.norm(f, axis=-1, keepdims=True))

  return checkpoints.SyncExpert(embed=embed, img_size=96, channel_order="rgb", name=name)


def test_sync_rows_name_each_syncnet_and_generator():
  rng = np.random.default_rng(0)
  clips = [(rng.random((30, 96, 96, 3), np.float32), rng.normal(size=(80, 96)), 25.0, None)
           for _ in range(2)]
  generated = {"generator": [c[0][::-1].copy() for c in clips],
               "no_cbam": [c[0] * 0.5 for c in clips]}
  a, b = _projection_syncnet(1, "a"), _projection_syncnet(2, "b")
  rows = pipeline.sync_rows({"judge": a, "expert": b}, clips, generated)
  swapped = pipeline.sync_rows({"judge": b, "expert": a}, clips, generated)
  assert list(rows) == ["real audio", f"audio shifted {pipeline.SHIFT_FRAMES} frames",
                        "generated", "generated (no_cbam)"]
  for name, row in rows.items():
    assert set(row) == set(pipeline.SYNC_COLUMNS[1:])
    for column in ("sync_d", "sync_c", "in_sync"):
      assert row[f"judge_{column}"] == swapped[name][f"expert_{column}"]
      assert row[f"expert_{column}"] == swapped[name][f"judge_{column}"]
  assert rows["real audio"]["judge_sync_d"] != rows["real audio"]["expert_sync_d"]
  assert rows["generated"]["judge_sync_d"] != rows["generated (no_cbam)"]["judge_sync_d"]


def test_ablation_rows_pair_each_generator_with_its_own_scores():
  names = ["generator", *pipeline.ABLATIONS]
  mouth = {n: {"mouth_l1": i / 10, "mouth_psnr": 20.0 + i, "open_error": i / 100}
           for i, n in enumerate(names)}
  sync = {("generated" if n == "generator" else f"generated ({n})"):
          {"judge_sync_d": 1.0 + i, "judge_sync_c": 2.0 + i, "judge_in_sync": i,
           "expert_sync_d": -1.0, "expert_sync_c": -1.0, "expert_in_sync": -1}
          for i, n in enumerate(names)}
  table = {"mouth": {"copy reference": mouth["generator"], **mouth}, "sync": sync}
  rows = pipeline.ablation_rows(table)
  assert [r["generator"] for r in rows] == ["demo", *pipeline.ABLATIONS]
  for i, row in enumerate(rows):
    assert (row["mouth_psnr"], row["judge_sync_c"], row["judge_in_sync"]) == (20.0 + i, 2.0 + i, i)
    assert set(row) == set(pipeline.ABLATION_COLUMNS)
  del table["mouth"]["no_cbam"], table["mouth"]["no_ffc"], table["mouth"]["with_lpips"]
  del table["mouth"]["adversarial"], table["mouth"]["no_semantic_alignment"]
  assert pipeline.ablation_rows(table) == []  # Without --ablations: no table.
