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

Verified: once a save is complete, `<step>/digest.json` records every file's size and
checksum. A restore first compares the files with it, so a cut, overwritten or
bit-flipped file is never loaded. Without a step number, restore takes the newest intact
step and says which damaged steps it passed over and why; a training run (not read-only)
moves those to `<directory>_damaged/` so that its next saves cannot collide with them,
and deletes nothing. A step without a digest (saved by an older version, or killed in the
second between its rename and its digest) is unverified: it is used when it restores
whole and finite. A save that fails in the background (a full disk) is reported by
`check()`, which the training loop calls at every step, and by the next `save()`.

Typical use in a training loop:

    ckpt = Checkpointer(workdir / 'checkpoints', keep=3, keep_best=True, async_save=True)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(None, abstract_state)
    ...
    ckpt.save(step, state, meta={'epoch': e}, val_top1_error=err)
    ...
    ckpt.close()  # Waits for the last save.
"""

import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from typing import Any, Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from alexnet_jax.runtime import errors

_VAL_ERROR = 'val_top1_error'
DIGEST = 'digest.json'
_UNVERIFIED = 'unverified'


class CheckpointDamagedError(errors.UserError, ValueError):
  """A checkpoint's files are not those that were saved, or none is left intact."""


class ModelMismatchError(errors.UserError, ValueError):
  """A checkpoint's arrays do not fit the current model (the config differs)."""


class CheckpointSaveError(errors.UserError, OSError):
  """A checkpoint could not be written (a full disk, a lost mount, permissions)."""


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


def _files(directory: epath.Path):
  """Every file under directory but the digest (epath has no recursive glob on GCS)."""
  for path in directory.iterdir():
    if path.is_dir():
      yield from _files(path)
    elif path.name != DIGEST:
      yield path


def _file_digests(step_dir: epath.Path) -> dict[str, list]:
  """Relative path -> [size, blake2b] of every file in a step's directory but the digest."""
  out = {}
  for path in sorted(_files(step_dir)):
    h, size = hashlib.blake2b(digest_size=16), 0
    with path.open('rb') as f:
      for chunk in iter(lambda: f.read(1 << 22), b''):
        h.update(chunk)
        size += len(chunk)
    out[str(path.relative_to(step_dir))] = [size, h.hexdigest()]
  return out


def _compare(saved: dict[str, list], now: dict[str, list]) -> str | None:
  """What differs between a step's recorded digests and its files now; None if nothing."""
  for name, (size, digest) in saved.items():
    if name not in now:
      return f'its file {name} is missing'
    if now[name][0] != size:
      return f'its file {name} has {now[name][0]} bytes where {size} were saved'
    if now[name][1] != digest:
      return f'its file {name} no longer matches the checksum taken when it was saved'
  return None


_OS_ERROR = re.compile(r"([^:]+) \[os_error_code='(\d+)'\]")  # How tensorstore says it.


def _cause(error: Exception) -> str:
  """The operating system's words for a failed write, else the error's first line."""
  found = _OS_ERROR.search(str(error))
  if found:
    return f'{found.group(1).strip()}, errno {found.group(2)}'
  if isinstance(error, OSError) and error.strerror:
    return f'{error.strerror}, errno {error.errno}'
  return f'{type(error).__name__}: ' + (str(error).strip().splitlines() or [''])[0][:300]


def _unreadable(error: Exception) -> str:
  first = (str(error).strip().splitlines() or [''])[0][:200]
  return f'it could not be read: {type(error).__name__} {first}'.strip()


def _finite(tree) -> bool:
  """Whether every float array in tree is finite (leaf by leaf: they may sit on different
  meshes)."""
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(x.dtype, jnp.inexact))


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
    self._read_only = read_only
    self._async = async_save
    self._finisher = None  # Waits for the pending save, then writes its digest.
    self._failure = None  # What failed in the pending save, once something has.

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
    self._join_finisher()
    self.check()
    try:
      # force: the training loop, not Orbax's save interval, decides when to save.
      self._manager.save(step, args=ocp.args.Composite(**items),
                         metrics=metrics if self._keep_best else None, force=True)
    except (OSError, ValueError) as e:
      # A synchronous save writes here; tensorstore reports a failed write as a ValueError
      # naming the OS error. Anything else is a defect, raised as it is.
      if not isinstance(e, OSError) and not _OS_ERROR.search(str(e)):
        raise
      self._failure = self._save_error(step, e)
      self.check()
    self._finisher = threading.Thread(target=self._finish, args=(step,), daemon=True,
                                      name=f'checkpoint-{step}-finisher')
    self._finisher.start()
    if not self._async:
      self._join_finisher()
      self.check()

  def _finish(self, step: int) -> None:
    """In the background: waits for step's save to complete, then writes its digest."""
    try:
      self._manager.wait_until_finished()  # Raises what failed in Orbax's writers.
    except Exception as e:  # pylint: disable=broad-except
      self._failure = self._save_error(step, e)
      return
    try:
      if jax.process_index() == 0:
        step_dir = self.directory / str(step)
        tmp = step_dir / f'{DIGEST}.{uuid.uuid4().hex}.tmp'
        tmp.write_text(json.dumps(_file_digests(step_dir)))
        tmp.rename(step_dir / DIGEST)
    except OSError as e:
      self._failure = self._save_error(step, e)
    except Exception as e:  # pylint: disable=broad-except
      self._failure = e  # A defect here, raised as it is by check().

  def _join_finisher(self) -> None:
    if self._finisher is not None:
      self._finisher.join()
      self._finisher = None

  def _save_error(self, step: int, cause: Exception) -> 'CheckpointSaveError':
    try:
      free = f'{shutil.disk_usage(self.directory).free / 1e9:.2f} GB free there now'
    except OSError:
      free = 'its free space unknown'
    last = [s for s in self.all_steps() if s != step]
    return CheckpointSaveError(
        f'Saving the checkpoint of step {step} to {self.directory} failed '
        f'({_cause(cause)}; {free}). The run stopped '
        f'there. The last complete checkpoint is '
        + (f'step {last[-1]}' if last else 'none (the run starts afresh)')
        + '. Free some space (or give --workdir on a disk with room), then rerun the same '
        'command to resume from it.')

  def check(self) -> None:
    """Raises CheckpointSaveError if a save has failed (in the background or not).

    Cheap (no waiting): the training loop calls it at every step."""
    if self._failure is not None:
      raise self._failure

  def latest_step(self) -> int | None:
    """The newest finished checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the lowest validation error (the latest one if none has one)."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    """All finished checkpoint steps, ascending."""
    return sorted(self._manager.all_steps())

  def verify(self, step: int) -> str | None:
    """Why `step`'s files differ from its digest (None: intact; 'unverified': no digest)."""
    step_dir = self.directory / str(step)
    try:
      recorded = json.loads((step_dir / DIGEST).read_text())
    except FileNotFoundError:
      return _UNVERIFIED if step_dir.exists() else 'it is missing'
    except (OSError, ValueError) as e:
      return f'its {DIGEST} is unreadable: {e}'
    return _compare(recorded, _file_digests(step_dir))

  def restore(self, step: int | None, abstract_state: Any,
              say: Callable[[str], None] = _warn):
    """Restores a checkpoint onto the shardings given in `abstract_state`.

    Args:
      step: which step; None for the newest intact one (see the module docstring).
      abstract_state: the pytree of jax.ShapeDtypeStruct (with `sharding`) the state
        should have now, e.g. `jax.eval_shape` of the init function with the current
        mesh's shardings attached. The checkpoint may come from another mesh.
      say: where the paragraph about damaged steps passed over goes.

    Returns:
      (state, meta): the restored pytree of jax.Arrays and the saved meta dict.

    Raises:
      FileNotFoundError: no such (finished) checkpoint.
      CheckpointDamagedError: the step asked for is damaged, or no step is intact.
      ValueError: the checkpoint's shapes or parameters differ from `abstract_state`.
    """
    unplaced = [_path_name(path) for path, leaf
                in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
                if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None]
    if unplaced:
      raise ValueError(
          f'abstract_state {unplaced[0]!r} has no sharding: build it as jax.ShapeDtypeStruct('
          'shape, dtype, sharding=...) on the current mesh, so that the checkpoint is '
          'restored where this run keeps its state.')
    steps = self.all_steps()
    if step is not None and step not in steps:
      raise FileNotFoundError(
          f'No finished checkpoint for step {step} in {self.directory} '
          f'(available: {steps or "none"}).')
    if not steps:
      raise FileNotFoundError(f'No finished checkpoint in {self.directory}.')
    return self._first_intact([step] if step is not None else steps[::-1], abstract_state,
                              say, instead=None if step is None else
                              f'give another eval.checkpoint_step (available: {steps})')

  def _first_intact(self, candidates: list[int], abstract_state: Any,
                    say: Callable[[str], None], instead: str | None):
    """(state, meta) of the first of `candidates` that restores whole and finite, saying
    which damaged ones it passed over; raises CheckpointDamagedError if none does."""
    damaged = []
    for candidate in candidates:
      reason = self.verify(candidate)
      if reason not in (None, _UNVERIFIED):
        damaged.append((candidate, reason))
        continue
      try:
        restored = self._restore_step(candidate, abstract_state)
      except ValueError as e:
        if reason is None or isinstance(e, ModelMismatchError):
          raise  # Intact files that do not fit the model: the config differs.
        damaged.append((candidate, _unreadable(e)))
        continue
      except Exception as e:  # pylint: disable=broad-except
        if reason is None:
          raise
        damaged.append((candidate, _unreadable(e)))
        continue
      if not _finite(restored[0]):
        damaged.append((candidate, 'its weights or momentum hold NaN or infinite values'))
        continue
      if damaged:
        say(self._passed_over(damaged, f'step {candidate} is used instead'))
      return restored
    raise CheckpointDamagedError(self._passed_over(
        damaged, instead or 'no intact checkpoint is left: start afresh in another --workdir'))

  def recorded_meta(self) -> tuple[int, dict] | None:
    """(step, meta) of the newest step whose files are intact and whose meta reads; None
    if there is none. Reads no arrays (the run's config is in its meta: train.py)."""
    for step in reversed(self.all_steps()):
      if self.verify(step) in (None, _UNVERIFIED):
        try:
          return step, self._manager.restore(
              step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
        except Exception:  # pylint: disable=broad-except
          continue  # Unverified and unreadable: an older step may do.
    return None

  def _passed_over(self, damaged: list[tuple[int, str]], instead: str) -> str:
    """One paragraph: which steps are damaged and why, where they went, what is used."""
    moved = self._set_aside([s for s, _ in damaged]) if not self._read_only else None
    parts = '; '.join(f'step {s}: {why}' for s, why in damaged)
    kept = (f'They were moved, not deleted, to {moved}: delete them there once you no longer '
            'need them.' if moved else 'They were left in place and not loaded.')
    return (f'Damaged checkpoint{"s" if len(damaged) > 1 else ""} in {self.directory} ({parts})'
            f', so {instead}. {kept}')

  def _set_aside(self, steps: list[int]) -> epath.Path:
    """Moves damaged steps out of Orbax's directory (process 0); returns where to."""
    target = epath.Path(f'{self.directory}_damaged')
    if jax.process_index() == 0:
      target.mkdir(parents=True, exist_ok=True)
      for step in steps:
        (self.directory / str(step)).rename(target / f'{step}_{time.strftime("%Y%m%d-%H%M%S")}')
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('alexnet_jax: damaged checkpoints set aside')
    self._manager.reload()
    return target

  def _restore_step(self, step: int, abstract_state: Any):
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
      raise ModelMismatchError(
          f'Checkpoint {self.directory / str(step)} does not fit the current model: '
          f'{"; ".join(problems[:3])}{more}. The current config differs from the one '
          'this checkpoint was saved with (compare with the config saved in the '
          'workdir), or use another --workdir.')

  def wait_until_finished(self):
    """Blocks until the pending asynchronous save (if any) is on disk and verified;
    raises CheckpointSaveError if it failed."""
    self._join_finisher()
    self.check()

  def close(self):
    """Waits for pending saves and releases the manager; raises CheckpointSaveError if
    the last save failed (after releasing)."""
    self._join_finisher()
    try:
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      if self._failure is None:
        raise  # Else the failure below says it already.
    self.check()
