"""Trained nets read back: a run's checkpoint, an ensemble's, or a complete pretrained net.

Every reader of a saved net goes through here (evaluation, predict, the experiments, the
tests), and here through `Workdir.restore`: the checkpoint is placed on the caller's mesh,
whatever mesh saved it.
"""

import dataclasses
from typing import Any, Callable

import ml_collections
from jax.sharding import Mesh

from alexnet_jax.nn import model
from alexnet_jax.run import workdir as workdirs
from alexnet_jax.training import inputs, sharding, train_step
from alexnet_jax.weights import pretrained


@dataclasses.dataclass
class Restored:
  """One checkpoint of a run, on a mesh."""
  net: Any
  mesh: Mesh
  state: train_step.TrainState
  meta: dict

  @property
  def params(self):
    return self.state.params

  @property
  def step(self) -> int:
    return int(self.state.step)


def restore(config: ml_collections.ConfigDict, workdir: str, which: str | int = 'latest',
            mesh: Mesh | None = None) -> Restored:
  """The checkpoint `which` ('latest', 'best' or a step) of the run in `workdir`, on `mesh`
  (default: config.mesh over all devices)."""
  mesh = mesh or sharding.make_mesh(config)
  net = model.create_model(config, mesh)
  state, meta = workdirs.Workdir(workdir).restore(
      train_step.abstract_train_state(config, net, mesh), which)
  return Restored(net, mesh, state, meta)


def pretrained_start(config: ml_collections.ConfigDict, workdir: str | None, net,
                     mesh: Mesh) -> pretrained.Pretrained | None:
  """The weights a fresh run starts from (model.pretrained), read and checked before the
  data is prepared; None without them, or when workdir has a checkpoint to resume."""
  if not config.model.pretrained or (workdir and workdirs.Workdir(workdir).has_checkpoint()):
    return None
  start = pretrained.load(config, train_step.abstract_train_state(config, net, mesh).params)
  inputs.say(start.summary())
  return start


def nets_to_evaluate(config: ml_collections.ConfigDict, workdir: str | None, net,
                     mesh: Mesh, ensemble: list[str]) -> Callable[[], tuple[list, list[str]]]:
  """The trained nets to evaluate: checked now, restored when the returned function is
  called; it returns (params of each net, where each came from).

  Each ensemble workdir gives its best checkpoint by validation error (else its latest);
  without an ensemble, `workdir` gives eval.checkpoint_step (-1: the latest), or, when it
  has no checkpoint, the complete pretrained net of model.pretrained.
  """
  start = None if ensemble else pretrained_start(config, workdir, net, mesh)
  if start is not None and start.fresh:
    raise pretrained.PretrainedError(
        f'{start.path} lacks {", ".join(start.fresh)}, and {workdir} has no checkpoint: '
        'evaluating it would score freshly initialised layers. Fine-tune it first.')

  def read() -> tuple[list, list[str]]:
    if start is not None:
      fresh = train_step.create_train_state(config, net, mesh).params
      return [pretrained.into(fresh, start)], [start.path]
    step = config.eval.checkpoint_step
    which = 'best' if ensemble else 'latest' if step < 0 else step
    params_list, where = [], []
    for directory in ensemble or [workdir]:
      restored = restore(config, directory, which, mesh)
      params_list.append(restored.params)
      where.append(f'{directory} step {restored.step}')
    return params_list, where

  return read
