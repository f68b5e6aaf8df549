"""Commands find the project's configs from any working directory (runtime/command_line.py)."""

import os
import subprocess
import sys

import pytest

from alexnet_jax.runtime import command_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_paths_resolve_to_the_project_unless_they_exist_here(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  demo = os.path.join(REPO, 'configs', 'demo.py')
  assert command_line.config_path('configs/demo.py') == demo
  assert command_line.config_path('configs/ilsvrc2012.py:no_lrn') == (
      os.path.join(REPO, 'configs', 'ilsvrc2012.py') + ':no_lrn')
  assert command_line.config_path('configs/nothing.py') == 'configs/nothing.py'
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'demo.py').write_text('')
  assert command_line.config_path('configs/demo.py') == 'configs/demo.py'  # Local wins.
  assert command_line.resolve_config_flags(
      ['prog', '--config', 'configs/default.py', '--config=configs/default.py:x', '-v']) == [
          'prog', '--config', os.path.join(REPO, 'configs', 'default.py'),
          '--config=' + os.path.join(REPO, 'configs', 'default.py') + ':x', '-v']


@pytest.mark.multiprocess
def test_a_command_runs_from_another_directory(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  done = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.summary', '--config=configs/ilsvrc2012.py',
       '--config.model.towers=1'], cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert '59,798,312' in done.stdout  # Footnote 2's one-tower net.
