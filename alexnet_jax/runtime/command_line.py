"""Starting a command: config files from any directory, short errors, a log file.

`--config=configs/x.py` names the project's configs from any working directory: a config
path that does not exist relative to the working directory is looked up among the
project's own configs, wherever they are installed (as `alexnet_jax.configs`; for
`pip install -e .`, the checkout's `configs/`). A path that exists where the user is
always wins.

Errors a user can cause (runtime/errors.py, and a mistyped flag or config field) end the
command with one short paragraph on stderr and exit status 2, not a traceback; the
traceback goes to the log file when the command keeps one (`log_to_file`), where
library INFO lines go too, leaving the console to the command's own lines.
"""

import ast
import importlib.util
import os
import socket
import sys
import time

from absl import app
from absl import flags
from absl import logging

from alexnet_jax.runtime import errors, shared_memory_leftovers

# The checkout holding the alexnet_jax package: three levels up from here.
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_ERROR_EXIT = 2
_log = {'path': None}


def config_path(path: str) -> str:
  """`path` (with an optional `:variant`) resolved as described in the module docstring."""
  file_name, colon, variant = path.partition(':')
  if os.path.exists(file_name) or os.path.isabs(file_name):
    return path
  # Found, not imported: the configs sit above this package's layer.
  configs = importlib.util.find_spec('alexnet_jax.configs').submodule_search_locations[0]
  parts = os.path.normpath(file_name).split(os.sep)
  candidate = os.path.join(configs, *parts[1:] if parts[0] == 'configs' else parts)
  return candidate + colon + variant if os.path.exists(candidate) else path


def resolve_config_flags(argv: list[str]) -> list[str]:
  """argv with the value of every `--config=...` / `--config ...` resolved."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith('--config='):
      out[i] = '--config=' + config_path(arg[len('--config='):])
    elif arg == '--config' and i + 1 < len(out):
      out[i + 1] = config_path(out[i + 1])
  return out


def log_to_file(directory: str) -> str:
  """From now on absl's log (INFO and up, tracebacks of errors) goes to a new file in
  `directory`, and only FATAL lines to the console; returns the file's path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{time.strftime("%Y%m%d-%H%M%S")}_{socket.gethostname()}'
                                 f'_{os.getpid()}.log')
  logging.get_absl_handler().python_handler.stream = open(path, 'a', buffering=1)
  flags.FLAGS.stderrthreshold = 'fatal'
  _log['path'] = path
  return path


def log_stream():
  """The open log file of `log_to_file`, or None when the command keeps none."""
  return logging.get_absl_handler().python_handler.stream if _log['path'] else None


def _fail(message: str) -> None:
  print(f'Error: {message}', file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT)


def flag_error(error: Exception, argv: list[str]) -> str:
  """One readable line for a flag that could not be parsed."""
  text = str(error)
  if isinstance(error, AttributeError):  # ml_collections: no such config field.
    try:
      text = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      pass
    field = text.split('\n')[0].strip("'")
    given = [a for a in argv if a.startswith('--config.') and
             a.split('=')[0].split('.')[-1] == field]
    hint = ' '.join(text.split('\n')[1:])
    return (f'{given[0] if given else field}: the config has no field {field!r}. {hint} '
            '(configs/default.py lists every field.)').replace('  ', ' ')
  return f'{text}. (--helpfull lists every flag.)'


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, ValueError, TypeError, KeyError) as e:
    _fail(flag_error(e, argv))


def _reporting(main):
  def run_main(argv):
    try:
      return main(argv)
    except errors.UserError as e:
      where = ''
      if _log['path']:
        logging.exception('Stopped:')
        where = f'\n(The traceback is in {_log["path"]})'
      _fail(f'{e}{where}')
  return run_main


def run(main, argv: list[str] | None = None) -> None:
  """absl's `app.run(main, argv)` (default sys.argv), with the config flags resolved, and
  user errors (and flag errors) reported as one paragraph."""
  shared_memory_leftovers.silence_warnings()  # Before anything starts a resource tracker.
  app.run(_reporting(main), argv=resolve_config_flags(sys.argv if argv is None else argv),
          flags_parser=_parse_flags)
