"""A trained net from a run's workdir: the flags the experiments share, and the restore.

One job: turn `--workdir` (with the run's saved config, or `--config` and overrides) and
`--step` into the net, its mesh and the parameters of one checkpoint, read through the
project's checkpointing (any mesh can read any checkpoint), and say where the experiment
writes (`--out_dir`, default WORKDIR/figures).
"""

import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from alexnet_jax import checkpointing, model, sharding, train_step
from alexnet_jax.runtime import errors

FLAGS = flags.FLAGS


def define_flags() -> None:
  """--config, --workdir, --step, --out_dir; call it in a command's `__main__` block."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file (configs/*.py[:arg]); default: the one saved in --workdir.',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run to read (python -m alexnet_jax.main '
                      '--workdir=...).')
  flags.mark_flags_as_required(['workdir'])
  flags.DEFINE_integer('step', -1, 'Which checkpoint; -1: the latest.')
  flags.DEFINE_string('out_dir', '', 'Where the figure and its numbers go; default '
                      'WORKDIR/figures.')


def config_from_flags() -> ml_collections.ConfigDict:
  """--config, which the command fills from the workdir when it is left out."""
  if FLAGS.config is None:
    raise errors.UserError(f'--workdir={FLAGS.workdir} holds no config.json: give the '
                           'workdir of a training run, or its config with --config=...')
  return FLAGS.config


def start_devices(config: ml_collections.ConfigDict) -> None:
  """Forces config.host_devices CPU devices (as the run did); call before JAX starts."""
  if config.host_devices > 0:
    sharding.use_host_devices(config.host_devices)


def out_dir(workdir: str, given: str) -> str:
  """The directory to write to (created): `given`, or WORKDIR/figures."""
  path = os.path.expanduser(given) if given else os.path.join(
      os.path.expanduser(workdir), 'figures')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise errors.NotWritableError(f'Cannot write to {path}: {e}. Give --out_dir=<a '
                                  'directory this user can write>.') from e
  return path


def restore(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
  """(net, mesh, params, step): the checkpoint `step` (None: the latest) of the run in
  `workdir`, its parameters placed on the mesh of `config` (config.mesh, all devices)."""
  directory = os.path.join(os.path.expanduser(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise errors.UserError(f'{directory} does not exist: --workdir={workdir} is not a '
                           'training run (python -m alexnet_jax.main --workdir=... '
                           'writes one).')
  mesh = sharding.make_mesh(config)
  net = model.create_model(config)
  ckpt = checkpointing.Checkpointer(directory, read_only=True)
  try:
    state, _ = ckpt.restore(step, train_step.abstract_train_state(config, net, mesh))
  except FileNotFoundError as e:
    raise errors.UserError(f'{e} Give --step=<one of them>, or -1 for the latest.') from e
  finally:
    ckpt.close()
  return net, mesh, state.params, int(state.step)
