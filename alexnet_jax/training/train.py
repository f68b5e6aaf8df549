"""The training loop: train_and_evaluate(config, workdir), a Trainer with explicit state.

What a run does, in order: check everything that could fail late (mesh, batch, data,
workdir) before any long work; restore the latest checkpoint in workdir, if any, onto the
current mesh (parameters, momentum, step, plateau schedule, data position, the losses
since the last log); train with the paper's update, logging to the console and
TensorBoard; evaluate every epoch (or `train.eval_every_steps`), letting the paper's
plateau rule divide the learning rate (§5) and drawing the conv1 kernels to TensorBoard
(Figure 3); save checkpoints; and finish with results.json. Rerunning the same command
resumes, and a resumed run's results.json is the uninterrupted run's.

With several processes (launch/), every process runs this same loop on its own share of
each batch; only process 0 prints, writes TensorBoard events, config.json and results.json;
all of them write and read each checkpoint. A resume may use another number of processes
and another mesh: the state is restored onto the new mesh, and each process's data stream
restarts at the batch the checkpoint's step had reached (pipeline.create_train_iterator).
"""

import contextlib
import json
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from alexnet_jax.nn import model
from alexnet_jax.run import saved_config, workdir as workdirs, workdir_lock
from alexnet_jax.runtime import chrono, command_line, errors, metric_writer, preemption, watchdog
from alexnet_jax.training import (evaluate, inputs, preflight, saved_nets, schedules, sharding,
                                  train_step)
from alexnet_jax.weights import kernel_picture, pretrained

say = inputs.say


class NonFiniteLossError(errors.UserError, RuntimeError):
  """The training loss became NaN or infinite."""


@jax.jit
def _all_finite(params) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))


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
  preflight.check_config(config)
  workdir = workdirs.Workdir(workdir)
  with _workdir_lock(workdir.path):
    # Under the lock: no other run can write config.json between the check and the write.
    changes = saved_config.check_rerun(config, workdir.path, allow_config_changes)
    return Trainer(config, workdir, changes).run()


class Trainer:
  """One training run in a locked workdir.

  Its state, all of it saved with every checkpoint: the train state (on the devices), the
  plateau rule (the one owner of the learning-rate factor; the train state holds its
  device copy), the evaluations and logged losses so far, and the metric window (each
  step's metrics since the last log). `due(step)` is the one rule that says what follows
  a step; `log`, `evaluate`, `save` and `stop` carry it out.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: workdirs.Workdir,
               changes: list[str]):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.make_mesh(config)
    sharding.check_batch(config.train.batch_size, self.mesh)
    sharding.check_batch(config.eval.batch_size, self.mesh, 'eval.batch_size')
    self.net = model.create_model(config, self.mesh)
    start = saved_nets.pretrained_start(config, workdir.path, self.net, self.mesh)
    inputs.ready(config)  # Prepares the data if it can, else fails saying how.
    self.steps_per_epoch, self.total_steps, self.eval_every = inputs.steps(config)
    self.stats = inputs.device_stats(config, self.mesh)
    self.ckpt = workdir.checkpointer(config)
    _, note = saved_config.reference(workdir.path)
    if note:
      say(note)
    if jax.process_index() == 0:
      saved_config.save(config, workdir.path, self.ckpt.latest_step())
    if changes:
      say('Resuming with these fields changed: ' + '; '.join(changes))
    self.writer = metric_writer.MetricWriter(workdir.tensorboard, console=False)
    self.plateau = schedules.Plateau.from_config(config)
    self.history, self.train_history, self.window = [], [], []
    self.state = self._restore_or_start(start)
    self.train_iter = inputs.train_batches(config, self.mesh, int(self.state.step))
    self.schedule = schedules.make_schedule(config, self.steps_per_epoch, self.total_steps)
    self.step_fn = train_step.make_train_step(config, self.net, self.mesh, self.schedule)
    # §4.1's ten patches cost ten forward passes: the last evaluation makes them (when
    # eval.ten_patch); the others, which the plateau rule reads, the centre patch only.
    self.last_eval_step = evaluate.make_eval_step(config, self.net, self.mesh)
    self.eval_step = (evaluate.make_eval_step(config, self.net, self.mesh, ten_patch=False)
                      if config.eval.ten_patch else self.last_eval_step)
    self.saved_step = None

  def _restore_or_start(self, start: pretrained.Pretrained | None):
    """The newest intact checkpoint's state, with the rest of the run's state; or a fresh
    one (from the pretrained weights `start`, where there are some)."""
    if not self.ckpt.all_steps():
      state = train_step.create_train_state(self.config, self.net, self.mesh)
      if start is not None:
        state = state.replace(params=pretrained.into(state.params, start))
      return state
    # The newest intact step; damaged ones are named and set aside (checkpointing.py).
    state, meta = self.workdir.restore(
        train_step.abstract_train_state(self.config, self.net, self.mesh), 'latest',
        ckpt=self.ckpt, say=say)
    self.plateau.from_state_dict(meta['plateau'])
    self.history, self.train_history = meta['history'], meta['train_history']
    self.window = meta.get('window', [])  # Older checkpoints did not keep it.
    say(f'Resumed from step {int(state.step)} in {self.ckpt.directory}.')
    return self._with_plateau_factor(state)

  def _with_plateau_factor(self, state):
    # From the host (numpy), the same on every process: a jnp scalar would already sit on
    # one local device, which cannot be put on a sharding that spans processes.
    return state.replace(lr_factor=inputs.replicated(self.mesh,
                                                     np.float32(self.plateau.factor)))

  def due(self, step: int) -> set[str]:
    """What follows `step`: 'log', 'evaluate', 'save' (the last step does all three)."""
    last = step == self.total_steps
    actions = set()
    if last or step % self.config.train.log_every_steps == 0:
      actions.add('log')
    if last or step % self.eval_every == 0:
      actions |= {'evaluate', 'save'}
    if step % self.config.checkpoint.every_steps == 0:
      actions.add('save')
    return actions

  def step(self, clock: chrono.Chrono, serial: bool) -> None:
    """One training step on the next batch; its metrics join the window."""
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

  def stop_if_not_finite(self, step: int) -> None:
    """Raises, naming the step, once the loss or the weights are NaN or infinite."""
    bad = int(self.state.first_bad_step)
    if bad < 0 and bool(_all_finite(self.state.params)):
      return
    where = f'at step {bad + 1}' if bad >= 0 else f'by step {step} (the weights)'
    lr = float(self.schedule(step - 1) * self.plateau.factor)
    last = self.ckpt.latest_step()
    resume = (f'the last good checkpoint is step {last} in {self.ckpt.directory}. Lower '
              'optimizer.learning_rate (or check the data), then rerun with '
              '--allow_config_changes to resume from it.' if last is not None else
              'no checkpoint had been saved yet. Lower optimizer.learning_rate (or check '
              'the data), then rerun with --allow_config_changes: it starts afresh.')
    raise NonFiniteLossError(f'The training loss became non-finite {where} (learning rate '
                             f'{lr:.3g}). Stopped without saving it; {resume}')

  def _window_means(self) -> dict[str, float]:
    # Summed on the host (no program between steps), in float64 whether the window's
    # values are still on the devices or were restored from a checkpoint's meta.
    steps = jax.device_get(self.window)
    return {k: float(np.mean([float(s[k]) for s in steps])) for k in steps[0]}

  def log(self, step: int, clock: chrono.Chrono, started: float | None = None) -> None:
    """The window's means to the console, TensorBoard and the history; a new window.

    The first step of this process (`started`: when it began) says how long compiling
    took; unless it is due to log anyway, on the console only, so that a resumed run's
    history is the uninterrupted run's. The clock starts again after it either way.
    """
    metrics = self._window_means()
    self.stop_if_not_finite(step)
    if started is not None:
      timing = 'compiled and ran in ' + chrono.format_duration(time.time() - started)
    else:
      timing = (f"{clock.window(step, self.config.train.batch_size)['images_per_second']:.0f}"
                f' img/s ETA {clock.eta(step, self.total_steps, self.config.train.batch_size)}')
    if 'log' in self.due(step):
      metrics.update(clock.window(step, self.config.train.batch_size))
      self.writer.write_scalars(step, {f'train/{k}': v for k, v in metrics.items()})
      # The training errors too: against the validation curve, they show overfitting (§4).
      self.train_history.append({'step': step, **{k: metrics[k] for k in (
          'loss', 'top1_error', 'top5_error')}})
      self.window = []
    top5 = (f"top-5 err {100 * metrics['top5_error']:.1f}% "
            if self.config.model.num_classes > 5 else '')
    say(f'step {step}/{self.total_steps} epoch {step / self.steps_per_epoch:.2f} '
        f"loss {metrics['loss']:.4f} top-1 err {100 * metrics['top1_error']:.1f}% "
        f"{top5}lr {metrics['learning_rate']:.2g} {timing}")
    clock.reset(step)

  def evaluate(self, step: int) -> dict:
    """Evaluates (ten patches at the last step), lets the plateau rule act (§5), logs."""
    last = step == self.total_steps
    results = evaluate.evaluate(self.last_eval_step if last else self.eval_step,
                                [self.state.params], inputs.eval_batches(self.config, self.mesh),
                                self.mesh, self.stats, progress=say)
    self.plateau.update(results['centre_top1_error'])  # §5: /10 on a plateau.
    self.state = self._with_plateau_factor(self.state)
    self.history.append({'step': step, 'epoch': step / self.steps_per_epoch, **results})
    self.writer.write_scalars(step, {f'val/{k}': v for k, v in results.items() if k != 'count'})
    self._write_conv1_kernels(step)
    self.writer.flush()
    if not last:  # The last one is printed once, as the run's result.
      say(f'step {step}: ' + evaluate.error_table(
          results, self.config.model.num_classes).replace('\n', ' | '))
    return results

  def _write_conv1_kernels(self, step: int) -> None:
    """Figure 3's picture of the conv1 kernels, to TensorBoard.

    Every process calls it: gathering a parameter split over processes is a collective;
    only process 0's writer writes.
    """
    kernels = multihost_utils.process_allgather(self.state.params['conv1']['kernel'],
                                                tiled=True)
    self.writer.write_image(step, 'conv1/kernels',
                            kernel_picture.kernel_grid(kernels, self.config.model.towers))

  def save(self, step: int, val_error: float | None = None) -> None:
    """A checkpoint of the whole run's state (never a broken one)."""
    self.stop_if_not_finite(step)
    self.saved_step = step
    self.window = [{k: float(v) for k, v in m.items()}  # JSON, in the meta.
                   for m in jax.device_get(self.window)]
    self.ckpt.save(step, self.state, val_top1_error=val_error,
                   meta={'plateau': self.plateau.state_dict(), 'history': self.history,
                         'train_history': self.train_history, 'window': self.window,
                         'epoch': step / self.steps_per_epoch,
                         'config': json.loads(self.config.to_json_best_effort())})

  def results(self, step: int, preempted: bool, exit_code: int) -> dict:
    """results.json's content (written by process 0)."""
    results = {'workdir': self.workdir.path, 'step': step,
               'epoch': step / self.steps_per_epoch, 'preempted': preempted,
               'exit_code': exit_code, 'final': self.history[-1] if self.history else {},
               'history': self.history, 'train_history': self.train_history}
    self.workdir.write_json(workdirs.RESULTS, results)
    return results

  def after_step(self, step: int) -> dict | None:
    """Evaluates and saves as `due(step)` says; the final evaluation's results at the end."""
    actions = self.due(step)
    final = val_error = None
    if 'evaluate' in actions:
      final = self.evaluate(step)
      val_error = final['centre_top1_error']
      if step == self.total_steps:  # Results first: a failed last save loses none of them.
        self.results(step, False, 0)
    if 'save' in actions:
      self.save(step, val_error)
    return final if step == self.total_steps else None

  def stop(self, step: int, watch: preemption.PreemptionWatch) -> None:
    """A signal came: saves this step (if not yet saved) so that a rerun resumes here."""
    if self.saved_step != step:
      self.save(step)
    what = 'Interrupted' if watch.signal == signal.SIGINT else 'Preempted'
    say(f'{what}: saved step {step} in {self.ckpt.directory}; rerun the same command to '
        'resume.')

  def _announce(self, step: int) -> None:
    config = self.config
    towers = f"{config.model.towers} tower{'s' if config.model.towers > 1 else ''}"
    say(f'Training {config.model.layout} net ({towers}) on mesh '
        f"data={self.mesh.shape['data']} x tower={self.mesh.shape['tower']}, global batch "
        f'{config.train.batch_size}, {self.steps_per_epoch} steps/epoch, steps '
        f'{step}..{self.total_steps}.')
    say(f'Writing to {self.workdir.path}: checkpoints/, tensorboard/ (tensorboard --logdir '
        f'{self.workdir.path}), results.json, logs/.')
    if step < self.total_steps:
      say('Compiling the training step (the first step takes longer)...')

  def run(self) -> dict:
    """The loop: steps and what follows each, until the end or a signal; the results."""
    step = int(self.state.step)
    self._announce(step)
    clock = chrono.Chrono(step)
    serial = sharding.one_program_at_a_time(self.mesh)
    dog = watchdog.Watchdog(self.config.train.watchdog_factor,
                            self.config.train.watchdog_min_seconds,
                            stacks_to=command_line.log_stream)
    preempted, exit_code, final, started = False, 0, None, time.time()
    try:
      with dog, preemption.PreemptionWatch(on_signal=dog.took_signal) as watch:
        dog.beat()
        while step < self.total_steps:
          self.step(clock, serial)
          step += 1
          dog.beat()
          if started is not None or 'log' in self.due(step):
            self.log(step, clock, started)
          started = None
          with clock.paused(), dog.paused():  # Neither is training throughput.
            final = self.after_step(step)
            if step < self.total_steps and watch.reached(step):
              self.stop(step, watch)
              preempted, exit_code = True, watch.exit_code
              break
        self.ckpt.wait_until_finished()  # The last save's failure, said here.
    finally:
      try:
        self.ckpt.close()
      finally:
        self.writer.close()
    return self._finish(step, preempted, exit_code, final)

  def _finish(self, step: int, preempted: bool, exit_code: int, final: dict | None) -> dict:
    results = self.results(step, preempted, exit_code)
    if final is None and self.history and step == self.total_steps:
      final = self.history[-1]  # A finished run, rerun: its result again.
    if final:
      say(evaluate.error_table(final, self.config.model.num_classes))
    return results
