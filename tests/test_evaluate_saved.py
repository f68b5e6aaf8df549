"""training/evaluate_saved.py (eval.only): a saved net's errors, one run's or an ensemble's.

The run evaluated is conftest.py's `end_to_end_run`, which test_train.py checks.
"""

import json
import os

import pytest

from alexnet_jax.run import checkpointing
from alexnet_jax.training import evaluate_saved

pytestmark = pytest.mark.slow  # conftest.py's end_to_end_run trains 6 steps.


def test_eval_only_on_the_latest_checkpoint_repeats_the_final_evaluation(end_to_end_run):
  workdir = end_to_end_run.workdir
  saved = json.load(open(workdir / 'results.json'))
  config = end_to_end_run.config.copy_and_resolve_references()
  config.eval.only = True
  again = evaluate_saved.evaluate_saved(config, str(workdir))
  assert again == {k: saved['final'][k] for k in again}
  assert set(again) >= {'count', 'centre_top1_error', 'ten_patch_top5_error'}
  assert json.load(open(workdir / 'eval_results.json'))['count'] == 37


def test_an_ensemble_of_a_net_with_itself_equals_the_net_alone(end_to_end_run, tmp_path):
  # An ensemble of a net with itself averages two equal softmaxes: the same errors as the
  # net alone, at the checkpoint an ensemble picks (the best by validation error).
  workdir = end_to_end_run.workdir
  config = end_to_end_run.config.copy_and_resolve_references()
  config.eval.only = True
  best = checkpointing.Checkpointer(workdir / 'checkpoints', read_only=True).best_step()
  config.eval.checkpoint_step = best
  alone = evaluate_saved.evaluate_saved(config, str(workdir))
  config.eval.ensemble_workdirs = f'{workdir},{workdir}'
  pair = evaluate_saved.evaluate_saved(config, str(tmp_path / 'pair'))
  assert pair == alone
  assert 'eval_config.json' in os.listdir(tmp_path / 'pair')
