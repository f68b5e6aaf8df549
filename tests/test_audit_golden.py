"""Golden collective audit: a refactor must not change the traffic of the compiled steps.

The audit tables of the paper's config (configs/ilsvrc2012.py, batch 128), training step
then evaluation step, on 8 CPU devices as mesh data=4 x tower=2 and data=8 x tower=1, are
kept in tests/golden/. Rows are sorted,
so only a change in what is exchanged (kind, mesh axes, bytes, layers, shapes) fails.
After a change that is meant to alter the traffic (or a JAX upgrade), regenerate with

  ALEXNET_UPDATE_GOLDEN=1 python -m pytest -q tests/test_audit_golden.py

and review the diff of tests/golden/ like code.
"""

import os

import pytest

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.tools import hlo_audit

_GOLDEN = os.path.join(os.path.dirname(__file__), 'golden')


@pytest.mark.parametrize('tower', [2, 1])
def test_paper_config_traffic_matches_golden(tower):
  config = ilsvrc2012.get_config()
  config.mesh.tower = tower
  collectives, mesh = hlo_audit.audit_train_step(config)
  assert dict(mesh.shape) == {'data': 8 // tower, 'tower': tower}
  evaluation, _ = hlo_audit.audit_eval_step(config)
  table = '\n\nEvaluation step:\n'.join(
      hlo_audit.format_report(sorted(
          c, key=lambda c: (c.kind, c.axes, c.layers, c.bytes, c.shapes))) + '\n'
      for c in (collectives, evaluation))
  path = os.path.join(_GOLDEN, f'audit_ilsvrc2012_data{8 // tower}_tower{tower}.txt')
  if os.environ.get('ALEXNET_UPDATE_GOLDEN'):
    with open(path, 'w') as f:
      f.write(table)
  with open(path) as f:
    assert table == f.read(), f'The training step exchanges other data than {path} records.'
