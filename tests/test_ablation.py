"""The ablation study: the report's changes, intervals and verdicts on hand-made runs, its
chart, the learning curves of a longer pair, the runner's commands, skipping and checks,
and one tiny real study end to end.

Covers experiments/ablation_report.py, experiments/ablation_runner.py,
experiments/learning_curves.py and experiments/bar_chart.py (the chart), on the variants
of configs/ilsvrc2012.py.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.experiments import ablation_report, ablation_runner, bar_chart
from alexnet_jax.experiments import learning_curves
from alexnet_jax.run import saved_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = {'data.image_size': 72, 'data.crop_size': 64, 'train.num_epochs': 2.0,
         'train.batch_size': 16, 'model.num_classes': 10, 'data.source': 'synthetic'}


def results_json(workdir, errors, epoch=2.0, preempted=False):
  """results.json as train.py writes it; errors: centre top-1, top-5, ten-patch top-1,
  top-5 in %."""
  step = int(epoch * 6)
  final = {'step': step, 'epoch': epoch, 'count': 200,
           **{f'{p}_{t}_error': e / 100 for (p, t), e in zip(
               [(p, t) for p in ('centre', 'ten_patch') for t in ('top1', 'top5')], errors)}}
  return {'workdir': str(workdir), 'step': step, 'epoch': epoch, 'preempted': preempted,
          'exit_code': 143 if preempted else 0, 'final': final, 'history': [final],
          'train_history': [{'step': step, 'loss': 1.5}]}


def make_run(root, name, errors, variant='', seed=0, **changes):
  """A workdir with config.json (saved as main.py saves it) and results.json."""
  config = ilsvrc2012.get_config(variant)
  config.seed = config.data.shuffle_seed = seed
  for path, value in {**SCALE, **changes}.items():
    section, field = path.split('.')
    config[section][field] = value
  workdir = root / name
  workdir.mkdir()
  saved_config.save(config, str(workdir), None)
  (workdir / 'results.json').write_text(json.dumps(results_json(workdir, errors)))
  return str(workdir)


@pytest.fixture
def study_dirs(tmp_path):
  """Three seeds each. Ten-patch top-1: baseline 40 / 41 / 42 (standard deviation 1), the
  variants the same spread shifted by +5 (no_lrn), -4 (one_tower), +0.5 (no_dropout), +8
  (tanh); so each Δ's 95% interval is Δ ± 2.7764 * sqrt(2/3) (Welch: 4 degrees of freedom).
  Ten-patch top-5: baseline 10 / 11 / 12, shifted by +0.5, +3, -3, +8."""
  def runs(name, variant, top1, top5):
    return [make_run(tmp_path, f'{name}{s}', (top1 + s + 1, top5 + s + 1, top1 + s, top5 + s),
                     variant, seed=s) for s in range(3)]
  baseline = runs('b', '', 40, 10)
  variants = (runs('lrn', 'no_lrn', 45, 10.5) + runs('tower', 'one_tower', 36, 13)
              + runs('drop', 'no_dropout', 40.5, 7) + runs('tanh', 'tanh', 48, 18))
  return baseline, variants


HALF = 2.7764451 * (2 / 3) ** 0.5  # The fixture's interval half-width.


def test_report_measures_changes_with_intervals_and_takes_a_side_only_beyond_them(
    study_dirs, tmp_path):
  baseline, runs = study_dirs
  study = ablation_report.compare([ablation_report.load_run(w) for w in baseline],
                                  [ablation_report.load_run(w) for w in runs])
  assert study.prefix == 'ten_patch'
  groups = {group.name: group for group in study.groups}
  assert list(groups) == ['baseline', 'no_lrn', 'one_tower', 'no_dropout', 'tanh']  # By config.
  assert all(group.seeds == [0, 1, 2] for group in study.groups)
  base = groups['baseline'].summaries['ten_patch_top1']
  assert (base.n, base.mean, base.sd) == (3, pytest.approx(41), pytest.approx(1))
  lrn = groups['no_lrn'].differences['ten_patch_top1']
  assert (lrn.delta, lrn.low, lrn.high) == pytest.approx((5, 5 - HALF, 5 + HALF))
  assert lrn.degrees_of_freedom == pytest.approx(4)
  assert groups['no_lrn'].differences['centre_top1'].delta == pytest.approx(5)
  texts = {name: [group.verdicts[t].text() for t in ablation_report.TOPS]
           for name, group in groups.items() if name != 'baseline'}
  assert texts == {'no_lrn': ['agrees', 'interval includes 0 (same direction)'],
                   'one_tower': ['opposite', 'agrees'],
                   'no_dropout': ['interval includes 0 (same direction)', 'opposite'],
                   'tanh': ['—', '—']}  # The paper states no ILSVRC effect of tanh.
  assert groups['baseline'].verdicts == {} and groups['baseline'].differences == {}
  rows = [(row.name, row.run.seed, row.deltas['ten_patch_top1']) for row in study.rows]
  assert rows[:4] == [('baseline', 0, pytest.approx(-1)), ('baseline', 1, pytest.approx(0)),
                      ('baseline', 2, pytest.approx(1)), ('no_lrn', 0, pytest.approx(4))]


def test_report_file_and_chart(study_dirs, tmp_path):
  baseline, runs = study_dirs
  out = tmp_path / 'out'
  text, report, chart = ablation_report.write_report(baseline, runs, str(out))
  assert open(report).read() == text
  lines = text.splitlines()
  assert ('scale: 72/64 px, 2 epochs, batch 16. 3 seeds per variant, the baseline included '
          '(seeds 0, 1, 2).') in text
  [lrn] = [line for line in lines if line.startswith('| no_lrn | 0, 1, 2 |')]
  assert lrn == ('| no_lrn | 0, 1, 2 | 47.00 ± 1.00 | 12.50 ± 1.00 | 46.00 ± 1.00 '
                 '| 11.50 ± 1.00 | +5.00 [+2.73, +7.27] | +0.50 [-1.77, +2.77] '
                 '| +1.4 / +1.2 (§3.3) | agrees | interval includes 0 (same direction) |')
  assert lines[lines.index(lrn) - 1].startswith('| baseline | 0, 1, 2 | 42.00 ± 1.00 |')
  assert 'not stated' in [line for line in lines if line.startswith('| tanh |')][0]
  # Every variant of configs/ilsvrc2012.py is named: the rest, with why they are absent.
  assert 'Not in this study (7 of the 11 variants of configs/ilsvrc2012.py):' in text
  assert '- no_conv3: not run in this study (ablation_runner --variants).' in lines
  assert ("- caffe: it sets data.crop_size=227, another scale than this study's "
          '(data.crop_size=64): compare it in a study at its scale.') in lines
  assert '![' in text and ablation_report.CHART in text
  assert 'no_dropout (§4.2): no number' in text
  # Every run, its workdir from the report's folder when outside it: in full.
  assert f'| no_lrn | 2 | 48.00 (+6.00) | 13.50 (+1.50) | 47.00 (+6.00) | 12.50 (+1.50) ' \
         f'| {tmp_path}/lrn2 |' in lines
  assert ablation_report._shown(str(out / 'a_seed0'), str(out)) == 'a_seed0'
  image = Image.open(chart)
  assert image.format == 'PNG' and image.mode == 'RGB'
  width, height = image.size
  assert 520 <= width <= 1200 and 300 <= height <= 1000
  colours = {colour for _, colour in image.getcolors(width * height)}
  assert (47, 111, 176) in colours and (230, 138, 41) in colours  # Measured, paper bars.
  assert (20, 20, 20) in colours  # The intervals' whiskers.


def test_chart_size_follows_groups_and_panels(tmp_path):
  panel = bar_chart.Panel('p', {'a': [1.0, None] * 5, 'b': [-0.5, 2.0] * 5},
                          {'a': ['1', 'n/s'] * 5, 'b': ['-0.5', '2'] * 5},
                          {'b': [(-1.0, 0.0), None] * 5})
  size = bar_chart.draw(str(tmp_path / 'c.png'), 'title', [f'g{i}' for i in range(10)],
                        ['a', 'b'], [panel] * 3, 'interval')
  assert Image.open(tmp_path / 'c.png').size == size
  assert size[0] > 10 * 2 * 60 and size[1] > 3 * 240


def test_one_seed_gives_directions_only_and_uneven_seeds_are_listed(tmp_path):
  base = [make_run(tmp_path, f'b{s}', (40, 10, e, 10), seed=s)
          for s, e in enumerate((40, 41, 43))]
  lrn = make_run(tmp_path, 'lrn', (42, 11, 42, 11), 'no_lrn')
  one = ablation_report.compare([ablation_report.load_run(base[0])],
                                [ablation_report.load_run(lrn)])
  [_, group] = one.groups
  assert group.differences['ten_patch_top1'].low is None
  assert group.verdicts['top1'].text() == 'same direction, no interval (one seed)'
  assert '| 40.00 | 10.00 |' in ablation_report.markdown(one, None, str(tmp_path))
  three = ablation_report.compare([ablation_report.load_run(w) for w in base],
                                  [ablation_report.load_run(lrn)])
  assert three.groups[0].summaries['ten_patch_top1'].sd == pytest.approx(1.527525)
  text = ablation_report.markdown(three, None, str(tmp_path))
  assert 'Seeds: baseline 0, 1, 2; no_lrn 0.' in text
  assert '| 41.33 ± 1.53 |' in text
  twice = make_run(tmp_path, 'lrn_again', (42, 11, 42, 11), 'no_lrn')
  with pytest.raises(ablation_report.ReportError,
                     match=r'Runs of no_lrn share seeds .\[0, 0\].: .*lrn, .*lrn_again\. A'):
    ablation_report.compare([ablation_report.load_run(w) for w in base],
                            [ablation_report.load_run(w) for w in (lrn, twice)])


def test_a_variant_that_changes_the_map_sizes_is_not_the_papers_comparison(tmp_path):
  base, overlap = (ilsvrc2012.get_config(v).model for v in ('', 'no_overlap'))
  # At 224 px, z=2 and z=3 pooling give the same sizes (§3.4); at 112 px the last differs.
  assert ablation_report.map_sizes(base, overlap, 'no_overlap', 224) is None
  assert ablation_report.map_sizes(base, overlap, 'no_overlap', 96) is None
  note = ablation_report.map_sizes(base, overlap, 'no_overlap', 112)
  assert note == ("At 112-px crops the pooled maps of no_overlap are 13x13, 6x6, 3x3 against "
                  "the baseline's 13x13, 6x6, 2x2, so fc6 sees 3x3 positions, not 2x2: not "
                  "the paper's comparison, which keeps the sizes. Crops from 56 to 224 px "
                  'that keep them: 64-67, 96-99, 128-131, 160-163, 192-195, 224.')
  scale = {'data.image_size': 128, 'data.crop_size': 112}
  runs = [make_run(tmp_path, f'b{s}', (40, 10, 40 + s, 10), seed=s, **scale) for s in (0, 1)]
  runs += [make_run(tmp_path, f'o{s}', (30, 5, 30 + s, 5), 'no_overlap', seed=s, **scale)
           for s in (0, 1)]
  study = ablation_report.compare([ablation_report.load_run(w) for w in runs[:2]],
                                  [ablation_report.load_run(w) for w in runs[2:]])
  group = study.groups[1]
  assert group.other_maps == note and group.differences['ten_patch_top1'].delta == -10
  assert group.verdicts['top1'].text() == "not the paper's comparison (other map sizes)"
  assert f'Map sizes (model.pooled_sides):\n- no_overlap: {note}' in ablation_report.markdown(
      study, None, str(tmp_path))
  lrn = ablation_report.compare([ablation_report.load_run(w) for w in runs[:2]],
                                [ablation_report.load_run(make_run(
                                    tmp_path, 'l0', (40, 10, 40, 10), 'no_lrn', **scale))])
  assert lrn.groups[1].other_maps is None and 'Map sizes' not in ablation_report.markdown(
      lrn, None, str(tmp_path))


def test_a_variant_the_baseline_already_is_is_named_so(tmp_path):
  base = make_run(tmp_path, 'b0', (40, 10, 40, 10), **{'model.lrn': False})
  study = ablation_report.compare([ablation_report.load_run(base)], [])
  reasons = dict(ablation_report.not_run(study))
  assert len(reasons) == len(ilsvrc2012.VARIANTS)
  assert reasons['no_lrn'] == 'the baseline here already has its fields (an override of the study)'


def test_report_uses_centre_errors_when_runs_lack_ten_patches(tmp_path):
  base = make_run(tmp_path, 'b0', (40, 10, 0, 0))
  lrn = make_run(tmp_path, 'lrn', (41, 11, 0, 0), 'no_lrn')
  for workdir in (base, lrn):
    path = os.path.join(workdir, 'results.json')
    results = json.load(open(path))
    results['final'] = {k: v for k, v in results['final'].items() if 'ten_patch' not in k}
    json.dump(results, open(path, 'w'))
  study = ablation_report.compare([ablation_report.load_run(base)],
                                  [ablation_report.load_run(lrn)])
  assert study.prefix == 'centre'
  assert '| — | — |' in ablation_report.markdown(study, None, str(tmp_path))


def test_report_errors_name_the_run_and_what_to_do(tmp_path):
  base = make_run(tmp_path, 'b0', (40, 10, 40, 10))
  load = ablation_report.load_run
  unfinished = make_run(tmp_path, 'unfinished', (40, 10, 40, 10), 'no_lrn')
  os.remove(os.path.join(unfinished, 'results.json'))
  with pytest.raises(ablation_report.ReportError,
                     match=f'{unfinished} has not finished: it has no results.json. Finish it '
                           f'with `python -m alexnet_jax.main --workdir={unfinished}`'):
    load(unfinished)
  preempted = make_run(tmp_path, 'preempted', (40, 10, 40, 10))
  path = os.path.join(preempted, 'results.json')
  json.dump(results_json(preempted, (40, 10, 40, 10), epoch=1.0, preempted=True), open(path, 'w'))
  with pytest.raises(ablation_report.ReportError, match='stopped at step 6 .preempted'):
    load(preempted)
  json.dump(results_json(preempted, (40, 10, 40, 10), epoch=1.0), open(path, 'w'))
  with pytest.raises(ablation_report.ReportError, match='trained 1.00 of 2 epochs'):
    load(preempted)
  with pytest.raises(ablation_report.ReportError, match='holds no run .no config.json'):
    load(str(tmp_path / 'nowhere'))

  def compare(*runs):
    return ablation_report.compare([load(base)], [load(w) for w in runs])

  bigger = make_run(tmp_path, 'bigger', (40, 10, 40, 10), 'no_lrn', **{'data.image_size': 96})
  with pytest.raises(ablation_report.ReportError,
                     match=r'different scale or data.*bigger differs from the baseline .*b0 in '
                           r'data.image_size: 72 -> 96\. Compare runs made at one scale'):
    compare(bigger)
  longer = make_run(tmp_path, 'longer', (40, 10, 40, 10), **{'train.num_epochs': 1.0})
  with pytest.raises(ablation_report.ReportError, match=r'train.num_epochs: 2.0 -> 1.0'):
    compare(longer)
  other = make_run(tmp_path, 'other', (40, 10, 40, 10), **{'optimizer.learning_rate': 0.1})
  with pytest.raises(ablation_report.ReportError, match='which no variant of configs/ilsvrc'):
    compare(other)
  again = make_run(tmp_path, 'again', (40, 10, 40, 10), seed=3)
  with pytest.raises(ablation_report.ReportError, match="has the baseline's config .seed 3"):
    compare(again)
  with pytest.raises(ablation_report.ReportError, match='share seeds'):
    ablation_report.compare([load(base), load(base)], [])


def test_every_stated_effect_belongs_to_a_variant():
  assert set(ablation_report.PAPER) <= set(ilsvrc2012.VARIANTS)


# --- Learning curves of a longer pair --------------------------------------------------


def curve_run(root, name, validation, training, variant='', seed=0, evaluate_every=3):
  """A finished run of 2 epochs (12 steps) that evaluated every `evaluate_every` steps
  (`validation`: its centre top-1 errors) and logged every step (`training`: one error
  per evaluation, logged at each step before it)."""
  workdir = make_run(root, name, (40, 10, 40, 10), variant, seed)
  path = os.path.join(workdir, 'results.json')
  results = json.load(open(path))
  steps = [evaluate_every * (i + 1) for i in range(len(validation))]
  results['history'] = [{'step': step, 'epoch': step / 6, 'count': 200,
                         'centre_top1_error': error, 'centre_top5_error': error / 4}
                        for step, error in zip(steps, validation)]
  results['train_history'] = [
      {'step': step, 'loss': 1.0, 'top1_error': error, 'top5_error': error / 4}
      for i, error in enumerate(training)
      for step in range(evaluate_every * i + 1, evaluate_every * (i + 1) + 1)]
  json.dump(results, open(path, 'w'))
  return workdir


def test_learning_curves_average_the_seeds_and_find_where_they_cross(tmp_path):
  baseline = [curve_run(tmp_path, 'b0', [0.60, 0.50, 0.42, 0.40], [0.7, 0.6, 0.5, 0.45]),
              curve_run(tmp_path, 'b1', [0.62, 0.50, 0.44, 0.40], [0.7, 0.6, 0.5, 0.43],
                        seed=1)]
  drop = [curve_run(tmp_path, 'd0', [0.55, 0.45, 0.44, 0.45], [0.6, 0.4, 0.2, 0.10],
                    'no_dropout'),
          curve_run(tmp_path, 'd1', [0.55, 0.45, 0.44, 0.45], [0.6, 0.4, 0.2, 0.12],
                    'no_dropout', seed=1)]
  record = learning_curves.compare(baseline, drop)
  assert record['variant'] == 'no_dropout' and record['variant_runs'] == ['d0', 'd1']
  assert record['epoch'] == pytest.approx([0.5, 1.0, 1.5, 2.0])
  assert record['baseline']['validation'] == pytest.approx([0.61, 0.50, 0.43, 0.40])
  assert record['variant_curves']['training'] == pytest.approx([0.6, 0.4, 0.2, 0.11])
  assert record['validation_difference'] == pytest.approx([-0.06, -0.05, 0.01, 0.05])
  assert record['crossings'] == [1.5]
  assert record['final_gap']['variant'] == pytest.approx(0.45 - 0.11)
  assert record['final_gap']['baseline'] == pytest.approx(0.40 - 0.44)
  text = learning_curves.table(record)
  assert '| 1.5 | 50.00 | 43.00 | 20.00 | 44.00 | +1.00 |' in text
  assert 'cross at epoch 1.5. Validation minus training error at the end: baseline -4.00 ' \
         'points, no_dropout 34.00.' in text
  learning_curves.draw(str(tmp_path / 'c.png'), record)
  assert Image.open(tmp_path / 'c.png').size == (800, 560)


def test_crossings_are_changes_of_sign():
  epochs = [1, 2, 3, 4]
  assert learning_curves.crossings([-1, 0, 1, 1], epochs) == [3]  # Zero keeps the sign.
  assert learning_curves.crossings([1, -1, -1, 1], epochs) == [2, 4]
  assert learning_curves.crossings([0, 0, 1, 2], epochs) == []
  assert learning_curves.crossings([-2, -1, -1, -0.5], epochs) == []


def test_learning_curves_refuse_what_cannot_be_compared(tmp_path):
  base = curve_run(tmp_path, 'b0', [0.6, 0.5], [0.7, 0.6])
  drop = curve_run(tmp_path, 'd0', [0.6, 0.5], [0.7, 0.6], 'no_dropout')
  compare = learning_curves.compare
  once = make_run(tmp_path, 'once', (40, 10, 40, 10), 'no_dropout')
  with pytest.raises(learning_curves.CurveError,
                     match=r'once evaluated 1 time\(s\).*--config.train.eval_every_steps=N'):
    compare([base], [once])
  sparse = curve_run(tmp_path, 'sparse', [0.6, 0.5], [0.7, 0.6], 'no_dropout',
                     evaluate_every=6)
  with pytest.raises(learning_curves.CurveError, match=r'sparse evaluated at steps \[6, 12\]'):
    compare([base], [drop, sparse])
  with pytest.raises(learning_curves.CurveError, match=r'the variant at \[6, 12\]'):
    compare([base], [sparse])
  lrn = curve_run(tmp_path, 'lrn', [0.6, 0.5], [0.7, 0.6], 'no_lrn')
  with pytest.raises(learning_curves.CurveError, match=r"no_dropout', 'no_lrn'.*one variant"):
    compare([base], [drop, lrn])
  with pytest.raises(learning_curves.CurveError, match=r"--baseline holds runs of .*no_lrn"):
    compare([base, lrn], [drop])
  old = curve_run(tmp_path, 'old', [0.6, 0.5], [0.7, 0.6], 'no_dropout', seed=1)
  path = os.path.join(old, 'results.json')
  results = json.load(open(path))
  results['train_history'] = [{'step': e['step'], 'loss': 1.0}
                              for e in results['train_history']]
  json.dump(results, open(path, 'w'))
  with pytest.raises(learning_curves.CurveError, match='records no training error'):
    compare([base], [drop, old])
  results['train_history'] = [{'step': 12, 'loss': 1.0, 'top1_error': 0.5, 'top5_error': 0.1}]
  json.dump(results, open(path, 'w'))
  with pytest.raises(learning_curves.CurveError,
                     match='no training error logged between steps 0 and 3: log more often'):
    compare([base], [drop, old])


# --- The runner -------------------------------------------------------------------------

OVERRIDES = ['--config.host_devices=2', '--config.data.source=synthetic',
             '--config.model.num_classes=10', '--config.eval.batch_size=16']
KNOBS = {'image_size': 72, 'crop_size': 64, 'epochs': 2.0, 'batch_size': 16}


def planned(out, variants=('no_lrn', 'one_tower'), seeds=2, variant_seeds=1,
            overrides=OVERRIDES, knobs=KNOBS):
  runs = ablation_runner.plan(str(out), list(variants), seeds, variant_seeds, knobs,
                              list(overrides))
  ablation_runner.check(runs)
  return runs


def dry_run(runs, out, capsys):
  assert ablation_runner.run_study(runs, str(out), dry_run=True) == 0
  return capsys.readouterr().out.splitlines()


@pytest.mark.multiprocess
def test_dry_run_lists_each_command_in_order(tmp_path):
  out = tmp_path / 'study'
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.experiments.ablation_runner', f'--out={out}',
       '--variants=no_lrn,one_tower', '--seeds=2', '--variant_seeds=2', '--image_size=72',
       '--crop_size=64',
       '--epochs=2', '--batch_size=16', *OVERRIDES, '--dry_run'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  shared = ['--config.data.image_size=72', '--config.data.crop_size=64',
            '--config.train.num_epochs=2.0', '--config.train.batch_size=16', *OVERRIDES]

  def main(config, name, seed):
    return ' '.join([sys.executable, '-m', 'alexnet_jax.main', f'--config={config}',
                     f'--workdir={out}/{name}_seed{seed}', *shared,
                     f'--config.seed={seed}', f'--config.data.shuffle_seed={seed}'])

  assert proc.stdout.splitlines() == [
      ' '.join([sys.executable, '-m', 'alexnet_jax.data.prepare',
                '--config=configs/ilsvrc2012.py', *shared, '--config.seed=0',
                '--config.data.shuffle_seed=0']),
      main('configs/ilsvrc2012.py', 'baseline', 0),
      main('configs/ilsvrc2012.py', 'baseline', 1),
      main('configs/ilsvrc2012.py:no_lrn', 'no_lrn', 0),
      main('configs/ilsvrc2012.py:no_lrn', 'no_lrn', 1),
      main('configs/ilsvrc2012.py:one_tower', 'one_tower', 0),
      main('configs/ilsvrc2012.py:one_tower', 'one_tower', 1),
      f'# then the report: {out}/ablation_report.md']
  assert not out.exists()


def test_the_runner_names_a_variant_that_changes_the_map_sizes(tmp_path):
  study = planned(tmp_path / 'a', variants=('no_overlap', 'no_lrn'), seeds=1, variant_seeds=2,
                  knobs={**KNOBS, 'image_size': 128, 'crop_size': 112})
  [note] = ablation_runner.map_notes(study)
  assert note.startswith('At 112-px crops the pooled maps of no_overlap are 13x13, 6x6, 3x3')
  assert ablation_runner.map_notes(planned(tmp_path / 'b', variants=('no_overlap',))) == []


def test_the_estimate_counts_the_time_of_runs_across_resumptions(tmp_path):
  runs = planned(tmp_path)  # baseline seeds 0 and 1, no_lrn and one_tower seed 0.
  assert ablation_runner._estimate(runs, runs, {}) == ''
  # Seed 0 finished in 100 s; seed 1 had 30 s before a kill: 70 + 100 + 100 s are left.
  spent = {'baseline_seed0': 100.0, 'baseline_seed1': 30.0}
  assert ablation_runner._estimate(runs, runs[1:], spent) == (
      ' (about 0h04m30s left for 3 runs, at the mean time of the 1 finished run timed)')
  out = str(tmp_path / 'study')
  os.makedirs(out)
  ablation_runner._write_json(spent, os.path.join(out, ablation_runner.SECONDS))
  assert ablation_runner._read_seconds(out) == spent
  assert os.listdir(out) == [ablation_runner.SECONDS]  # Written whole, nothing left beside.
  with open(os.path.join(out, ablation_runner.SECONDS), 'w') as f:
    f.write('{"baseline_se')  # Cut short (by hand: the runner writes whole files).
  assert ablation_runner._read_seconds(out) == {}  # Only the estimate waits.


def test_one_tower_keeps_its_mesh_on_forced_cpu_devices(tmp_path):
  runs = {r.name: r for r in planned(tmp_path, seeds=1)}
  assert (runs['baseline'].config.mesh.tower, runs['one_tower'].config.mesh.tower) == (2, 1)
  assert runs['one_tower'].config.model.towers == 1 and runs['no_lrn'].config.model.lrn is False
  assert all(r.config.host_devices == 2 and r.config.data.image_size == 72
             for r in runs.values())


def test_finished_runs_are_skipped_and_the_rest_resumed(tmp_path, capsys):
  out = tmp_path / 'study'
  runs = planned(out)
  finished, preempted, short = runs[0], runs[2], runs[3]
  for run, results in ((finished, results_json(finished.workdir, (40,) * 4)),
                       (preempted, results_json(preempted.workdir, (40,) * 4, preempted=True)),
                       (short, results_json(short.workdir, (40,) * 4, epoch=1.0))):
    os.makedirs(run.workdir)
    saved_config.save(run.config, run.workdir, None)
    with open(os.path.join(run.workdir, 'results.json'), 'w') as f:
      json.dump(results, f)
  lines = dry_run(runs, out, capsys)
  assert lines[0] == f'# baseline seed 0: finished ({finished.workdir}), skipped'
  commands = [line for line in lines[1:] if not line.startswith('#')]
  assert commands[1:] == [' '.join(r.argv) for r in runs[1:]]
  # A longer study in the same --out goes on with the finished run too.
  longer = planned(out, knobs={**KNOBS, 'epochs': 3.0})
  assert not any(line.startswith('# baseline seed 0') for line in dry_run(longer, out, capsys))


@pytest.mark.parametrize('kwargs,message', [
    ({'variants': ['nolrn']}, r"--variants: unknown \['nolrn'\]; the variants of "
                              r'configs/ilsvrc2012.py are no_lrn'),
    ({'overrides': [*OVERRIDES, '--config.mesh.tower=2']},
     'one_tower seed 0: The overrides set mesh.tower=2, undoing the variant one_tower'),
    ({'overrides': [*OVERRIDES, '--config.seed=4']}, '--config.seed: the runner sets seed'),
    ({'overrides': [*OVERRIDES, '--config.data.image_size=96']},
     '--image_size=72 and --config.data.image_size=96 set the same field'),
    ({'overrides': [*OVERRIDES, '--config.model.lrnn=0']}, "the config has no field 'lrnn'"),
    ({'overrides': [*OVERRIDES, '--config.model.lrn']}, 'as --config.FIELD=VALUE'),
    ({'knobs': {**KNOBS, 'batch_size': 15}},
     r'one_tower seed 0: train.batch_size=15 does not divide over mesh.data=2'),
    ({'overrides': [*OVERRIDES, '--config.host_devices=3']},
     'baseline seed 0: mesh.tower=2 does not divide the 3 devices'),
    ({'seeds': 0}, '--seeds=0 and --variant_seeds=1: each must be at least 1'),
])
def test_the_runner_refuses_what_cannot_work_before_running(tmp_path, kwargs, message):
  with pytest.raises(ablation_runner.StudyError, match=message):
    planned(tmp_path / 'study', **kwargs)
  assert not (tmp_path / 'study').exists()


def test_a_study_at_another_scale_needs_another_out(tmp_path):
  out = tmp_path / 'study'
  [run] = planned(out, variants=(), seeds=1)
  os.makedirs(run.workdir)
  saved_config.save(run.config, run.workdir, None)
  with pytest.raises(ablation_runner.StudyError,
                     match=r'baseline seed 0: .*data.image_size: 72 -> 96.*give another --out'):
    planned(out, variants=(), seeds=1, knobs={**KNOBS, 'image_size': 96})


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_tiny_study_end_to_end_then_all_skipped(tmp_path):
  out = tmp_path / 'study'
  command = [sys.executable, '-m', 'alexnet_jax.experiments.ablation_runner', f'--out={out}',
             '--variants=no_lrn', '--seeds=1', '--variant_seeds=1', '--image_size=72',
             '--crop_size=64', '--epochs=1',
             '--batch_size=16', *OVERRIDES, f'--config.data.data_dir={tmp_path / "data"}',
             '--config.data.synthetic_train_size=32', '--config.data.synthetic_eval_size=32',
             '--config.model.init=caffe', '--config.data.worker_count=0']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # host_devices decides.
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=env)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '0 of 2 runs finished before; 2 to run.' in proc.stdout
  assert re.search(r'\[2/2\] no_lrn seed 0 \(about \dh\d\dm\d\ds left for 1 run, at the mean '
                   r'time of the 1 finished run timed\): ', proc.stdout), proc.stdout
  assert set(json.load(open(out / ablation_runner.SECONDS))) == {'baseline_seed0',
                                                                  'no_lrn_seed0'}
  assert 'scale: 72/64 px, 1 epoch, batch 16. 1 seed per variant' in proc.stdout
  assert '| no_lrn | 0 | ' in proc.stdout
  real = json.load(open(out / 'no_lrn_seed0' / 'results.json'))
  made = results_json('w', (1, 2, 3, 4))
  assert set(real) == set(made) and set(real['final']) == set(made['final'])
  assert Image.open(out / ablation_report.CHART).format == 'PNG'
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('finished (') == 2 and 'Wrote ' in again.stdout
  assert '2 of 2 runs finished before; 0 to run.' in again.stdout


def test_kept_runs_carry_a_study_over_to_a_new_out(tmp_path, capsys):
  first = planned(tmp_path / 'first')
  done = first[0]
  os.makedirs(done.workdir)
  saved_config.save(done.config, done.workdir, None)
  with open(os.path.join(done.workdir, 'results.json'), 'w') as f:
    json.dump(results_json(done.workdir, (40,) * 4), f)
  ablation_runner.keep(done, str(tmp_path / 'kept'))
  assert sorted(os.listdir(tmp_path / 'kept' / 'baseline_seed0')) == ['config.json',
                                                                       'results.json']
  with open(tmp_path / 'kept' / 'baseline_seed0' / 'results.json') as f:
    assert json.load(f)['workdir'] == 'baseline_seed0'  # By name, not this machine's path.
  with open(tmp_path / 'kept' / 'baseline_seed0' / 'config.json') as f:
    data = json.load(f)['data']  # The data's folders as placeholders too.
  assert (data['folder'], data['data_dir']) == ('<data.folder>', '<data.data_dir>')
  # A fresh --out (another machine, a new checkout) goes on from the kept runs.
  again = ablation_runner.plan(str(tmp_path / 'second'), ['no_lrn', 'one_tower'], 2, 1, KNOBS,
                               list(OVERRIDES))
  assert ablation_runner.restore_kept(again, str(tmp_path / 'kept')) == ['baseline seed 0']
  assert saved_config.saved(again[0].workdir)['data']['data_dir'] == \
      again[0].config.data.data_dir  # This study's folders are back.
  ablation_runner.check(again)
  lines = dry_run(again, tmp_path / 'second', capsys)
  assert lines[0] == f'# baseline seed 0: finished ({again[0].workdir}), skipped'
  assert ablation_runner.restore_kept(again, str(tmp_path / 'kept')) == []  # Done already.
  # Kept from a study at another scale: refused by the usual check.
  other = ablation_runner.plan(str(tmp_path / 'third'), ['no_lrn'], 1, 1,
                               {**KNOBS, 'image_size': 96}, list(OVERRIDES))
  ablation_runner.restore_kept(other, str(tmp_path / 'kept'))
  with pytest.raises(ablation_runner.StudyError, match=r'data.image_size: 72 -> 96'):
    ablation_runner.check(other)
