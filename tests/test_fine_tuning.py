"""Fine-tuning from a partial torchvision file with frozen layers, and predicting with it.

Cross-cutting: weights/pretrained.py (the partial file) through training/train.py (frozen
layers: optimizer.lr_multipliers; a resume reads its checkpoint, not the file),
training/evaluate_saved.py (an incomplete pretrained net is refused), and predict.py
(the function and the command) on the fine-tuned run.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import torch_zip
from alexnet_jax import predict
from alexnet_jax.data import synthetic
from alexnet_jax.training import evaluate_saved, train
from alexnet_jax.weights import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def weights(tmp_path_factory, conv_arrays):
  path = str(tmp_path_factory.mktemp('weights') / 'features.pth')
  torch_zip.write(path, conv_arrays())
  return path


def fine_tuning_config(tiny_config, data_dir, weights):
  """The demo's data, torchvision's net from the conv weights; conv1-conv4 frozen."""
  config = tiny_config(data_dir, num_steps=4, eval_every_steps=4)
  config.model.layout, config.model.towers, config.mesh.tower = 'torchvision', 1, 1
  config.data.mean = 'torchvision'
  config.eval.ten_patch = False
  config.model.pretrained = weights
  config.optimizer.lr_multipliers = 'conv1=0,conv2=0,conv3=0,conv4=0,conv5=0.5'
  return config


@pytest.fixture(scope='module')
def fine_tuned(tmp_path_factory, weights, tiny_config):
  """(config, workdir, console output) of 4 fine-tuning steps."""
  data_dir = str(tmp_path_factory.mktemp('data'))
  workdir = str(tmp_path_factory.mktemp('run'))
  config = fine_tuning_config(tiny_config, data_dir, weights)
  console = io.StringIO()
  with contextlib.redirect_stdout(console):
    train.train_and_evaluate(config, workdir)
  return config, workdir, console.getvalue()


@pytest.mark.slow
def test_frozen_layers_keep_the_files_weights(
    fine_tuned, weights, capsys, final_params, conv_arrays):
  config, workdir, console = fine_tuned
  assert (f'Pretrained weights from {weights}: loaded conv1, conv2, conv3, conv4, conv5 '
          '(2,469,696 parameters). Initialised fresh: fc6 (not in the file); fc7 (not in the '
          'file); fc8 (not in the file).') in console
  step, params = final_params(workdir, config)
  assert step == 4
  arrays = conv_arrays()
  for layer, prefix in [('conv1', 'features.0'), ('conv4', 'features.8')]:
    np.testing.assert_array_equal(params[layer]['kernel'],
                                  arrays[f'{prefix}.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params[layer]['bias'], arrays[f'{prefix}.bias'])
  assert not np.array_equal(params['conv5']['kernel'],
                            arrays['features.10.weight'].transpose(2, 3, 1, 0))
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert 0 <= results['final']['centre_top1_error'] <= 1

  # A resume reads its checkpoint, not the weights file (which may be gone by then). On a
  # copy of the config: the fixture's is shared with the predict tests.
  config = config.copy_and_resolve_references()
  config.model.pretrained = weights + '.moved'
  config.train.num_steps = 5
  train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert 'Pretrained weights' not in out and 'Resumed from step 4' in out


def test_evaluating_an_incomplete_pretrained_net_is_refused(tmp_path, weights, tiny_config):
  config = fine_tuning_config(tiny_config, str(tmp_path / 'data'), weights)
  config.eval.only = True
  with pytest.raises(pretrained.PretrainedError, match='lacks fc6, fc7, fc8.*Fine-tune'):
    evaluate_saved.evaluate_saved(config, str(tmp_path / 'run'))


def _image_files(tmp_path):
  size = 90
  good = tmp_path / 'images' / 'disc.png'
  good.parent.mkdir()
  Image.fromarray(synthetic.render(0, np.random.default_rng(0), size)).save(good)
  broken = tmp_path / 'images' / 'broken.jpg'
  broken.write_bytes(b'not an image')
  return good, broken


@pytest.mark.slow
def test_predict_gives_the_top_five_with_names(fine_tuned, tmp_path):
  config, workdir, _ = fine_tuned
  good, broken = _image_files(tmp_path)
  for ten_patch in (False, True):
    results, skipped = predict.predict(config, workdir, [str(good), str(broken)],
                                       ten_patch=ten_patch, say=lambda line: None)
    assert [r['image'] for r in results] == [str(good)]
    top5 = results[0]['top5']
    assert len(top5) == 5 and {e['name'] for e in top5} <= set(synthetic.CLASSES)
    probabilities = [e['probability'] for e in top5]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    # Names in the prepared dataset's class order (its folders, sorted).
    assert all(sorted(synthetic.CLASSES)[e['index']] == e['name'] for e in top5)
    assert len(skipped) == 1 and skipped[0].startswith(f'{broken}: ')


@pytest.mark.slow
@pytest.mark.multiprocess
def test_predict_command_on_a_folder_with_json(fine_tuned, tmp_path):
  _, workdir, _ = fine_tuned
  good, broken = _image_files(tmp_path)
  out_json = tmp_path / 'predictions.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.predict', f'--workdir={workdir}',
       str(good.parent), f'--json={out_json}'],
      capture_output=True, text=True, cwd=REPO, timeout=300,
      env={**os.environ, 'XLA_FLAGS': ''})
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[1] == str(good) and len(lines) == 2 + 5  # 'Predicting with ...', image, top-5.
  assert f'Skipped {broken}' in proc.stderr
  saved = json.load(open(out_json))
  assert [r['image'] for r in saved] == [str(good)] and len(saved[0]['top5']) == 5
  assert set(saved[0]['top5'][0]) == {'index', 'name', 'probability'}
  assert f"{100 * saved[0]['top5'][0]['probability']:6.2f}%" in lines[2]
