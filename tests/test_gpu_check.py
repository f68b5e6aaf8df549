"""The GPU check (tools/gpu_check.sh, gpu_check.py): its CPU dry run end to end, and its plan.

What the dry run measured (seconds, images/s) is checked for its form, not its size.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys
import math
import tarfile
import time

import pytest

from alexnet_jax.tools import gpu_check, targets

REPO = pathlib.Path(__file__).resolve().parents[1]


def _measured(value) -> bool:
  """A time or a rate the dry run measured: a finite number, not negative."""
  return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
  """`gpu_check.sh --cpu`: every part at tiny sizes, on this machine's CPU."""
  tmp = tmp_path_factory.mktemp('gpu_check')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  env['PYTHON'] = sys.executable
  done = subprocess.run(
      ['bash', 'alexnet_jax/tools/gpu_check.sh', '--cpu', f'--out={tmp / "out"}',
       f'--work={tmp / "work"}'], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=300)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  with open(tmp / 'out' / 'gpu_check.json') as f:
    report = json.load(f)
  return tmp / 'out', report, done.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_results_are_three_files_the_device_tool_brings_back(dry_run):
  out, _, _ = dry_run
  assert sorted(os.listdir(out)) == ['bench.json', 'gpu_check.json', 'logs.tar.gz']
  with tarfile.open(out / 'logs.tar.gz') as tar:
    names = tar.getnames()
  assert all(n.startswith('logs/') and n.count('/') == 1 for n in names)
  assert {'logs/tests.log', 'logs/tests.xml', 'logs/demo.log', 'logs/demo_results.json',
          'logs/audit_tower2.json', 'logs/pipeline_host.log'} <= set(names)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_every_part_reported_and_passed(dry_run):
  _, report, stdout = dry_run
  assert report['mode'] == 'cpu' and _measured(report['seconds'])
  assert list(report['parts']) == [p for p in gpu_check.PARTS
                                    if p not in gpu_check.GPU_ONLY_PARTS]
  for name, part in report['parts'].items():
    assert part['status'] == 'passed', (name, part)
    assert part['children'] and _measured(part['seconds'])
    for child in part['children']:
      assert child['rc'] == 0 and not child['timed_out'] and child['command'].startswith(
          'python ') and child['log'] == f"logs/{child['name']}.log"
  versions = report['environment']['versions']
  assert {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy'} <= set(versions)
  assert report['environment']['jax']['platform'] == 'cpu'
  assert 'GPU check (cpu)' in stdout and 'tests: 5 passed, 0 failed' in stdout


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_parts_numbers(dry_run):
  out, report, _ = dry_run
  parts = report['parts']
  assert (parts['tests']['passed'], parts['tests']['not_passed']) == (5, [])
  assert parts['demo']['step'] == 5 and 0 <= parts['demo']['final']['centre_top1_error'] <= 1
  (host,) = parts['pipeline']['runs'].values()
  assert 0 <= host['end_to_end']['data_wait_fraction'] <= 1
  assert host['end_to_end']['worker_count'] == 0
  (run,) = parts['bench']['runs'].values()
  assert _measured(run['images_per_s']) and run['mfu'] is None  # CPU: no peak.
  assert parts['bench']['targets'] == []  # Named for the GPU's runs only.
  audit = parts['audit']['meshes']['audit_tower2']
  assert audit['mesh'] == {'data': 1, 'tower': 2} and audit['problems'] == []
  assert audit['train_step']['totals']['tower']['count'] == 12
  with open(out / 'bench.json') as f:
    assert set(json.load(f)) == {'pipeline_host', *parts['bench']['runs']}


def test_the_gpu_bench_runs_cover_both_nets_dtypes_and_batches():
  runs = gpu_check.BENCH_RUNS
  assert {(r.layout, r.dtype, r.batch) for r in runs} == {
      (layout, dtype, batch) for layout in ('paper', 'torchvision')
      for dtype in ('bfloat16', 'float32') for batch in (1024, 128)}
  argv = runs[0].argv('x.json')
  assert argv[:2] == ['-m', 'alexnet_jax.tools.bench'] and '--config.mesh.tower=1' in argv
  assert '--torch' in argv and '--torch_modes=eager' in argv
  assert {'--torch_modes=compile'} == {a for r in runs if r.name.endswith('-compile')
                                       for a in r.argv('x.json') if a.startswith('--torch_')}
  assert '--notorch_channels_last' in gpu_check.BENCH_RUNS[-1].argv('x.json')
  torchvision = next(r for r in runs if r.layout == 'torchvision').argv('x.json')
  assert {'--config.model.layout=torchvision', '--config.model.towers=1'} <= set(torchvision)
  assert sum(gpu_check.BUDGET_S.values()) <= 450  # --total_s: under 8 minutes with the install.


def test_the_gpu_tests_exist():
  for item in gpu_check.GPU_TESTS:
    path, _, name = item.removeprefix('--deselect=').partition('::')
    assert (REPO / path).is_file(), path
    if name:
      functions = {n.name for n in ast.walk(ast.parse((REPO / path).read_text()))
                   if isinstance(n, ast.FunctionDef)}
      assert name in functions, item


def test_junit_counts_name_each_failure(tmp_path):
  path = tmp_path / 'junit.xml'
  path.write_text(
      '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
      '<testcase classname="tests.test_a" name="test_ok"/>'
      '<testcase classname="tests.test_a" name="test_bad"><failure message="assert 1 == 2"/>'
      '</testcase><testcase classname="tests.test_a" name="test_skip"><skipped/></testcase>'
      '</testsuite></testsuites>')
  counts = gpu_check.junit_counts(str(path))
  assert (counts['tests'], counts['passed'], counts['failures'], counts['skipped']) == (3, 1, 1, 1)
  assert counts['not_passed'] == [{'test': 'tests.test_a::test_bad', 'kind': 'failure',
                                   'message': 'assert 1 == 2'}]


def test_bench_summary_keeps_pytorchs_rows_or_why_there_are_none():
  torch_row = {'layout': 'paper', 'mode': 'compile', 'channels_last': True,
               'autocast_bf16': True, 'optimizer': 'SGD (fused)', 'images_per_s': 100.0,
               'mfu': 0.1, 'jax_over_torch': 2.0, 'ms_per_step': {}}
  report = {'command': 'python -m alexnet_jax.tools.bench', 'jax': {
      'device': {'kind': 'NVIDIA H200'}, 'images_per_s': 200.0, 'ms_per_step': {'median': 5.0},
      'mfu': 0.2, 'first_step_s': 9.0, 'peak_memory_bytes': 1, 'final_loss': 6.9},
      'torch': {'rows': [torch_row], 'jax_over_best': 2.0}}
  summary = gpu_check.bench_summary(report)
  assert summary['torch'] == [{k: v for k, v in torch_row.items()
                               if k not in ('optimizer', 'ms_per_step')}]
  assert (summary['jax_over_best_torch'], summary['ms_per_step']) == (2.0, 5.0)
  report['torch'] = {'skipped': 'PyTorch is not installed'}
  assert gpu_check.bench_summary(report)['torch_skipped'] == 'PyTorch is not installed'


def _torch_row(layout, mode, rate):
  return {'layout': layout, 'mode': mode, 'channels_last': True, 'images_per_s': rate}


def _runs(paper_name='paper-bf16'):
  """Bench summaries: a paper run with both PyTorch twins, two torchvision runs without."""
  return {
      paper_name: {'layout': 'paper', 'dtype': 'bfloat16', 'batch': 8, 'images_per_s': 300.0,
                   'torch': [_torch_row('paper', 'eager', 100.0),
                             _torch_row('torchvision', 'compile', 200.0)]},
      'tv-bf16': {'layout': 'torchvision', 'dtype': 'bfloat16', 'batch': 8,
                  'images_per_s': 100.0},
      'tv-f32': {'layout': 'torchvision', 'dtype': 'float32', 'batch': 8, 'images_per_s': 50.0}}


def test_comparisons_take_the_fastest_pytorch_row_of_the_same_layout():
  found = {c['run']: c for c in gpu_check.comparisons(_runs())}
  assert set(found) == {'paper-bf16', 'tv-bf16'}  # No float32 PyTorch rows.
  assert found['paper-bf16']['jax_over_torch'] == 3.0
  assert found['tv-bf16']['torch_row'] == 'torchvision compile channels_last (run paper-bf16)'
  assert found['tv-bf16']['jax_over_torch'] == 0.5


def test_targets_take_the_fastest_pytorch_row_of_any_layout():
  assert gpu_check.targets_met(_runs()) == []  # No run of TARGETS' names.
  assert gpu_check.targets_met(_runs('paper-bfloat16-1024')) == [
      {'target': gpu_check.TARGETS[0][1], 'measured': 300.0, 'met': False},
      {'target': gpu_check.TARGETS[2][1], 'measured': 1.5, 'met': True}]


def _compile_report(arguments: int, temporaries: int, tower_bytes: int | None) -> dict:
  memory = {'arguments': arguments, 'outputs': arguments, 'temporaries': temporaries,
            'generated_code': 0, 'total': arguments + temporaries}
  return {'device_kind': 'NVIDIA H200', 'batch': 128, 'memory': memory,
          'collectives': {'tower': {'count': 12, 'bytes': tower_bytes}} if tower_bytes else {},
          'paper_rule': {'holds': True, 'violations': []}, 'compile_seconds': 4.0}


def test_the_compile_part_sets_the_prediction_beside_the_real_compile():
  found = gpu_check.compile_comparison(_compile_report(100, 50, 1000),
                                       _compile_report(100, 75, None))
  assert found['memory']['temporaries'] == {'predicted': 50, 'real': 75,
                                            'real_over_predicted': 1.5}
  assert found['memory']['total']['real_over_predicted'] == 175 / 150
  # An axis only one side moves data over is there with the other side's None.
  assert found['collective_bytes'] == {'tower': {'predicted': 1000, 'real': None,
                                                 'real_over_predicted': None}}
  assert targets.gpu_named('NVIDIA H200') == 'h200' and targets.gpu_named('Tesla T4') is None


@pytest.mark.multiprocess
def test_a_child_past_its_limit_is_killed_with_what_it_started(tmp_path):
  check = gpu_check.Check(str(tmp_path / 'out'), str(tmp_path / 'work'), cpu=True, total_s=60)
  beat = tmp_path / 'beat'  # A grandchild rewrites it every 0.1 s while it lives.
  record = check.child('sleeper', ['-c', 'import subprocess, time; subprocess.Popen(["sh", "-c", '
                                   f'"while :; do date +%s%N > {beat}; sleep 0.1; done"]); '
                                   'time.sleep(60)'], limit_s=2, min_s=0)
  assert record['timed_out'] and record['rc'] is None  # Killed, not left to sleep 60 s.
  last = beat.read_text()
  time.sleep(0.5)
  assert beat.read_text() == last
  skipped = check.child('late', ['-c', 'pass'], limit_s=5)  # Under MIN_CHILD_S.
  assert 'skipped' in skipped and 'rc' not in skipped
