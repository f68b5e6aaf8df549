"""Preparing data when things go wrong: damaged tars, short sources, odd images, a second
prepare at once; and what it says (one paragraph per problem, a few console lines).

The data is made here: tiny ILSVRC-style tars (per-class tars of JPEGs inside a train tar,
a flat val tar and its ground truth) and image folders of generated images.
"""

import contextlib
import fcntl
import glob
import io
import os
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
from PIL import Image
import psutil
import pytest

from alexnet_jax.configs import default
from alexnet_jax.data import datasets, decode, ilsvrc2012, prepare, sources
from alexnet_jax.runtime import cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WNIDS = ('n01000001', 'n01000002')


def _jpeg(colour, size=(40, 30)) -> bytes:
  return decode.encode_jpeg(np.full((size[1], size[0], 3), colour, np.uint8), 90)


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _ilsvrc(tmp_path, *, per_class=3, val=4):
  """Tiny ILSVRC-style tars and labels; returns the config that reads them."""
  config = default.get_config()
  config.data.source = 'imagenet2012'
  config.data.data_dir = str(tmp_path / 'data')
  config.data.manual_dir = str(tmp_path / 'manual')
  config.data.val_labels_file = str(tmp_path / 'val_labels.txt')
  config.data.image_size = 24
  config.data.prepare_processes = 1
  os.makedirs(config.data.manual_dir)
  with tarfile.open(os.path.join(config.data.manual_dir, ilsvrc2012.TRAIN_TAR), 'w') as outer:
    for label, wnid in enumerate(WNIDS):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as tar:
        for i in range(per_class):
          _add(tar, f'{wnid}_{i}.JPEG', _jpeg((100 * label, 50, 50)))
      _add(outer, f'{wnid}.tar', inner.getvalue())
  with tarfile.open(os.path.join(config.data.manual_dir, ilsvrc2012.VAL_TAR), 'w') as tar:
    for k in range(1, val + 1):
      _add(tar, f'ILSVRC2012_val_{k:08d}.JPEG', _jpeg((200, 10 * k, 0), (64, 48)))
  with open(config.data.val_labels_file, 'w') as f:
    f.write(''.join(f'{WNIDS[k % 2]}\n' for k in range(val)))
  return config


def _cut(path, keep: int) -> None:
  with open(path, 'r+b') as f:
    f.truncate(keep)


def _member_offsets(path):
  with tarfile.open(path) as tar:
    return [(m.name, m.offset, m.offset_data + m.size) for m in tar]


@pytest.mark.parametrize('tar_name,where', [
    (ilsvrc2012.VAL_TAR, 'inside'),  # A download stopped in the middle of an image.
    (ilsvrc2012.VAL_TAR, 'boundary'),  # Stopped between two images: reads as a short tar.
    (ilsvrc2012.TRAIN_TAR, 'inside'),
])
def test_a_tar_cut_short_is_named_with_its_fix_and_nothing_is_prepared(
    tmp_path, tar_name, where):
  config = _ilsvrc(tmp_path)
  path = os.path.join(config.data.manual_dir, tar_name)
  members = _member_offsets(path)
  name, header, end = members[1]
  _cut(path, header if where == 'boundary' else end - 10)
  with pytest.raises(datasets.DamagedArchiveError) as e:
    sources.prepare(config)
  message = str(e.value)
  assert message.startswith(f'{path} is damaged: ')
  assert ('without the end-of-archive blocks' if where == 'boundary' else repr(name)) in message
  assert 'Fetch it again from https://image-net.org' in message
  assert ('the whole file is 6,744,924,160 bytes, SHA-256 c7e06a6c' in message
          if tar_name == ilsvrc2012.VAL_TAR else '147,897,477,120 bytes' in message)
  assert '\n' not in message
  assert not sources.is_prepared(config)
  assert not os.path.exists(sources.get(config).staging_dir())


def test_a_damaged_class_tar_inside_a_whole_train_tar_is_named(tmp_path):
  config = _ilsvrc(tmp_path)
  config.data.allow_partial = True
  path = os.path.join(config.data.manual_dir, ilsvrc2012.TRAIN_TAR)
  with tarfile.open(path) as tar:
    inner = {m.name: tar.extractfile(m).read() for m in tar}
  first = f'{WNIDS[0]}.tar'
  inner[first] = b'garbage!' * 64 + inner[first][512:]  # Its first header scrambled.
  with tarfile.open(path, 'w') as outer:  # The outer tar stays whole.
    for name, data in inner.items():
      _add(outer, name, data)
  with pytest.raises(datasets.DamagedArchiveError,
                     match=rf'is damaged: its member {first} is not a readable tar'):
    sources.prepare(config)
  assert not sources.is_prepared(config)


def test_a_subset_of_ilsvrc_stops_unless_allowed_and_then_says_so(tmp_path):
  config = _ilsvrc(tmp_path)
  with pytest.raises(datasets.PartialSourceError) as e:
    sources.prepare(config)
  message = str(e.value)
  for text in ('2 classes (per-class tars) of 1,000', 'validation: 4 images of 50,000',
               'validation: 2 classes without 50 images', '--config.data.allow_partial=True',
               'SHA-256 b08200a2'):
    assert text in message, text
  config.data.allow_partial = True
  sources.prepare(config)
  info = sources.dataset_info(config)
  assert info.metadata['found_per_class'] == {'train': {WNIDS[0]: 3, WNIDS[1]: 3},
                                              'validation': {WNIDS[0]: 2, WNIDS[1]: 2}}
  lines = datasets.split_summaries(info, 24)
  assert lines[0].startswith('train: 6 images in 2 classes (3 to 3 a class)')
  assert any(line.startswith('Partial (data.allow_partial=True): train: 6 images of '
                             '1,281,167') for line in lines)


def test_the_published_ilsvrc_counts_pass_and_a_short_class_does_not(tmp_path):
  config = default.get_config()
  source = sources.get(config)
  classes = tuple(f'n{i:08d}' for i in range(1000))
  train = {c: 1282 if i < 167 else 1281 for i, c in enumerate(classes)}  # 1,281,167.
  whole = {'train': train, 'validation': {c: 50 for c in classes}}
  assert source.count_problems(classes, whole) == []
  whole['train'][classes[0]] = 700  # A class tar cut short inside: fewer images.
  assert source.count_problems(classes, whole) == [
      'train: 1,280,585 images of 1,281,167',
      'train: 1 classes without 732 to 1,300 images (n00000000: 700)']


def _save(path, image, fmt='PNG', **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path, fmt, **kw)


def _folder_config(tmp_path, root):
  config = default.get_config()
  config.data.source = 'folder'
  config.data.folder = str(root)
  config.data.data_dir = str(tmp_path / 'data')
  config.data.image_size = 32
  config.data.prepare_processes = 1
  config.data.mean = config.data.pca_stats = 'imagenet'
  return config


def test_odd_images_are_stored_right_and_the_undecodable_listed(tmp_path):
  """A 16-bit greyscale PNG keeps its greys (not white); a sideways camera JPEG is stored
  upright; RGBA and greyscale become RGB; an empty file and a text file are skipped."""
  root = tmp_path / 'images'
  ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))  # Dark to light.
  _save(root / 'train' / 'a' / 'grey16.png', ramp)
  top_red = np.zeros((48, 32, 3), np.uint8)  # Stored on its side: red on its left.
  top_red[:, :16] = (255, 0, 0)
  pil = Image.fromarray(top_red)
  exif = pil.getexif()
  exif[0x0112] = 6  # Turn 90° clockwise to see it: the red half comes on top.
  os.makedirs(root / 'train' / 'b')
  pil.save(root / 'train' / 'b' / 'camera.jpg', 'JPEG', exif=exif.tobytes(), quality=95)
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[...] = (0, 200, 0, 100)
  _save(root / 'train' / 'b' / 'alpha.png', rgba)
  (root / 'train' / 'b' / 'empty.jpg').write_bytes(b'')
  (root / 'train' / 'b' / 'notes.jpg').write_text('not an image')
  config = _folder_config(tmp_path, root)
  sources.prepare(config)
  split = sources.open_split(config, 'train')
  images = {}
  for i in range(len(split)):
    name = split[i]['file_name']
    images[name.decode() if isinstance(name, bytes) else name] = decode.decode_image(
        split[i]['image'])
  grey = images['grey16.png'][16, :, 0].astype(int)
  assert grey[1] < 20 and grey[-2] > 235 and abs(grey[16] - 128) < 12
  upright = images['camera.jpg']
  assert upright[:12, :, 0].mean() > 200 and upright[20:, :, 0].mean() < 40
  np.testing.assert_allclose(images['alpha.png'].reshape(-1, 3).mean(0), (0, 200, 0), atol=3)
  info = sources.dataset_info(config)
  assert info.metadata['skipped_files']['train'] == ['b/empty.jpg', 'b/notes.jpg']
  assert datasets.split_summaries(info, 32)[0].startswith(
      'train: 3 images in 2 classes (1 to 4 a class)')


def test_a_prepared_dataset_elsewhere_and_tars_not_yet_prepared_are_named(
    tmp_path, monkeypatch):
  monkeypatch.setenv(cache.ENV, str(tmp_path / 'cache'))
  root = tmp_path / 'images'
  _save(root / 'train' / 'a' / '0.png', np.zeros((8, 8, 3), np.uint8))
  config = _folder_config(tmp_path, root)
  sources.prepare(config)
  config.data.data_dir = str(tmp_path / 'other')
  message = sources.get(config).missing_message()
  assert (f'it was prepared with data.data_dir={tmp_path / "data"}: set '
          f'--config.data.data_dir={tmp_path / "data"} to use that one') in message
  ilsvrc = _ilsvrc(tmp_path / 'tars')
  monkeypatch.setattr(sys, 'argv', [
      'main.py', '--config=configs/ilsvrc2012.py', '--workdir=runs/x',
      f'--config.data.manual_dir={ilsvrc.data.manual_dir}', '--config.train.num_steps=5',
      '--config.data.image_size=227'])
  message = sources.get(ilsvrc).missing_message()
  assert f'Its tars are in {ilsvrc.data.manual_dir}: prepare them once with' in message
  assert ('python -m alexnet_jax.data.prepare --config=configs/ilsvrc2012.py '
          f'--config.data.manual_dir={ilsvrc.data.manual_dir} '
          '--config.data.image_size=227 (it resumes') in message
  assert 'Download' not in message


def test_converting_prints_a_few_dozen_lines_and_a_right_eta(monkeypatch):
  """1,000 units of 1 s on 4 workers, which take 20 s to start: the ETA a minute in is
  within a tenth of the truth, and the lines are few."""
  clock = {'now': 0.0}
  monkeypatch.setattr(datasets.time, 'time', lambda: clock['now'])
  lines = []
  units = [datasets.Unit('train', f'u{i}', None, 1000 + 7 * (i % 5)) for i in range(1000)]
  progress = datasets._Progress(lines.append, units, warm_up=4)
  etas = {}
  for i, unit in enumerate(units):
    clock['now'] = 20 + (i // 4 + 1) * 1.0
    progress.finished(unit, 10, 0)
    if lines and 'ETA' in lines[-1] and lines[-1] not in etas:
      etas[lines[-1]] = clock['now']
  assert len(lines) <= 30, lines
  assert lines[-1] == '  1,000 of 1,000 units, 10,000 images (37/s); took 4 min'
  after_a_minute = [(line, t) for line, t in etas.items() if t >= 60 and 'ETA ' in line]
  line, t = after_a_minute[0]
  assert abs(float(line.split('ETA ')[1].split()[0]) * 60 - (270 - t)) < 0.1 * 270, line


@pytest.mark.slow
def test_a_second_prepare_waits_for_the_first(tmp_path):
  root = tmp_path / 'images'
  _save(root / 'train' / 'a' / '0.png', np.zeros((8, 8, 3), np.uint8))
  config = _folder_config(tmp_path, root)
  os.makedirs(config.data.data_dir)
  lines = []
  with open(os.path.join(config.data.data_dir, '.prepare.lock'), 'a+') as held:
    fcntl.flock(held, fcntl.LOCK_EX)  # As a first prepare holds it.
    held.write('12345\n')
    held.flush()
    second = threading.Thread(target=prepare.prepare, args=(config, lines.append))
    second.start()
    deadline = time.time() + 60  # The second says it waits, however loaded the machine.
    while not lines and time.time() < deadline:
      time.sleep(0.05)
    assert lines and lines[0].startswith('Another prepare (process 12345) is preparing data')
    assert second.is_alive() and not sources.is_prepared(config)
  second.join(60)
  assert sources.is_prepared(config)


def test_a_rerun_removes_what_a_kill_left_and_tfds_leaves_no_temporary_folder(
    tmp_path, monkeypatch):
  monkeypatch.setattr(datasets.tempfile, 'tempdir', str(tmp_path / 'tmp'))
  os.makedirs(tmp_path / 'tmp')
  root = tmp_path / 'images'
  _save(root / 'train' / 'a' / '0.png', np.zeros((8, 8, 3), np.uint8))
  config = _folder_config(tmp_path, root)
  source = sources.get(config)
  leftover = os.path.join(os.path.dirname(source.dataset_dir()), 'incomplete.ABC123_1.0.0')
  os.makedirs(leftover)  # TFDS's folder of a write that was killed.
  sources.prepare(config)
  assert os.listdir(tmp_path / 'tmp') == [] and not os.path.exists(leftover)
  os.makedirs(os.path.join(source.staging_dir(), 'train'))  # Killed before its removal.
  sources.prepare(config)
  assert not os.path.exists(source.staging_dir())


@pytest.mark.multiprocess
def test_the_command_says_one_paragraph_for_a_layout_or_a_damaged_tar(tmp_path):
  root = tmp_path / 'images'
  _save(root / 'train' / 'a' / '0.png', np.zeros((8, 8, 3), np.uint8))
  os.makedirs(root / 'train' / 'empty')
  ilsvrc = _ilsvrc(tmp_path / 'tars')
  val_tar = os.path.join(ilsvrc.data.manual_dir, ilsvrc2012.VAL_TAR)
  _cut(val_tar, os.path.getsize(val_tar) // 2)
  for args, expected in (
      (['--config.data.source=folder', f'--config.data.folder={root}'],
       f'Error: Empty class folder {root}/train/empty: every class folder needs images.'),
      ([f'--config.data.manual_dir={ilsvrc.data.manual_dir}',
        f'--config.data.val_labels_file={ilsvrc.data.val_labels_file}'],
       f'Error: {val_tar} is damaged: it breaks at or after')):
    proc = subprocess.run(
        [sys.executable, '-m', 'alexnet_jax.data.prepare', '--config=configs/default.py',
         f'--config.data.data_dir={tmp_path / "data"}', *args],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    said = proc.stderr[proc.stderr.index('Error: '):].splitlines()  # After TF's own lines.
    assert said[0].startswith(expected) and said[1].startswith('(The traceback is in '), said
    assert len(said) == 2 and 'Traceback' not in proc.stdout + proc.stderr


def _session(sid: int) -> list:
  found = []
  for p in psutil.process_iter():
    with contextlib.suppress(psutil.Error, ProcessLookupError):
      if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
        found.append(p)
  return found


def _shared_memory(processes: list) -> set[str]:
  """The files in /dev/shm (semaphores, shared memory blocks) that `processes` map or
  hold open: those a kill could leave behind. Other programs' files are not looked at."""
  found = set()
  for p in processes:
    with contextlib.suppress(psutil.Error, OSError):
      found |= {m.path for m in p.memory_maps() if m.path.startswith('/dev/shm/')}
      found |= {f.path for f in p.open_files() if f.path.startswith('/dev/shm/')}
  return found


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_9_at_any_point_leaves_no_process_and_no_file(tmp_path):
  """Killed while its workers start, while converting, while computing the statistics:
  each time no process is left (workers still importing end once started) and none of the
  /dev/shm files its processes used; the rerun prepares it whole and leaves no staging,
  temporary or incomplete folder."""
  root = tmp_path / 'images'
  noise = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
  for c in range(8):
    for i in range(6):
      _save(root / 'train' / f'c{c}' / f'{i}.jpg', noise, 'JPEG', quality=95)
  os.makedirs(tmp_path / 'tmp')
  args = [sys.executable, '-m', 'alexnet_jax.data.prepare', '--config=configs/default.py',
          '--config.data.source=folder', f'--config.data.folder={root}',
          f'--config.data.data_dir={tmp_path / "data"}', '--config.data.prepare_processes=2',
          '--config.data.worker_count=2', '--config.data.image_size=64']
  env = {**os.environ, 'TMPDIR': str(tmp_path / 'tmp')}
  for point in ('Converting ', '  ', 'Computing the mean image'):
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    used = set()
    for line in proc.stdout:
      used |= _shared_memory(_session(proc.pid))
      if line.startswith(point):
        break
    for _ in range(5):
      time.sleep(0.1)
      used |= _shared_memory(_session(proc.pid))
    proc.kill()
    proc.wait()
    deadline = time.time() + 60
    while _session(proc.pid) and time.time() < deadline:
      time.sleep(0.5)
    assert _session(proc.pid) == [], (point, _session(proc.pid))
    # Python's resource tracker, the last of the session to end, removes them.
    assert [f for f in used if os.path.exists(f)] == [], point
  done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'train: 48 images in 8 classes (6 to 6 a class)' in done.stdout
  config = _folder_config(tmp_path, root)
  config.data.image_size = 64
  source = sources.get(config)
  assert not os.path.exists(source.staging_dir())
  assert not glob.glob(os.path.join(os.path.dirname(source.dataset_dir()), 'incomplete.*'))
  assert os.listdir(tmp_path / 'tmp') == []
