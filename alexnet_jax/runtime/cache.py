"""The project's cache folder: downloaded weights and the record of where datasets were
prepared. `$ALEXNET_JAX_CACHE` when set, else ~/.cache/alexnet_jax."""

import os

ENV = 'ALEXNET_JAX_CACHE'


def cache_dir() -> str:
  return os.path.expanduser(os.environ.get(ENV) or '~/.cache/alexnet_jax')
