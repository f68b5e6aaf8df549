r"""Prepares a config's images once, before training: run it with the config you train with.

  python -m alexnet_jax.data.prepare --config=configs/ilsvrc2012.py \
      [--config.data.manual_dir=/path/to/tars] [--config.data.data_dir=...]

It reads your images (the ILSVRC-2012 tars, an image folder, a TFDS dataset), stores
each at data.image_size (shorter side rescaled, central square, §2) as JPEG in
data.data_dir, then makes one pass over the training images for their mean image (§2)
and colour PCA (§4.1), kept beside them. Give it the same --config.data.* overrides as
training. Stopped (Ctrl-C, a kill, a crash), it goes on where it was when run again; run
again when done, it does nothing. Files it cannot decode are skipped and listed; a source
short of its published counts stops it (--config.data.allow_partial=True accepts a
deliberate subset). It prints a few lines of progress and a summary per split; the
details go to a log file in data.data_dir/logs.
"""

import contextlib
import fcntl
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from alexnet_jax.data import datasets, sources, statistics
from alexnet_jax.runtime import command_line


@contextlib.contextmanager
def _one_at_a_time(config, say: datasets.Say):
  """Holds data_dir's prepare lock, waiting for another prepare that holds it. A
  data_dir that cannot be written is only read: no lock needed."""
  directory = datasets.data_dir(config)
  path = os.path.join(directory, '.prepare.lock')
  try:
    os.makedirs(directory, exist_ok=True)
    lock = open(path, 'a+')
  except OSError:
    yield
    return
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      say(f'Another prepare (process {lock.read().strip() or "?"}) is preparing data in '
          f'{directory}; waiting for it to finish (it holds {path})...')
      fcntl.flock(lock, fcntl.LOCK_EX)  # Released when it ends, even if killed.
    lock.seek(0)
    lock.truncate()
    lock.write(f'{os.getpid()}\n')
    lock.flush()
    yield


def prepare(config, say: datasets.Say = logging.info) -> tuple[str, str]:
  """Prepares the dataset and its statistics (idempotent; one process per data_dir at a
  time); returns both paths. `say` prints the few console lines."""
  with _one_at_a_time(config, say):
    directory = sources.prepare(config, say)
    stats = statistics.stats_path(config)
    if os.path.exists(stats):
      logging.info('Statistics already cached: %s', stats)
    else:
      say('Computing the mean image and colour PCA over the training images (one pass)...')
      stats = statistics.compute_stats(config)
  return directory, stats


def ready(config) -> statistics.DataStats:
  """A run's start-up: makes sure the data `config` reads exists; returns its statistics.

  The 'synthetic' source is prepared here (seconds); any other must have been prepared
  by the command, or this raises `sources.DataMissingError` saying what to run. After it,
  the pipelines only read.
  """
  if sources.get(config).generated_on_first_use:
    prepare(config)
  sources.dataset_info(config)  # Missing data: say so before the statistics.
  sources.check_source_unchanged(config)
  return statistics.load_stats(config)


def _say(line: str) -> None:
  print(line, flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/ilsvrc2012.py')
  with contextlib.suppress(OSError):  # An unwritable data_dir: the log stays on stderr.
    _say(f'Log: {command_line.log_to_file(os.path.join(datasets.data_dir(config), "logs"))}')
  # Ctrl-C, and a scheduler's SIGTERM, stop the conversion at once, resumable; set
  # explicitly, as a shell starting a command in the background makes it ignore SIGINT.
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.default_int_handler)
  try:
    directory, stats = prepare(config, _say)
  except KeyboardInterrupt:
    print('Interrupted: the units converted so far are kept; rerun the same command to '
          'convert the rest.', file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGINT)
  for line in datasets.split_summaries(sources.dataset_info(config), config.data.image_size):
    _say(line)
  _say(f'Dataset: {directory}\nMean image and PCA: {stats}')


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Your config file (the one you train '
                                  'with), e.g. configs/ilsvrc2012.py.', lock_config=True)
  command_line.run(main)
