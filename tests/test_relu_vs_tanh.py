"""Figure 1's experiment (experiments/relu_vs_tanh.py) on tiny generated image folders and
a tiny archive laid out as CIFAR-10's python archive."""

import io
import json
import os
import pickle
import tarfile
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.experiments import image_arrays, line_chart, relu_vs_tanh
from alexnet_jax.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_folder(root, sizes=None, per_class=12):
  """train/<class>/*.png: dark or bright squares with noise, 16x16 unless `sizes` says."""
  rng = np.random.default_rng(0)
  for label, name in enumerate(('dark', 'light')):
    os.makedirs(root / 'train' / name)
    for i in range(per_class):
      side = (sizes or {}).get((name, i), 16)
      pixels = np.clip(60 + 120 * label + rng.normal(0, 30, (side, side, 3)), 0, 255)
      Image.fromarray(pixels.astype(np.uint8)).save(root / 'train' / name / f'{i:03d}.png')
  return root


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
  member = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
  member.size = len(payload)
  tar.addfile(member, io.BytesIO(payload))


def make_cifar10_archive(path, per_batch=4, extra=None):
  """CIFAR-10's python archive's layout: batches.meta, data_batch_1..5 and test_batch, each
  a pickled dict (bytes keys); image j of a batch has red (j, j+1, ...) planes. `extra`:
  (member name, payload) instead of batches.meta."""
  with tarfile.open(path, 'w:gz') as tar:
    names = [b'airplane', b'automobile'] + [f'class{i}'.encode() for i in range(8)]
    _add(tar, *(extra or ('batches.meta', pickle.dumps({b'label_names': names}))))
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
      planes = np.arange(per_batch, dtype=np.uint8)[:, None, None] * np.ones((1, 3, 1024),
                                                                            np.uint8)
      planes[:, 1] += 100  # Green
      planes[:, 2] += 200  # Blue
      batch = {b'data': planes.reshape(per_batch, 3072),
               b'labels': [j % 10 for j in range(per_batch)]}
      _add(tar, name, pickle.dumps(batch))
  return path


def test_cifar10s_archive_is_read_as_published(tmp_path):
  archive = make_cifar10_archive(tmp_path / 'cifar-10-python.tar.gz')
  train = image_arrays.load_split(str(archive), 'train')
  assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
  assert train.classes[:2] == ('airplane', 'automobile') and len(train.classes) == 10
  assert train.labels.tolist() == [0, 1, 2, 3] * 5
  assert train.images[3, 5, 7].tolist() == [3, 103, 203]  # The planes are R, G, B.
  assert len(image_arrays.load_split(str(archive), 'test').images) == 4
  with pytest.raises(errors.UserError, match="not 'val'"):
    image_arrays.load_split(str(archive), 'val')


def test_a_pickle_naming_other_code_or_a_wrong_archive_is_refused(tmp_path):
  class Call:
    def __reduce__(self):
      return (os.getcwd, ())

  bad = make_cifar10_archive(tmp_path / 'bad.tar.gz', extra=('batches.meta', pickle.dumps(Call())))
  with pytest.raises(errors.UserError, match=r"posix.getcwd is not part of CIFAR-10's batches"):
    image_arrays.load_split(str(bad), 'train')
  other = tmp_path / 'other.tar.gz'
  with tarfile.open(other, 'w:gz') as tar:
    _add(tar, 'readme', b'hello')
  with pytest.raises(errors.UserError, match=r"other.tar.gz is not CIFAR-10's python archive "
                                             r'\(KeyError.*cifar-10-python.tar.gz published'):
    image_arrays.load_split(str(other), 'train')


def test_epochs_to_threshold_is_the_first_epoch_at_or_below_it():
  assert relu_vs_tanh.epochs_to_threshold([0.9, 0.5, 0.25, 0.1]) == 3
  assert relu_vs_tanh.epochs_to_threshold([0.2, 0.3]) == 1
  assert relu_vs_tanh.epochs_to_threshold([0.9, 0.26]) is None
  assert relu_vs_tanh.epochs_to_threshold([]) is None
  assert relu_vs_tanh.epochs_to_threshold([0.6, 0.4], threshold=0.5) == 2


def run(activation, rate, seed, errors_per_epoch):
  return {'activation': activation, 'learning_rate': rate, 'seed': seed,
          'train_error': errors_per_epoch,
          'epochs_to_threshold': relu_vs_tanh.epochs_to_threshold(errors_per_epoch)}


def test_fastest_rate_per_activation_and_the_ratio():
  runs = [run('relu', 0.01, 0, [0.5, 0.2]), run('relu', 0.01, 1, [0.5, 0.3, 0.2]),
          run('relu', 0.02, 0, [0.2]), run('relu', 0.02, 1, [0.5, 0.4]),  # Seed 1 never.
          run('tanh', 0.01, 0, [0.9] * 11 + [0.2]), run('tanh', 0.01, 1, [0.9] * 14 + [0.2]),
          run('tanh', 0.04, 0, [0.9] * 20)]
  result = relu_vs_tanh.summarise(runs, {'epochs': 20, 'batch_size': 8})
  assert result['fastest']['relu'] == {'learning_rate': 0.01, 'seeds': [0, 1],
                                       'epochs_to_threshold': [2, 3],
                                       'mean_epochs_to_threshold': 2.5}
  assert result['fastest']['tanh']['epochs_to_threshold'] == [12, 15]
  assert result['ratio_tanh_to_relu'] == pytest.approx(13.5 / 2.5)  # Of the mean epochs.
  assert result['ratio_tanh_to_relu_by_seed'] == {'0': 12 / 2, '1': 15 / 3}
  assert result['ratio_tanh_to_relu_range'] == [5.0, 6.0]
  assert result['paper_ratio'] == 6.0 and result['threshold'] == 0.25
  never = relu_vs_tanh.summarise(runs[:4] + runs[6:], {'epochs': 20})
  assert never['fastest']['tanh'] is None and never['ratio_tanh_to_relu'] is None
  assert never['ratio_tanh_to_relu_by_seed'] == {} and never['ratio_tanh_to_relu_range'] is None


def test_the_sweep_reports_the_ratio_seed_by_seed(tmp_path, monkeypatch):
  def fake_run(data, mean, *, activation, seed, learning_rate, **unused):
    errors_per_epoch = ([0.5, 0.2] if activation == 'relu' else
                        [0.5] * (4 + 2 * seed) + [0.2])  # tanh: 5 epochs, then 7.
    return {**run(activation, learning_rate, seed, errors_per_epoch),
            'seconds_per_epoch': [1.0] * len(errors_per_epoch)}

  monkeypatch.setattr(relu_vs_tanh, 'train_run', fake_run)
  lines = []
  result = relu_vs_tanh.run_sweep(str(make_folder(tmp_path / 'images')), str(tmp_path / 'out'),
                                  epochs=8, seeds=[0, 1], batch_size=8, report=lines.append,
                                  learning_rates={'relu': [0.1], 'tanh': [0.1]})
  assert result['ratio_tanh_to_relu'] == 3.0 and result['ratio_tanh_to_relu_range'] == [2.5, 3.5]
  assert lines[-1].startswith('tanh needs 3.00x the epochs of ReLU to reach 25%, seed by seed '
                              '2.50x to 3.50x (paper: 6x).')


@pytest.mark.slow
def test_sweep_writes_the_figure_and_the_curves(tmp_path):
  folder = make_folder(tmp_path / 'images')
  out = tmp_path / 'out'
  lines = []
  result = relu_vs_tanh.run_sweep(str(folder), str(out), epochs=2,
                                  learning_rates={'relu': [0.002], 'tanh': [0.002]},
                                  seeds=[0], batch_size=8, report=lines.append)
  with Image.open(out / 'figure1.png') as figure:
    assert figure.size == (800, 560) and figure.format == 'PNG'
  saved = json.loads((out / 'figure1.json').read_text())
  assert saved == json.loads(json.dumps(result))
  assert [(r['activation'], r['learning_rate']) for r in saved['runs']] == [
      ('relu', 0.002), ('tanh', 0.002)]
  for r in saved['runs']:
    assert len(r['train_error']) == len(r['seconds_per_epoch']) == 2  # 24 images: 3 batches.
    assert all(0.0 <= e <= 1.0 for e in r['train_error'])
    assert r['epochs_to_threshold'] == relu_vs_tanh.epochs_to_threshold(r['train_error'])
  assert set(saved['fastest']) == {'relu', 'tanh'} and 'ratio_tanh_to_relu' in saved
  assert lines[0] == '24 training images of 16x16, 2 classes; 2 runs of 2 epochs.'
  assert any('s per epoch: about' in line for line in lines)


def test_an_interrupted_sweep_resumes_after_its_last_finished_run(tmp_path, monkeypatch):
  folder = make_folder(tmp_path / 'images')
  out = tmp_path / 'out'
  trained = []

  def fake_run(data, mean, *, activation, learning_rate, seed, **unused):
    trained.append((activation, learning_rate, seed))
    errors_per_epoch = [0.5, 0.2] if activation == 'relu' else [0.5, 0.4, 0.2]
    return {**run(activation, learning_rate, seed, errors_per_epoch),
            'seconds_per_epoch': [1.0] * len(errors_per_epoch)}

  monkeypatch.setattr(relu_vs_tanh, 'train_run', fake_run)
  sweep = dict(epochs=3, seeds=[0], batch_size=8, report=lambda line: None)
  relu_vs_tanh.run_sweep(str(folder), str(out), learning_rates={'relu': [0.1], 'tanh': [0.1]},
                         **sweep)
  assert trained == [('relu', 0.1, 0), ('tanh', 0.1, 0)]
  lines = []
  result = relu_vs_tanh.run_sweep(str(folder), str(out), **{**sweep, 'report': lines.append},
                                  learning_rates={'relu': [0.1], 'tanh': [0.1, 0.2]})
  assert trained[2:] == [('tanh', 0.2, 0)]  # Only the run the first sweep did not have.
  assert 'of 3 epochs, 2 of them finished earlier' in lines[0]
  assert [(r['activation'], r['learning_rate']) for r in result['runs']] == [
      ('relu', 0.1), ('tanh', 0.1), ('tanh', 0.2)]
  assert result['ratio_tanh_to_relu'] == 1.5
  assert json.loads((out / 'figure1.json').read_text())['runs'] == result['runs']
  # A finished sweep run again trains nothing and writes its record and figure anew.
  (out / 'figure1.png').unlink()
  (out / 'figure1.json').write_text(json.dumps({**result, 'ratio_tanh_to_relu': None}))
  lines = []
  again = relu_vs_tanh.run_sweep(str(folder), str(out), **{**sweep, 'report': lines.append},
                                 learning_rates={'relu': [0.1], 'tanh': [0.1, 0.2]})
  assert len(trained) == 3 and again == result and (out / 'figure1.png').exists()
  assert json.loads((out / 'figure1.json').read_text())['ratio_tanh_to_relu'] == 1.5
  assert sorted(p.name for p in out.iterdir()) == ['figure1.json', 'figure1.png']  # No .partial.
  assert lines[-1].startswith('tanh needs 1.50x the epochs of ReLU to reach 25% (paper: 6x).')
  with pytest.raises(errors.UserError, match=r'other settings \(epochs 3 there, 4 now\)'):
    relu_vs_tanh.run_sweep(str(folder), str(out), **{**sweep, 'epochs': 4},
                           learning_rates={'relu': [0.1], 'tanh': [0.1]})
  (out / 'figure1.json').write_text('[1, 2]')
  with pytest.raises(errors.UserError, match='is not a figure1.json this command wrote'):
    relu_vs_tanh.run_sweep(str(folder), str(out), learning_rates={'relu': [0.1], 'tanh': [0.1]},
                           **sweep)


@pytest.mark.slow
def test_a_run_killed_after_an_epoch_resumes_exactly(tmp_path):
  data = image_arrays.load_split(str(make_folder(tmp_path / 'images')), 'train')
  mean = data.images.mean(axis=0).astype(np.float32)
  settings = {'epochs': 3, 'batch_size': 8}
  run = dict(activation='tanh', learning_rate=0.05, seed=0, epochs=3, batch_size=8,
             settings=settings)
  whole = relu_vs_tanh.train_run(data, mean, report=lambda line: None, **run)

  def killed_after_epoch_2(line):
    if 'epoch 2/3' in line:
      raise KeyboardInterrupt
  partial = str(tmp_path / 'unfinished')
  with pytest.raises(KeyboardInterrupt):
    relu_vs_tanh.train_run(data, mean, report=killed_after_epoch_2, partial=partial, **run)
  lines = []
  resumed = relu_vs_tanh.train_run(data, mean, report=lines.append, partial=partial, **run)
  assert lines[0] == f'tanh lr=0.05 seed=0: resumed after epoch 2 ({partial}).'
  assert [line.split(':')[0] for line in lines[1:]] == ['tanh lr=0.05 seed=0 epoch 3/3']
  assert resumed['train_error'] == whole['train_error']  # The same weights and image order.
  assert len(resumed['seconds_per_epoch']) == 3 and not os.path.exists(partial)
  with pytest.raises(KeyboardInterrupt):
    relu_vs_tanh.train_run(data, mean, report=killed_after_epoch_2, partial=partial, **run)
  with pytest.raises(errors.UserError, match='a sweep with other settings'):
    relu_vs_tanh.train_run(data, mean, report=print, partial=partial,
                           **{**run, 'settings': {'epochs': 4, 'batch_size': 8}})


def test_images_load_with_labels_by_sorted_class(tmp_path):
  data = image_arrays.load_split(str(make_folder(tmp_path)), 'train')
  assert data.images.shape == (24, 16, 16, 3) and data.images.dtype == np.uint8
  assert data.classes == ('dark', 'light')
  np.testing.assert_array_equal(data.labels, [0] * 12 + [1] * 12)
  assert data.images[data.labels == 0].mean() < data.images[data.labels == 1].mean()


def test_bad_folders_say_what_to_fix(tmp_path):
  with pytest.raises(errors.UserError, match='train is not a folder: expected'):
    image_arrays.load_split(str(tmp_path), 'train')
  folder = make_folder(tmp_path / 'mixed', sizes={('light', 3): 20})
  with pytest.raises(errors.UserError, match=r'light/003.png is 20x20 but .* is 16x16'):
    image_arrays.load_split(str(folder), 'train')
  small = make_folder(tmp_path / 'small', sizes={(c, i): 8 for c in ('dark', 'light')
                                                  for i in range(12)})
  with pytest.raises(errors.UserError, match='8x8: the net takes square images of at least '
                                             '12x12'):
    relu_vs_tanh.run_sweep(str(small), str(tmp_path / 'out'), epochs=1,
                           learning_rates={'relu': [0.1], 'tanh': [0.1]}, seeds=[0])
  with pytest.raises(errors.UserError, match='given twice'):
    relu_vs_tanh.run_sweep(str(folder), str(tmp_path / 'out'), epochs=1,
                           learning_rates={'relu': [0.1, 0.1], 'tanh': [0.1]}, seeds=[0])


@pytest.mark.multiprocess
def test_command_names_a_bad_flag(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.experiments.relu_vs_tanh', f'--data={tmp_path}',
       f'--out={tmp_path}', '--learning_rates_relu=0.01,fast'], cwd=REPO,
      capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert 'Error: --learning_rates_relu=0.01,fast: expected comma-separated floats.' in done.stderr


def test_dashed_lines_have_gaps_and_solid_ones_none(tmp_path):
  assert [line_chart.nice_step(span) for span in (40, 0.8, 7, 1)] == [5, 0.1, 1, 0.1]
  path = tmp_path / 'chart.png'
  line_chart.draw(str(path), [line_chart.Series('solid', [0, 10], [0.5, 0.5], (0, 0, 255)),
                              line_chart.Series('dashed', [0, 10], [0.2, 0.2], (255, 0, 0),
                                                dashed=True)],
                  x_max=10, y_max=1, x_label='x', y_label='y', title='t', size=(400, 300))
  pixels = np.asarray(Image.open(path).convert('RGB'))
  plot = slice(95, 345)  # Inside the axes, with nothing else on these rows.
  solid_row = pixels[300 - 70 - round(0.5 * 180), plot]
  dashed_row = pixels[300 - 70 - round(0.2 * 180), plot]
  assert (solid_row == [0, 0, 255]).all(axis=1).all()
  red = (dashed_row == [255, 0, 0]).all(axis=1)
  assert 0.5 < red.mean() < 0.8  # 12 pixels on, 7 off.


@pytest.mark.slow
def test_a_run_stops_the_given_epochs_after_reaching_25_percent(tmp_path):
  folder = make_folder(tmp_path / 'images')
  data = image_arrays.load_split(str(folder), 'train')
  mean = data.images.mean(axis=0).astype(np.float32)
  run = relu_vs_tanh.train_run(data, mean, activation='relu', learning_rate=0.05, seed=0,
                               epochs=8, batch_size=8, report=lambda line: None,
                               epochs_after_threshold=1)
  reached = run['epochs_to_threshold']
  assert reached is not None and reached < 7  # Dark against light: learnt at once.
  assert len(run['train_error']) == reached + 1
