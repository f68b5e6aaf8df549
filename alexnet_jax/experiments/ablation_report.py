"""The ablation study's report: each variant's errors over its seeds, its change against the
baseline with a confidence interval, and the paper's change beside it.

  python -m alexnet_jax.experiments.ablation_report --out=runs/ablation \
      --baseline=runs/ablation/baseline_seed0,runs/ablation/baseline_seed1,... \
      --runs=runs/ablation/no_lrn_seed0,runs/ablation/no_lrn_seed1,...

Reads each workdir's config.json and results.json (written when a run finishes) and
writes OUT/ablation_report.md, Markdown tables, and OUT/ablation_chart.png, the changes
per variant with their intervals beside the paper's (bar_chart.py). The ablation runner
(ablation_runner.py) calls `write_report` after its runs.

Per variant (the baseline's runs are one group, each variant's another): the mean and
standard deviation over its seeds of the centre-patch and ten-patch top-1 and top-5
errors (§4.1); its change Δ, the variant's mean minus the baseline's in percentage
points (positive when the ablation raised the error), with a 95% confidence interval
(Welch's t, seed_statistics.py: the variant's seeds against the baseline's, with no
assumption that their spreads are equal); the change the paper states (`PAPER`;
docs/paper.md, "Results to compare with"); and a verdict for top-1 and top-5 on the
ten-patch errors, the paper's test (the centre patch's when the runs were evaluated
without ten patches). The verdict takes a side only where the interval excludes zero:
"agrees" (a rise, as the paper states) or "opposite"; an interval holding zero is no
evidence either way, whatever the sign of the mean change. An interval needs two seeds
of the variant and two of the baseline (ablation_runner --seeds, --variant_seeds); with
fewer the verdict gives only the direction. A variant whose pooled maps have other
sizes than the baseline's at the study's crop (`map_sizes`: no_overlap at 112 px) gets
no verdict: the paper compares nets whose maps keep their sizes. The variants of
configs/ilsvrc2012.py not in the study are named, each with why (not run, or a variant of
another scale: caffe's 227-px crops). A second table lists every run.

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

import ml_collections
from absl import flags

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.experiments import bar_chart, seed_statistics
from alexnet_jax.nn import model
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
# Of those, the ones a variant may set that make it a study of another scale (caffe's crop).
_SIZE_FIELDS = ('data.image_size', 'data.crop_size', 'train.batch_size', 'model.num_classes'
                ) + _LENGTH_FIELDS


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
    length = (f"{t['num_steps']} steps" if t['num_steps'] > 0 else
              f"{t['num_epochs']:g} epoch{'s' * (t['num_epochs'] != 1)}")
    return f"{d['image_size']}/{d['crop_size']} px, {length}, batch {t['batch_size']}"


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One error rate of one variant against the paper's statement, on its interval."""
  stated: bool  # The paper states a change of this error rate (always a rise).
  difference: seed_statistics.Difference  # The variant's mean minus the baseline's.
  other_maps: bool = False  # Its maps have other sizes than the baseline's (map_sizes).

  def text(self) -> str:
    if not self.stated:
      return '—'
    if self.other_maps:
      return "not the paper's comparison (other map sizes)"
    delta = self.difference.delta
    direction = ('same direction' if delta > 0 else
                 'no change' if delta == 0 else 'opposite direction')
    if self.difference.excludes_zero is None:
      return f'{direction}, no interval (one seed)'
    if not self.difference.excludes_zero:
      return f'interval includes 0 ({direction})'
    return 'agrees' if delta > 0 else 'opposite'


@dataclasses.dataclass(frozen=True)
class Row:
  """One run, and its errors' changes against the baseline's mean."""
  run: Run
  name: str  # 'baseline' or the variant's name in configs/ilsvrc2012.py.
  deltas: dict[str, float]  # As Run.errors: the change against the baseline mean.


@dataclasses.dataclass(frozen=True)
class Group:
  """The runs of one variant (or the baseline's), over their seeds."""
  name: str
  seeds: list[int]
  summaries: dict[str, seed_statistics.Summary]  # As Run.errors: over the seeds.
  differences: dict[str, seed_statistics.Difference]  # As Run.errors; baseline: empty.
  verdicts: dict[str, Verdict]  # 'top1', 'top5' -> verdict; baseline: empty.
  other_maps: str | None  # map_sizes' note when its map sizes are not the baseline's.


@dataclasses.dataclass(frozen=True)
class Study:
  prefix: str  # 'ten_patch' or 'centre': the errors the verdicts and the chart use.
  groups: list[Group]  # The baseline's, then the variants' in the order first given.
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


def map_sizes(baseline: ml_collections.ConfigDict, variant: ml_collections.ConfigDict,
              name: str, crop: int) -> str | None:
  """None when the `variant` net's pooled maps have the `baseline` net's sides at
  `crop`-px crops (as every variant's have at the paper's 224 px); else a note saying so.

  The paper compares nets whose maps keep their sizes (§3.4: pooling z=2 against z=3,
  "which produces output of the same dimensions"); at a smaller crop a variant can change
  them, and with them what fc6 sees, and then measures something else.
  """
  have, want = (model.pooled_sides(m, crop) for m in (variant, baseline))
  if have == want:
    return None
  same = [c for c in range(crop // 2, 2 * crop + 1)
          if model.pooled_sides(variant, c) == model.pooled_sides(baseline, c)]
  ranges = []
  for c in same:
    if ranges and c == ranges[-1][1] + 1:
      ranges[-1][1] = c
    else:
      ranges.append([c, c])
  near = ', '.join(f'{a}-{b}' if a != b else f'{a}' for a, b in ranges)
  sides = lambda values: ', '.join(f'{v}x{v}' for v in values)
  return (f'At {crop}-px crops the pooled maps of {name} are {sides(have)} against the '
          f"baseline's {sides(want)}, so fc6 sees {have[-1]}x{have[-1]} positions, not "
          f"{want[-1]}x{want[-1]}: not the paper's comparison, which keeps the sizes. Crops "
          f'from {crop // 2} to {2 * crop} px that keep them: {near or "none"}.')


def _model(run: Run) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(run.config['model'])


def compare(baseline: list[Run], runs: list[Run]) -> Study:
  """Each variant's runs against the baseline's: changes, intervals, the paper's statement."""
  _check_baseline(baseline)
  names = [identify(run, baseline[0]) for run in runs]
  for run, name in zip(runs, names):
    if name == 'baseline':
      raise ReportError(f'{run.workdir} has the baseline\'s config (seed {run.seed}): give '
                        'it with the baseline runs, where it counts toward their spread.')
  everything = baseline + runs
  everyone = ['baseline'] * len(baseline) + names
  common = set.intersection(*(set(run.errors) for run in everything))
  prefix = 'ten_patch' if all(f'ten_patch_{t}' in common for t in TOPS) else 'centre'
  base = {m: [run.errors[m] for run in baseline] for m in common}
  mean = {m: statistics.fmean(values) for m, values in base.items()}
  groups = []
  for name in dict.fromkeys(everyone):
    members = [run for run, n in zip(everything, everyone) if n == name]
    seeds = [run.seed for run in members]
    repeated = [run.workdir for run in members if seeds.count(run.seed) > 1]
    if repeated:
      raise ReportError(f'Runs of {name} share seeds ({seeds}): {", ".join(repeated)}. A '
                        'repeated seed is no estimate of the spread: give each seed once.')
    values = {m: [run.errors[m] for run in members] for m in common}
    summaries = {m: seed_statistics.summary(v) for m, v in values.items()}
    differences, verdicts, other_maps = {}, {}, None
    if name != 'baseline':
      differences = {m: seed_statistics.difference(v, base[m]) for m, v in values.items()}
      other_maps = map_sizes(_model(baseline[0]), _model(members[0]), name,
                             baseline[0].config['data']['crop_size'])
      effect = PAPER.get(name)
      verdicts = {top: Verdict(effect is not None and getattr(effect, top) is not None,
                               differences[f'{prefix}_{top}'], other_maps is not None)
                  for top in TOPS}
    groups.append(Group(name, seeds, summaries, differences, verdicts, other_maps))
  rows = [Row(run, name, {m: run.errors[m] - mean[m] for m in common})
          for run, name in zip(everything, everyone)]
  return Study(prefix, groups, rows)


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


def _shown(workdir: str, folder: str) -> str:
  """`workdir` from `folder` when inside it (a study's own runs), else in full."""
  relative = os.path.relpath(workdir, folder)
  return workdir if relative.startswith('..') else relative


def not_run(study: Study) -> list[tuple[str, str]]:
  """The variants of configs/ilsvrc2012.py the study lacks, each with why it cannot be
  compared at this study's scale, or that it was not run."""
  config = study.rows[0].run.config
  have = {group.name for group in study.groups}
  missing = []
  for name, (_, fields) in ilsvrc2012.VARIANTS.items():
    if name in have:
      continue
    scale = {f: v for f, v in fields.items() if f in _SIZE_FIELDS}
    if scale:
      now = ', '.join(f'{f}={_value(config, f)!r}' for f in scale)
      wants = ', '.join(f'{f}={v!r}' for f, v in scale.items())
      reason = (f'it sets {wants}, another scale than this study\'s ({now}): compare it '
                'in a study at its scale')
    elif all(_value(config, f) == v for f, v in _variant_fields(name).items()):
      reason = 'the baseline here already has its fields (an override of the study)'
    else:
      reason = 'not run in this study (ablation_runner --variants)'
    missing.append((name, reason))
  return missing


def _value(config: dict, field: str):
  section, name = field.split('.')
  return config[section][name]


def _seeds_line(study: Study) -> str:
  """How many seeds each variant had: one number when all had the same seeds."""
  seeds = {tuple(group.seeds) for group in study.groups}
  if len(seeds) == 1:
    [same] = seeds
    n = len(same)
    return (f'{n} seed{"s" * (n > 1)} per variant, the baseline included (seeds '
            f'{", ".join(map(str, same))}).')
  return 'Seeds: ' + '; '.join(f'{g.name} {", ".join(map(str, g.seeds))}'
                               for g in study.groups) + '.'


def markdown(study: Study, chart: str | None, folder: str) -> str:
  """The report: what it compares, the variants' table, the chart (a file beside it;
  None: none), notes on the variants in it, and every run, its workdir relative to the
  report's `folder`."""
  first = study.rows[0].run
  data = first.config['data']
  # The folder by its own name: the report names no machine's path.
  source = ' '.join(filter(None, (data['source'], os.path.basename(data['folder'].rstrip('/')),
                                  data['name'])))
  test = PREFIXES[study.prefix]
  lines = [
      '# Ablations against the paper',
      '',
      f"Data: {source}, evaluated on its {data['eval_split']} split ({first.count} "
      f'images); scale: {first.scale()}. {_seeds_line(study)}',
      '',
      'Errors in %, the mean ± standard deviation over the seeds. Δ: the variant\'s mean '
      'minus the baseline\'s, in percentage points, positive when the ablation raised the '
      f'error, on the {test} errors (§4.1), with its 95% interval in brackets (Welch\'s t: '
      'the variant\'s seeds against the baseline\'s). The paper\'s changes are stated the '
      'same way. A verdict takes a side only where the interval excludes zero.',
      '',
      *_variants_table(study),
  ]
  absent = not_run(study)
  if absent:
    lines += ['', f'Not in this study ({len(absent)} of the {len(ilsvrc2012.VARIANTS)} '
              'variants of configs/ilsvrc2012.py):',
              *(f'- {name}: {reason}.' for name, reason in absent)]
  if chart:
    lines += ['', f'![Changes against the baseline with their 95% intervals, and the '
              f"paper's]({chart})"]
  notes = [f'- {group.name} ({PAPER[group.name].section}): {PAPER[group.name].note}'
           for group in study.groups if group.name in PAPER]
  if notes:
    lines += ['', 'What the paper states (changes on ILSVRC-2012 after about 90 epochs; a '
              'smaller data set and a shorter run need not show them):', *notes]
  other = [f'- {group.name}: {group.other_maps}' for group in study.groups if group.other_maps]
  if other:
    lines += ['', 'Map sizes (model.pooled_sides):', *other]
  lines += ['', 'Every run: its errors in %, in brackets the change against the baseline\'s '
            'mean; its workdir from this report\'s folder.', '',
            '| run | seed | centre top-1 (Δ) | centre top-5 (Δ) | 10-patch top-1 (Δ) '
            '| 10-patch top-5 (Δ) | workdir |',
            '|---|---|---|---|---|---|---|']
  for row in study.rows:
    cells = [row.name, str(row.run.seed), *(_cell(row, f'{p}_{t}') for p in PREFIXES
                                             for t in TOPS),
             _shown(row.run.workdir, folder)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _variants_table(study: Study) -> list[str]:
  """The table of the variants: errors over the seeds, changes, the paper's, verdicts."""
  test = PREFIXES[study.prefix]
  lines = [f'| variant | seeds | centre top-1 | centre top-5 | {test} top-1 | {test} top-5 '
           '| Δ top-1 [95%] | Δ top-5 [95%] | paper Δ top-1 / top-5 | verdict top-1 '
           '| verdict top-5 |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for group in study.groups:
    errors = [group.summaries[f'{p}_{t}'].text() if f'{p}_{t}' in group.summaries else '—'
              for p in PREFIXES for t in TOPS]
    if group.name == 'baseline':
      changes, verdicts = ['', ''], ['', '']
    else:
      changes = [group.differences[f'{study.prefix}_{t}'].text() for t in TOPS]
      verdicts = [group.verdicts[t].text() for t in TOPS]
    cells = [group.name, ', '.join(map(str, group.seeds)), *errors, *changes,
             _paper_cell(group.name), *verdicts]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def draw_chart(study: Study, path: str) -> tuple[int, int]:
  """Per variant, the measured change with its interval beside the paper's."""
  variants = [group for group in study.groups if group.name != 'baseline']
  panels = []
  for top in TOPS:
    metric = f'{study.prefix}_{top}'
    differences = [group.differences[metric] for group in variants]
    stated = [getattr(PAPER[g.name], top) if g.name in PAPER else None for g in variants]
    panels.append(bar_chart.Panel(
        f'{PREFIXES[study.prefix]} {_TOP_NAMES[top]} error: change against the baseline '
        '(points)',
        {'measured': [d.delta for d in differences],
         'paper': [s.value if s else None for s in stated]},
        {'measured': [f'{d.delta:+.2f} (n={len(g.seeds)})'
                      for d, g in zip(differences, variants)],
         'paper': [s.text if s else 'not stated' for s in stated]},
        {'measured': [(d.low, d.high) if d.low is not None else None for d in differences]}))
  intervals = any(d.low is not None for g in variants for d in g.differences.values())
  return bar_chart.draw(path, 'Ablations: error change against the baseline',
                        [group.name for group in variants], ['measured', 'paper'], panels,
                        "measured's 95% interval (Welch)" if intervals else '')


def write_report(baseline: list[str], runs: list[str], out: str) -> tuple[str, str, str]:
  """Compares the runs in the `runs` workdirs with the `baseline` ones; writes the report
  and the chart into `out`. Returns (Markdown text, report path, chart path)."""
  study = compare([load_run(w) for w in baseline], [load_run(w) for w in runs])
  os.makedirs(out, exist_ok=True)
  report, chart = os.path.join(out, REPORT), os.path.join(out, CHART)
  text = markdown(study, CHART if runs else None, out)
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
