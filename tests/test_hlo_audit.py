"""The compiled training step moves data only where the paper's GPUs communicated."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax.configs import default
from alexnet_jax.tools import hlo_audit
from alexnet_jax.training import sharding


def _config(augment_on_device=False, dtype='float32', **mesh_fields):
  config = default.get_config()
  config.train.batch_size = 32
  config.eval.batch_size = 32
  config.data.augment_on_device = augment_on_device
  config.model.dtype = dtype
  for name, value in mesh_fields.items():
    setattr(config.mesh, name, value)
  return config


def audit(**fields):
  """The training step's collectives; asserts they keep the paper's pattern."""
  config = _config(**fields)
  collectives, mesh = hlo_audit.audit_train_step(config)
  assert hlo_audit.train_step_violations(config, collectives, mesh) == []
  return collectives


@pytest.mark.slow
def test_two_towers_exchange_only_at_conv3_and_fc_layers():
  collectives = audit(tower=2)
  over_towers = [c for c in collectives if c.axes == ('tower',)]
  # Forward: each tower gathers the other's maps in front of conv3, fc6, fc7 and fc8 ...
  gathers = {c.layers: c for c in over_towers if c.kind == 'all-gather'}
  assert set(gathers) == {('conv3',), ('fc6',), ('fc7',), ('fc8',)}
  # ... of its own data shard: 32 images / 4 data groups = 8, 13x13x256 maps before conv3.
  assert gathers[('conv3',)].shapes == ('f32[8,13,13,256]',)
  assert gathers[('fc6',)].shapes == ('f32[8,6,6,256]',)
  # Backward: the transposes, reduce-scatters of the gradients of those maps.
  scatters = {c.layers for c in over_towers if c.kind == 'reduce-scatter'}
  assert scatters == {('conv3',), ('fc6',), ('fc7',), ('fc8',)}
  # Gradients are summed over 'data' only, never over the towers.
  over_data = [c for c in collectives if 'data' in c.axes]
  assert over_data and all(c.kind == 'all-reduce' and c.axes == ('data',) for c in over_data)
  gradient_bytes = sum(c.bytes for c in over_data)
  assert gradient_bytes >= 4 * 60_965_224 // 2  # Each device sums its tower's half.


@pytest.mark.slow
def test_on_device_augmentation_adds_no_traffic():
  host = audit(tower=2)
  device = audit(augment_on_device=True, tower=2)
  assert sorted((c.kind, c.axes, c.bytes) for c in device) == sorted(
      (c.kind, c.axes, c.bytes) for c in host)


@pytest.mark.slow
def test_bfloat16_compute_keeps_the_pattern_and_float32_gradients():
  collectives = audit(dtype='bfloat16', tower=2)
  # (XLA's CPU backend computes bf16 in float32, so the maps' dtype is not checked here.)
  # The gradients stay float32: the parameters (and the paper's update) are float32.
  assert all(s.startswith('f32') for c in collectives if 'data' in c.axes for s in c.shapes)


@pytest.mark.slow
def test_one_tower_per_device_only_reduces_gradients():
  collectives = audit(tower=1)
  assert collectives and all(c.kind == 'all-reduce' and c.axes == ('data',)
                             for c in collectives)
  assert sum(c.bytes for c in collectives) >= 4 * 60_965_224


def test_audit_catches_xla_partitioning_a_grouped_convolution():
  """The trap the model avoids: a grouped conv left to XLA's partitioner gathers the batch."""
  config = default.get_config()
  mesh = sharding.make_mesh(config)
  x = jax.ShapeDtypeStruct((32, 27, 27, 96), jnp.float32,
                           sharding=NamedSharding(mesh, P('data', None, None, 'tower')))
  w = jax.ShapeDtypeStruct((5, 5, 48, 256), jnp.float32,
                           sharding=NamedSharding(mesh, P(None, None, None, 'tower')))

  def grouped(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        feature_group_count=2).sum()

  with jax.set_mesh(mesh):
    text = jax.jit(jax.grad(grouped)).lower(x, w).compile().as_text()
  problems = hlo_audit.violations(hlo_audit.parse_collectives(text, mesh))
  assert any('between data-parallel replicas' in p or 'crosses the towers' in p
             for p in problems), problems


@pytest.mark.parametrize('groups,axes', [
    ('replica_groups={{0,1},{2,3},{4,5},{6,7}}', ('tower',)),
    ('replica_groups={{0,2,4,6},{1,3,5,7}}', ('data',)),
    ('replica_groups=[4,2]<=[8]', ('tower',)),
    ('replica_groups=[2,4]<=[4,2]T(1,0)', ('data',)),
    ("replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_1'}", ('tower',)),
    ("replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}", ('data',)),
    ('replica_groups={}', ('data', 'tower')),
    ('source_target_pairs={{0,2},{2,0}}', ('data',)),
])
def test_parses_every_replica_group_notation(groups, axes):
  mesh = sharding.make_mesh(default.get_config())
  line = (f'  %ar = (f32[4]{{0}}, bf16[2,3]{{1,0}}) all-reduce(%a, %b), channel_id=1, {groups}, '
          'metadata={op_name="jit(f)/transpose(jvp(AlexNet))/fc7/shard_map/psum"}')
  (c,) = hlo_audit.parse_collectives(line, mesh)
  assert c.kind == 'all-reduce' and c.axes == axes
  assert c.bytes == 4 * 4 + 2 * 6 and c.layers == ('fc7',)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize('tower', [2, 1])
def test_one_data_parallel_replica_passes_and_writes_json(tmp_path, tower):
  """mesh.data=1 (one GPU: tower=1; two devices: tower=2): nothing is summed over 'data'."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = tmp_path / 'audit.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.hlo_audit', '--config=configs/default.py',
       f'--cpu_devices={tower}', f'--config.mesh.tower={tower}', '--config.train.batch_size=8',
       '--config.eval.batch_size=8', '--config.data.crop_size=64',
       '--config.model.num_classes=10', f'--json={path}'],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  with open(path) as f:
    report = json.load(f)
  assert report['mesh'] == {'data': 1, 'tower': tower} and report['problems'] == []
  train = report['train_step']
  assert train['totals']['data'] == {'count': 0, 'bytes': 0}
  assert train['totals']['tower']['count'] == (12 if tower == 2 else 0)
  # XLA may keep the gradients' all-reduce over a group of one device: it spans no axis.
  assert all(c['axes'] in (['tower'], []) for c in train['collectives'])


@pytest.mark.slow
def test_report_lists_totals_per_axis():
  collectives = audit(tower=2)
  report = hlo_audit.format_report(collectives)
  tower_line = [l for l in report.splitlines() if l.startswith("across 'tower'")][0]
  assert int(tower_line.split(':')[1].split()[0]) == sum('tower' in c.axes for c in collectives)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_command_line_prints_the_table_and_passes(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.hlo_audit', '--config=configs/ilsvrc2012.py',
       '--cpu_devices=4', '--config.train.batch_size=8'],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'mesh data=2 x tower=2' in proc.stdout
  assert 'OK: the towers exchange data only at conv3' in proc.stdout
  assert "across 'tower': 12 collectives" in proc.stdout


@pytest.mark.parametrize('tower', [2, 1])
def test_the_evaluation_step_keeps_the_pattern_too(tower):
  collectives, _ = hlo_audit.audit_eval_step(_config(tower=tower))
  assert hlo_audit.violations(collectives) == []  # Over 'data': only the error sums.
  assert [c.shapes for c in collectives if 'data' in c.axes] == [('f32[]',) * 5]


@pytest.mark.parametrize('line,kind,shapes,size', [
    # An asynchronous all-reduce returns its results only: every tensor counts...
    ('%ars = (f32[4]{0}, f32[2,3]{1,0}) all-reduce-start(f32[4]{0} %a, f32[2,3]{1,0} %b)',
     'all-reduce', ('f32[4]', 'f32[2,3]'), 4 * 4 + 6 * 4),
    # ... or, in jax 0.12's XLA:GPU, ((operands), results): the results count.
    ('%ars = ((f32[4]{0}, f32[2,3]{1,0}), f32[4]{0}, f32[2,3]{1,0}) all-reduce-start(%a, %b)',
     'all-reduce', ('f32[4]', 'f32[2,3]'), 4 * 4 + 6 * 4),
    ('%ars = ((f32[8,128]{1,0:T(8,128)}), f32[8,128]{1,0:T(8,128)}) all-reduce-start(%a)',
     'all-reduce', ('f32[8,128]',), 1024 * 4),
    # An all-gather returns (operands, results); a permute also two u32[] contexts.
    ('%ags = (f32[2,8]{1,0}, f32[4,8]{1,0}) all-gather-start(f32[2,8]{1,0} %a)',
     'all-gather', ('f32[4,8]',), 32 * 4),
    ('%cps = (f32[16]{0}, f32[16]{0}, u32[], u32[]) collective-permute-start(f32[16]{0} %a)',
     'collective-permute', ('f32[16]',), 16 * 4),
    # TPU layouts hold parentheses.
    ('%ar = (f32[8,128]{1,0:T(8,128)}, bf16[8,128]{1,0:T(8,128)(2,1)}) all-reduce(%a, %b)',
     'all-reduce', ('f32[8,128]', 'bf16[8,128]'), 1024 * 4 + 1024 * 2),
])
def test_asynchronous_and_tiled_forms_count_their_data_exactly(line, kind, shapes, size):
  mesh = sharding.make_mesh(default.get_config())
  (c,) = hlo_audit.parse_collectives(line + ', replica_groups={{0,2,4,6},{1,3,5,7}}', mesh)
  assert (c.kind, c.shapes, c.bytes) == (kind, shapes, size)


@pytest.mark.slow
def test_activation_shaped_reductions_over_data_are_caught():
  config = _config(tower=2)
  collectives, mesh = hlo_audit.audit_train_step(config)
  line = ('%ar = f32[8,13,13,256]{3,2,1,0} all-reduce(f32[8,13,13,256]{3,2,1,0} %maps), '
          'replica_groups={{0,2,4,6},{1,3,5,7}}, metadata={op_name="jit(f)/conv3/psum"}')
  sneaky = hlo_audit.parse_collectives(line, mesh)
  problems = hlo_audit.train_step_violations(config, collectives + sneaky, mesh)
  assert len(problems) == 1 and 'activation-shaped data is reduced' in problems[0]
