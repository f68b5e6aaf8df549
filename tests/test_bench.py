"""tools/bench.py: the benchmark command on CPU (tiny batch, small crops), its figures, and
the PyTorch twins (tools/torch_reference.py).

The figures' structure and their relations are checked, never their values: how fast a
shared CPU runs is no test of the code. Durations are finite and non-negative, fractions
lie in [0, 1], and the rates are what the durations make them.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.nn import lrn, model
from alexnet_jax.tools import bench, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8


def _duration(value) -> bool:
  """A measured time: a finite number, not negative."""
  return isinstance(value, float) and math.isfinite(value) and value >= 0


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  """One run of the command: device-resident steps, then end to end on generated data."""
  tmp = tmp_path_factory.mktemp('bench')
  path = tmp / 'bench.json'
  command = [
      sys.executable, '-m', 'alexnet_jax.tools.bench', '--config=configs/default.py',
      '--cpu_devices=2', f'--batch={BATCH}', '--steps=2', '--warmup=1', '--data=pipeline',
      '--torch', '--torch_layouts=paper', f'--json={path}',
      '--config.model.num_classes=10', '--config.data.crop_size=64',
      '--config.data.image_size=72', '--config.data.source=synthetic',
      f'--config.data.data_dir={tmp}', '--config.data.worker_count=0',
      '--config.data.synthetic_train_size=32', '--config.data.synthetic_eval_size=10']
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'images/s' in done.stdout
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_report_fields(report):
  assert report['config'] == {'layout': 'paper', 'towers': 2, 'dtype': 'float32',
                              'batch': BATCH, 'crop_size': 64, 'num_classes': 10,
                              'lrn': True, 'augment_on_device': False}
  assert '--config.data.crop_size=64' in report['config_overrides']
  assert report['command'].startswith(
      'python -m alexnet_jax.tools.bench --config=configs/default.py')
  assert report['versions']['jax'] == jax.__version__ and report['versions']['flax']
  j = report['jax']
  assert j['device'] == {'platform': 'cpu', 'kind': 'cpu', 'count': 2, 'peak': None,
                         'peak_tflops_dense': None}
  assert j['mesh'] == {'data': 1, 'tower': 2}
  assert j['mfu'] is None and j['peak_memory_bytes'] is None  # CPU: no peak, no stats.
  assert np.isfinite(j['final_loss']) and _duration(j['first_step_s'])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_figures_are_consistent(report):
  j = report['jax']
  ms = j['ms_per_step']
  assert _duration(ms['min']) and ms['min'] <= ms['median'] <= ms['max']
  assert ms['min'] <= ms['mean'] <= ms['max'] and _duration(ms['std'])
  assert j['images_per_s'] == pytest.approx(BATCH / (ms['mean'] / 1e3))
  assert j['tflops_per_s'] == pytest.approx(j['images_per_s'] * j['train_flops_per_image']
                                            / 1e12)
  config = default.get_config()
  config.model.num_classes, config.data.crop_size = 10, 64
  assert j['train_flops_per_image'] == bench.train_flops_per_image(config)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_end_to_end_figures(report):
  e = report['jax']['end_to_end']
  assert (e['source'], e['worker_count']) == ('synthetic', 0)
  assert e['images_per_s'] == pytest.approx(BATCH / (e['ms_per_step'] / 1e3))
  assert 0 <= e['data_wait_fraction'] <= 1
  assert _duration(e['host_next_batch_ms']) and _duration(e['host_to_device_ms'])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torch_rows_or_reason(report):
  t = report['torch']
  if importlib.util.find_spec('torch') is None:
    assert 'not installed' in t['skipped']
    return
  (row,) = t['rows']
  assert (row['layout'], row['mode'], row['optimizer']) == ('paper', 'eager', 'SGD (foreach)')
  assert row['images_per_s'] == pytest.approx(BATCH / (row['ms_per_step']['mean'] / 1e3))
  assert row['jax_over_torch'] == pytest.approx(
      report['jax']['images_per_s'] / row['images_per_s'])
  assert t['jax_over_best'] == pytest.approx(row['jax_over_torch'])


def test_flops_of_the_paper_net():
  """2 x (3 x 724,406,816 - conv1's 105,415,200); an H100's bf16 peak allows ~239,000/s."""
  flops = bench.train_flops_per_image(default.get_config())
  assert flops == 2 * (3 * 724_406_816 - 105_415_200)
  assert 1e12 * bench.PEAKS['H100 SXM']['bfloat16'] / flops == pytest.approx(239_000, rel=0.01)


@pytest.mark.parametrize('kind,name', [
    ('NVIDIA H100 80GB HBM3', 'H100 SXM'), ('NVIDIA H100 PCIe', 'H100 PCIe'),
    ('NVIDIA H200', 'H200 SXM'), ('NVIDIA A100-SXM4-80GB', 'A100'),
    ('NVIDIA H100 NVL', None), ('cpu', None), ('TPU v5 lite', None)])
def test_peak_of_device_kind(kind, name):
  assert bench.peak_name(kind) == name


def test_throughput_arithmetic():
  r = bench.throughput(100, [0.01, 0.03], flops_per_image=10**9, peak_tflops=10.0)
  assert r['images_per_s'] == pytest.approx(5000)
  assert r['ms_per_step']['mean'] == pytest.approx(20) and r['ms_per_step']['max'] == 30
  assert r['tflops_per_s'] == pytest.approx(5.0) and r['mfu'] == pytest.approx(0.5)


def test_time_steps_measures_each_step_from_completion_to_completion(monkeypatch):
  """Steps on a simulated device that runs them one after another, with a clock of its
  own: each timed step is its own duration, the first (compiling) one left out."""
  durations = [5.0, 0.02, 0.03, 0.04, 0.05]
  clock, dispatched = [0.0], []

  class Outputs:
    def __init__(self, done_at):
      self.done_at = done_at

    def block_until_ready(self):
      clock[0] = max(clock[0], self.done_at)
      return self

  def run_step():
    dispatched.append(None)
    return Outputs(sum(durations[:len(dispatched)]))

  monkeypatch.setattr(bench, 'time', types.SimpleNamespace(perf_counter=lambda: clock[0]))
  seconds = bench.time_steps(run_step, 3)
  assert len(dispatched) == 5  # One step ahead, and one after the last.
  assert seconds == pytest.approx([0.02, 0.03, 0.04])


def test_torch_twins_have_the_reference_parameter_counts():
  torch = pytest.importorskip('torch')  # requirements-dev.txt: on Python 3.11 only.
  from alexnet_jax.tools import torch_reference  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  with torch.device('meta'):
    paper = torch_reference.build('paper', config)
    torchvision = torch_reference.build('torchvision', config)
  assert torch_reference.num_params(paper) == 60_965_224
  assert torch_reference.num_params(torchvision) == 61_100_840
  config.model.layout, config.model.towers = 'torchvision', 1
  assert sum(r.params for r in summary.layer_rows(config)) == 61_100_840


def _tensor(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.array(x))


@pytest.mark.slow
def test_torch_paper_net_computes_what_the_jax_net_computes():
  """Same weights, same logits: conv1 geometry, groups, per-tower LRN (alpha x n), fc6."""
  torch = pytest.importorskip('torch')  # requirements-dev.txt: on Python 3.11 only.
  from alexnet_jax.tools import torch_reference  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model.num_classes, config.data.crop_size = 10, 100  # conv1 pads 3; pool5 is 2x2.
  net = model.create_model(config)
  images = jax.random.normal(jax.random.key(1), (2, 100, 100, 3)) * 50
  params = net.init(jax.random.key(0), images, train=False)['params']
  expected = net.apply({'params': params}, images, train=False)

  twin = torch_reference.build('paper', config).eval()
  convs = [m for m in twin.features if isinstance(m, torch.nn.Conv2d)]
  fcs = [m for m in twin.classifier if isinstance(m, torch.nn.Linear)]
  with torch.no_grad():
    for conv, name in zip(convs, ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')):
      conv.weight.copy_(_tensor(params[name]['kernel'].transpose(3, 2, 0, 1)))
      conv.bias.copy_(_tensor(params[name]['bias']))
    fc6 = params['fc6']['kernel'].reshape(2, 2, 256, 4096)  # JAX flattens (h, w, c).
    fcs[0].weight.copy_(_tensor(fc6.transpose(3, 2, 0, 1).reshape(4096, -1)))
    for fc, name in zip(fcs, ('fc6', 'fc7', 'fc8')):
      if name != 'fc6':
        fc.weight.copy_(_tensor(params[name]['kernel'].T))
      fc.bias.copy_(_tensor(params[name]['bias']))
    got = twin(_tensor(images.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())


def test_torch_lrn_alpha_mapping_matches_the_printed_formula():
  torch = pytest.importorskip('torch')  # requirements-dev.txt: on Python 3.11 only.
  from alexnet_jax.tools import torch_reference  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(0, 30, (2, 5, 5, 96)).astype(np.float32)
  expected = lrn.local_response_norm(jnp.asarray(x), towers=2, size=5, k=2.0, alpha=1e-4,
                                     beta=0.75)
  norm = torch_reference.TowerLRN(2, 5, alpha=5e-4, beta=0.75, k=2.0)
  got = norm(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5)
