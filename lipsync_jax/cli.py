"""What every command-line tool shares: one-line errors, a quiet console, a log file.

A tool is written as

  @cli.tool("infer")                       # or cli.tool("train", log_file=...)
  def main(argv):
    ...

  if __name__ == "__main__":
    cli.run(main)

Contract:
- Bad input ends the tool with ONE line `<tool>: <message>` on stderr and exit code 1,
  no traceback: every `errors.LipsyncError` and `OSError` raised by `main`, an
  `app.UsageError`, a flag that does not parse, and a `--config.<field>=<value>` override
  of a field the config does not have (the line names the closest fields) or with a
  value of the wrong type. Any other exception is a bug and keeps its traceback.
- The console shows progress bars, results and warnings of this repository's code;
  logs below WARNING, and library warnings below ERROR (orbax, JAX's platform probes,
  grain, ...), go only to the log file: `log_file()` of the decorator (the training
  tools: `<workdir>/logs/<tool>.log`, appended to by a resumed run), or nowhere for
  tools without one. absl's `--verbosity` (`-v 0`: INFO, `-v 1`: DEBUG) brings all
  logs at that level back to the console.
- Outside a tool's run (a notebook, a test calling `main` after parsing flags itself)
  logging is left as it was: the decorator restores what it changed.
"""

import contextlib
import difflib
import functools
import logging
import os
import re
import sys
from typing import Callable, Iterator, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_dict
from ml_collections import config_flags

from lipsync_jax import errors

Main = Callable[[list[str]], int | None]

# Environment defaults of a quiet run, set unless --verbosity is given: the C++ side of
# XLA (and gRPC under jax.distributed) logs INFO lines, led by absl's "WARNING: All log
# messages before absl::InitializeLog() are written to STDERR", straight to stderr.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "1", "GRPC_VERBOSITY": "ERROR"}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE_ROOT = os.path.dirname(_PACKAGE_DIR)
_INSTALLED_DIRS = ("site-packages", "dist-packages")


def one_line(error: BaseException) -> str:
  """`str(error)` on one line (lines joined by "; "), or the class name if empty."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return "; ".join(lines) or type(error).__name__


def fail(tool_name: str, message: str | BaseException, code: int = 1) -> None:
  """Prints `<tool_name>: <message>` (one line) on stderr and exits with `code`."""
  if isinstance(message, BaseException):
    message = one_line(message)
  sys.stdout.flush()
  print(f"{tool_name}: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


class ArgumentError(errors.LipsyncError, ValueError):
  """A flag value a tool cannot use (a malformed list, an output folder that is missing)."""


def int_list(values: Sequence[str], name: str, count: int) -> list[int]:
  """A comma-separated flag's `count` integers; ArgumentError naming `--name` otherwise."""
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    numbers = []
  if len(numbers) != count:
    raise ArgumentError(f"--{name} needs {count} comma-separated integers, "
                        f"got {','.join(values)}")
  return numbers


def check_output_folder(path: str | os.PathLike) -> None:
  """Raises ArgumentError unless `path`'s folder exists and is writable (checked before any
  work, so a bad --outfile fails at once)."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise ArgumentError(f"{path}: {folder} is not a folder")
  if not os.path.isdir(folder):
    raise ArgumentError(f"{path}: output folder {folder} does not exist")
  if not os.access(folder, os.W_OK):
    raise ArgumentError(f"{path}: output folder {folder} is not writable")


class FaceFlags:
  """The face-box flags `tools/infer.py` and `tools/prepare_avatar.py` share (Wav2Lip's
  options plus sidecars, faceless frames and face choice); define them once per process."""

  def __init__(self):
    self.pads = flags.DEFINE_list("pads", ["0", "10", "0", "0"],
                                  "Pixels added to the face box: top,bottom,left,right.")
    self.box = flags.DEFINE_list("box", None,
                                 "Fixed face box top,bottom,left,right: no detection.")
    self.boxes_json = flags.DEFINE_string(
        "boxes_json", None, "JSON file with per-frame face \"boxes\": no detection "
        "(default: <face stem>.json).")
    self.sidecar = flags.DEFINE_boolean("sidecar", True, "Use a <face stem>.json sidecar's "
                                        "boxes when there is one; --nosidecar always detects.")
    self.resize_factor = flags.DEFINE_integer("resize_factor", 1, "Downscale the input by this "
                                              "factor.", lower_bound=1)
    self.nosmooth = flags.DEFINE_boolean("nosmooth", False, "Do not smooth boxes over 5 frames.")
    self.fps = flags.DEFINE_float("fps", None, "Frame rate for a still image (default 25).")
    self.missing = flags.DEFINE_enum("missing", "error", ["error", "interpolate", "passthrough"],
                                     "Frames without a face: fail naming them, interpolate "
                                     "boxes, or copy the frame through unchanged.")
    self.face_index = flags.DEFINE_integer("face_index", None, "Which face (from the left) when "
                                           "several are found; default the largest.",
                                           lower_bound=0)
    flags.register_validator("fps", lambda fps: fps is None or fps > 0,
                             message="--fps must be positive")

  def options(self) -> dict:
    """The keyword arguments `inference.LipsyncJob` and `inference.prepare_avatar` share;
    ArgumentError for a malformed --pads or --box."""
    box = None
    if self.box.value:
      top, bottom, left, right = int_list(self.box.value, "box", 4)
      box = (left, top, right, bottom)
    return {"fps": self.fps.value, "pads": int_list(self.pads.value, "pads", 4), "box": box,
            "face_boxes": self.boxes_json.value, "use_sidecar": self.sidecar.value,
            "smooth": not self.nosmooth.value, "resize_factor": self.resize_factor.value,
            "missing": self.missing.value, "face_index": self.face_index.value}


def workdir_log(workdir: str | os.PathLike, tool_name: str, process_id: int = 0) -> str:
  """`<workdir>/logs/<tool_name>.log`; `<tool_name>.process<k>.log` for process k > 0."""
  suffix = f".process{process_id}" if process_id else ""
  return os.path.join(os.fspath(workdir), "logs", f"{tool_name}{suffix}.log")


def tool(name: str, log_file: Callable[[], str | os.PathLike | None] | None = None
         ) -> Callable[[Main], Main]:
  """Decorates a tool's `main(argv)` (see the module docstring).

  Args:
    name: the tool's name, the prefix of its error lines.
    log_file: called once flags are parsed; the log file's path (its folder is
      created), or None for no log file.
  Returns:
    A decorator; the decorated `main` has the same signature, exits with code 1 on bad
    input, and carries `name` as `tool_name` for `run`.
  """

  def decorate(main: Main) -> Main:

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> int | None:
      try:
        path = log_file() if log_file is not None else None
        with quiet_console(path):
          return main(argv)
      except (errors.LipsyncError, OSError, app.UsageError) as e:
        fail(name, e)
      except KeyboardInterrupt:
        fail(name, "interrupted", code=130)
      return None

    wrapped.tool_name = name
    return wrapped

  return decorate


def run(main: Main) -> None:
  """`app.run(main)` with one-line flag and config-override errors (`main` is decorated
  by `tool`)."""
  name = getattr(main, "tool_name", None)
  if name is None:
    raise TypeError("cli.run takes a main decorated with cli.tool")
  app.run(main, flags_parser=functools.partial(parse_flags, name))


def parse_flags(tool_name: str, argv: Sequence[str]) -> list[str]:
  """`flags.FLAGS(argv)`, but a flag or config override that does not parse, or a config
  file that does not exist, ends the tool with one line naming it."""
  try:
    remaining = flags.FLAGS(list(argv))
  except Exception as e:  # pylint: disable=broad-except
    # absl wraps what a flag's parser raises in flags.Error, except what config_flags
    # raises for an unknown --config.<field> (AttributeError, KeyError, ...).
    fail(tool_name, missing_config_file(argv) or config_override_error(argv)
         or _flag_error(e))
  if missing := missing_config_file(argv):
    fail(tool_name, missing)
  if not flags.FLAGS["verbosity"].present:
    for key, value in QUIET_ENVIRONMENT.items():
      os.environ.setdefault(key, value)
  return remaining


def _flag_error(error: Exception) -> str:
  message = one_line(error)
  if isinstance(error, flags.UnrecognizedFlagError):
    return f"{message} (--helpfull lists the flags)"
  if "Error whilst parsing config file" in str(error):
    # config_flags puts get_config()'s whole traceback in the message: keep the flag
    # and the exception's own line.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{lines[0].split(': Error whilst')[0]}: {lines[-1]}"
  return message


# Config overrides.


def config_fields(config: config_dict.ConfigDict, prefix: str = "") -> list[str]:
  """Every field of `config` as a dotted path, nested ConfigDicts and their fields."""
  fields = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    fields.append(path)
    if isinstance(value, config_dict.ConfigDict):
      fields += config_fields(value, f"{path}.")
  return fields


def unknown_field(config: config_dict.ConfigDict, path: str) -> bool:
  """Whether the dotted `path` (indices like `a[0]` allowed) names no field of `config`."""
  node = config
  for key in path.split("."):
    key = re.sub(r"\[.*$", "", key)
    if not isinstance(node, config_dict.ConfigDict) or key not in node:
      return True
    node = node[key]
  return False


def _config_flag_names() -> list[str]:
  is_config_flag = config_flags.config_flags.is_config_flag
  return [n for n in flags.FLAGS if is_config_flag(flags.FLAGS[n]) and n == flags.FLAGS[n].name]


def missing_config_file(argv: Sequence[str]) -> str | None:
  """The message for a `--<config flag>=<file>[:<argument>]` whose file does not exist."""
  for flag_name in _config_flag_names():
    value = _config_value(argv, flag_name)
    if value is not None and not os.path.isfile(value.split(":", 1)[0]):
      return f"--{flag_name}={value}: no such config file"
  return None


def config_override_error(argv: Sequence[str]) -> str | None:
  """The message for the first `--<config flag>.<field>` in `argv` whose field the
  config does not have: it names the field and the closest existing ones; None when
  every overridden field exists (or no config file can be read)."""
  for flag_name in _config_flag_names():
    overrides = _override_paths(argv, flag_name)
    config = _read_config(flags.FLAGS[flag_name], _config_value(argv, flag_name))
    if not overrides or not isinstance(config, config_dict.ConfigDict):
      continue
    fields = config_fields(config)
    for path in overrides:
      if unknown_field(config, path):
        closest = difflib.get_close_matches(path, fields, n=3, cutoff=0.6)
        hint = (f"closest: {', '.join(closest)}" if closest else
                f"no field is close; see {_config_value(argv, flag_name).split(':')[0]}")
        return f"--{flag_name}.{path}: the config has no field {path!r}; {hint}"
  return None


def _override_paths(argv: Sequence[str], flag_name: str) -> list[str]:
  """The field paths of `--<flag_name>.<path>[=value]` / `--no<flag_name>.<path>`."""
  pattern = re.compile(rf"^--?(?:no)?{re.escape(flag_name)}\.([^=]+)")
  return [m.group(1) for m in map(pattern.match, argv[1:]) if m]


def _config_value(argv: Sequence[str], flag_name: str) -> str | None:
  """The last value `argv` gives `--<flag_name>` (`--name=value` or `--name value`)."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith((f"--{flag_name}=", f"-{flag_name}=")):
      value = arg.split("=", 1)[1]
    elif arg in (f"--{flag_name}", f"-{flag_name}") and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _read_config(flag: flags.Flag, value: str | None):
  """The config of `flag`'s parser for `value`, or None if it cannot be read."""
  if value is None:
    return None
  try:
    return flag.parser.parse(value)
  except Exception:  # pylint: disable=broad-except
    return None


# Logging.


def _is_own_code(pathname: str) -> bool:
  """Whether a log record comes from this repository's code, not from a library."""
  path = os.path.abspath(pathname)
  if path.startswith(_PACKAGE_DIR + os.sep):
    return True
  parts = path.split(os.sep)
  return path.startswith(_SOURCE_ROOT + os.sep) and not any(
      d in parts for d in _INSTALLED_DIRS)


class _QuietFilter(logging.Filter):
  """Lets WARNING and above of this repository's code through, and ERROR and above of
  libraries."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    return record.levelno >= logging.WARNING and _is_own_code(record.pathname)


def _verbosity_level() -> int | None:
  """The standard logging level `--verbosity` asks for, or None when not given."""
  if not flags.FLAGS.is_parsed() or not flags.FLAGS["verbosity"].present:
    return None
  verbosity = flags.FLAGS["verbosity"].value
  if verbosity <= absl_logging.converter.ABSL_DEBUG:
    return absl_logging.converter.absl_to_standard(verbosity)
  return logging.DEBUG - (verbosity - 1)


@contextlib.contextmanager
def quiet_console(log_path: str | os.PathLike | None) -> Iterator[None]:
  """Within: the console and log file of the module docstring; restored after."""
  root = logging.getLogger()
  console_level = _verbosity_level()
  file_level = min(logging.INFO, console_level or logging.INFO)
  absl_handler = absl_logging.get_absl_handler()
  console = absl_handler if absl_handler in root.handlers else None
  quiet = _QuietFilter()
  saved = (root.level, console.level if console else None,
           console.python_handler.formatter if console else None)
  file_handler = None
  try:
    if log_path is not None:
      os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
      file_handler = logging.FileHandler(log_path, encoding="utf-8")
      file_handler.setFormatter(absl_logging.PythonFormatter())
      file_handler.setLevel(file_level)
      root.addHandler(file_handler)
    if console is not None:
      if console_level is None:
        console.addFilter(quiet)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
      else:
        console.setLevel(console_level)
    # Lowered only: a level set by someone else (a test's caplog) stays as low as it was.
    lowest = file_level if file_handler else (console_level or logging.WARNING)
    root.setLevel(min(root.level, lowest) if root.level else logging.NOTSET)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger
    if file_handler is not None:
      logging.info("%s", " ".join([os.path.basename(sys.argv[0] or "tool")] + sys.argv[1:]))
    yield
  except (Exception, KeyboardInterrupt):
    if file_handler is not None:  # The traceback for the log; the console gets one line.
      file_handler.handle(logging.LogRecord(__name__, logging.ERROR, __file__, 0, "failed",
                                            None, sys.exc_info()))
    raise
  finally:
    logging.captureWarnings(False)
    root.setLevel(saved[0])
    if console is not None:
      console.removeFilter(quiet)
      console.setLevel(saved[1])
      console.setFormatter(saved[2])
    if file_handler is not None:
      root.removeHandler(file_handler)
      file_handler.close()
