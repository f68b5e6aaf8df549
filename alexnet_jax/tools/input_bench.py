"""Command: how fast the input pipeline runs on this machine, stage by stage, in images/s.

  python -m alexnet_jax.tools.input_bench --source=imagenette2-320.tgz
  python -m alexnet_jax.tools.input_bench \
      --source=~/tensorflow_datasets/ilsvrc2012_prepared/256px_q90/1.0.0 --workers=0,8,16

`--source` is an image folder `root/<split>/<class>/*` (or a .tar/.tar.gz of one), which
is first prepared exactly as `alexnet_jax.data.prepare` would (shorter side
`data.image_size`, central square, re-encoded JPEG) under `--work_dir` (reused by later
runs), or an already prepared ILSVRC-2012 directory. Sizes, batch and split come from
`--config` (default configs/default.py; override e.g. `--config.train.batch_size=256`).
The mean is the per-channel constant (the same work as a mean image, nothing to compute).
It prints, for the training split:

  decode            JPEG -> uint8 image, one core (the host's work in device mode)
  decode+augment    decode + §4.1 crop, reflection, colour noise, mean (host mode), one core
  pipeline          create_train_iterator end to end, host and device mode, per worker count

Each line gives wall-clock images/s and images per CPU-second (this process and its
worker processes): on a shared machine the second stays meaningful when others load it.
"""

import os
import tarfile
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
import psutil

from alexnet_jax.data import augment, decode, ilsvrc2012, pipeline, sources, statistics
from alexnet_jax.runtime import command_line

_CONFIG = config_flags.DEFINE_config_file(
    'config', command_line.config_path('configs/default.py'), 'Config file.')
_SOURCE = flags.DEFINE_string('source', None, 'Image folder, archive of one, or prepared '
                              'ILSVRC-2012 dataset directory.', required=True)
_WORK_DIR = flags.DEFINE_string('work_dir',
                                os.path.join(tempfile.gettempdir(), 'alexnet_input_bench'),
                                'Where an image folder or archive is unpacked and prepared.')
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'], 'Grain worker counts to time.')
_IMAGES = flags.DEFINE_integer('images', 2000, 'Images timed per single-core stage.')
_BATCHES = flags.DEFINE_integer('batches', 30, 'Batches timed per pipeline run (after '
                                '3 warm-up batches that include starting the workers).')


def _config(data_dir: str, source: str, folder: str = ''):
  config = _CONFIG.value.copy_and_resolve_references()
  d = config.data
  d.source, d.data_dir, d.folder = source, data_dir, folder
  d.mean, d.pca_stats = 'imagenet', 'imagenet'
  return config


def _prepared_config(source: str):
  """A config reading `source`, preparing it first if it is a folder or an archive."""
  source = os.path.expanduser(source)
  if os.path.exists(os.path.join(source, 'dataset_info.json')):
    # <data_dir>/ilsvrc2012_prepared/<size>px_q<quality>/<version>
    name = os.path.basename(os.path.dirname(os.path.dirname(source)))
    if name != ilsvrc2012.Ilsvrc2012Prepared.name:
      raise app.UsageError(f'{source}: only prepared ILSVRC-2012 directories can be '
                           'named directly; give an image folder instead.')
    config = _config(os.path.dirname(os.path.dirname(os.path.dirname(source))),
                     'imagenet2012')
    config.data.image_size = sources.dataset_info(config).metadata['image_size']
    return config
  folder = source
  if os.path.isfile(source):
    folder = os.path.join(_WORK_DIR.value, 'images')
    if not os.path.exists(os.path.join(folder, _CONFIG.value.data.train_split)):
      logging.info('Unpacking %s into %s', source, folder)
      with tarfile.open(source) as tar:
        tar.extractall(folder, filter='data')
    inside = os.listdir(folder)
    if len(inside) == 1 and os.path.isdir(os.path.join(folder, inside[0])):
      folder = os.path.join(folder, inside[0])  # An archive of one folder (imagenette2-320/).
  config = _config(os.path.join(_WORK_DIR.value, 'data'), 'folder', folder)
  sources.prepare(config)
  return config


def _cpu_seconds() -> float:
  """CPU time of this process and its live children (the Grain workers)."""
  total = 0.0
  me = psutil.Process()
  for process in [me] + me.children(recursive=True):
    try:
      times = process.cpu_times()
    except psutil.NoSuchProcess:
      continue
    total += times.user + times.system
  return total


class _Timer:
  """Wall and CPU seconds of a `with` block."""

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self.wall
    self.cpu = _cpu_seconds() - self.cpu

  def report(self, label: str, images: int) -> float:
    per_cpu = f'{images / self.cpu:7.0f}' if self.cpu > 0 else '      -'  # 10 ms ticks.
    print(f'{label:34s} {images / self.wall:7.0f} images/s  {per_cpu} images/CPU-s')
    return images / self.wall


def _single_core(config) -> float:
  """Times decode and decode + host augmentation in this process; returns the latter."""
  source = sources.open_split(config, config.data.train_split)
  records = [source[i]['image'] for i in range(min(_IMAGES.value, len(source)))]
  size = config.data.image_size
  with _Timer() as timer:
    for data in records:
      decode.decode_to_square(data, size)
  timer.report('decode (1 core)', len(records))
  host = augment.HostAugment(statistics.load_stats(config),
                             crop_size=config.data.crop_size, flip=True,
                             pca_noise_std=config.data.pca_noise_std)
  rng = np.random.default_rng(0)
  with _Timer() as timer:
    for data in records:
      params = host.sample(rng)
      host.apply(decode.decode_to_square(data, size, channels=params.channels), params)
  return timer.report('decode+augment (1 core)', len(records))


def _pipeline(config, workers: int, on_device: bool) -> float:
  config.data.worker_count = workers
  config.data.augment_on_device = on_device
  it = pipeline.create_train_iterator(config)
  for _ in range(3):
    next(it)
  with _Timer() as timer:
    for _ in range(_BATCHES.value):
      next(it)
  it.close()
  mode = 'device' if on_device else 'host'
  return timer.report(f'pipeline, {mode} mode, {workers} workers',
                      _BATCHES.value * config.train.batch_size)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _prepared_config(_SOURCE.value)
  print(f'{sources.dataset_dir(config)}: '
        f'{pipeline.num_examples(config, config.data.train_split)} images, '
        f'{config.data.image_size}px -> {config.data.crop_size}px crops, '
        f'batch {config.train.batch_size}, {os.cpu_count()} cores, load average '
        f'{os.getloadavg()[0]:.1f}')
  augment_rate = _single_core(config)
  rates = {}
  for workers in map(int, _WORKERS.value):
    rates[workers] = _pipeline(config, workers, on_device=False)
    _pipeline(config, workers, on_device=True)
  if 1 in rates and 2 in rates:
    print(f'host mode, 2 workers / (2 x 1 worker):          {rates[2] / (2 * rates[1]):.0%}')
    print(f'host mode, 2 workers / (2 x decode+augment):    '
          f'{rates[2] / (2 * augment_rate):.0%}')


if __name__ == '__main__':
  command_line.run(main)
