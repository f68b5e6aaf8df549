"""Golden collective audit: a refactor must not change the traffic of the compiled steps.

Cross-cutting: tools/hlo_audit.py's audit of the steps that nn/model.py,
training/train_step.py and training/evaluate.py compile for configs/ilsvrc2012.py.

The audit tables of the paper's config (configs/ilsvrc2012.py, batch 128), training step
then evaluation step, on 8 CPU devices as mesh data=4 x tower=2 and data=8 x tower=1, are
kept in tests/golden/. What a row records is what moves between devices: the kind of
collective, its mesh axes, its bytes per device, the net's layers it serves, and each
result as dtype and element count (`f32[48]` for a bias gradient XLA may print as
`f32[1,1,1,48]` or `f32[48]`). So a printing change of a new XLA (ranks, dimension order,
operand order) passes, and a real change fails: other data moved (bytes, element counts or
dtypes), over other axes, or for other layers. Rows are sorted. After a change that is
meant to alter the traffic, regenerate with

  ALEXNET_UPDATE_GOLDEN=1 python -m pytest -q tests/test_audit_golden.py

and review the diff of tests/golden/ like code.
"""

import math
import os
import re

import pytest

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.tools import hlo_audit

_GOLDEN = os.path.join(os.path.dirname(__file__), 'golden')


def _as_elements(shape: str) -> str:
  """'f32[1,1,1,48]' -> 'f32[48]': the dtype and the number of elements, not the rank."""
  dtype, dims = re.fullmatch(r'(\w+)\[([\d,]*)\]', shape).groups()
  return f'{dtype}[{math.prod(int(d) for d in dims.split(",") if d)}]'


def _table(collectives) -> str:
  rows = sorted((c.kind, '+'.join(c.axes), c.bytes, ','.join(c.layers) or '-',
                 ' '.join(sorted(_as_elements(s) for s in c.shapes))) for c in collectives)
  lines = [f'{kind:<16}{axes:<12}{size:>14,}  {layers:<44}  {shapes}'
           for kind, axes, size, layers, shapes in rows]
  for axis in ('tower', 'data'):
    crossing = [c for c in collectives if axis in c.axes]
    lines.append(f'across {axis!r}: {len(crossing)} collectives, '
                 f'{sum(c.bytes for c in crossing):,} bytes per device per step')
  return '\n'.join(lines) + '\n'


@pytest.mark.slow
@pytest.mark.parametrize('tower', [2, 1])
def test_paper_config_traffic_matches_golden(tower):
  config = ilsvrc2012.get_config()
  config.mesh.tower = tower
  collectives, mesh = hlo_audit.audit_train_step(config)
  assert dict(mesh.shape) == {'data': 8 // tower, 'tower': tower}
  evaluation, _ = hlo_audit.audit_eval_step(config)
  table = '\nEvaluation step:\n'.join(_table(c) for c in (collectives, evaluation))
  path = os.path.join(_GOLDEN, f'audit_ilsvrc2012_data{8 // tower}_tower{tower}.txt')
  if os.environ.get('ALEXNET_UPDATE_GOLDEN'):
    with open(path, 'w') as f:
      f.write(table)
  with open(path) as f:
    assert table == f.read(), f'The training step exchanges other data than {path} records.'


def test_shapes_compare_by_dtype_and_element_count():
  assert _as_elements('f32[1,1,1,48]') == _as_elements('f32[48]') == 'f32[48]'
  assert _as_elements('bf16[32,13,13,256]') == 'bf16[1384448]'
  assert _as_elements('f32[]') == 'f32[1]'
  assert _as_elements('s32[32]') != _as_elements('f32[32]')
