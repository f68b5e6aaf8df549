"""Figure 3: the picture of the conv1 kernels, its place in TensorBoard, the colour measure.

Covers experiments/conv1_kernels.py (the command, the colour measure) and
weights/kernel_picture.py (the picture), and the kernels a training run writes to
TensorBoard (training/train.py).
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.experiments import conv1_kernels
from alexnet_jax.training import train
from alexnet_jax.weights import kernel_picture
import torch_zip


def _side(cells: int, cell: int) -> int:
  return kernel_picture.BORDER + cells * (cell + kernel_picture.BORDER)


def test_two_towers_stack_their_rows_of_sixteen():
  kernels = np.random.default_rng(0).normal(size=(11, 11, 3, 96))
  picture = kernel_picture.kernel_grid(kernels, towers=2)
  cell = 11 * kernel_picture.ZOOM
  assert picture.dtype == np.uint8
  # Figure 3: 3 rows of 16 per tower, tower 1's block on top of tower 2's.
  assert picture.shape == (_side(6, cell) + kernel_picture.TOWER_GAP, _side(16, cell), 3)
  # Kernel 48 (tower 2's first) starts the first row below the towers' gap.
  top = _side(3, cell) + kernel_picture.TOWER_GAP
  left = kernel_picture.BORDER
  corner = picture[top:top + kernel_picture.ZOOM, left:left + kernel_picture.ZOOM]
  scale = np.abs(kernels).max()
  assert (corner == np.round(127.5 + 127.5 * kernels[0, 0, :, 48] / scale)).all()


@pytest.mark.parametrize('columns,rows', [(16, 4), (8, 8)])
def test_one_tower_of_64_kernels_like_torchvision(columns, rows):
  kernels = np.ones((11, 11, 3, 64))
  picture = kernel_picture.kernel_grid(kernels, towers=1, columns=columns, zoom=2)
  assert picture.shape == (_side(rows, 22), _side(columns, 22), 3)


def test_one_contrast_scale_for_all_kernels():
  kernels = np.zeros((2, 2, 3, 3))
  kernels[..., 0] = 2.0  # The strongest weight: white.
  kernels[..., 1] = -1.0  # Half as strong: halfway from grey to black.
  picture = kernel_picture.kernel_grid(kernels, zoom=1)
  b = kernel_picture.BORDER
  assert (picture[b:b + 2, b:b + 2] == 255).all()
  assert (picture[b:b + 2, 2 * b + 2:2 * b + 4] == 64).all()  # round(127.5 - 63.75)
  assert (picture[b:b + 2, 3 * b + 4:3 * b + 6] == 128).all()  # Zero weights: mid-grey.
  assert (picture[0] == 255).all()  # The white border.


@pytest.mark.parametrize('shape,towers,message', [
    ((11, 11, 96, 3), 2, r'expected HWIO \(h, w, 3, n\).*transpose'),
    ((11, 11, 3, 96), 5, r'towers=5 does not divide the 96 kernels'),
])
def test_wrong_input_says_what_to_give(shape, towers, message):
  with pytest.raises(ValueError, match=message):
    kernel_picture.kernel_grid(np.zeros(shape), towers)


@pytest.fixture(scope='module')
def trained_run(data_dir, tmp_path_factory, tiny_config):
  """A tiny two-tower run, evaluated after each of its 2 steps."""
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(tiny_config(data_dir, num_steps=2, eval_every_steps=1), workdir)
  return workdir


@pytest.mark.slow
def test_each_evaluation_puts_the_kernels_in_tensorboard(trained_run, read_events):
  images = [(event.step, value.image)
            for event in read_events(os.path.join(trained_run, 'tensorboard'))
            for value in event.summary.value if value.tag == 'conv1/kernels']
  assert [step for step, _ in images] == [1, 2]
  picture = np.asarray(Image.open(io.BytesIO(images[-1][1].encoded_image_string)))
  assert picture.shape == (images[-1][1].height, images[-1][1].width, 3)
  cell = 11 * kernel_picture.ZOOM
  assert picture.shape == (_side(6, cell) + kernel_picture.TOWER_GAP, _side(16, cell), 3)


def test_a_grey_kernel_has_no_chroma_and_a_pure_colour_kernel_much():
  rng = np.random.default_rng(0)
  kernels = np.zeros((11, 11, 3, 4))
  kernels[..., 0] = rng.normal(size=(11, 11, 1))  # R = G = B: grey.
  kernels[:, :, 0, 1] = rng.normal(size=(11, 11))  # Red alone.
  kernels[:, :, 0, 2] = 1.0  # Red minus green: nothing on the grey axis.
  kernels[:, :, 1, 2] = -1.0
  shares = conv1_kernels.chroma_shares(kernels)  # Kernel 3 is zeros: counted as grey.
  np.testing.assert_allclose(shares, [0.0, 2 / 3, 1.0, 0.0], atol=1e-12)


def test_the_towers_are_measured_apart(tmp_path):
  rng = np.random.default_rng(1)
  kernels = np.repeat(rng.normal(size=(11, 11, 1, 96)), 3, axis=2)  # All grey...
  kernels[:, :, 1:, 48:] = 0.0  # ... but tower 2's: red alone.
  summary = conv1_kernels.write_figure(kernels, 2, str(tmp_path), 'k', source='test')
  assert [(t['tower'], t['kernels']) for t in summary['per_tower']] == [(1, '1-48'),
                                                                         (2, '49-96')]
  assert summary['per_tower'][0]['chroma_share_mean'] == pytest.approx(0.0, abs=1e-12)
  assert summary['per_tower'][1]['chroma_share_median'] == pytest.approx(2 / 3)
  assert json.load(open(tmp_path / 'k.json')) == summary
  picture = np.asarray(Image.open(tmp_path / 'k.png'))
  np.testing.assert_array_equal(picture, kernel_picture.kernel_grid(kernels, 2))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_command_draws_a_runs_checkpoint(trained_run, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.experiments.conv1_kernels',
       f'--workdir={trained_run}', '--step=1', f'--out_dir={tmp_path}'],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  name = os.path.basename(trained_run)
  assert f'conv1 of {name} step 1: 96 of 11x11x3, 2 tower(s)' in proc.stdout
  assert '  tower 2 (kernels 49-96): mean ' in proc.stdout
  summary = json.load(open(tmp_path / 'conv1_kernels_step1.json'))
  assert len(summary['chroma_share_per_kernel']) == 96
  assert Image.open(tmp_path / 'conv1_kernels_step1.png').size == (_side(16, 44),
                                                                   _side(6, 44) + 3)
  missing = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.experiments.conv1_kernels',
       f'--workdir={trained_run}', '--step=7'], capture_output=True, text=True, timeout=120)
  assert missing.returncode == 2
  assert 'No finished checkpoint for step 7' in missing.stderr
  assert 'Give one of those steps, or -1 for the latest: --config.eval.checkpoint_step' in missing.stderr
  assert '--step for the experiments.' in missing.stderr


def test_a_torchvision_files_conv1_is_drawn_as_one_tower(tmp_path):
  weights = np.zeros((64, 3, 11, 11), np.float32)  # OIHW.
  weights[0, 1] = 1.0  # Kernel 1: green only.
  weights[1] = 1.0  # Kernel 2: grey.
  path = str(tmp_path / 'alexnet.pth')
  torch_zip.write(path, {'features.0.weight': weights,
                         'features.0.bias': np.zeros(64, np.float32)})
  summary = conv1_kernels.file_figure(path, str(tmp_path / 'out'))
  assert summary['kernels'] == '64 of 11x11x3' and summary['towers'] == 1
  assert summary['chroma_share_per_kernel'][:2] == [round(2 / 3, 4), 0.0]  # Rounded in JSON.
  with Image.open(tmp_path / 'out' / 'conv1_kernels_alexnet.png') as picture:
    assert np.asarray(picture).shape == kernel_picture.kernel_grid(
        weights.transpose(2, 3, 1, 0), towers=1).shape  # Rows of 16: 4 rows.
