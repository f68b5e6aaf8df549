"""The package's layers: each subpackage imports only what its __init__ docstring allows.

The training core (alexnet_jax/*.py) may import `data` and `runtime`; `data` imports
only `runtime`, and `runtime` nothing of the project's; `tools` and
`experiments` sit on top and nothing below imports them. Inside `data`, preparing and
reading go one way: no module imports the ones that use it.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'alexnet_jax'
ALLOWED = {
    'core': {'core', 'data', 'runtime'},
    'data': {'data', 'runtime'},
    'runtime': {'runtime'},
    'tools': {'core', 'data', 'runtime', 'tools'},
    'experiments': {'core', 'data', 'runtime', 'tools', 'experiments'},
}
# data/: each module may import only those listed before it.
DATA_ORDER = ('decode', 'synthetic', 'sources', 'workers', 'statistics', 'augment',
              'pipeline', 'prepare')


def _layer(module: str) -> str:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else 'core'


def _imports(path: pathlib.Path) -> list[str]:
  """The alexnet_jax modules `path` imports (from X import y counts as X.y)."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('alexnet_jax'):
      found += [f'{node.module}.{alias.name}' for alias in node.names]
    elif isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.startswith('alexnet_jax')]
  return found


def _modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    relative = path.relative_to(PACKAGE.parent).with_suffix('')
    yield path, '.'.join(relative.parts)


def test_subpackages_import_only_downwards():
  wrong = []
  for path, module in _modules():
    for imported in _imports(path):
      if _layer(imported) not in ALLOWED[_layer(module)]:
        wrong.append(f'{module} imports {imported}')
  assert wrong == []


def test_data_modules_import_only_earlier_ones():
  assert sorted(DATA_ORDER) == sorted(
      p.stem for p in (PACKAGE / 'data').glob('*.py') if p.stem != '__init__')
  wrong = []
  for name in DATA_ORDER:
    for imported in _imports(PACKAGE / 'data' / f'{name}.py'):
      target = imported.rsplit('.', 1)[-1]
      if target in DATA_ORDER and DATA_ORDER.index(target) >= DATA_ORDER.index(name):
        wrong.append(f'data.{name} imports data.{target}')
  assert wrong == []


def test_every_subpackage_says_what_it_may_import():
  for init in PACKAGE.glob('*/__init__.py'):
    assert 'May import' in ast.get_docstring(ast.parse(init.read_text())), init
