"""The package's layers: each subpackage imports only the layers below it.

From the bottom: `runtime` (nothing of the project's); `nn`, `data`, `run` and `weights`
(runtime only); the configs (`run`, `runtime`); `training` (all of those but the configs);
`tools`; `experiments`; the commands on top (`main`, `predict`), which nothing imports.
Each subpackage's __init__ docstring says the same in words. Inside `data`, preparing and
reading go one way: no module imports the ones that use it.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'alexnet_jax'
CONFIGS = PACKAGE.parent / 'configs'
BELOW = {
    'runtime': set(),
    'nn': {'runtime'},
    'data': {'runtime'},
    'run': {'runtime'},
    'weights': {'runtime'},
    'configs': {'run', 'runtime'},
    'training': {'nn', 'data', 'run', 'weights', 'runtime'},
    'tools': {'training', 'nn', 'data', 'run', 'weights', 'runtime'},
    'experiments': {'tools', 'configs', 'training', 'nn', 'data', 'run', 'weights', 'runtime'},
    'commands': {'training', 'nn', 'data', 'run', 'weights', 'runtime', 'configs'},
}
# data/: each module may import only those listed before it.
DATA_ORDER = ('decode', 'synthetic', 'datasets', 'ilsvrc2012', 'image_folder', 'tfds_catalog',
              'sources', 'workers', 'statistics', 'augment', 'pipeline', 'prepare')


def _layer(module: str) -> str:
  """The layer of a dotted module name: its subpackage, or 'commands' for the top level."""
  parts = module.split('.')
  return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in BELOW) else 'commands'


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
  for path in sorted(CONFIGS.glob('*.py')):
    yield path, f'alexnet_jax.configs.{path.stem}'


def test_every_module_has_a_layer():
  for _, module in _modules():
    parts = module.split('.')
    assert len(parts) == 2 or parts[1] in BELOW, f'{module}: a subpackage the layers lack'


def test_subpackages_import_only_downwards():
  wrong = []
  for path, module in _modules():
    layer = _layer(module)
    for imported in _imports(path):
      if _layer(imported) not in BELOW[layer] | {layer} or _layer(imported) == 'commands':
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
  for init in [*PACKAGE.glob('*/__init__.py'), CONFIGS / '__init__.py']:
    assert 'May import' in ast.get_docstring(ast.parse(init.read_text())), init


# Functions longer than 60 lines, each with the reason it stays whole.
LONG_FUNCTIONS = {
    # Every field of the config, declared once, each with its comment: one list to read.
    'alexnet_jax.configs.default.get_config',
}


def test_no_function_is_over_60_lines():
  long = {}
  for path, module in _modules():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > 60:
          long[f'{module}.{node.name}'] = lines
  assert sorted(long) == sorted(LONG_FUNCTIONS), long
