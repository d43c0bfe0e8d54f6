"""The training progress bar of `reporting.Reporter`: "compiling" until the first step."""

from lipsync_jax.train import reporting


def _last_state(err: str) -> str:
  return err.replace("\n", "\r").split("\r")[-1] if err.strip() else ""


def test_bar_compiles_then_counts_steps(tmp_path, capsys):
  reporter = reporting.Reporter(tmp_path, num_train_steps=10)
  assert _last_state(capsys.readouterr().err).startswith("compiling:   0%")
  reporter.advance(3)  # A resumed run: the bar starts at step 3.
  assert _last_state(capsys.readouterr().err).startswith("train:  30%")
  reporter.phase("evaluating")
  assert _last_state(capsys.readouterr().err).startswith("evaluating:  30%")
  reporter.scalars(5, {"loss": 0.25}, "train")  # Moves the bar without advance(4), (5).
  reporter.close()
  final = _last_state(capsys.readouterr().err.rstrip("\n"))
  assert final.startswith("train:  50%") and "5/10" in final and "loss=0.25" in final, final
  assert list(tmp_path.glob("events.out.tfevents.*"))
