"""One base config: every experiment has exactly its fields, and every override the docs
show works on every config (through the command-line flag parser the tools use)."""

import pathlib
import re

from absl import flags
from ml_collections import config_flags
import pytest

from configs import base

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ["attn_wav2lip_lrs2.py", "wav2lip_lrs2.py", "syncnet_lrs2.py",
           "demo_cpu.py:syncnet", "demo_cpu.py:generator", "demo_cpu.py:judge",
           "attn_wav2lip_lrs2.py:runlocal", "wav2lip_lrs2.py:runlocal",
           "syncnet_lrs2.py:runlocal"]


def _load(spec: str, *overrides: str):
  """The config `configs/<spec>` with `--config.<field>=<value>` overrides, parsed as the
  training tools parse them."""
  argv = ["test", f"--config={REPO / 'configs' / spec}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def _fields(config, prefix=""):
  out = set()
  for key, value in config.items():
    if hasattr(value, "items") and key != "kwargs":
      out |= _fields(value, f"{prefix}{key}.")
    else:
      out.add(f"{prefix}{key}")
  return out


def _documented_overrides() -> set[str]:
  """Every `--config.<field>` the README and docs/ show."""
  text = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
  return set(re.findall(r"--config\.([a-z_][\w.]*[a-z_0-9])(?==)", text))


@pytest.mark.parametrize("spec", CONFIGS)
def test_experiments_have_exactly_the_base_fields(spec):
  assert _fields(_load(spec)) == _fields(base.get_config())


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_documented_override_field_exists(spec):
  config = _load(spec)
  documented = _documented_overrides()
  assert {"data.train_path", "expert.checkpoint", "distributed.process_id"} <= documented
  for field in sorted(documented):
    if field.startswith("model.kwargs.") and not config.model.kwargs:
      continue  # AttnWav2Lip's own constructor fields; Wav2Lip and SyncNet runs have none.
    node = config
    for part in field.split("."):
      assert part in node, f"{spec}: --config.{field} is documented but not a field"
      node = node[part]


@pytest.mark.parametrize("spec", CONFIGS)
def test_overrides_parse_on_every_config(spec):
  config = _load(spec, "--config.model.img_size=192", "--config.optimizer.warmup_steps=10",
                 "--config.optimizer.cosine_decay=True", "--config.batch_size=32",
                 "--config.mesh.shard_weights=True", "--config.loss.lpips_weight=0")
  assert (config.model.img_size, config.optimizer.warmup_steps, config.batch_size) == (192, 10, 32)
  assert config.optimizer.cosine_decay and config.mesh.shard_weights
  assert config.loss.lpips_weight == 0


def test_unknown_field_is_refused():
  with pytest.raises(Exception, match="img_siz"):
    _load("attn_wav2lip_lrs2.py", "--config.model.img_siz=192")


def test_parse_arg():
  arg = base.parse_arg("runlocal,variant=b", runlocal=False, variant="a")
  assert arg.runlocal is True and arg.variant == "b"
  assert base.parse_arg(None, runlocal=False).runlocal is False
  with pytest.raises(ValueError, match="'nope' unknown"):
    base.parse_arg("nope", runlocal=False)
