"""tools/compile_for.py and targets.py: the step compiled for GPUs and TPUs this machine lacks.

The compiles (marked slow) need the compile-gpu and compile-tpu extras (skipped without
them; .ci/run installs them after the rest of the suite has run, since their plugins
announce themselves on every JAX process's stderr): the paper's config on 8 H100s and on a TPU v4 slice moves
what the golden audit of 8 CPU devices records (tests/golden/), per mesh axis, and keeps
the paper's rule; a batch too large for the device is refused with the largest that fits.
The search for that batch, the target names and the precision warning are tested without
compiling.
"""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.runtime import errors
from alexnet_jax.tools import compile_for, hlo_audit, targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30


needs_gpu_extra = pytest.mark.skipif(
    not compile_for.installed('jax_plugins.xla_cuda12'),
    reason="needs the compile-gpu extra: pip install -e '.[compile-gpu]'")
needs_tpu_extra = pytest.mark.skipif(
    not compile_for.installed('libtpu'),
    reason="needs the compile-tpu extra: pip install -e '.[compile-tpu]'")


def golden_bytes(data: int, tower: int) -> dict[str, int]:
  """Bytes per device per step over each axis in the golden training-step audit."""
  with open(os.path.join(REPO, 'tests', 'golden',
                         f'audit_ilsvrc2012_data{data}_tower{tower}.txt')) as f:
    training = f.read().split('Evaluation step')[0]
  return {axis: int(b.replace(',', '')) for axis, b in
          re.findall(r"across '(\w+)': \d+ collectives, ([\d,]+) bytes", training)}


def test_targets_name_gpu_hosts_and_tpu_slices():
  h100 = targets.parse('h100:8')
  assert (h100.devices, h100.hosts, h100.platform) == (8, 1, 'cuda')
  assert h100.usable_memory == int(80 * GIB * 0.75)
  two_hosts = targets.parse('h100:2x8')
  assert (two_hosts.devices, two_hosts.hosts, two_hosts.per_host) == (16, 2, 8)
  v4 = targets.parse('tpu:v4:2x2x2')
  assert (v4.devices, v4.platform, v4.memory) == (8, 'tpu', 32 * GIB)
  assert targets.parse('tpu:v5e:2x4').usable_memory == 16 * GIB
  for wrong in ('h100', 'v100:8', 'tpu:v5e:2x2x2', 'tpu:v4:2x2', 'tpu:v9:2x2', 'h100:0'):
    with pytest.raises(errors.UserError, match='names no hardware.*a100-40, a100-80'):
      targets.parse(wrong)


def test_several_tpu_slices_are_refused_with_the_reason():
  with pytest.raises(errors.UserError, match='several TPU slices.*send/recv.*Compile one slice'):
    targets.parse('tpu:v5e:2x4,slices=2')


def test_gpu_description_carries_the_datasheet_figures():
  text = targets.gpu_target_config(targets.GPUS['a100-40'])
  assert 'core_count: 108' in text and f'device_memory_size: {40 * GIB}' in text
  assert 'cuda_compute_capability { major: 8 minor: 0 }' in text
  assert 'device_description_str: "NVIDIA A100-SXM4-40GB"' in text


def test_a_missing_extra_is_named(monkeypatch):
  # Without the GPU extra even the plugins' namespace package is missing.
  assert not compile_for.installed('no_such_namespace.xla_cuda12')
  monkeypatch.setattr(compile_for.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(errors.UserError, match=r"needs the compile-tpu extra.*\[compile-tpu\]"):
    compile_for.devices_of(targets.parse('tpu:v5e:2x4'))


def test_here_needs_this_machine_to_have_the_targets_devices():
  # The tests' machine has CPU devices only: --here refuses any GPU or TPU target.
  with pytest.raises(errors.UserError, match=r"has 0 GPU device\(s\) where --target=h200:1 "
                                             r'names 1: leave out --here'):
    compile_for.devices_here(targets.parse('h200:1'))


def _fake_compiler(monkeypatch, refuses: bool):
  """compile_for.attempt on a device of 100 units: 10 + batch/32 units per device; over
  the budget a TPU-like compiler refuses (no sizes), a GPU-like one reports them."""
  calls = []

  def attempt(config, devices, target, batch):
    del config, devices, target
    calls.append(batch)
    total = 10 + batch // 32
    if refuses and total > 100:
      return compile_for.Attempt(batch, 0.0, refusal='RESOURCE_EXHAUSTED: out of HBM')
    return compile_for.Attempt(batch, 0.0, {'total': total, 'device': 100})

  monkeypatch.setattr(compile_for, 'attempt', attempt)
  return calls


@pytest.mark.parametrize('refuses', [False, True])
@pytest.mark.parametrize('start', [128, 65536])
def test_largest_batch_is_found_in_a_few_compiles(monkeypatch, refuses, start):
  calls = _fake_compiler(monkeypatch, refuses)
  target = targets.Target('fake', gpu=targets.GPUS['h100'], per_host=1)
  monkeypatch.setattr(targets.Target, 'usable_memory', 100)
  first = compile_for.attempt(None, [], target, start)
  best, tried = compile_for.largest_batch(None, [], target, first, step=64)
  assert best.batch == 2880  # 10 + 2880/32 = 100 units; 2944 needs 102.
  # Sizes give a line to aim by; a compiler that only refuses is bisected from above.
  assert len(tried) == len(calls) <= (10 if refuses and start > 2880 else 6), calls


def test_no_batch_fits(monkeypatch):
  monkeypatch.setattr(compile_for, 'attempt', lambda c, d, t, batch: compile_for.Attempt(
      batch, 0.0, {'total': 200, 'device': 100}))
  target = targets.Target('fake', gpu=targets.GPUS['h100'], per_host=1)
  first = compile_for.attempt(None, [], target, 128)
  assert compile_for.largest_batch(None, [], target, first, step=64)[0] is None


def test_float32_in_reduced_passes_is_warned():
  config = ilsvrc2012.get_config()
  tpu, gpu = targets.parse('tpu:v4:2x2x2'), targets.parse('h100:8')
  assert 'one bfloat16 pass' in compile_for.precision_note(config, tpu)
  assert 'TF32' in compile_for.precision_note(config, gpu)
  config.model.matmul_precision = 'highest'
  assert compile_for.precision_note(config, tpu) == ''
  config.model.matmul_precision, config.model.dtype = 'default', 'bfloat16'
  assert compile_for.precision_note(config, tpu) == ''


def test_a_combined_collective_is_judged_by_its_producers():
  # XLA:GPU's combiner concatenates the towers' error sums into one unnamed all-reduce.
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(4, 2), ('data', 'tower'))
  text = '\n'.join([
      '  %fusion.2 = f32[32]{0} fusion(%p), kind=kInput, calls=%f, '
      'metadata={op_name="jit(step_fn)/softmax/reduce_sum"}',
      '  %fusion.3 = f32[32]{0} fusion(%p), kind=kInput, calls=%g, '
      'metadata={op_name="jit(step_fn)/AlexNet/conv2/reduce_sum"}',
      '  %bitcast.1 = f32[32]{0} bitcast(%fusion.2)',
      '  %cat = f32[64]{0} fusion(%bitcast.1, %fusion.2), kind=kLoop, calls=%c',
      '  %cat.2 = f32[64]{0} fusion(%fusion.3, %fusion.3), kind=kLoop, calls=%c',
      '  %all-reduce-start = f32[64]{0} all-reduce-start(%cat), replica_groups=[4,2]<=[8], '
      'to_apply=%add',
      '  %all-reduce-start.2 = f32[64]{0} all-reduce-start(%cat.2), '
      'replica_groups=[4,2]<=[8], to_apply=%add'])
  softmax, conv2 = hlo_audit.parse_collectives(text, mesh)
  assert (softmax.layers, softmax.producers, softmax.axes) == ((), ('softmax',), ('tower',))
  assert hlo_audit.violations([softmax]) == []
  assert conv2.producers == ('conv2',)
  assert 'crosses the towers outside' in hlo_audit.violations([conv2])[0]


@pytest.fixture
def tpu_env(monkeypatch):
  for name, value in compile_for.TPU_COMPILE_ONLY_ENV.items():
    monkeypatch.setenv(name, value)


def _compile(config, spec: str) -> tuple[dict, compile_for.Attempt]:
  target = targets.parse(spec)
  devices = compile_for.devices_of(target)
  result = compile_for.attempt(config, devices, target, config.train.batch_size)
  return compile_for.report(config, target, devices, result), result


def _command(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
  """Runs compile_for with `args` for the paper's config; its output and JSON report.

  A process of its own: the CUDA compiler registers only in a process whose JAX has not
  started its backends without it, as this one's have (conftest.py).
  """
  path = tmp_path / 'report.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.compile_for', '--config=configs/ilsvrc2012.py',
       f'--json={path}', *args], cwd=REPO, capture_output=True, text=True, timeout=600)
  return proc, json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.slow
@pytest.mark.multiprocess
@needs_gpu_extra
def test_paper_config_on_8_h100s_moves_the_golden_traffic(tmp_path):
  proc, r = _command(tmp_path, '--target=h100:8')
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert (r['target'], r['devices'], r['hosts'], r['batch']) == ('h100:8', 8, 1, 128)
  assert r['mesh'] == {'data': 4, 'tower': 2} and r['fits']
  assert {axis: t['bytes'] for axis, t in r['collectives'].items()} == golden_bytes(4, 2)
  assert r['paper_rule'] == {'holds': True, 'violations': []}
  assert 0 < r['memory']['total'] < r['memory']['device'] == int(80 * GIB * 0.75)
  assert set(r['memory']) >= {'arguments', 'outputs', 'temporaries', 'total', 'device'}
  assert r['flops_per_step'] == r['flops_per_image'] * 128 > 0
  assert "The paper's rule holds" in proc.stdout and 'TF32' in proc.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
@needs_gpu_extra
def test_one_tower_per_replica_on_8_h100s_moves_the_golden_traffic(tmp_path):
  proc, r = _command(tmp_path, '--target=h100:8', '--config.mesh.tower=1')
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert r['mesh'] == {'data': 8, 'tower': 1} and r['fits']
  assert {axis: t['bytes'] for axis, t in r['collectives'].items()} == golden_bytes(8, 1)
  assert r['paper_rule']['holds'], r['paper_rule']['violations']


@pytest.mark.slow
@pytest.mark.multiprocess
@needs_gpu_extra
def test_a_batch_too_large_for_h100s_is_refused(tmp_path):
  proc, r = _command(tmp_path, '--target=h100:8', '--config.train.batch_size=131072')
  assert proc.returncode == 2 and not r['fits'], proc.stderr[-2000:]
  assert r['memory']['total'] > r['memory']['device']
  said = proc.stderr[proc.stderr.index('Error: '):].splitlines()
  assert re.match(r'Error: The training step at batch 131,072 does not fit h100:8: it needs '
                  r'[\d.]+ GiB per device of the 60.00 GiB usable\. Add --max_batch', said[0])
  smaller = compile_for.Attempt(32768, 1.0, {'total': 50 * GIB, 'device': 60 * GIB})
  assert 'set --config.train.batch_size=32768' in str(
      compile_for.does_not_fit(r, smaller, searched=True))


@pytest.mark.slow
@needs_tpu_extra
def test_paper_config_on_a_tpu_v4_slice_at_highest_precision(tpu_env):
  del tpu_env
  config = ilsvrc2012.get_config()
  config.model.matmul_precision = 'highest'
  r, _ = _compile(config, 'tpu:v4:2x2x2')
  assert (r['devices'], r['hosts'], r['mesh']) == (8, 2, {'data': 4, 'tower': 2})
  assert r['fits'] and r['precision_warning'] == ''
  assert {axis: t['bytes'] for axis, t in r['collectives'].items()} == golden_bytes(4, 2)
  assert r['paper_rule']['holds'], r['paper_rule']['violations']


@pytest.mark.slow
@needs_tpu_extra
def test_a_tpu_batch_that_does_not_fit_gives_the_clear_error(tpu_env):
  del tpu_env
  config = ilsvrc2012.get_config()
  config.train.batch_size = 32768
  r, result = _compile(config, 'tpu:v5e:2x2')
  assert not r['fits'] and result.refusal.startswith('RESOURCE_EXHAUSTED')
  message = str(compile_for.does_not_fit(r, None, searched=False))
  assert re.match(r'The training step at batch 32,768 does not fit tpu:v5e:2x2: it was '
                  r'refused by the compiler \(RESOURCE_EXHAUSTED.*\)\. Add --max_batch', message)
