"""Figure 1 (§3.1): with ReLUs the four-layer CIFAR-10 net reaches 25% training error about
six times faster than with tanh neurons.

  python -m alexnet_jax.experiments.relu_vs_tanh --data=~/data/cifar-10-python.tar.gz \
      --out=runs/figure1

Trains configs/figure1.py's net (cuda-convnet's CIFAR-10 example, model.layout='cifar10')
with each activation at each of its learning rates, once per seed, with no regularisation
of any kind (no weight decay, dropout, crops, reflections or colour noise), on the training
images of `--data` (CIFAR-10's official python archive, or a folder
`train/<class>/<image files>`; experiments/image_arrays.py, read once into memory) minus
their per-pixel mean (§2). The paper chose each net's learning rate "to make training as fast as
possible": per activation, the rate that needs the fewest epochs to reach 25% (the mean over
the seeds) wins. Writes, to `--out`, after every run:

  figure1.png   training error against epochs of the winning rates (every seed): ReLU
                solid, tanh dashed, the 25% line dotted.
  figure1.json  every run's curve, the winners' epochs to 25% and their ratio (paper: 6),
                of the means and seed by seed (`ratio_tanh_to_relu`, `..._by_seed`,
                `..._range`).

Run again with the same `--out` and settings, the command resumes an interrupted sweep: the
runs figure1.json records are kept, an unfinished run goes on from its last epoch (a
checkpoint in `--out`/unfinished_*/ after each), the others are trained.

The training error of an epoch is the share of its training images that the net
misclassified as it trained on them (the step's own outputs, before each update), as
cuda-convnet reports it; each epoch visits the images in a new order, the last partial
batch left out. A run whose loss turns NaN or infinite stops there and counts as never
reaching 25%. The update is §5's with momentum 0.9 (also layers-18pct's momW), batch 128.

Cost: on a 2-core CPU one epoch over CIFAR-10's 50,000 images took 47 s with the cores free
and up to 80 s shared with other jobs, for ReLU and tanh alike; the default sweep (8 runs of
40 epochs) is then 4 to 7 hours. The command prints the time of every epoch and of the
epochs left.
"""

import json
import os
import shutil
import time
from typing import Callable, Sequence

import jax
import numpy as np
from absl import flags

from alexnet_jax.configs import figure1
from alexnet_jax.experiments import image_arrays, line_chart
from alexnet_jax.nn import model
from alexnet_jax.run import workdir as workdirs
from alexnet_jax.runtime import command_line, errors
from alexnet_jax.training import schedules, sharding, train_step

THRESHOLD = 0.25  # Figure 1's target training error.
PAPER_RATIO = 6.0  # "six times faster".
ACTIVATIONS = ('relu', 'tanh')
_STYLE = {'relu': ('ReLU', (20, 60, 160), False), 'tanh': ('tanh', (190, 40, 30), True)}


def epochs_to_threshold(errors: Sequence[float], threshold: float = THRESHOLD) -> int | None:
  """The first epoch (counted from 1) whose training error is at most `threshold`; None if
  no epoch reaches it."""
  return next((epoch for epoch, e in enumerate(errors, 1) if e <= threshold), None)


def _save_partial(partial: workdirs.Workdir, epoch: int, state, record: dict,
                  order: np.random.Generator, settings: dict) -> None:
  """The run after `epoch`: a checkpoint of its state (checkpointing.py: a kill leaves the
  previous epoch's whole), with its record so far, the image order's generator and the
  sweep's settings in the checkpoint's meta."""
  ckpt = partial.checkpointer()
  try:
    ckpt.save(epoch, state, meta={'record': record, 'order': order.bit_generator.state,
                                  'settings': settings})
  finally:
    ckpt.close()


def _load_partial(partial: workdirs.Workdir, abstract_state, order: np.random.Generator,
                  settings: dict):
  """(state, record) of the epochs `partial` saved, the generator set where it stood;
  raises a UserError if it was saved under other settings."""
  state, meta = partial.restore(abstract_state)
  if meta['settings'] != settings:
    raise errors.UserError(f'{partial.path} holds a run of a sweep with other settings '
                           f"({meta['settings']}, now {settings}): delete it, or give "
                           'another --out.')
  order.bit_generator.state = meta['order']
  return state, meta['record']


def _train_epoch(step: Callable, state, data: image_arrays.ImageArrays, mean: np.ndarray,
                 order: np.random.Generator, steps: int, batch_size: int):
  """(state, training error) after `steps` batches of the images in a new order; the
  error is the steps' own outputs', before each update."""
  batches = order.permutation(len(data.images))[:steps * batch_size].reshape(steps, -1)
  step_errors = []
  for indices in batches:
    batch = {'image': data.images[indices].astype(np.float32) - mean,
             'label': data.labels[indices]}
    state, metrics = step(state, batch, None)
    step_errors.append(metrics['top1_error'])
  return state, float(np.mean(jax.device_get(step_errors)))


def train_run(data: image_arrays.ImageArrays, mean: np.ndarray, *, activation: str,
              learning_rate: float, seed: int, epochs: int, batch_size: int,
              report: Callable[[str], None], epochs_after_threshold: int | None = None,
              partial: str | None = None, settings: dict | None = None) -> dict:
  """Trains one net; returns its record: settings, training error and seconds per epoch.

  With `epochs_after_threshold`, the run stops that many epochs after its training error
  first reaches 25% (the figure's question is answered by then), else after `epochs`.
  With `partial` (a folder), the run saves itself there after every epoch and, if it holds
  a checkpoint, resumes from it first, exactly (the same weights, velocity and image order
  as without the interruption); `settings` must then match the ones saved with it. The
  folder is deleted once the run ends.
  """
  config = figure1.get_config()
  config.seed = seed  # Initial weights and the order of the images.
  config.model.activation = activation
  config.model.num_classes = len(data.classes)
  config.data.image_size = config.data.crop_size = data.images.shape[1]
  config.optimizer.learning_rate = learning_rate
  config.train.batch_size = batch_size
  config.train.num_epochs = epochs
  steps = len(data.images) // batch_size
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  net = model.create_model(config, mesh)
  state = train_step.create_train_state(config, net, mesh)
  step = train_step.make_train_step(config, net, mesh,
                                    schedules.make_schedule(config, steps, steps * epochs))
  order = np.random.default_rng(seed)
  record = {'activation': activation, 'learning_rate': learning_rate, 'seed': seed,
            'train_error': [], 'seconds_per_epoch': [], 'diverged': False}
  partial = workdirs.Workdir(partial) if partial else None
  if partial and partial.has_checkpoint():
    state, record = _load_partial(
        partial, train_step.abstract_train_state(config, net, mesh), order, settings)
    report(f'{activation} lr={learning_rate:g} seed={seed}: resumed after epoch '
           f"{len(record['train_error'])} ({partial.path}).")
  with jax.set_mesh(mesh):
    for epoch in range(len(record['train_error']) + 1, epochs + 1):
      start = time.perf_counter()
      state, error = _train_epoch(step, state, data, mean, order, steps, batch_size)
      record['train_error'].append(error)
      record['seconds_per_epoch'].append(time.perf_counter() - start)
      record['diverged'] = int(state.first_bad_step) >= 0
      if partial:
        _save_partial(partial, epoch, state, record, order, settings)
      report(f'{activation} lr={learning_rate:g} seed={seed} epoch {epoch}/{epochs}: '
             f"training error {record['train_error'][-1]:.4f} "
             f"({record['seconds_per_epoch'][-1]:.1f} s)"
             + (', diverged: stopped' if record['diverged'] else ''))
      if record['diverged']:
        break
      reached = epochs_to_threshold(record['train_error'])
      if (epochs_after_threshold is not None and reached
          and epoch >= reached + epochs_after_threshold):
        break
  record['epochs_to_threshold'] = (
      None if record['diverged'] else epochs_to_threshold(record['train_error']))
  if partial:
    shutil.rmtree(partial.path, ignore_errors=True)
  return record


def fastest(runs: Sequence[dict], activation: str) -> dict | None:
  """The learning rate of `activation` with the fewest epochs to 25%, mean over its seeds
  (a rate with a seed that never got there cannot win); None if no rate got there."""
  by_rate = {}
  for run in runs:
    if run['activation'] == activation:
      by_rate.setdefault(run['learning_rate'], []).append(run)
  results = []
  for rate, rate_runs in by_rate.items():
    epochs = [run['epochs_to_threshold'] for run in rate_runs]
    if None not in epochs:
      results.append({'learning_rate': rate, 'seeds': [run['seed'] for run in rate_runs],
                      'epochs_to_threshold': epochs,
                      'mean_epochs_to_threshold': float(np.mean(epochs))})
  return min(results, key=lambda r: r['mean_epochs_to_threshold'], default=None)


def summarise(runs: Sequence[dict], settings: dict) -> dict:
  """The JSON record: the sweep's `settings` (epochs, batch_size, ...), every run, the
  winners and their ratio (tanh / ReLU): of their mean epochs to 25%, and seed by seed
  (the winners' runs of one seed against each other) with the range of those."""
  best = {activation: fastest(runs, activation) for activation in ACTIVATIONS}
  ratio, by_seed = None, {}
  if best['relu'] and best['tanh']:
    ratio = best['tanh']['mean_epochs_to_threshold'] / best['relu']['mean_epochs_to_threshold']
    relu, tanh = ({seed: epochs for seed, epochs in zip(best[a]['seeds'],
                                                         best[a]['epochs_to_threshold'])}
                  for a in ACTIVATIONS)
    by_seed = {str(seed): tanh[seed] / relu[seed] for seed in relu if seed in tanh}
  return {'threshold': THRESHOLD, **settings,
          'momentum': figure1.get_config().optimizer.momentum,
          'train_error_definition': 'share of the training images misclassified during '
                                    'the epoch, before each update',
          'runs': list(runs), 'fastest': best, 'ratio_tanh_to_relu': ratio,
          'ratio_tanh_to_relu_by_seed': by_seed,
          'ratio_tanh_to_relu_range': ([min(by_seed.values()), max(by_seed.values())]
                                       if by_seed else None),
          'paper_ratio': PAPER_RATIO}


def _shown(runs: Sequence[dict], activation: str, best: dict | None) -> tuple[float, str]:
  """The learning rate drawn for `activation` and its legend's ending: the winner, or, if
  no rate reached 25%, the one with the lowest mean final error."""
  if best:
    epochs, seeds = best['mean_epochs_to_threshold'], len(best['seeds'])
    return best['learning_rate'], (f": 25% after {epochs:g} epoch{'s' * (epochs != 1)}"
                                   + (f' (mean of {seeds} seeds)' if seeds > 1 else ''))
  final = {}
  for run in runs:
    if run['activation'] == activation:
      final.setdefault(run['learning_rate'], []).append(run['train_error'][-1])
  return min(final, key=lambda rate: np.mean(final[rate])), ': never reached 25%'


def draw_figure(path: str, result: dict) -> None:
  """Figure 1: training error against epochs at each activation's shown rate, every seed."""
  series = []
  for activation in ACTIVATIONS:
    if not any(run['activation'] == activation for run in result['runs']):
      continue
    rate, ending = _shown(result['runs'], activation, result['fastest'][activation])
    name, color, dashed = _STYLE[activation]
    for run in result['runs']:
      if run['activation'] == activation and run['learning_rate'] == rate:
        series.append(line_chart.Series(
            f'{name}, learning rate {rate:g}{ending}', range(1, len(run['train_error']) + 1),
            run['train_error'], color, dashed))
  highest = max(e for s in series for e in s.y)
  ratio = result['ratio_tanh_to_relu']
  line_chart.draw(
      path, series, x_max=result['epochs'], y_max=max(0.3, min(1.0, np.ceil(highest * 10) / 10)),
      x_label='Epochs', y_label='Training error rate', hlines=[(THRESHOLD, '25%')],
      title='CIFAR-10, four-layer net: ReLU (solid) vs tanh (dashed)'
            + (f', tanh needs {ratio:.1f}x the epochs' if ratio else ''))


def finished_runs(path: str, settings: dict, plan: Sequence[tuple]) -> list[dict]:
  """The runs of `plan` that an earlier, interrupted sweep with the same `settings` recorded
  in `path` (its figure1.json): a sweep of many hours resumes after its last finished run."""
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      earlier = json.load(f)
    recorded = {key: earlier.get(key) for key in settings}
    runs = earlier['runs']
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise errors.UserError(f'{path} is not a figure1.json this command wrote ({e!r}): give '
                           'another --out, or delete the file to start over.') from None
  if recorded != settings:
    differing = ', '.join(f'{key} {recorded[key]} there, {value} now'
                          for key, value in settings.items() if recorded[key] != value)
    raise errors.UserError(f'{path} holds a sweep with other settings ({differing}): give '
                           'another --out, or the same settings to resume it.')
  return [run for run in runs if (run['activation'], run['learning_rate'], run['seed']) in plan]


def run_sweep(source: str, out: str, *, epochs: int, learning_rates: dict[str, Sequence[float]],
              seeds: Sequence[int], batch_size: int = 128,
              epochs_after_threshold: int | None = None,
              report: Callable[[str], None] = print) -> dict:
  """Trains every (activation, learning rate, seed), writing the figure and the JSON to
  `out` after each run; returns the JSON's content. Runs that `out` already records (same
  settings) are kept, not trained again."""
  if set(learning_rates) != set(ACTIVATIONS) or not all(learning_rates.values()):
    raise errors.UserError(f'Give learning rates for each of {ACTIVATIONS}: got '
                           f'{dict(learning_rates)}.')
  plan = [(a, r, s) for a in ACTIVATIONS for r in learning_rates[a] for s in seeds]
  if len(set(plan)) != len(plan):
    raise errors.UserError(f'A learning rate or a seed is given twice: {dict(learning_rates)}'
                           f', seeds {list(seeds)}. Give each once.')
  data = image_arrays.load_split(source, 'train')
  height, width = data.images.shape[1:3]
  smallest = model.smallest_crop(figure1.get_config().model)
  if height != width or height < smallest:
    raise errors.UserError(f'The images of {source} (train) are {width}x{height}: the net '
                           f'takes square images of at least {smallest}x{smallest} (CIFAR-10: '
                           '32x32).')
  if len(data.images) < batch_size:
    raise errors.UserError(f'{source} (train) has {len(data.images)} images, fewer than one '
                           f'batch of {batch_size}: lower --batch_size or add images.')
  mean = data.images.mean(axis=0, dtype=np.float64).astype(np.float32)  # §2: per pixel.
  settings = {'epochs': epochs, 'batch_size': batch_size,
              'epochs_after_threshold': epochs_after_threshold,
              'training_images': len(data.images)}
  os.makedirs(out, exist_ok=True)
  runs = finished_runs(os.path.join(out, 'figure1.json'), settings, plan)
  report(f'{len(data.images)} training images of {width}x{height}, {len(data.classes)} '
         f'classes; {len(plan)} runs of {epochs} epochs'
         + (f', {len(runs)} of them finished earlier (in {out}/figure1.json).' if runs else '.'))
  epoch_seconds = [s for run in runs for s in run['seconds_per_epoch'][1:]]
  done = {(run['activation'], run['learning_rate'], run['seed']) for run in runs}
  for activation, rate, seed in (p for p in plan if p not in done):
    run = train_run(data, mean, activation=activation, learning_rate=rate, seed=seed,
                    epochs=epochs, batch_size=batch_size, report=report,
                    epochs_after_threshold=epochs_after_threshold, settings=settings,
                    partial=os.path.join(out, f'unfinished_{activation}_{rate:g}_{seed}'))
    runs.append(run)
    epoch_seconds += run['seconds_per_epoch'][1:]  # The first epoch also compiles.
    _written(runs, settings, out)  # After each run: a sweep of hours shows its progress.
    left = (len(plan) - len(runs)) * epochs
    if left and epoch_seconds:
      report(f'{np.median(epoch_seconds):.1f} s per epoch: about '
             f'{left * np.median(epoch_seconds) / 60:.0f} min for the {left} epochs left '
             '(less if a run diverges or stops after reaching 25%).')
  result = _written(runs, settings, out)  # Also when all were done: summarised anew.
  ratio, spread = result['ratio_tanh_to_relu'], result['ratio_tanh_to_relu_range']
  seeds = (f', seed by seed {spread[0]:.2f}x to {spread[1]:.2f}x'
           if ratio and len(result['ratio_tanh_to_relu_by_seed']) > 1 else '')
  report('tanh needs ' + (f'{ratio:.2f}x the epochs of ReLU to reach 25%{seeds} (paper: 6x).'
                          if ratio else 'an unknown multiple: a net never reached 25% '
                          '(more --epochs, other learning rates).')
         + f' Written: {out}/figure1.png, {out}/figure1.json')
  return result


def _written(runs: list[dict], settings: dict, out: str) -> dict:
  """The sweep so far, summarised and written to `out` (figure1.json, figure1.png)."""
  result = summarise(runs, settings)
  workdirs.Workdir(out).write_json('figure1.json', result)  # Whole: it records hours of runs.
  draw_figure(os.path.join(out, 'figure1.png'), result)
  return result


FLAGS = flags.FLAGS


def _numbers(flag: str, kind: type) -> list:
  try:
    return [kind(v) for v in FLAGS[flag].value]
  except ValueError:
    raise errors.UserError(f'--{flag}={",".join(FLAGS[flag].value)}: expected comma-separated '
                           f'{kind.__name__}s.') from None


def main(argv):
  del argv
  run_sweep(FLAGS.data, FLAGS.out, epochs=FLAGS.epochs,
            learning_rates={'relu': _numbers('learning_rates_relu', float),
                            'tanh': _numbers('learning_rates_tanh', float)},
            seeds=_numbers('seeds', int), batch_size=FLAGS.batch_size,
            epochs_after_threshold=(None if FLAGS.epochs_after_threshold < 0
                                    else FLAGS.epochs_after_threshold))


if __name__ == '__main__':
  flags.DEFINE_string('data', None, "CIFAR-10's python archive as published "
                      '(cifar-10-python.tar.gz), or an image folder root with '
                      'train/<class>/<images>.')
  flags.DEFINE_string('out', None, 'Where figure1.png and figure1.json go.')
  flags.DEFINE_integer('epochs', 40, 'Epochs per run.', lower_bound=1)
  # layers-18pct.cfg's 0.001 and three doublings, the same for both nets.
  rates = ['0.001', '0.002', '0.004', '0.008']
  flags.DEFINE_list('learning_rates_relu', rates, 'Learning rates tried with ReLUs.')
  flags.DEFINE_list('learning_rates_tanh', rates, 'Learning rates tried with tanh.')
  flags.DEFINE_list('seeds', ['0'], 'One run per seed (initial weights, image order).')
  flags.DEFINE_integer('batch_size', 128, 'Images per update (cuda-convnet: 128).',
                       lower_bound=1)
  flags.DEFINE_integer('epochs_after_threshold', -1, 'Stop a run this many epochs after it '
                       'first reaches 25% training error; -1: run all --epochs.')
  flags.mark_flags_as_required(['data', 'out'])
  command_line.run(main)
