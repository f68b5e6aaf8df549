"""Command: prepare a config's data once, then cache its training-set mean image and PCA.

  python -m alexnet_jax.data.prepare --config=configs/ilsvrc2012.py \
      [--config.data.manual_dir=/path/to/tars] [--config.data.data_dir=...]

Builds the dataset the config reads (sources.prepare: resumable, logs progress and an
ETA; run it again after an interruption and it continues), then makes one pass over the
training split for the §2 mean image and the §4.1 RGB PCA (pipeline.compute_stats),
cached beside the data. Pass the same `--config.data.*` overrides as for training.
"""

import os

from absl import app
from absl import logging
from ml_collections import config_flags

from alexnet_jax.data import pipeline
from alexnet_jax.data import sources
from alexnet_jax.data import statistics

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file.',
                                          lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/ilsvrc2012.py')
  directory = sources.prepare(config)
  stats = statistics.stats_path(config)
  if os.path.exists(stats):
    logging.info('Statistics already cached: %s', stats)
  else:
    stats = pipeline.compute_stats(config)
  info = sources.dataset_info(config)
  for split, split_info in info.splits.items():
    skipped = info.metadata.get('skipped_files', {}).get(split, [])
    print(f'{split}: {split_info.num_examples} examples'
          + (f', {len(skipped)} undecodable files skipped: {skipped[:10]}' if skipped
             else ''))
  print(f'Dataset: {directory}\nMean image and PCA: {stats}')


if __name__ == '__main__':
  app.run(main)
