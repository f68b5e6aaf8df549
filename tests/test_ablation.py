"""The ablation study: the report's changes, noise band and verdicts on hand-made runs, its
chart, the runner's commands, skipping and checks, and one tiny real study end to end.

Covers experiments/ablation_report.py, experiments/ablation_runner.py and
experiments/bar_chart.py (the chart), on the variants of configs/ilsvrc2012.py.
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
  """Baseline ten-patch top-1 40 / 42 (mean 41, band 1), top-5 10 / 11 (10.5, band 0.5)."""
  baseline = [make_run(tmp_path, 'b0', (42, 11, 40, 10), seed=0),
              make_run(tmp_path, 'b1', (43, 12, 42, 11), seed=1)]
  runs = [make_run(tmp_path, 'lrn', (45, 12, 43.5, 10.7), 'no_lrn'),
          make_run(tmp_path, 'tower', (41, 11, 39, 10.2), 'one_tower'),
          make_run(tmp_path, 'drop', (42, 13, 41.5, 12), 'no_dropout'),
          make_run(tmp_path, 'tanh', (50, 20, 48, 19), 'tanh')]
  return baseline, runs


def test_report_measures_changes_against_the_baseline_and_its_noise(study_dirs, tmp_path):
  baseline, runs = study_dirs
  study = ablation_report.compare([ablation_report.load_run(w) for w in baseline],
                                  [ablation_report.load_run(w) for w in runs])
  assert study.prefix == 'ten_patch' and study.seeds == [0, 1]
  assert study.mean['ten_patch_top1'] == pytest.approx(41)
  assert study.band['ten_patch_top1'] == pytest.approx(1)
  assert study.band['ten_patch_top5'] == pytest.approx(0.5)
  rows = {row.name: row for row in study.rows if row.name != 'baseline'}
  assert list(rows) == ['no_lrn', 'one_tower', 'no_dropout', 'tanh']  # Named by config.
  assert rows['no_lrn'].deltas['ten_patch_top1'] == pytest.approx(2.5)
  assert rows['no_lrn'].deltas['centre_top1'] == pytest.approx(2.5)  # Mean 42.5.
  flags = {name: {t: (v.agrees, v.within_noise) for t, v in row.verdicts.items()}
           for name, row in rows.items()}
  assert flags['no_lrn'] == {'top1': (True, False), 'top5': (True, True)}
  assert flags['one_tower'] == {'top1': (False, False), 'top5': (False, True)}
  assert flags['no_dropout'] == {'top1': (True, True), 'top5': (True, False)}
  texts = {name: [v.text() for v in row.verdicts.values()] for name, row in rows.items()}
  assert texts['no_lrn'] == ['agrees (beyond noise)', 'within noise (same direction)']
  assert texts['one_tower'] == ['opposite (beyond noise)', 'within noise (opposite direction)']
  assert texts['tanh'] == ['—', '—']  # The paper states no ILSVRC effect of tanh.


def test_report_file_and_chart(study_dirs, tmp_path):
  baseline, runs = study_dirs
  text, report, chart = ablation_report.write_report(baseline, runs, str(tmp_path / 'out'))
  assert open(report).read() == text
  lines = text.splitlines()
  [lrn] = [line for line in lines if line.startswith('| no_lrn |')]
  assert lrn == ('| no_lrn | 0 | 72/64 px, 2 epochs, batch 16 | 45.00 (+2.50) | 12.00 (+0.50) '
                 '| 43.50 (+2.50) | 10.70 (+0.20) | +1.4 / +1.2 (§3.3) | agrees (beyond noise) '
                 '| within noise (same direction) |')
  assert '| baseline | 1 |' in text and 'baseline seed' in text
  assert 'not stated' in [line for line in lines if line.startswith('| tanh |')][0]
  assert 'top-1 41.00 ± 1.00, top-5 10.50 ± 0.50' in text and 'half the range' in text
  assert '![' in text and ablation_report.CHART in text
  assert 'no_dropout (§4.2): no number' in text
  image = Image.open(chart)
  assert image.format == 'PNG' and image.mode == 'RGB'
  width, height = image.size
  assert 520 <= width <= 1200 and 300 <= height <= 1000
  colours = {colour for _, colour in image.getcolors(width * height)}
  assert (47, 111, 176) in colours and (230, 138, 41) in colours  # Measured, paper bars.


def test_chart_size_follows_groups_and_panels(tmp_path):
  panel = bar_chart.Panel('p', {'a': [1.0, None] * 5, 'b': [-0.5, 2.0] * 5},
                          {'a': ['1', 'n/s'] * 5, 'b': ['-0.5', '2'] * 5}, band=0.3)
  size = bar_chart.draw(str(tmp_path / 'c.png'), 'title', [f'g{i}' for i in range(10)],
                        ['a', 'b'], [panel] * 3)
  assert Image.open(tmp_path / 'c.png').size == size
  assert size[0] > 10 * 2 * 60 and size[1] > 3 * 240


def test_one_seed_gives_directions_only_and_three_give_the_largest_deviation(tmp_path):
  base = [make_run(tmp_path, f'b{s}', (40, 10, e, 10), seed=s)
          for s, e in enumerate((40, 41, 43))]
  lrn = make_run(tmp_path, 'lrn', (42, 11, 42, 11), 'no_lrn')
  one = ablation_report.compare([ablation_report.load_run(base[0])],
                                [ablation_report.load_run(lrn)])
  assert one.band['ten_patch_top1'] is None
  assert one.rows[1].verdicts['top1'].text() == 'same direction, no noise band'
  assert 'no noise band' in ablation_report.markdown(one, None)
  three = ablation_report.compare([ablation_report.load_run(w) for w in base],
                                  [ablation_report.load_run(lrn)])
  assert three.mean['ten_patch_top1'] == pytest.approx(41.333333)
  assert three.band['ten_patch_top1'] == pytest.approx(43 - 41.333333)
  assert 'standard deviation 1.53' in ablation_report.markdown(three, None)


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
  assert '| — | — |' in ablation_report.markdown(study, None)


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
       '--variants=no_lrn,one_tower', '--variant_seeds=2', '--image_size=72', '--crop_size=64',
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
             '--variants=no_lrn', '--seeds=1', '--image_size=72', '--crop_size=64', '--epochs=1',
             '--batch_size=16', *OVERRIDES, f'--config.data.data_dir={tmp_path / "data"}',
             '--config.data.synthetic_train_size=32', '--config.data.synthetic_eval_size=32',
             '--config.model.init=caffe', '--config.data.worker_count=0']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # host_devices decides.
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=env)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '0 of 2 runs finished before; 2 to run.' in proc.stdout
  assert re.search(r'\[2/2\] no_lrn seed 0 \(about \dh\d\dm\d\ds left for 1 run, at the mean '
                   r'time of the whole runs so far\): ', proc.stdout), proc.stdout
  assert '| no_lrn | 0 | 72/64 px' in proc.stdout
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
