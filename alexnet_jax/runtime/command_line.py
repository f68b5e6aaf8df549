"""Starting a command: `--config=configs/x.py` names the project's configs from any directory.

A config path that does not exist relative to the working directory is looked up in the
project's own `configs/` (beside the installed `alexnet_jax` package: the checkout for
`pip install -e .`), so the README's commands work from anywhere once installed. A path
that exists where the user is always wins.
"""

import os
import sys

from absl import app

# The directory holding the alexnet_jax package (and configs/): three levels up from here.
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_path(path: str) -> str:
  """`path` (with an optional `:variant`) resolved as described in the module docstring."""
  file_name, colon, variant = path.partition(':')
  if os.path.exists(file_name) or os.path.isabs(file_name):
    return path
  candidate = os.path.join(PROJECT, file_name)
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


def run(main, argv: list[str] | None = None) -> None:
  """absl's `app.run(main, argv)` (default sys.argv), with the config flags resolved."""
  app.run(main, argv=resolve_config_flags(sys.argv if argv is None else argv))
