"""The ablation study's report: each run's errors, its change against the baseline, the paper's.

  python -m alexnet_jax.experiments.ablation_report --out=runs/ablation \
      --baseline=runs/ablation/baseline_seed0,runs/ablation/baseline_seed1 \
      --runs=runs/ablation/no_lrn_seed0,runs/ablation/one_tower_seed0

Reads each workdir's config.json and results.json (written when a run finishes) and
writes OUT/ablation_report.md, a Markdown table, and OUT/ablation_chart.png, the changes
per variant beside the paper's (bar_chart.py). The ablation runner (ablation_runner.py)
calls `write_report` after its runs.

For each run: its centre-patch and ten-patch top-1 and top-5 errors (§4.1), each with its
change Δ against the baseline (the mean over the baseline's seeds) in percentage points,
positive when the ablation raised the error; the change the paper states (`PAPER`;
docs/paper.md, "Results to compare with") beside it; and a verdict for top-1 and top-5 on
the ten-patch errors, the paper's test (the centre patch's when the runs were evaluated
without ten patches).

Noise: the baseline's seeds differ in initialisation, dropout, augmentation and data
order, and nothing else. The noise band is the largest distance of a baseline seed from
the baseline mean (with two seeds: half their range). A change inside the band is
"within noise", whatever its direction: not a confirmation. With one baseline seed there
is no band, and the verdict says so. The band is a rough guide, not a test: a variant's
single run carries noise of its own, so more seeds (ablation_runner --seeds,
--variant_seeds) are the way to trust a change just outside it.

A run is named by its config, not by its directory: the fields in which it differs from
the baseline (besides the seeds and the fields saved_config.RESUMABLE lets a rerun change)
must be one variant's of configs/ilsvrc2012.py. Runs at another scale or on other data
(image or crop size, epochs, batch, data set) are refused, as is a run that has not
finished.
"""

import dataclasses
import json
import os
import statistics

from absl import flags

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.experiments import bar_chart
from alexnet_jax.run import saved_config, workdir as workdirs
from alexnet_jax.runtime import command_line, errors

REPORT, CHART = 'ablation_report.md', 'ablation_chart.png'
RESULTS = workdirs.RESULTS
# Evaluations (§4.1): the centre patch, and the ten patches (corners, centre, reflections).
PREFIXES = {'centre': 'centre', 'ten_patch': '10-patch'}
TOPS = ('top1', 'top5')
_TOP_NAMES = {'top1': 'top-1', 'top5': 'top-5'}
# What a seed varies (ablation_runner): initialisation, dropout and augmentation
# (config.seed), and the order of the data (data.shuffle_seed).
SEED_FIELDS = ('seed', 'data.shuffle_seed')
_LENGTH_FIELDS = ('train.num_epochs', 'train.num_steps')  # Resumable, yet the scale.
# A run differing from the baseline in one of these is of another scale or data set.
_SCALE_FIELDS = ('data.', 'train.batch_size', 'model.num_classes') + _LENGTH_FIELDS


class ReportError(errors.UserError, ValueError):
  """The runs cannot be compared as given; the message says which run and what to do."""


@dataclasses.dataclass(frozen=True)
class Stated:
  """The change of one error rate that the paper states for an ablation."""
  text: str  # As the paper gives it, in percentage points: '+1.4', 'over +1', 'higher'.
  value: float | None  # For the chart; None: a direction without a number.


@dataclasses.dataclass(frozen=True)
class PaperEffect:
  section: str
  top1: Stated | None  # None: the paper says nothing of this error rate.
  top5: Stated | None
  note: str = ''  # What else to know when comparing.


# What the paper states of each variant of configs/ilsvrc2012.py (docs/paper.md, "Results to
# compare with"), as the change of ILSVRC error when the component is removed. Every one is
# a rise: a measured change agrees in direction when it is positive. Variants missing here
# (tanh, conv6, caffe) have no stated effect on ILSVRC error.
_MIDDLE_CONV = PaperEffect('§7', Stated('about +2', 2.0), None,
                           'removing any middle convolutional layer costs about 2% top-1.')
PAPER = {
    'no_lrn': PaperEffect('§3.3', Stated('+1.4', 1.4), Stated('+1.2', 1.2),
                          'response normalisation reduces top-1 and top-5 error by 1.4% and '
                          '1.2% (a four-layer CNN on CIFAR-10: 13% test error without, 11% '
                          'with).'),
    'no_overlap': PaperEffect('§3.4', Stated('+0.4', 0.4), Stated('+0.3', 0.3),
                              'pooling z=3, s=2 beats z=2, s=2 (the same output sizes) by '
                              '0.4% top-1 and 0.3% top-5.'),
    'one_tower': PaperEffect('§3.2', Stated('+1.7', 1.7), Stated('+1.2', 1.2),
                             'two towers beat one tower with half the kernels of each '
                             'convolutional layer (footnote 2: conv5 and the fully '
                             'connected layers keep theirs) by 1.7% top-1 and 1.2% top-5.'),
    'no_pca': PaperEffect('§4.1', Stated('over +1', 1.0), None,
                          'PCA colour augmentation reduces top-1 error by over 1%.'),
    'no_dropout': PaperEffect('§4.2', Stated('higher', None), Stated('higher', None),
                              'no number: without dropout the net overfits substantially, '
                              'and dropout roughly doubles the iterations to converge, so a '
                              'run far from convergence may favour the net without it.'),
    'no_conv3': _MIDDLE_CONV,
    'no_conv4': _MIDDLE_CONV,
    'no_conv5': _MIDDLE_CONV,
}


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished run: its workdir, saved config and final errors in percent."""
  workdir: str
  config: dict
  errors: dict[str, float]  # '<prefix>_<top>' -> error (%), for the evaluations it made.
  count: int  # Images evaluated.

  @property
  def seed(self) -> int:
    return self.config['seed']

  def scale(self) -> str:
    """Image and crop size, training length and batch, from its config.json."""
    d, t = self.config['data'], self.config['train']
    length = f"{t['num_steps']} steps" if t['num_steps'] > 0 else f"{t['num_epochs']:g} epochs"
    return f"{d['image_size']}/{d['crop_size']} px, {length}, batch {t['batch_size']}"


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One error rate of one run against the paper's statement and the noise band."""
  stated: bool  # The paper states a change of this error rate (always a rise).
  delta: float  # The measured change against the baseline mean, in points.
  band: float | None  # The noise band's half-width; None: one baseline seed, no band.

  @property
  def agrees(self) -> bool:
    """The measured change has the paper's direction (every stated change is a rise)."""
    return self.delta > 0

  @property
  def within_noise(self) -> bool | None:
    return None if self.band is None else abs(self.delta) <= self.band

  def text(self) -> str:
    if not self.stated:
      return '—'
    direction = ('same direction' if self.agrees else
                 'no change' if self.delta == 0 else 'opposite direction')
    if self.within_noise is None:
      return f'{direction}, no noise band'
    if self.within_noise:
      return f'within noise ({direction})'
    return 'agrees (beyond noise)' if self.agrees else 'opposite (beyond noise)'


@dataclasses.dataclass(frozen=True)
class Row:
  run: Run
  name: str  # 'baseline' or the variant's name in configs/ilsvrc2012.py.
  deltas: dict[str, float]  # As Run.errors: the change against the baseline mean.
  verdicts: dict[str, Verdict]  # 'top1', 'top5' -> verdict; empty for the baseline.


@dataclasses.dataclass(frozen=True)
class Study:
  prefix: str  # 'ten_patch' or 'centre': the errors the verdicts and the chart use.
  seeds: list[int]  # The baseline's.
  mean: dict[str, float]  # The baseline's mean error, as Run.errors.
  band: dict[str, float | None]  # The noise band's half-width; None with one seed.
  rows: list[Row]  # The baseline's runs, then the others in the order given.


def unfinished(results: dict | None, config: dict) -> str | None:
  """Why a run whose results.json holds `results` (None: no file) has not yet trained as
  long as `config` asks; None when it has."""
  if results is None:
    return f'it has no {RESULTS}'
  if results['preempted'] or not results['final']:
    return f"it was stopped at step {results['step']} (preempted or interrupted)"
  t = config['train']
  if t['num_steps'] > 0 and results['step'] < t['num_steps']:
    return f"it trained {results['step']} of {t['num_steps']} steps"
  if t['num_steps'] <= 0 and results['epoch'] < t['num_epochs'] - 1e-9:
    return f"it trained {results['epoch']:.2f} of {t['num_epochs']:g} epochs"
  return None


def read_results(workdir: str) -> dict | None:
  """The workdir's results.json, or None if it has none."""
  path = os.path.join(workdir, RESULTS)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_run(workdir: str) -> Run:
  """The finished run in `workdir`; raises ReportError naming it and what to do if not."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = saved_config.saved(workdir)
  if config is None:
    raise ReportError(f'{workdir} holds no run (no {saved_config.FILE}): check the path, '
                      'or start the run (ablation_runner starts its runs).')
  reason = unfinished(read_results(workdir), config)
  if reason:
    raise ReportError(
        f'{workdir} has not finished: {reason}. Finish it with `python -m alexnet_jax.main '
        f'--workdir={workdir}`: it resumes from the last checkpoint, trains to the end and '
        f'evaluates (a run whose training was complete only writes its {RESULTS}). The '
        'ablation runner does that for its runs when rerun. Then make the report again.')
  final = read_results(workdir)['final']
  measured = {f'{p}_{t}': 100 * final[f'{p}_{t}_error'] for p in PREFIXES for t in TOPS
              if f'{p}_{t}_error' in final}
  return Run(workdir, config, measured, final['count'])


def _matches(name: str, fields: tuple[str, ...]) -> bool:
  return any(name == f or (f.endswith('.') and name.startswith(f)) for f in fields)


def _differences(run: Run, reference: Run) -> dict[str, tuple[object, object]]:
  """Field -> (the reference's value, the run's), where the two differ in what they compute."""
  return {name: (old, new) for name, old, new in
          saved_config.differences(reference.config, run.config)
          if name not in SEED_FIELDS
          and (name in _LENGTH_FIELDS or not _matches(name, saved_config.RESUMABLE))}


def _variant_fields(variant: str) -> dict[str, object]:
  """What a variant changes, as _differences sees it (without mesh.*, say)."""
  return {name: value for name, value in ilsvrc2012.VARIANTS[variant][1].items()
          if not _matches(name, saved_config.RESUMABLE)}


def identify(run: Run, reference: Run) -> str:
  """The variant of configs/ilsvrc2012.py that `run` is, against the baseline `reference`
  ('baseline' if none); raises ReportError for runs that cannot be compared."""
  changes = _differences(run, reference)
  values = {name: new for name, (_, new) in changes.items()}
  explained, name = {}, 'baseline'  # The variant with the most fields the run changes.
  for variant in ilsvrc2012.VARIANTS:
    fields = _variant_fields(variant)
    if fields.items() <= values.items() and len(fields) > len(explained):
      explained, name = fields, variant
  rest = {n: change for n, change in changes.items() if n not in explained}
  if not rest:
    return name
  described = '; '.join(f'{n}: {old!r} -> {new!r}' for n, (old, new) in sorted(rest.items()))
  if any(_matches(n, _SCALE_FIELDS) for n in rest):
    raise ReportError(
        f'Runs of different scale or data compared together: {run.workdir} differs from '
        f'the baseline {reference.workdir} in {described}. Compare runs made at one scale '
        'on one data set (ablation_runner gives all its runs the same overrides), or make '
        'a separate report for each.')
  raise ReportError(
      f'{run.workdir} differs from the baseline {reference.workdir} in {described}, which '
      f'no variant of configs/ilsvrc2012.py changes (they are: '
      f'{", ".join(ilsvrc2012.VARIANTS)}). Give only runs of those variants, made with the '
      "baseline's overrides.")


def _check_baseline(baseline: list[Run]) -> None:
  if not baseline:
    raise ReportError('No baseline run given: the changes are measured against it.')
  for run in baseline[1:]:
    name = identify(run, baseline[0])
    if name != 'baseline':
      raise ReportError(f'The baseline runs differ in more than their seeds: {run.workdir} '
                        f'is the variant {name} of {baseline[0].workdir}.')
  seeds = [run.seed for run in baseline]
  if len(set(seeds)) < len(seeds):
    raise ReportError(f'The baseline runs share seeds ({seeds}): identical seeds are no '
                      'estimate of the noise. Give runs with different seeds.')


def _band(values: list[float]) -> float | None:
  """The noise band's half-width: the largest distance of a seed from their mean."""
  if len(values) < 2:
    return None
  mean = statistics.fmean(values)
  return max(abs(v - mean) for v in values)


def compare(baseline: list[Run], runs: list[Run]) -> Study:
  """Each run against the baseline's mean, its noise band and the paper's statement."""
  _check_baseline(baseline)
  names = [identify(run, baseline[0]) for run in runs]
  for run, name in zip(runs, names):
    if name == 'baseline':
      raise ReportError(f'{run.workdir} has the baseline\'s config (seed {run.seed}): give '
                        'it with the baseline runs, where it counts toward the noise band.')
  everything = baseline + runs
  common = set.intersection(*(set(run.errors) for run in everything))
  prefix = 'ten_patch' if all(f'ten_patch_{t}' in common for t in TOPS) else 'centre'
  mean = {m: statistics.fmean(run.errors[m] for run in baseline) for m in common}
  band = {m: _band([run.errors[m] for run in baseline]) for m in common}
  rows = []
  for run, name in zip(everything, ['baseline'] * len(baseline) + names):
    deltas = {m: run.errors[m] - mean[m] for m in common}
    verdicts = {}
    if name != 'baseline':
      effect = PAPER.get(name)
      for top in TOPS:
        metric = f'{prefix}_{top}'
        stated = effect is not None and getattr(effect, top) is not None
        verdicts[top] = Verdict(stated, deltas[metric], band[metric])
    rows.append(Row(run, name, deltas, verdicts))
  return Study(prefix, [run.seed for run in baseline], mean, band, rows)


def _cell(row: Row, metric: str) -> str:
  if metric not in row.deltas:
    return '—'
  return f'{row.run.errors[metric]:.2f} ({row.deltas[metric]:+.2f})'


def _paper_cell(name: str) -> str:
  effect = PAPER.get(name)
  if effect is None:
    return 'not stated' if name != 'baseline' else ''
  texts = [s.text if s else '—' for s in (effect.top1, effect.top5)]
  return f'{texts[0]} / {texts[1]} ({effect.section})'


def _band_line(study: Study) -> str:
  n = len(study.seeds)
  seeds = ', '.join(map(str, study.seeds))
  if n < 2:
    return (f'Baseline: one seed ({seeds}), so no noise band: the verdicts give only the '
            'direction. Run more seeds (ablation_runner --seeds=2 or more) before reading '
            'anything into a change.')
  spread = 'half the range of the two seeds' if n == 2 else (
      'the largest distance of a seed from the mean')
  parts = []
  for top in TOPS:
    metric = f'{study.prefix}_{top}'
    text = f'{_TOP_NAMES[top]} {study.mean[metric]:.2f} ± {study.band[metric]:.2f}'
    if n > 2:
      runs = [row.run.errors[metric] for row in study.rows if row.name == 'baseline']
      text += f' (standard deviation {statistics.stdev(runs):.2f})'
    parts.append(text)
  return (f'Baseline: {n} seeds ({seeds}); {PREFIXES[study.prefix]} error '
          f'{", ".join(parts)}. The noise band (±) is {spread}: a change inside it is '
          'within noise, not a confirmation.')


def markdown(study: Study, chart: str | None) -> str:
  """The report: what it compares, the table, the chart (a file beside it; None: none)
  and notes on the variants in it."""
  first = study.rows[0].run
  data = first.config['data']
  # The folder by its own name: the report names no machine's path.
  folder = os.path.basename(data['folder'].rstrip('/'))
  source = ' '.join(filter(None, (data['source'], folder, data['name'])))
  lines = [
      '# Ablations against the paper',
      '',
      f"Data: {source}, evaluated on its {data['eval_split']} split ({first.count} "
      'images). Errors in %; in brackets the change Δ against the baseline mean, in '
      'percentage points, positive when the ablation raised the error. The paper\'s '
      'changes are stated the same way. '
      f'Verdicts compare the {PREFIXES[study.prefix]} errors (§4.1).',
      '',
      _band_line(study),
      '',
      '| run | seed | scale | centre top-1 (Δ) | centre top-5 (Δ) | 10-patch top-1 (Δ) '
      '| 10-patch top-5 (Δ) | paper Δ top-1 / top-5 | verdict top-1 | verdict top-5 |',
      '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for row in study.rows:
    verdicts = ([row.verdicts[t].text() for t in TOPS] if row.verdicts
                else ['baseline seed'] * 2)
    cells = [row.name, str(row.run.seed), row.run.scale(),
             *(_cell(row, f'{p}_{t}') for p in PREFIXES for t in TOPS),
             _paper_cell(row.name), *verdicts]
    lines.append('| ' + ' | '.join(cells) + ' |')
  if chart:
    lines += ['', f'![Changes against the baseline, measured and the paper\'s]({chart})']
  notes = [f'- {name} ({PAPER[name].section}): {PAPER[name].note}'
           for name in dict.fromkeys(row.name for row in study.rows) if name in PAPER]
  if notes:
    lines += ['', 'What the paper states (changes on ILSVRC-2012 after about 90 epochs; a '
              'smaller data set and a shorter run need not show them):', *notes]
  lines += ['', 'Workdirs:', *(f'- {row.name} seed {row.run.seed}: {row.run.workdir}'
                               for row in study.rows)]
  return '\n'.join(lines) + '\n'


def draw_chart(study: Study, path: str) -> tuple[int, int]:
  """Per variant, the mean measured change beside the paper's, on the noise band."""
  variants = list(dict.fromkeys(row.name for row in study.rows if row.name != 'baseline'))
  panels = []
  for top in TOPS:
    metric = f'{study.prefix}_{top}'
    measured, measured_labels, paper, paper_labels = [], [], [], []
    for name in variants:
      deltas = [row.deltas[metric] for row in study.rows if row.name == name]
      measured.append(statistics.fmean(deltas))
      measured_labels.append(f'{measured[-1]:+.2f}' + (f' (n={len(deltas)})'
                                                        if len(deltas) > 1 else ''))
      stated = getattr(PAPER[name], top) if name in PAPER else None
      paper.append(stated.value if stated else None)
      paper_labels.append(stated.text if stated else 'not stated')
    band = study.band[metric]
    panels.append(bar_chart.Panel(
        f'{PREFIXES[study.prefix]} {_TOP_NAMES[top]} error: change against the baseline '
        '(points)',
        {'measured': measured, 'paper': paper},
        {'measured': measured_labels, 'paper': paper_labels}, band,
        f'baseline noise ±{band:.2f} ({len(study.seeds)} seeds)' if band is not None
        else ''))
  return bar_chart.draw(path, 'Ablations: error change against the baseline',
                        variants, ['measured', 'paper'], panels)


def write_report(baseline: list[str], runs: list[str], out: str) -> tuple[str, str, str]:
  """Compares the runs in the `runs` workdirs with the `baseline` ones; writes the report
  and the chart into `out`. Returns (Markdown text, report path, chart path)."""
  study = compare([load_run(w) for w in baseline], [load_run(w) for w in runs])
  os.makedirs(out, exist_ok=True)
  report, chart = os.path.join(out, REPORT), os.path.join(out, CHART)
  text = markdown(study, CHART if runs else None)
  with open(report, 'w') as f:
    f.write(text)
  if runs:
    draw_chart(study, chart)
  return text, report, chart


def main(argv):
  if len(argv) > 1:
    raise ReportError(f'Unexpected arguments: {argv[1:]}; give workdirs as '
                      '--baseline=A,B --runs=C,D.')
  f = flags.FLAGS
  text, report, chart = write_report(f.baseline, f.runs, f.out)
  print(text + f'\nWrote {report}' + (f' and {chart}' if f.runs else ''))


if __name__ == '__main__':  # Flags here: the runner imports this module and has its own.
  flags.DEFINE_list('baseline', None, 'Workdirs of the baseline, one per seed.',
                    required=True)
  flags.DEFINE_list('runs', [], 'Workdirs of the variants.')
  flags.DEFINE_string('out', None, f'Where {REPORT} and {CHART} go.', required=True)
  command_line.run(main)
