"""Command: the training and validation error of a variant's runs and the baseline's over
the epochs, and where their validation curves cross (§4.2: without dropout the net
"exhibits substantial overfitting"; with it, it needs about twice the iterations).

  python -m alexnet_jax.experiments.learning_curves --out=runs/dropout_curves \
      --baseline=runs/dropout_long/baseline_seed0,runs/dropout_long/baseline_seed1 \
      --variant=runs/dropout_long/no_dropout_seed0,runs/dropout_long/no_dropout_seed1

The runs are finished workdirs of one ablation study (ablation_runner.py with
--config.train.eval_every_steps set, so that each evaluated the validation set during
training), all evaluated at the same steps. From each run's results.json: the validation
centre-patch top-1 error at each evaluation, and the training top-1 error, the mean of
the windows logged since the evaluation before (measured on the augmented training
batches as the net trained on them, so with dropout active where the net has it: an
overestimate of its error on the training images, not a test on them).

Writes OUT/learning_curves.png (each group's mean over its seeds: validation solid,
training dashed) and OUT/learning_curves.json, and prints a table: per evaluation, the
epoch, each group's mean training and validation error, and the variant's validation
error minus the baseline's. "Crossings": the evaluations at which that difference changes
sign; the overfitting gap: validation minus training error at the last evaluation.
"""

import json
import os
import statistics

import numpy as np
from absl import flags

from alexnet_jax.experiments import ablation_report, line_chart
from alexnet_jax.runtime import command_line, errors

CHART, RECORD = 'learning_curves.png', 'learning_curves.json'
_COLOURS = {'baseline': (20, 60, 160), 'variant': (190, 40, 30)}


class CurveError(errors.UserError, ValueError):
  """The runs cannot give comparable curves; the message says which run and what to do."""


def curves(workdir: str) -> dict:
  """One run's evaluations: {'step', 'epoch', 'validation', 'training'} lists, errors as
  fractions; the training error of an evaluation is the mean of the logged windows since
  the evaluation before."""
  results = ablation_report.read_results(workdir)  # compare() loaded it as finished first.
  evaluations = results['history']
  logged = results['train_history']
  if len(evaluations) < 2:
    raise CurveError(
        f'{workdir} evaluated {len(evaluations)} time(s): curves need evaluations during '
        'training. Rerun the study in a new --out with --config.train.eval_every_steps=N '
        '(say one or two epochs of steps).')
  if any('top1_error' not in entry for entry in logged):
    raise CurveError(
        f'{workdir}/{ablation_report.RESULTS} records no training error in its '
        'train_history (a run made before it was recorded): rerun it.')
  steps_per_epoch = results['step'] / results['epoch']
  record = {'step': [], 'epoch': [], 'validation': [], 'training': []}
  previous = 0
  for evaluation in evaluations:
    step = evaluation['step']
    window = [e['top1_error'] for e in logged if previous < e['step'] <= step]
    if not window:
      raise CurveError(f'{workdir}: no training error logged between steps {previous} and '
                       f'{step}: log more often than it evaluates '
                       '(--config.train.log_every_steps).')
    record['step'].append(step)
    record['epoch'].append(step / steps_per_epoch)
    record['validation'].append(evaluation['centre_top1_error'])
    record['training'].append(statistics.fmean(window))
    previous = step
  return record


def _name(workdir: str) -> str:
  """A run by its folder's name: the record names no machine's path."""
  return os.path.basename(os.path.normpath(workdir))


def mean_curves(workdirs: list[str]) -> dict:
  """The runs' curves averaged over them (they must evaluate at the same steps); also
  each run's validation curve."""
  each = [curves(w) for w in workdirs]
  for workdir, record in zip(workdirs[1:], each[1:]):
    if record['step'] != each[0]['step']:
      raise CurveError(f'{workdir} evaluated at steps {record["step"]}, {workdirs[0]} at '
                       f'{each[0]["step"]}: give runs of one study (same length and '
                       'eval_every_steps).')
  return {'step': each[0]['step'], 'epoch': each[0]['epoch'],
          'validation': np.mean([r['validation'] for r in each], axis=0).tolist(),
          'training': np.mean([r['training'] for r in each], axis=0).tolist(),
          'validation_by_run': {_name(w): r['validation'] for w, r in zip(workdirs, each)}}


def crossings(difference: list[float], epochs: list[float]) -> list[float]:
  """The epochs of the evaluations at which `difference` changes sign (zero keeps the
  sign before it)."""
  found, sign = [], 0
  for value, epoch in zip(difference, epochs):
    now = (value > 0) - (value < 0)
    if now and sign and now != sign:
      found.append(epoch)
    sign = now or sign
  return found


def compare(baseline: list[str], variant: list[str]) -> dict:
  """The JSON record: both groups' mean curves, the variant's validation error minus the
  baseline's at each evaluation, the crossings and the final overfitting gaps."""
  runs = [ablation_report.load_run(w) for w in baseline + variant]  # Finished, or refused.
  names = [ablation_report.identify(run, runs[0]) for run in runs]
  if set(names[:len(baseline)]) != {'baseline'}:
    raise CurveError(f'--baseline holds runs of {sorted(set(names[:len(baseline)]))}: give '
                     'only the baseline\'s runs there.')
  variants = set(names[len(baseline):])
  if len(variants) != 1 or 'baseline' in variants:
    raise CurveError(f'--variant holds runs of {sorted(variants)}: give the runs of one '
                     'variant (not the baseline\'s).')
  a, b = mean_curves(baseline), mean_curves(variant)
  if a['step'] != b['step']:
    raise CurveError(f'The baseline evaluated at steps {a["step"]}, the variant at '
                     f'{b["step"]}: give runs of one study.')
  difference = [v - w for v, w in zip(b['validation'], a['validation'])]
  return {'variant': names[-1], 'baseline_runs': [_name(w) for w in baseline],
          'variant_runs': [_name(w) for w in variant],
          'epoch': a['epoch'], 'baseline': a, 'variant_curves': b,
          'validation_difference': difference,
          'crossings': crossings(difference, a['epoch']),
          'final_gap': {'baseline': a['validation'][-1] - a['training'][-1],
                        'variant': b['validation'][-1] - b['training'][-1]}}


def table(record: dict) -> str:
  """The record as Markdown: the curves per evaluation, then the crossings and gaps."""
  name, a, b = record['variant'], record['baseline'], record['variant_curves']
  lines = [f'| epoch | baseline training | baseline validation | {name} training '
           f'| {name} validation | {name} − baseline (validation) |',
           '|---|---|---|---|---|---|']
  for i, epoch in enumerate(record['epoch']):
    lines.append(f'| {epoch:.1f} | {100 * a["training"][i]:.2f} | '
                 f'{100 * a["validation"][i]:.2f} | {100 * b["training"][i]:.2f} | '
                 f'{100 * b["validation"][i]:.2f} | '
                 f'{100 * record["validation_difference"][i]:+.2f} |')
  found = record['crossings']
  lines += ['', 'Top-1 errors in %, the mean over each group\'s seeds; validation on the centre '
            'patch. The validation curves cross at epoch '
            + (', '.join(f'{e:.1f}' for e in found) if found else 'none (no change of sign)')
            + f'. Validation minus training error at the end: baseline '
            f'{100 * record["final_gap"]["baseline"]:.2f} points, {name} '
            f'{100 * record["final_gap"]["variant"]:.2f}.']
  return '\n'.join(lines)


def draw(path: str, record: dict) -> None:
  name = record['variant']
  series = []
  for group, curve, label in (('baseline', record['baseline'], 'baseline'),
                              ('variant', record['variant_curves'], name)):
    for kind, dashed in (('validation', False), ('training', True)):
      series.append(line_chart.Series(f'{label}, {kind}', curve['epoch'], curve[kind],
                                      _COLOURS[group], dashed))
  highest = max(max(s.y) for s in series)
  line_chart.draw(path, series, x_max=max(record['epoch']),
                  y_max=min(1.0, float(np.ceil(highest * 10) / 10)), x_label='Epochs',
                  y_label='Top-1 error rate',
                  title=f'Baseline and {name}: training (dashed) and validation (solid) error')


def main(argv):
  if len(argv) > 1:
    raise CurveError(f'Unexpected arguments: {argv[1:]}; give workdirs as --baseline=A,B '
                     '--variant=C,D.')
  f = flags.FLAGS
  record = compare(f.baseline, f.variant)
  os.makedirs(f.out, exist_ok=True)
  with open(os.path.join(f.out, RECORD), 'w') as out:
    json.dump(record, out, indent=1)
  draw(os.path.join(f.out, CHART), record)
  print(table(record) + f'\n\nWrote {os.path.join(f.out, CHART)} and '
        f'{os.path.join(f.out, RECORD)}')


if __name__ == '__main__':
  flags.DEFINE_list('baseline', None, "Workdirs of the baseline's runs.", required=True)
  flags.DEFINE_list('variant', None, "Workdirs of one variant's runs.", required=True)
  flags.DEFINE_string('out', None, f'Where {CHART} and {RECORD} go.', required=True)
  command_line.run(main)
