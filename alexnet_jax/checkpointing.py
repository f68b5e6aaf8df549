"""Orbax checkpoints of the train state and JSON metadata.

One checkpoint per saved step, in `<directory>/<step>/`:

  state/  the train-state pytree (parameters, optimizer state, step, RNG, LR factor)
  meta/   a JSON dict chosen by the caller (epoch, plateau schedule state, ...)
  metrics/ the validation top-1 error, which ranks checkpoints for `keep_best`

The data position needs no item of its own: the input stream is a function of the step
(pipeline.create_train_iterator's `start_batch`), so a checkpoint restores onto any
number of processes, devices or Grain workers.

Saving is asynchronous: `save()` returns once the arrays are copied off the devices (the
caller may then donate or overwrite them); the files are written in the background.
Orbax writes each step into `<step>.orbax-checkpoint-tmp/` and renames it to `<step>/`
only once everything is on disk, so a kill at any moment leaves either a finished
checkpoint or a temporary directory that is ignored (and removed when the next
Checkpointer opens the directory). Retention keeps the last `keep` checkpoints
plus the one with the lowest validation error.

Typical use in a training loop:

    ckpt = Checkpointer(workdir / 'checkpoints', keep=3, keep_best=True, async_save=True)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(None, abstract_state)
    ...
    ckpt.save(step, state, meta={'epoch': e}, val_top1_error=err)
    ...
    ckpt.close()  # Waits for the last save.
"""

import json
import os
import uuid
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from alexnet_jax.runtime import errors

_VAL_ERROR = 'val_top1_error'


def _val_error(metrics) -> float:
  # Checkpoints saved without an evaluation carry empty metrics: never the best.
  return metrics.get(_VAL_ERROR, float('inf'))


def _path_name(path) -> str:
  """'params/conv1/kernel' for a pytree key path (dict keys, attributes, indices)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


def _shape(leaf) -> tuple | None:
  """An array's (or array metadata's) shape; None for PRNG keys, stored as raw key data."""
  if jax.dtypes.issubdtype(getattr(leaf, 'dtype', None), jax.dtypes.prng_key):
    return None
  return tuple(getattr(leaf, 'shape', ()))  # Python scalars: ()


def _shapes(tree) -> dict[str, tuple | None]:
  """Leaf name -> shape."""
  return {_path_name(path): _shape(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_writable(directory: epath.Path):
  """Fails early, naming the directory, if checkpoints cannot be written there."""
  probe = directory / f'.write_test_{uuid.uuid4().hex}'
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise errors.NotWritableError(
        f'Cannot write checkpoints to {directory}: {e}. Choose a --workdir that this '
        'user can create and write (or fix its permissions).') from e


class Checkpointer:
  """Saves and restores train state + metadata with Orbax."""

  def __init__(self, directory, *, keep: int = 3, keep_best: bool = True,
               async_save: bool = True, read_only: bool = False):
    """Opens (creating it unless read_only) a checkpoint directory.

    Args:
      directory: where the step directories go (a local path or any etils.epath path).
      keep: how many of the latest checkpoints to keep.
      keep_best: also keep the checkpoint with the lowest validation top-1 error.
      async_save: write in a background thread (`save()` returns early).
      read_only: only restore (e.g. evaluating another run's checkpoints).
    """
    if keep < 1:
      raise ValueError(f'config.checkpoint.keep={keep}: keep at least 1 checkpoint.')
    self.directory = epath.Path(os.path.expanduser(os.fspath(directory)))
    if not read_only:
      _check_writable(self.directory)
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_best:
      # BestN keeps the last n after sorting by metric, descending for errors.
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=_val_error, reverse=True, n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        # best_fn makes orbax store the metrics with each step (and rank by them).
        best_fn=_val_error if keep_best else None,
        best_mode='min',
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only,  # Unfinished saves of a killed run.
        read_only=read_only,
        create=not read_only)
    self._keep_best = keep_best
    # Registering every item up front lets a fresh manager read a step's metadata.
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, save_args, restore_args in [
        ('state', ocp.args.StandardSave, ocp.args.StandardRestore),
        ('meta', ocp.args.JsonSave, ocp.args.JsonRestore)]:
      registry.add(item, save_args)
      registry.add(item, restore_args)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=registry)

  @classmethod
  def from_config(cls, config, directory, read_only: bool = False) -> 'Checkpointer':
    """From config.checkpoint.{keep, keep_best, async_save}."""
    c = config.checkpoint
    return cls(directory, keep=c.keep, keep_best=c.keep_best, async_save=c.async_save,
               read_only=read_only)

  def save(self, step: int, state: Any, meta: dict | None = None,
           val_top1_error: float | None = None):
    """Starts saving one checkpoint (waits for the previous save first).

    Call it on every process with the same arguments.

    Args:
      step: the step number (the number of updates done); must not exist yet.
      state: a pytree of jax.Arrays (may be donated once this returns).
      meta: a JSON-able dict returned by `restore()`.
      val_top1_error: the validation error at this step, ranking it for `keep_best`.
    """
    meta = meta or {}
    try:  # Here, not in the background thread where the save would fail later.
      json.dumps(meta)
    except TypeError as e:
      raise TypeError(f'Checkpointer.save(meta=...) must be JSON-able (Python numbers, '
                      f'strings, lists, dicts; convert numpy/jax scalars with float()): {e}.'
                      ) from e
    items = {'state': ocp.args.StandardSave(state), 'meta': ocp.args.JsonSave(meta)}
    metrics = {} if val_top1_error is None else {_VAL_ERROR: float(val_top1_error)}
    # force: the training loop, not Orbax's save interval, decides when to save.
    self._manager.save(step, args=ocp.args.Composite(**items),
                       metrics=metrics if self._keep_best else None, force=True)

  def latest_step(self) -> int | None:
    """The newest finished checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the lowest validation error (the latest one if none has one)."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    """All finished checkpoint steps, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int | None, abstract_state: Any):
    """Restores a checkpoint onto the shardings given in `abstract_state`.

    Args:
      step: which step; None for the latest.
      abstract_state: the pytree of jax.ShapeDtypeStruct (with `sharding`) the state
        should have now, e.g. `jax.eval_shape` of the init function with the current
        mesh's shardings attached. The checkpoint may come from another mesh.

    Returns:
      (state, meta): the restored pytree of jax.Arrays and the saved meta dict.

    Raises:
      FileNotFoundError: no such (finished) checkpoint.
      ValueError: the checkpoint's shapes or parameters differ from `abstract_state`.
    """
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
    if step is None or step not in steps:
      raise FileNotFoundError(
          f'No finished checkpoint for step {step} in {self.directory} '
          f'(available: {steps or "none"}).')
    unplaced = [_path_name(path) for path, leaf
                in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
                if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None]
    if unplaced:
      raise ValueError(
          f'abstract_state {unplaced[0]!r} has no sharding: build it as jax.ShapeDtypeStruct('
          'shape, dtype, sharding=...) on the current mesh, so that the checkpoint is '
          'restored where this run keeps its state.')
    saved = self._manager.item_metadata(step)
    self._check_matches(step, saved['state'].tree, abstract_state)
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], restored['meta']

  def _check_matches(self, step: int, saved_tree, abstract_state):
    """Raises, naming the entries, if the checkpoint's shapes differ from the wanted ones."""
    saved, wanted = _shapes(saved_tree), _shapes(abstract_state)
    problems = []
    # Shorter paths first: the parameters before their copies in the optimizer state.
    for name in sorted(saved.keys() | wanted.keys(), key=lambda n: (n.count('/'), n)):
      if name not in saved:
        problems.append(f'{name!r} is missing there but the current model has it')
      elif name not in wanted:
        problems.append(f'{name!r} is there but the current model lacks it')
      elif wanted[name] is not None and saved[name] != wanted[name]:
        problems.append(f'{name!r} has shape {saved[name]} there but {wanted[name]} in the '
                        'current model')
    if problems:
      more = f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''
      raise ValueError(
          f'Checkpoint {self.directory / str(step)} does not fit the current model: '
          f'{"; ".join(problems[:3])}{more}. The current config differs from the one '
          'this checkpoint was saved with (compare with the config saved in the '
          'workdir), or use another --workdir.')

  def wait_until_finished(self):
    """Blocks until the pending asynchronous save (if any) is on disk."""
    self._manager.wait_until_finished()

  def close(self):
    """Waits for pending saves and releases the manager."""
    self._manager.close()
