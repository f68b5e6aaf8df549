"""The hang stress command: runs, counts and its summary, on a tiny scale."""

import json
import os
import subprocess
import sys

from alexnet_jax.tools import hang_stress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_exit_codes_are_sorted_into_hangs_and_other_failures():
  assert [hang_stress._outcome(c) for c in (0, 75, 134, -6, 1, 2)] == [
      'ok', 'hang', 'hang', 'hang', 'failed', 'failed']


def test_a_tiny_stress_run_counts_its_steps(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.hang_stress', f'--out={tmp_path}', '--runs=1',
       '--steps=3', '--save_every=2', '--load=1'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'})
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert proc.stdout.startswith('run 1/1: ok, 3 steps logged, ')
  summary = json.load(open(tmp_path / 'stress.json'))
  assert summary['runs'] == 1 and summary['steps_logged'] == 3 and summary['hangs'] == 0
  assert (tmp_path / 'run_0' / 'checkpoints' / '2').is_dir()
