"""The training loop: train_and_evaluate(config, workdir), and evaluation of saved nets.

What a run does, in order: check everything that could fail late (mesh, batch, data,
workdir) before any long work; restore the latest checkpoint in workdir, if any, onto the
current mesh (parameters, momentum, step, plateau schedule, data position); train with
the paper's update, logging to the console and TensorBoard; evaluate every epoch (or
`train.eval_every_steps`), letting the paper's plateau rule divide the learning rate (§5)
and drawing the conv1 kernels to TensorBoard (Figure 3); save checkpoints; and finish
with results.json. Rerunning the same command resumes.

With several processes (launch/), every process runs this same loop on its own share of
each batch; only process 0 prints, writes TensorBoard events, config.json and results.json;
all of them write and read each checkpoint. A resume may use another number of processes
and another mesh: the state is restored onto the new mesh, and each process's data stream
restarts at the batch the checkpoint's step had reached (see `_restore_or_create`).
"""

import contextlib
import json
import os
import signal
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.data import pipeline, prepare, sources, statistics
from alexnet_jax.nn import model
from alexnet_jax.run import checkpointing, saved_config, workdir_lock
from alexnet_jax.runtime import chrono, command_line, errors, metric_writer, preemption, watchdog
from alexnet_jax.training import evaluate, preflight, schedules, sharding, train_step
from alexnet_jax.weights import kernel_picture, pretrained


class NonFiniteLossError(errors.UserError, RuntimeError):
  """The training loss became NaN or infinite."""


def _say(message: str) -> None:
  """A console line from process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


def _prepare_workdir(workdir: str) -> None:
  """Creates workdir, failing clearly if it cannot."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.NotWritableError(f'Cannot write to --workdir={workdir}: {e}. Choose a '
                                  'directory this user can create and write.') from e


def _ready_data(config: ml_collections.ConfigDict) -> None:
  """Prepares, then reads: the data and its statistics exist after this, or it raised.

  A 'synthetic' source and its statistics are written on first use: processes sharing a
  disk must not write them at once, so the others wait until process 0 has.
  """
  if jax.process_index() == 0:
    if config.data.source == 'synthetic' and not sources.is_prepared(config):
      _say(f'Generating the synthetic data, once, in {config.data.data_dir}...')
    prepare.ready(config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('alexnet_jax: data ready')


def _steps(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(steps per epoch, total steps, steps between evaluations); fails if data is missing."""
  num_train = pipeline.num_examples(config, config.data.train_split)
  steps_per_epoch = max(1, num_train // config.train.batch_size)
  total = config.train.num_steps
  if total <= 0:
    total = int(np.ceil(config.train.num_epochs * steps_per_epoch))
  eval_every = config.train.eval_every_steps
  if eval_every <= 0:
    eval_every = steps_per_epoch
  return steps_per_epoch, total, eval_every


def _replicated(mesh: Mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _device_stats(config: ml_collections.ConfigDict, mesh: Mesh):
  stats = statistics.load_stats(config)
  return _replicated(mesh, jax.tree.map(lambda x: np.asarray(x, np.float32), stats))


def _eval_batches(config: ml_collections.ConfigDict, mesh: Mesh):
  index, count = sharding.data_shard(mesh)
  return pipeline.create_eval_iterator(config, shard_index=index, shard_count=count)


def _error_table(results: dict[str, float], num_classes: int) -> str:
  """The errors as a table; top-5 only when there are more than 5 classes (else it is 0)."""
  top5 = num_classes > 5
  lines = [f"Validation, {results['count']} images   top-1 error" + '   top-5 error' * top5]
  for prefix, title in (('centre', 'centre patch'), ('ten_patch', 'ten patches (§4.1)')):
    if f'{prefix}_top1_error' in results:
      lines.append(f"{title:<27}{100 * results[f'{prefix}_top1_error']:>10.2f}%"
                   + f"{100 * results[f'{prefix}_top5_error']:>13.2f}%" * top5)
  return '\n'.join(lines)


def _write_json(path: str, payload: dict) -> None:
  if jax.process_index() == 0:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(payload, f, indent=2)
    os.replace(tmp, path)  # Never a half-written results file.


def _write_conv1_kernels(writer: metric_writer.MetricWriter, step: int, params,
                         towers: int) -> None:
  """Figure 3's picture of the conv1 kernels, to TensorBoard.

  Every process calls it: gathering a parameter split over processes is a collective
  (139 KB for the paper's net); only process 0's writer writes.
  """
  kernels = multihost_utils.process_allgather(params['conv1']['kernel'], tiled=True)
  writer.write_image(step, 'conv1/kernels', kernel_picture.kernel_grid(kernels, towers))


@jax.jit
def _all_finite(params) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))


def has_checkpoint(workdir: str | None) -> bool:
  """Whether `workdir` (None: no workdir) holds a finished checkpoint."""
  if workdir is None:
    return False
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return False
  ckpt = checkpointing.Checkpointer(directory, read_only=True)
  try:
    return ckpt.latest_step() is not None
  finally:
    ckpt.close()


def _pretrained_start(config: ml_collections.ConfigDict, workdir: str | None, net,
                      mesh: Mesh) -> pretrained.Pretrained | None:
  """The weights a fresh run starts from (model.pretrained), read and checked before the
  data is prepared; None without them, or when workdir has a checkpoint to resume."""
  if not config.model.pretrained or has_checkpoint(workdir):
    return None
  start = pretrained.load(config, train_step.abstract_train_state(config, net, mesh).params)
  _say(start.summary())
  return start


def _restore_or_create(config: ml_collections.ConfigDict, ckpt: checkpointing.Checkpointer,
                       net, mesh: Mesh, start: pretrained.Pretrained | None):
  """(state, meta or None, train iterator): the newest intact checkpoint's, or fresh ones.

  A fresh state starts from the pretrained weights `start`, where it has them.

  The state (parameters, momentum, step, learning-rate factor) is restored onto this run's
  mesh, whatever mesh saved it. The data stream goes on where it was: it starts at global
  batch `step`, which holds the same images, rows and augmentation for any number of
  processes, devices or workers (pipeline.create_train_iterator).
  """
  if not ckpt.all_steps():
    state, meta = train_step.create_train_state(config, net, mesh), None
    if start is not None:
      state = state.replace(params=pretrained.into(state.params, start))
  else:  # The newest intact step; damaged ones are named and set aside (checkpointing.py).
    state, meta = ckpt.restore(None, train_step.abstract_train_state(config, net, mesh),
                               say=_say)
  index, count = sharding.data_shard(mesh)
  train_iter = pipeline.create_train_iterator(config, shard_index=index, shard_count=count,
                                              start_batch=int(state.step))
  return state, meta, train_iter


def check_before_writing(config: ml_collections.ConfigDict, workdir: str,
                         allow_config_changes: bool = False) -> list[str]:
  """The checks that need neither data nor devices, before anything is written.

  The config on its own (preflight.py), then against the run saved in workdir
  (saved_config.py; an evaluation of a run may also read another split). Returns the
  changed fields a resume may have (see saved_config.check_rerun).
  """
  preflight.check_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not config.eval.only:
    return saved_config.check_rerun(config, workdir, allow_config_changes)
  if not config.eval.ensemble_workdirs.strip():
    return saved_config.check_rerun(config, workdir, allow_config_changes,
                                    also=('data.eval_split',))
  return []


@contextlib.contextmanager
def _workdir_lock(workdir: str):
  """Holds the workdir's lock (process 0 takes it; every process learns whether it could)."""
  lock, refused = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lock.WorkdirLock(workdir).acquire()
    except errors.UserError as e:
      refused = e
  if jax.process_count() > 1:
    if not multihost_utils.broadcast_one_to_all(np.int32(refused is None)) and not refused:
      refused = workdir_lock.WorkdirLockedError(
          f'Process 0 could not lock {workdir}; its message says why.')
  if refused is not None:
    raise refused
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_changes: bool = False) -> dict:
  """Trains (or resumes) the configured net in `workdir`; returns the final results.

  One run at a time holds the workdir (run/workdir_lock.py). A rerun in a workdir must
  keep the experiment's config (saved_config.py), unless `allow_config_changes`.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  preflight.check_config(config)
  with _workdir_lock(workdir):
    # Under the lock: no other run can write config.json between the check and the write.
    changes = check_before_writing(config, workdir, allow_config_changes)
    return _Run(config, workdir, changes).train()


class _Run:
  """One training run in a locked workdir: its state, its schedule of actions, its files."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, changes: list[str]):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.make_mesh(config)
    sharding.check_batch(config.train.batch_size, self.mesh)
    sharding.check_batch(config.eval.batch_size, self.mesh, 'eval.batch_size')
    self.net = model.create_model(config)
    start = _pretrained_start(config, workdir, self.net, self.mesh)
    _ready_data(config)  # Prepares the data if it can, else fails saying how.
    preflight.check_data(config)
    for note in preflight.data_notes(config):
      _say(note)
    self.steps_per_epoch, self.total_steps, self.eval_every = _steps(config)
    self.stats = _device_stats(config, self.mesh)
    self.ckpt = checkpointing.Checkpointer.from_config(config, os.path.join(workdir, 'checkpoints'))
    _, note = saved_config.reference(workdir)
    if note:
      _say(note)
    if jax.process_index() == 0:
      saved_config.save(config, workdir, self.ckpt.latest_step())
    if changes:
      _say('Resuming with these fields changed: ' + '; '.join(changes))
    self.writer = metric_writer.MetricWriter(os.path.join(workdir, 'tensorboard'), console=False)
    self.plateau = schedules.Plateau.from_config(config)
    self.history, self.train_history = [], []  # Evaluations; the loss at each logged step.
    self.state, meta, self.train_iter = _restore_or_create(config, self.ckpt, self.net,
                                                           self.mesh, start)
    if meta is not None:
      self.plateau.from_state_dict(meta['plateau'])
      self.history = meta['history']
      self.train_history = meta['train_history']
      _say(f'Resumed from step {int(self.state.step)} in {self.ckpt.directory}.')
    self.schedule = schedules.make_schedule(config, self.steps_per_epoch, self.total_steps)
    self.step_fn = train_step.make_train_step(config, self.net, self.mesh, self.schedule)
    # §4.1's ten patches cost ten forward passes: the last evaluation makes them (when
    # eval.ten_patch); the others, which the plateau rule reads, the centre patch only.
    self.last_eval_step = evaluate.make_eval_step(config, self.net, self.mesh)
    self.eval_step = (evaluate.make_eval_step(config, self.net, self.mesh, ten_patch=False)
                      if config.eval.ten_patch else self.last_eval_step)
    self.saved_step = None
    self.window = []  # Each step's metrics (on the devices) since the last log.
    self.first_log = None  # When the first step of this process started, until logged.

  def stop_if_not_finite(self, step: int) -> None:
    """Raises, naming the step, once the loss or the weights are NaN or infinite."""
    bad = int(self.state.first_bad_step)
    if bad < 0 and bool(_all_finite(self.state.params)):
      return
    where = f'at step {bad + 1}' if bad >= 0 else f'by step {step} (the weights)'
    lr = float(self.schedule(step - 1) * self.state.lr_factor)
    last = self.ckpt.latest_step()
    resume = (f'the last good checkpoint is step {last} in {self.ckpt.directory}. Lower '
              'optimizer.learning_rate (or check the data), then rerun with '
              '--allow_config_changes to resume from it.' if last is not None else
              'no checkpoint had been saved yet. Lower optimizer.learning_rate (or check '
              'the data), then rerun with --allow_config_changes: it starts afresh.')
    raise NonFiniteLossError(f'The training loss became non-finite {where} (learning rate '
                             f'{lr:.3g}). Stopped without saving it; {resume}')

  def save(self, step: int, val_error: float | None = None) -> None:
    self.stop_if_not_finite(step)  # Never keep a broken state.
    self.saved_step = step
    self.ckpt.save(step, self.state, val_top1_error=val_error,
                   meta={'plateau': self.plateau.state_dict(), 'history': self.history,
                         'train_history': self.train_history,
                         'epoch': step / self.steps_per_epoch,
                         'config': json.loads(self.config.to_json_best_effort())})

  def log(self, step: int, clock: chrono.Chrono) -> None:
    steps = jax.device_get(self.window)  # Summed on the host: no program between steps.
    metrics = {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}
    self.stop_if_not_finite(step)
    metrics.update(clock.window(step, self.config.train.batch_size))
    self.writer.write_scalars(step, {f'train/{k}': v for k, v in metrics.items()})
    self.train_history.append({'step': step, 'loss': metrics['loss']})
    timing = (f"{metrics['images_per_second']:.0f} img/s ETA "
              f'{clock.eta(step, self.total_steps, self.config.train.batch_size)}')
    if self.first_log:
      timing = 'compiled and ran in ' + chrono.format_duration(time.time() - self.first_log)
    _say(f'step {step}/{self.total_steps} epoch {step / self.steps_per_epoch:.2f} '
         f"loss {metrics['loss']:.4f} top-1 err {100 * metrics['top1_error']:.1f}% "
         + (f"top-5 err {100 * metrics['top5_error']:.1f}% "
            if self.config.model.num_classes > 5 else '')
         + f"lr {metrics['learning_rate']:.2g} {timing}")
    self.window, self.first_log = [], None
    clock.reset(step)

  def evaluate(self, step: int) -> dict:
    """Evaluates (ten patches at the last step), lets the plateau rule act (§5), logs."""
    last = step == self.total_steps
    results = evaluate.evaluate(self.last_eval_step if last else self.eval_step,
                                [self.state.params], _eval_batches(self.config, self.mesh),
                                self.mesh, self.stats, progress=_say)
    factor = self.plateau.update(results['centre_top1_error'])  # §5: /10 on a plateau.
    # From the host (numpy), the same on every process: a jnp scalar would already sit on
    # one local device, which cannot be put on a sharding that spans processes.
    self.state = self.state.replace(lr_factor=_replicated(self.mesh, np.float32(factor)))
    self.history.append({'step': step, 'epoch': step / self.steps_per_epoch, **results})
    self.writer.write_scalars(step, {f'val/{k}': v for k, v in results.items() if k != 'count'})
    _write_conv1_kernels(self.writer, step, self.state.params, self.config.model.towers)
    self.writer.flush()
    if not last:  # The last one is printed once, as the run's result.
      _say(f'step {step}: ' + _error_table(results, self.config.model.num_classes).replace(
          '\n', ' | '))
    return results

  def results(self, step: int, preempted: bool, exit_code: int) -> dict:
    """results.json's content (written by process 0)."""
    results = {'workdir': self.workdir, 'step': step, 'epoch': step / self.steps_per_epoch,
               'preempted': preempted, 'exit_code': exit_code,
               'final': self.history[-1] if self.history else {}, 'history': self.history,
               'train_history': self.train_history}
    _write_json(os.path.join(self.workdir, 'results.json'), results)
    return results

  def train(self) -> dict:
    """The loop: train, log, evaluate, save, stop on a signal; then the results."""
    config, step = self.config, int(self.state.step)
    towers = f"{config.model.towers} tower{'s' if config.model.towers > 1 else ''}"
    _say(f'Training {config.model.layout} net ({towers}) on mesh '
         f"data={self.mesh.shape['data']} x tower={self.mesh.shape['tower']}, global batch "
         f'{config.train.batch_size}, {self.steps_per_epoch} steps/epoch, steps '
         f'{step}..{self.total_steps}.')
    _say(f'Writing to {self.workdir}: checkpoints/, tensorboard/ (tensorboard --logdir '
         f'{self.workdir}), results.json, logs/.')
    if step < self.total_steps:
      _say('Compiling the training step (the first step takes longer)...')
    clock = chrono.Chrono(step)
    serial = sharding.one_program_at_a_time(self.mesh)
    dog = watchdog.Watchdog(config.train.watchdog_factor, config.train.watchdog_min_seconds,
                            stacks_to=command_line.log_stream)
    preempted, exit_code, final = False, 0, None
    try:
      with dog, preemption.PreemptionWatch(on_signal=dog.took_signal) as watch:
        self.first_log = time.time() if step < self.total_steps else None
        dog.beat()
        while step < self.total_steps:
          t = time.time()
          local_batch = next(self.train_iter)
          clock.waited_for_data(time.time() - t)
          with jax.set_mesh(self.mesh):
            self.state, metrics = self.step_fn(
                self.state, sharding.global_batch(self.mesh, local_batch), self.stats)
          if serial:
            jax.block_until_ready(metrics)
          self.window.append(metrics)
          self.ckpt.check()  # A save that failed in the background stops the run here.
          step += 1
          dog.beat()
          if (step % config.train.log_every_steps == 0 or step == self.total_steps
              or self.first_log):
            self.log(step, clock)
          with clock.paused(), dog.paused():  # Neither is training throughput.
            if step == self.total_steps:
              final = self.evaluate(step)
              # Results first: a save that fails at the end loses none of them.
              self.results(step, False, 0)
              self.save(step, final['centre_top1_error'])
            elif step % self.eval_every == 0:
              self.save(step, self.evaluate(step)['centre_top1_error'])
            elif step % config.checkpoint.every_steps == 0:
              self.save(step)
            if step < self.total_steps and watch.reached(step):
              if self.saved_step != step:
                self.save(step)
              preempted, exit_code = True, watch.exit_code
              what = 'Interrupted' if watch.signal == signal.SIGINT else 'Preempted'
              _say(f'{what}: saved step {step} in {self.ckpt.directory}; rerun the same '
                   'command to resume.')
              break
        self.ckpt.wait_until_finished()  # The last save's failure, said here.
    finally:
      try:
        self.ckpt.close()
      finally:
        self.writer.close()
    results = self.results(step, preempted, exit_code)
    if final is None and self.history and step == self.total_steps:
      final = self.history[-1]  # A finished run, rerun: its result again.
    if final:
      _say(_error_table(final, config.model.num_classes))
    return results


def saved_params(config: ml_collections.ConfigDict, workdir: str | None, net, mesh: Mesh,
                 ensemble: list[str]) -> Callable[[], tuple[list, list[str]]]:
  """The trained nets to evaluate: checked now, restored when the returned function is
  called; it returns (params of each net, where each came from).

  Each ensemble workdir gives its best checkpoint by validation error (else its latest);
  without an ensemble, `workdir` gives eval.checkpoint_step (-1: the latest), or, when it
  has no checkpoint, the complete pretrained net of model.pretrained.
  """
  start = None if ensemble else _pretrained_start(config, workdir, net, mesh)
  if start is not None and start.fresh:
    raise pretrained.PretrainedError(
        f'{start.path} lacks {", ".join(start.fresh)}, and {workdir} has no checkpoint: '
        'evaluating it would score freshly initialised layers. Fine-tune it first.')

  def restore() -> tuple[list, list[str]]:
    if start is not None:
      fresh = train_step.create_train_state(config, net, mesh).params
      return [pretrained.into(fresh, start)], [start.path]
    abstract = train_step.abstract_train_state(config, net, mesh)
    params_list, sources = [], []
    for directory in ensemble or [workdir]:
      ckpt = checkpointing.Checkpointer(
          os.path.join(os.path.expanduser(directory), 'checkpoints'), read_only=True)
      if ensemble:
        step = ckpt.best_step()
      else:
        step = None if config.eval.checkpoint_step < 0 else config.eval.checkpoint_step
      state, _ = ckpt.restore(step, abstract)
      params_list.append(state.params)
      sources.append(f'{directory} step {int(state.step)}')
      ckpt.close()
    return params_list, sources

  return restore


def evaluate_checkpoints(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """eval.only: errors of the checkpoint in workdir (eval.checkpoint_step, or the latest).

  With eval.ensemble_workdirs, the softmax outputs of the nets in those workdirs (each its
  best checkpoint by validation error, else its latest) are averaged (§6's "5 CNNs").
  Evaluating a run's own workdir needs its config (saved_config.py); eval.*, the
  evaluation split and the devices may differ. A workdir without checkpoints evaluates
  the complete pretrained net of model.pretrained.
  """
  check_before_writing(config, workdir)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  ensemble = [w.strip() for w in config.eval.ensemble_workdirs.split(',') if w.strip()]
  mesh = sharding.make_mesh(config)
  sharding.check_batch(config.eval.batch_size, mesh, 'eval.batch_size')
  net = model.create_model(config)
  saved = saved_params(config, workdir, net, mesh, ensemble)
  _ready_data(config)
  preflight.check_data(config)
  stats = _device_stats(config, mesh)
  params_list, sources = saved()
  _say('Evaluating ' + ', '.join(sources))
  results = evaluate.evaluate(evaluate.make_eval_step(config, net, mesh), params_list,
                              _eval_batches(config, mesh), mesh, stats)
  _prepare_workdir(workdir)
  _write_json(os.path.join(workdir, 'eval_config.json'), json.loads(config.to_json_best_effort()))
  _write_json(os.path.join(workdir, 'eval_results.json'),
              {'checkpoints': sources, 'split': config.data.eval_split, **results})
  _say(_error_table(results, config.model.num_classes))
  return results
