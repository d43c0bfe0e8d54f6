"""The errors the library raises on bad input.

Every one derives from `LipsyncError` and carries a one-line message that names the
file (or config field) and the problem, so a command-line tool catches `LipsyncError`
alone and prints `str(e)`; anything else escaping a tool is a bug in the tool.
"""


class LipsyncError(Exception):
  """Bad input (file, checkpoint, config, data): one line naming what and why."""


class CheckpointError(LipsyncError, ValueError):
  """A checkpoint that is missing, unreadable, unsafe or holds the wrong network."""


class ConfigError(LipsyncError, ValueError):
  """A config that asks for something that cannot be set up."""
