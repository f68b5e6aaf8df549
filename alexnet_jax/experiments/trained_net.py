"""A trained net from a run's workdir: the flags the experiments share, and the restore.

One job: turn `--workdir` (with the run's saved config, or `--config` and overrides) and
`--step` into the net, its mesh and the parameters of one checkpoint, read through the
project's checkpointing (any mesh can read any checkpoint), and say where the experiment
writes (`--out_dir`, default WORKDIR/figures). Like training, a command keeps the console
for its own lines and sends the library's log to a file (in the output directory's logs/,
so that a run one may only read can still be studied).
"""

import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from alexnet_jax.run import workdir as workdirs
from alexnet_jax.runtime import command_line, errors
from alexnet_jax.training import preflight, saved_nets, sharding

FLAGS = flags.FLAGS


def define_flags(workdir_required: bool = True) -> None:
  """--config, --workdir, --step, --out_dir; call it in a command's `__main__` block."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file (configs/*.py[:arg]); default: the one saved in --workdir.',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to read (python -m alexnet_jax.main '
                      '--workdir=...).')
  if workdir_required:
    flags.mark_flags_as_required(['workdir'])
  flags.DEFINE_integer('step', -1, 'Which checkpoint; -1: the latest.')
  flags.DEFINE_string('out_dir', '', 'Where the figure and its numbers go; default '
                      'WORKDIR/figures.')


def _out_dir() -> str:
  """The directory the command writes to (created): --out_dir, or WORKDIR/figures."""
  path = os.path.expanduser(FLAGS.out_dir or os.path.join(FLAGS.workdir, 'figures'))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise errors.NotWritableError(f'Cannot write to {path}: {e}. Give --out_dir=<a '
                                  'directory this user can write>.') from e
  return path


def start() -> tuple[ml_collections.ConfigDict, str]:
  """A command's start, before JAX starts: checks --workdir, makes the output directory
  and sends the library's log lines to its logs/ (as training does to WORKDIR/logs),
  forces the CPU devices the run used if it forced any (config.host_devices). Returns
  the config and the output directory."""
  checkpoints = workdirs.Workdir(FLAGS.workdir).checkpoints
  if not os.path.isdir(checkpoints):
    raise errors.UserError(f'{checkpoints} does not exist: --workdir={FLAGS.workdir} is not '
                           'a training run (python -m alexnet_jax.main --workdir=... writes '
                           'one).')
  if FLAGS.config is None:
    raise errors.UserError(f'--workdir={FLAGS.workdir} holds no config.json: give the '
                           "run's config with --config=...")
  preflight.check_config(FLAGS.config)
  out = _out_dir()
  command_line.log_to_file(os.path.join(out, 'logs'))
  if FLAGS.config.host_devices > 0:
    sharding.use_host_devices(FLAGS.config.host_devices)
  return FLAGS.config, out


def restore(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
  """(net, mesh, params, step): the checkpoint `step` (None: the latest) of the run in
  `workdir`, its parameters placed on the mesh of `config` (config.mesh, all devices)."""
  restored = saved_nets.restore(config, workdir, 'latest' if step is None else step)
  return restored.net, restored.mesh, restored.params, restored.step
