"""Preparing a config's data, once: the dataset, then its mean image and PCA. A command too.

  python -m alexnet_jax.data.prepare --config=configs/ilsvrc2012.py \
      [--config.data.manual_dir=/path/to/tars] [--config.data.data_dir=...]

`prepare` builds the dataset the config reads (sources.prepare: resumable, logs progress
and an ETA; run it again after an interruption and it continues), then makes one pass
over the training split for the §2 mean image and the §4.1 RGB PCA
(statistics.compute_stats), cached beside the data. Both steps are no-ops once done.
Pass the same `--config.data.*` overrides as for training.

`ready` is the start-up step of a run: the 'synthetic' source is prepared on the spot
(seconds); any other must have been prepared by the command, or it raises
`sources.DataMissingError` saying what to run. After it, the pipelines (pipeline.py) only
read.
"""

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from alexnet_jax.data import sources, statistics
from alexnet_jax.runtime import command_line


def prepare(config) -> tuple[str, str]:
  """Prepares the dataset and its statistics (idempotent); returns both paths."""
  directory = sources.prepare(config)
  stats = statistics.stats_path(config)
  if os.path.exists(stats):
    logging.info('Statistics already cached: %s', stats)
  else:
    stats = statistics.compute_stats(config)
  return directory, stats


def ready(config) -> statistics.DataStats:
  """Start-up: makes sure the data `config` reads exists; returns its statistics."""
  if sources.get(config).generated_on_first_use:
    prepare(config)
  sources.dataset_info(config)  # Missing data: say so before the statistics.
  sources.check_source_unchanged(config)
  return statistics.load_stats(config)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/ilsvrc2012.py')
  # Ctrl-C, and a scheduler's SIGTERM, stop the conversion at once, resumable; set
  # explicitly, as a shell starting a command in the background makes it ignore SIGINT.
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.default_int_handler)
  try:
    directory, stats = prepare(config)
  except KeyboardInterrupt:
    print('Interrupted: the units converted so far are kept; rerun the same command to '
          'convert the rest.', file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGINT)
  info = sources.dataset_info(config)
  for split, split_info in info.splits.items():
    skipped = info.metadata.get('skipped_files', {}).get(split, [])
    sides = info.metadata.get('source_shorter_side', {}).get(split)
    print(f'{split}: {split_info.num_examples} examples'
          + (f", source images' shorter side {sides['min']}..{sides['max']} px (median "
             f"{sides['median']}), stored at {config.data.image_size}x"
             f'{config.data.image_size}' if sides else '')
          + (f', {len(skipped)} undecodable files skipped: {skipped[:10]}' if skipped
             else ''))
  print(f'Dataset: {directory}\nMean image and PCA: {stats}')


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Training config file.', lock_config=True)
  command_line.run(main)
