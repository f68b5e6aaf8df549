"""Errors a user causes and can fix (a config field, a missing folder, a changed workdir).

A command shows such an error as one short paragraph that says what to do, not as a
traceback (runtime/command_line.py); the traceback still goes to the run's log file. Any
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Raised with a message that names the file or field, the value, and what to do."""


class NotWritableError(UserError, PermissionError):
  """A directory the run must write (the workdir, its checkpoints) cannot be written."""


class ConfigError(UserError, ValueError):
  """A config field's value cannot work; the message says which value to set instead."""
