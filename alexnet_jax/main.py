"""Command line: train (or resume) a net, or evaluate saved ones.

  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/alexnet
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/no_lrn \
      --config.model.lrn=False
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/alexnet \
      --config.eval.only=True

Only parses flags and calls the library (train.py).
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events and results go.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  if config.host_devices > 0:  # Before JAX starts its backends.
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', config.host_devices)
  logging.info('Config:\n%s', config)
  if config.eval.only:
    train.evaluate_checkpoints(config, FLAGS.workdir)
  else:
    train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
