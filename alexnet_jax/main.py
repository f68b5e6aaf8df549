"""Command line: train (or resume) a net, or evaluate saved ones.

  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/alexnet
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/no_lrn \
      --config.model.lrn=False
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/alexnet \
      --config.eval.only=True
  python -m alexnet_jax.main --workdir=runs/alexnet    # resume with the saved config

A rerun on a workdir resumes it, and refuses a config that would change the experiment
(saved_config.py) unless --allow_config_changes. Without --config, the workdir's saved
config is used (configs/saved_run.py).

Several processes (launch/: SLURM, Cloud TPU pod slices, several on one machine) join
one job at start-up (runtime/distributed.py). Only parses flags and calls the library
(training/train.py, training/evaluate_saved.py), which checks the config.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from alexnet_jax.run import saved_config, workdir as workdirs
from alexnet_jax.runtime import command_line, distributed, errors
from alexnet_jax.training import evaluate_saved, sharding, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard events and results go.')
flags.mark_flags_as_required(['workdir'])
flags.DEFINE_bool('allow_config_changes', False, 'Resume a workdir although the config '
                  'changes fields that change the experiment (the net, data, recipe).')
# Multi-process jobs (runtime/distributed.py says where each fact comes from when not given).
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, where the '
                    'processes meet; default $JAX_COORDINATOR_ADDRESS or detected.')
flags.DEFINE_integer('num_processes', None, 'Processes in the job; default '
                     '$JAX_NUM_PROCESSES, SLURM_NTASKS, or detected with --distributed.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1; default '
                     '$JAX_PROCESS_ID, $JOB_COMPLETION_INDEX, SLURM_PROCID or detected.')
flags.DEFINE_bool('distributed', None, 'True: always call jax.distributed.initialize, '
                  'detecting what is not given (Cloud TPU pod slices need this); False: '
                  'never; unset: when the flags or environment say there are several '
                  'processes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  if config is not None:
    try:
      config.get('seed')  # config_flags raises a config file's failure at the first use.
    except OSError as e:
      raise errors.UserError(str(e).split('failure to load: ', 1)[-1]) from e
  if config is None:
    raise errors.UserError(f'--workdir={FLAGS.workdir} holds no run to resume, so --config '
                           'is required to start one, e.g. --config=configs/ilsvrc2012.py')
  workdir = os.path.abspath(os.path.expanduser(FLAGS.workdir))
  command_line.log_to_file(workdirs.Workdir(workdir).logs)
  logging.info('Config:\n%s', config)
  if config.host_devices > 0:  # Before JAX starts its backends; per process.
    sharding.use_host_devices(config.host_devices)
  distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                         num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                         distributed=FLAGS.distributed)  # Before any JAX computation.
  if config.eval.only:
    evaluate_saved.evaluate_saved(config, workdir)
  else:
    # Non-zero after a preemption or Ctrl-C (saved): the scheduler may requeue the command.
    sys.exit(train.train_and_evaluate(config, workdir, FLAGS.allow_config_changes)['exit_code'])


if __name__ == '__main__':
  command_line.run(main, saved_config.argv_with_saved_config(sys.argv))
