"""README and docs/ rerun anywhere: the modules they run exist, the files they cite are here.

A command in the docs must work from a clone: `python -m X` names a module of this
project (or of an installed package), and a script or file the text cites by a path is in
the repository. Paths of one development machine (`../something`, `/work/...`, a script
under /tmp) are what a reader elsewhere cannot follow; example locations for the reader's
own files use placeholders (RUNS/, DATA/) or a workdir name.
"""

import importlib.util
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
# Installed packages whose modules the docs run too.
OTHERS = ('pip', 'pytest', 'tensorboard')


def _text(path: pathlib.Path) -> str:
  return path.read_text()


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_python_dash_m_module_exists(doc):
  missing = sorted({m for m in re.findall(r'python3? -m ([\w.]+)', _text(doc))
                    if not m.startswith(OTHERS) and importlib.util.find_spec(m) is None})
  assert missing == []


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_no_path_of_a_development_machine(doc):
  bad = []
  for number, line in enumerate(_text(doc).splitlines(), 1):
    for found in re.findall(r'(?<![\w.])(\.\./[\w./-]+|/work/[\w./-]*|/root/[\w./-]*'
                            r'|/tmp/[\w./-]+\.(?:py|sh))', line):
      bad.append(f'{doc.name}:{number}: {found}')
  assert bad == []


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_cited_script_or_file_of_the_project_exists(doc):
  text = _text(doc)
  cited = set(re.findall(r'`((?:alexnet_jax|configs|launch|tests|docs|\.ci)/[\w./-]+)`', text))
  cited |= set(re.findall(r'\]\(((?:figures|docs)/[\w./-]+)\)', text))
  base = {p: (REPO / p) if not p.startswith('figures/') else REPO / 'docs' / p for p in cited}
  missing = sorted(p for p, full in base.items()
                   if not full.exists() and not list(full.parent.glob(full.name)))
  assert missing == []
