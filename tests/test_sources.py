"""Tests for the data sources (data/sources.py's registry, the per-source modules, datasets.py)
and synthetic.py: sources prepared through the real path.

The ILSVRC-style tars are built here: a train tar of per-class tars `n0xxxxxxx.tar` of
JPEGs of odd sizes (greyscale, CMYK, a PNG named .JPEG, one truncated file) and a flat
val tar `ILSVRC2012_val_<k>.JPEG` labelled by a ground-truth file (line k: wnid of val
image k), the format of `data.val_labels_file`.
"""

import glob
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
from PIL import Image
import psutil
import pytest

from alexnet_jax.configs import default
from alexnet_jax.data import datasets, decode, ilsvrc2012, pipeline, prepare, sources, synthetic
from alexnet_jax.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WNIDS = ('n01000001', 'n01000002', 'n01000003')


def _image_bytes(colour, size, kind='rgb') -> bytes:
  """An image of one colour; kind: 'rgb', 'grey', 'cmyk', 'png' (PNG bytes) or 'truncated'."""
  w, h = size
  pil = Image.fromarray(np.full((h, w, 3), colour, np.uint8))
  if kind == 'grey':
    pil = pil.convert('L')
  elif kind == 'cmyk':
    pil = pil.convert('CMYK')
  buf = io.BytesIO()
  pil.save(buf, 'PNG' if kind == 'png' else 'JPEG', quality=95)
  data = buf.getvalue()
  return data[:len(data) // 2] if kind == 'truncated' else data


# (class, file name, colour read back or None if undecodable, size (w, h), kind).
TRAIN = (
    (0, 'n01000001_1.JPEG', (200, 30, 30), (300, 200), 'rgb'),
    (0, 'n01000001_2.JPEG', (77, 77, 77), (180, 333), 'grey'),
    (1, 'n01000002_1.JPEG', (30, 180, 60), (257, 256), 'cmyk'),
    (1, 'n01000002_2.JPEG', (20, 40, 220), (100, 140), 'png'),
    (1, 'n01000002_3.JPEG', None, (120, 90), 'truncated'),
    (2, 'n01000003_1.JPEG', (240, 200, 10), (256, 256), 'rgb'),
    (2, 'n01000003_2.JPEG', (120, 0, 160), (600, 511), 'rgb'),
)
VAL = (  # Val image k (1-based) is row k - 1.
    (2, (10, 120, 120), (500, 375), 'rgb'),
    (0, (150, 150, 150), (240, 260), 'grey'),
    (1, (200, 100, 0), (333, 500), 'rgb'),
    (0, (60, 60, 200), (257, 300), 'cmyk'),
    (2, (0, 90, 30), (256, 256), 'rgb'),
)


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def make_ilsvrc_tars(manual_dir, labels_path):
  """Writes ILSVRC2012_img_{train,val}.tar and the val ground truth; returns expectations."""
  os.makedirs(manual_dir, exist_ok=True)
  expected = {}
  with tarfile.open(os.path.join(manual_dir, ilsvrc2012.TRAIN_TAR), 'w') as outer:
    for label, wnid in enumerate(WNIDS):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as tar:
        for cls, name, colour, size, kind in TRAIN:
          if cls == label:
            _add(tar, name, _image_bytes(colour or (9, 9, 9), size, kind))
            expected[name] = (label, colour)
      _add(outer, f'{wnid}.tar', inner.getvalue())
  with tarfile.open(os.path.join(manual_dir, ilsvrc2012.VAL_TAR), 'w') as tar:
    for k, (label, colour, size, kind) in enumerate(VAL, 1):
      name = f'ILSVRC2012_val_{k:08d}.JPEG'
      _add(tar, name, _image_bytes(colour, size, kind))
      expected[name] = (label, colour)
    _add(tar, 'README.txt', b'Not an image: ignored, not a labels error.')
  with open(labels_path, 'w') as f:
    f.write(''.join(f'{WNIDS[label]}\n' for label, *_ in VAL))
  return expected


def ilsvrc_config(tmp_path):
  config = default.get_config()
  config.data.source = 'imagenet2012'
  config.data.data_dir = str(tmp_path / 'data')
  config.data.manual_dir = str(tmp_path / 'manual')
  config.data.val_labels_file = str(tmp_path / 'val_labels.txt')
  config.data.allow_partial = True  # Three classes of a few images.
  return config


def test_ilsvrc_tars_prepared_and_read_back(tmp_path):
  config = ilsvrc_config(tmp_path)
  expected = make_ilsvrc_tars(config.data.manual_dir, config.data.val_labels_file)
  config.data.prepare_processes = 2  # The real path: spawned converter processes.
  sources.prepare(config)

  info = sources.dataset_info(config)
  assert info.features['label'].names == list(WNIDS)
  assert info.metadata['skipped_files'] == {'train': ['n01000002/n01000002_3.JPEG'],
                                            'validation': []}
  assert info.metadata['source_shorter_side'] == {
      'train': {'min': 100, 'median': 256, 'max': 511},
      'validation': {'min': 240, 'median': 257, 'max': 375}}
  assert pipeline.num_examples(config, 'train') == len(TRAIN) - 1
  assert pipeline.num_examples(config, 'validation') == len(VAL)
  seen = set()
  for split in ('train', 'validation'):
    source = sources.open_split(config, split)
    for i in range(len(source)):
      record = source[i]
      name = record['file_name']
      name = name.decode() if isinstance(name, bytes) else name
      label, colour = expected[name]
      assert record['label'] == label, name
      image = decode.decode_image(record['image'])
      assert image.shape == (256, 256, 3), name
      np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colour, atol=6,
                                 err_msg=name)
      seen.add(name)
  assert seen == {n for n, (_, c) in expected.items() if c is not None}
  assert not os.path.exists(os.path.join(config.data.data_dir,
                                         'ilsvrc2012_prepared_staging', '256px_q90'))
  sources.prepare(config)  # Prepared: a no-op.


def test_ilsvrc_unknown_class_in_val_labels(tmp_path):
  config = ilsvrc_config(tmp_path)
  make_ilsvrc_tars(config.data.manual_dir, config.data.val_labels_file)
  with open(config.data.val_labels_file, 'a') as f:
    f.write('n09999999\n')
  with pytest.raises(ValueError, match=r"Unknown class.*n09999999"):
    sources.prepare(config)


def test_ilsvrc_missing_tars_say_what_to_do(tmp_path):
  config = ilsvrc_config(tmp_path)
  with pytest.raises(sources.DataMissingError) as e:
    sources.prepare(config)
  for text in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar', 'image-net.org',
               config.data.manual_dir, 'python -m alexnet_jax.data.prepare'):
    assert text in str(e.value)
  with pytest.raises(sources.DataMissingError, match='python -m alexnet_jax.data.prepare'):
    pipeline.create_train_iterator(config)


def make_folder(root, counts, size=(50, 40)):
  """root/<split>/<class>/<i>.jpg with counts = {split: {class: n}}; distinct pixels."""
  rng = np.random.default_rng(0)
  for split, classes in counts.items():
    for class_name, n in classes.items():
      os.makedirs(os.path.join(root, split, class_name), exist_ok=True)
      for i in range(n):
        image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        with open(os.path.join(root, split, class_name, f'{i}.jpg'), 'wb') as f:
          f.write(decode.encode_jpeg(image, 90))


def folder_config(tmp_path, root):
  config = default.get_config()
  config.data.source = 'folder'
  config.data.folder = str(root)
  config.data.data_dir = str(tmp_path / 'data')
  config.data.image_size = 24
  config.data.crop_size = 16
  config.data.prepare_processes = 1
  return config


def test_folder_prepare_resumes_after_interruption(tmp_path, monkeypatch):
  root = tmp_path / 'images'
  make_folder(root, {'train': {'cat': 3, 'dog': 2, 'eel': 2}, 'val': {'dog': 2}})
  config = folder_config(tmp_path, root)
  real = datasets.convert_unit
  first = []

  def interrupted(unit, path, **kw):
    if len(first) == 2:
      raise RuntimeError('power cut')
    first.append((unit.split, unit.name))
    return real(unit, path, **kw)

  monkeypatch.setattr(datasets, 'convert_unit', interrupted)
  with pytest.raises(RuntimeError, match='power cut'):
    sources.prepare(config)
  assert not sources.is_prepared(config)
  second = []

  def spy(unit, path, **kw):
    second.append((unit.split, unit.name))
    return real(unit, path, **kw)

  monkeypatch.setattr(datasets, 'convert_unit', spy)
  sources.prepare(config)
  assert len(first) == 2 and not set(first) & set(second)
  assert len(first) + len(second) == 4  # Units: train/cat, train/dog, train/eel, val/dog.
  assert pipeline.num_examples(config, 'train') == 7
  assert pipeline.num_classes(config) == 3
  source = sources.open_split(config, 'val')
  assert [source[i]['label'] for i in range(2)] == [1, 1]  # 'dog' is class 1 everywhere.


def test_folder_errors_name_the_problem(tmp_path):
  root = tmp_path / 'images'
  make_folder(root, {'train': {'cat': 1, 'dog': 1}, 'val': {'cat': 1}})
  config = folder_config(tmp_path, root)
  os.makedirs(root / 'train' / 'empty')
  with pytest.raises(ValueError, match=r'Empty class folder .*train/empty'):
    sources.prepare(config)
  os.rmdir(root / 'train' / 'empty')
  make_folder(root, {'val': {'zebra': 1}})
  with pytest.raises(ValueError, match=r"Unknown class folder\(s\) \['zebra'\]"):
    sources.prepare(config)
  config.data.folder = str(tmp_path / 'nowhere')
  with pytest.raises(sources.DataMissingError, match='nowhere.*does not exist'):
    sources.prepare(config)


def test_unprepared_folder_says_which_command_to_run(tmp_path):
  root = tmp_path / 'images'
  make_folder(root, {'train': {'cat': 1}})
  config = folder_config(tmp_path, root)
  with pytest.raises(sources.DataMissingError,
                     match=r'not prepared.*python -m alexnet_jax.data.prepare'):
    pipeline.num_examples(config, 'train')


def synthetic_config(data_dir, **sizes):
  config = default.get_config()
  config.data.source = 'synthetic'
  config.data.data_dir = str(data_dir)
  config.data.image_size = 32
  config.data.synthetic_train_size = sizes.get('train', 30)
  config.data.synthetic_eval_size = sizes.get('eval', 20)
  return config


def test_synthetic_generation_is_deterministic_and_idempotent(tmp_path):
  a = synthetic.generate(synthetic_config(tmp_path / 'a'))
  b = synthetic.generate(synthetic_config(tmp_path / 'b'))

  def files(root):
    out = {}
    for folder, _, names in os.walk(root):
      for name in names:
        with open(os.path.join(folder, name), 'rb') as f:
          out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out

  first = files(a)
  assert first == files(b)
  assert len([p for p in first if p.startswith('train/')]) == 30
  assert {p.split('/')[1] for p in first if p.startswith('validation/')} == set(
      synthetic.CLASSES)
  mtime = os.path.getmtime(os.path.join(a, 'train', 'disc', '000000.jpg'))
  assert synthetic.generate(synthetic_config(tmp_path / 'a')) == a
  assert os.path.getmtime(os.path.join(a, 'train', 'disc', '000000.jpg')) == mtime
  images = [decode.decode_image(first[f'train/{c}/{i:06d}.jpg'])
            for i, c in enumerate(synthetic.CLASSES)]
  assert all(im.shape == (32, 32, 3) for im in images)
  assert len({im.tobytes() for im in images}) == 10


def test_synthetic_needs_one_image_per_class(tmp_path):
  with pytest.raises(ValueError, match='synthetic_eval_size=5'):
    synthetic.generate(synthetic_config(tmp_path, eval=5))


def test_unprepared_tfds_catalog_dataset_says_what_to_do(tmp_path):
  config = default.get_config()
  config.data.source = 'tfds'
  config.data.name = 'cifar10'
  config.data.data_dir = str(tmp_path)
  with pytest.raises(sources.DataMissingError,
                     match=r"'cifar10' is not prepared as ArrayRecord.*alexnet_jax.data.prepare"):
    pipeline.create_eval_iterator(config)
  config.data.name = ''
  with pytest.raises(ValueError, match='needs data.name'):
    pipeline.num_examples(config, 'train')


def test_each_source_is_registered_by_its_name_and_keeps_its_directory():
  """Datasets prepared before are found again: builder and config names make their paths."""
  assert sources.NAMES == ('imagenet2012', 'folder', 'tfds', 'synthetic')
  expected = {
      'imagenet2012': '/data/prepared/ilsvrc2012_prepared/256px_q90/1.0.0',
      'folder': '/data/prepared/image_folder_prepared/my_images_383ae417_256px_q90/1.0.0',
      'synthetic': ('/data/prepared/image_folder_prepared/'
                    '256px_train1024_validation256_873795d5_256px_q90/1.0.0'),
      'tfds': '/data/prepared/cifar10/',
  }
  for name in sources.NAMES:
    config = default.get_config()
    config.data.source, config.data.data_dir = name, '/data/prepared'
    config.data.folder, config.data.name = '/data/my images', 'cifar10'
    source = sources.get(config)
    assert source.name == name
    assert source.generated_on_first_use == (name == 'synthetic')
    assert sources.dataset_dir(config).startswith(expected[name])
  config.data.source = 'imagenet'
  with pytest.raises(errors.ConfigError, match=r"data.source='imagenet': use one of "
                     r"\['imagenet2012', 'folder', 'tfds', 'synthetic'\]"):
    sources.dataset_dir(config)


def test_ilsvrc_class_names_are_known_before_preparing(tmp_path):
  wnids = sources.get(ilsvrc_config(tmp_path)).class_names()
  assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == 'n01440764'
  assert sources.get(folder_config(tmp_path, tmp_path)).class_names() is None


@pytest.mark.slow
def test_reading_never_prepares_and_ready_prepares_synthetic_once(tmp_path):
  config = synthetic_config(tmp_path)
  config.data.mean = 'dataset'
  with pytest.raises(sources.DataMissingError, match='not generated'):
    pipeline.create_eval_iterator(config)
  assert not os.path.exists(synthetic.root(config))  # Reading wrote nothing.
  stats = prepare.ready(config)
  assert stats.mean_image.shape == (32, 32, 3) and stats.mean_image.any()
  assert pipeline.num_examples(config, 'train') == 30
  info = os.path.join(sources.dataset_dir(config), 'dataset_info.json')
  mtime = os.path.getmtime(info)
  np.testing.assert_array_equal(prepare.ready(config).mean_image, stats.mean_image)
  assert os.path.getmtime(info) == mtime  # Prepared once: a second start-up reads.


def _slow_folder(root, classes=12, images=8, side=2000):
  """Copies of one big noisy photo, enough that converting takes seconds; a unit a class."""
  noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
  data = decode.encode_jpeg(noise, 95)
  for c in range(classes):
    os.makedirs(root / 'train' / f'class{c:02d}')
    for i in range(images):
      (root / 'train' / f'class{c:02d}' / f'{i}.jpg').write_bytes(data)


def _prepare_command(config):
  return [sys.executable, '-m', 'alexnet_jax.data.prepare', '--config=configs/default.py',
          '--config.data.source=folder', f'--config.data.folder={config.data.folder}',
          f'--config.data.data_dir={config.data.data_dir}', '--config.data.prepare_processes=2',
          '--config.data.mean=imagenet', '--config.data.worker_count=0']


def _start_and_wait_for_a_unit(args, data_dir):
  """Starts `args` and returns once its first unit is staged under `data_dir`: a unit's
  file gets its name only when complete. (Not a progress line: those are throttled to one
  every few seconds, and on an idle machine all 12 units are done before the first.)"""
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
  deadline = time.time() + 300
  while not glob.glob(os.path.join(data_dir, '**', '*.array_record'), recursive=True):
    assert proc.poll() is None and time.time() < deadline, 'no unit was staged'
    time.sleep(0.02)
  return proc, psutil.Process(proc.pid).children(recursive=True)


def _gone(processes, seconds=15):
  deadline = time.time() + seconds
  while time.time() < deadline:
    if all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes):
      return True
    time.sleep(0.2)
  return False


@pytest.mark.slow
@pytest.mark.multiprocess
def test_prepare_stops_at_ctrl_c_and_its_workers_never_outlive_it(tmp_path):
  root = tmp_path / 'images'
  _slow_folder(root)
  config = folder_config(tmp_path, root)
  # Killed outright: the converters die with it (they would convert for minutes).
  proc, children = _start_and_wait_for_a_unit(_prepare_command(config), config.data.data_dir)
  assert children
  proc.kill()
  proc.wait()
  assert _gone(children), [p.pid for p in children if p.is_running()]
  # Ctrl-C: stops at once (not after every queued unit), says so, keeps what is done.
  config.data.data_dir = str(tmp_path / 'fresh')  # All 12 units to convert again.
  proc, children = _start_and_wait_for_a_unit(_prepare_command(config), config.data.data_dir)
  os.killpg(proc.pid, signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGINT and 'rerun the same command' in out
  assert _gone(children)
  done = subprocess.run(_prepare_command(config), cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  # Units were left to convert (after every queued unit there would be none: it stopped
  # at once), and only those (what was done is kept).
  converting = re.search(r'Converting (\d+) of 12 units', done.stdout)
  assert converting and int(converting.group(1)) < 12  # The rest only.
  assert 'train: 96 images in 12 classes' in done.stdout


def test_a_prepared_dataset_is_not_reused_after_its_source_changed(tmp_path):
  root = tmp_path / 'images'
  make_folder(root, {'train': {'cat': 2, 'dog': 2}, 'val': {'dog': 1}})
  config = folder_config(tmp_path, root)
  sources.prepare(config)
  sources.prepare(config)  # Unchanged: prepared already, a no-op.
  (root / 'train' / 'cat' / 'extra.jpg').write_bytes(_image_bytes((1, 2, 3), (30, 30)))
  for step in (sources.prepare, prepare.ready):
    with pytest.raises(sources.SourceChangedError,
                       match=r'prepared from other files .*differ in: train/cat\)\. Delete '):
      step(config)


def test_other_validation_labels_are_not_silently_reused(tmp_path):
  config = ilsvrc_config(tmp_path)
  make_ilsvrc_tars(config.data.manual_dir, config.data.val_labels_file)
  config.data.prepare_processes = 1
  sources.prepare(config)
  with open(config.data.val_labels_file) as f:
    lines = f.readlines()
  with open(config.data.val_labels_file, 'w') as f:
    f.writelines([lines[1], lines[0], *lines[2:]])  # Val images 1 and 2 swap labels.
  with pytest.raises(sources.SourceChangedError, match='val_labels_sha1'):
    sources.prepare(config)
