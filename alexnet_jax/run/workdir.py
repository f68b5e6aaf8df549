"""A run's workdir: where each of its files is, and its checkpoints read back.

    WORKDIR/
      checkpoints/        Orbax checkpoints, one folder per saved step (checkpointing.py)
      checkpoints_damaged/  steps found damaged, moved aside, never deleted
      config.json         the config the run was started with (saved_config.py)
      results.json        the run's evaluations and training losses, rewritten as it goes
      eval_results.json   an evaluation of saved checkpoints (eval.only), and its config in
      eval_config.json
      tensorboard/        TensorBoard events
      logs/               the library's log and tracebacks (the console has the rest)
      run.lock            who holds the workdir now (workdir_lock.py)

`Workdir.restore` is the one way to read a checkpoint back: the latest intact step, the
best by validation error, or a given step, placed on whatever mesh the caller's abstract
state describes (not necessarily the one that saved it).
"""

import json
import os
from typing import Any, Callable

import jax
import ml_collections

from alexnet_jax.run import checkpointing
from alexnet_jax.runtime import errors

CHECKPOINTS = 'checkpoints'
RESULTS = 'results.json'


class Workdir:
  """A run's folder (the path need not exist yet)."""

  def __init__(self, path: str):
    self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))

  def __repr__(self) -> str:
    return f'Workdir({self.path!r})'

  def file(self, name: str) -> str:
    """The path of `name` in the workdir."""
    return os.path.join(self.path, name)

  @property
  def checkpoints(self) -> str:
    return self.file(CHECKPOINTS)

  @property
  def results(self) -> str:
    return self.file(RESULTS)

  @property
  def tensorboard(self) -> str:
    return self.file('tensorboard')

  @property
  def logs(self) -> str:
    return self.file('logs')

  def create(self) -> 'Workdir':
    """Creates the folder, failing in one paragraph if this user cannot."""
    try:
      os.makedirs(self.path, exist_ok=True)
    except OSError as e:
      raise errors.NotWritableError(f'Cannot write to --workdir={self.path}: {e}. Choose a '
                                    'directory this user can create and write.') from e
    return self

  def has_checkpoint(self) -> bool:
    """Whether a finished checkpoint is there (read without creating anything)."""
    if not os.path.isdir(self.checkpoints):
      return False
    ckpt = self.checkpointer(read_only=True)
    try:
      return ckpt.latest_step() is not None
    finally:
      ckpt.close()

  def checkpointer(self, config: ml_collections.ConfigDict | None = None, *,
                   read_only: bool = False) -> checkpointing.Checkpointer:
    """The checkpoints, opened (config.checkpoint's retention and saving when given)."""
    if config is None:
      return checkpointing.Checkpointer(self.checkpoints, read_only=read_only)
    return checkpointing.Checkpointer.from_config(config, self.checkpoints,
                                                  read_only=read_only)

  def write_json(self, name: str, payload: dict) -> None:
    """Writes `name` (process 0 only), replacing it whole: never a half-written file."""
    if jax.process_index() != 0:
      return
    path = self.file(name)
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
      json.dump(payload, f, indent=2)
    os.replace(tmp, path)

  def restore(self, abstract_state: Any, which: str | int = 'latest', *,
              ckpt: checkpointing.Checkpointer | None = None,
              say: Callable[[str], None] | None = None) -> tuple[Any, dict]:
    """(state, meta) of one checkpoint, placed as `abstract_state` says.

    Args:
      abstract_state: the state's jax.ShapeDtypeStruct tree with this mesh's shardings
        (train_step.abstract_train_state).
      which: 'latest' (the newest intact step; damaged ones are passed over and named),
        'best' (the lowest validation error kept, else the latest) or a step number.
      ckpt: an open Checkpointer of these checkpoints to use (a training run's, which may
        set damaged steps aside); else they are opened read-only for this call.
      say: where a note about damaged steps passed over goes (default: stderr).

    Raises a UserError naming the workdir when there is nothing to restore.
    """
    if not os.path.isdir(self.checkpoints):
      raise errors.UserError(f'{self.checkpoints} does not exist: {self.path} holds no '
                             'training run (python -m alexnet_jax.main --workdir=... '
                             'writes one).')
    own = ckpt is None
    ckpt = ckpt or self.checkpointer(read_only=True)
    try:
      step = ckpt.best_step() if which == 'best' else None if which == 'latest' else which
      if step is not None and not isinstance(step, int):
        raise ValueError(f"which={which!r}: expected 'latest', 'best' or a step number.")
      try:
        return ckpt.restore(step, abstract_state, **({'say': say} if say else {}))
      except FileNotFoundError as e:
        raise errors.UserError(
            f'{e} Give one of those steps, or -1 for the latest: --config.eval.checkpoint_step '
            'for main.py (eval.only) and predict, --step for the experiments.') from e
    finally:
      if own:
        ckpt.close()
