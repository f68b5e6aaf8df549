"""Command: how fast the training step runs (images/s, MFU), and PyTorch doing the same work.

  python -m alexnet_jax.tools.bench --config=configs/ilsvrc2012.py --config.mesh.tower=1 \
      --batch=1024 --config.model.dtype=bfloat16 --torch --json=bench.json
  python -m alexnet_jax.tools.bench --config=configs/ilsvrc2012.py --cpu_devices=2 --batch=8
  python -m alexnet_jax.tools.bench --config=configs/demo.py --data=pipeline

What is timed: the real jitted step of train_step.make_train_step (forward, backward,
the paper's SGD update, dropout, LRN, the towers on the mesh; the state donated) on one
random batch already on the devices, for --steps steps after --warmup steps (the first
compiles; its time is reported apart). Dispatch runs one step ahead of the clock, so the
device never waits for Python: a step's time is the time between the completions of it
and of the step before.

FLOPs per image of a training step, from the forward multiply-accumulates (MACs) of the
convolutional and fully connected layers (summary.layer_rows):

    train FLOPs = 2 x (3 x sum of MACs - MACs of conv1)

forward, gradient with respect to each layer's input and with respect to its weights,
2 FLOPs per MAC each, less conv1's input gradient (the images are not learned). ReLU,
LRN, pooling, softmax and the update are not counted. The paper's net on 224 crops:
2 x (3 x 724,406,816 - 105,415,200) = 4.136 GFLOP. MFU = achieved FLOP/s over the dense
peak of the device for model.dtype (PEAKS); null for a device not in the table (CPU).

--data=pipeline then also runs real steps fed by the Grain pipeline of config.data
(pipeline.create_train_iterator; prepare the data first, or use data.source=
'synthetic'), and reports images/s end to end and the fraction of the step time spent
waiting for data: 1 - (step time on device-resident data) / (step time end to end).

--torch also times, in the same process, the same batch in PyTorch (torch_reference.py):
torchvision's layout and the paper's two towers, bf16 autocast when model.dtype is
bfloat16, channels_last, eager and/or torch.compile (--torch_modes), fused SGD on CUDA
(foreach on CPU); and prints JAX's images/s over each. JAX reserves 75% of a GPU's memory
at start; if PyTorch runs out of the rest, set XLA_PYTHON_CLIENT_MEM_FRACTION=.5.
"""

import importlib.metadata
import json
import platform
import sys
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from alexnet_jax.data import pipeline, prepare, statistics
from alexnet_jax.nn import model
from alexnet_jax.runtime import command_line
from alexnet_jax.tools import summary
from alexnet_jax.training import preflight, schedules, sharding, train_step

# Dense (no sparsity) tensor-core peaks in TFLOP/s, from NVIDIA's datasheets (they also
# print sparse figures, twice these). float32 is TF32: JAX's default matmul precision lets
# XLA use TF32 tensor cores for float32 convolutions and matmuls on these GPUs.
PEAKS = {
    'H100 SXM': {'bfloat16': 989.4, 'float32': 494.7},
    'H100 PCIe': {'bfloat16': 756.5, 'float32': 378.0},
    'H200 SXM': {'bfloat16': 989.4, 'float32': 494.7},
    'A100': {'bfloat16': 312.0, 'float32': 156.0},  # SXM4 and PCIe alike.
}
DATA_MODES = ('on_device', 'pipeline')
TORCH_MODES = ('eager', 'compile')


def peak_name(device_kind: str) -> str | None:
  """The PEAKS entry of a JAX device_kind (e.g. 'NVIDIA H100 80GB HBM3'), or None."""
  kind = device_kind.upper()
  if 'NVL' in kind:  # H100/H200 NVL have their own, lower clocks: not in the table.
    return None
  if 'H200' in kind:
    return 'H200 SXM'
  if 'H100' in kind:
    return 'H100 PCIe' if 'PCIE' in kind else 'H100 SXM'
  if 'A100' in kind:
    return 'A100'
  return None


def train_flops_per_image(config: ml_collections.ConfigDict) -> int:
  """FLOPs of one training step per image (see the module docstring for the formula)."""
  rows = summary.layer_rows(config)
  return 2 * (3 * sum(r.macs for r in rows) - rows[0].macs)


def throughput(batch: int, step_seconds: list[float], flops_per_image: int,
               peak_tflops: float | None) -> dict:
  """images/s, ms/step (mean and spread), achieved TFLOP/s and MFU of timed steps."""
  ms = np.asarray(step_seconds) * 1e3
  images_per_s = batch / (ms.mean() / 1e3)
  tflops = images_per_s * flops_per_image / 1e12
  return {
      'images_per_s': float(images_per_s),
      'ms_per_step': {'mean': float(ms.mean()), 'median': float(np.median(ms)),
                      'std': float(ms.std()), 'min': float(ms.min()), 'max': float(ms.max())},
      'tflops_per_s': float(tflops),
      'mfu': float(tflops / peak_tflops) if peak_tflops else None,
  }


def time_steps(run_step: Callable[[], object], steps: int) -> list[float]:
  """Seconds per step, with the next step always dispatched before waiting for one.

  `run_step` dispatches one step and returns something to wait on (its outputs); it is
  called `steps` + 2 times. Each timed interval holds one dispatch and one completion, so
  host work in `run_step` (fetching data) counts when it, not the device, is the slower.
  """
  first, pending = run_step(), run_step()
  jax.block_until_ready(first)
  last, seconds = time.perf_counter(), []
  for _ in range(steps):
    following = run_step()
    jax.block_until_ready(pending)
    now = time.perf_counter()
    seconds.append(now - last)
    last, pending = now, following
  jax.block_until_ready(pending)  # Dispatched only to keep the last timed step honest.
  return seconds


def _peak_memory(devices) -> int | None:
  """Peak bytes in use on the busiest device since start, where the backend reports it."""
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in devices]
  return None if None in peaks else max(peaks)


def _random_batch(config: ml_collections.ConfigDict, mesh, batch: int) -> dict:
  """One batch shaped like the pipeline's (crops, or uint8 images for on-device augmentation)."""
  rng = np.random.default_rng(config.seed)
  if config.data.augment_on_device:
    size = config.data.image_size
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  else:
    images = rng.normal(0, 60, train_step.input_shape(config, batch)).astype(np.float32)
  labels = rng.integers(0, config.model.num_classes, batch, dtype=np.int32)
  return jax.device_put({'image': images, 'label': labels}, sharding.batch_sharding(mesh))


def _device_stats(config: ml_collections.ConfigDict, mesh, published: bool):
  """Data statistics for on-device augmentation: the published constants, or the data's."""
  if not config.data.augment_on_device:
    return None
  if published:
    config = config.copy_and_resolve_references()
    config.data.mean, config.data.pca_stats = 'imagenet', 'imagenet'
  stats = statistics.load_stats(config)
  return jax.device_put(stats, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def _pipeline(config: ml_collections.ConfigDict, mesh, step_fn, state, steps: int,
              warmup: int, device_step_s: float) -> tuple[dict, object]:
  """Real steps fed by the Grain pipeline; returns the figures and the state."""
  prepare.ready(config)  # Prepare, then read.
  classes = pipeline.num_classes(config)
  if classes > config.model.num_classes:
    raise ValueError(f'The dataset has {classes} classes but model.num_classes='
                     f'{config.model.num_classes}: add --config.model.num_classes={classes}.')
  stats = _device_stats(config, mesh, published=False)
  batches = pipeline.create_train_iterator(config)
  fetch, put = [], []

  def run_step():
    nonlocal state
    start = time.perf_counter()
    local = next(batches)
    fetched = time.perf_counter()
    batch = sharding.global_batch(mesh, local)
    fetch.append(fetched - start)
    put.append(time.perf_counter() - fetched)
    state, metrics = step_fn(state, batch, stats)
    return metrics

  for _ in range(warmup):  # Starts the workers and fills their buffers.
    jax.block_until_ready(run_step())
  fetch.clear()
  put.clear()
  seconds = time_steps(run_step, steps)
  batches.close()
  step_s = float(np.mean(seconds))
  figures = {
      'source': config.data.source, 'worker_count': config.data.worker_count,
      'augment_on_device': config.data.augment_on_device,
      'images_per_s': config.train.batch_size / step_s,
      'ms_per_step': 1e3 * step_s,
      'data_wait_fraction': max(0.0, 1.0 - device_step_s / step_s),
      'host_next_batch_ms': 1e3 * float(np.mean(fetch)),
      'host_to_device_ms': 1e3 * float(np.mean(put)),
  }
  return figures, state


def benchmark_jax(config: ml_collections.ConfigDict, *, steps: int, warmup: int,
                  data: str = 'on_device') -> dict:
  """Times the training step of `config` (train.batch_size images) on its mesh."""
  if data not in DATA_MODES:
    raise ValueError(f'data={data!r}: use one of {DATA_MODES}.')
  if steps < 1 or warmup < 1:
    raise ValueError(f'steps={steps}, warmup={warmup}: both must be at least 1 (the first '
                     'warm-up step compiles).')
  mesh = sharding.make_mesh(config)
  batch = config.train.batch_size
  sharding.check_batch(batch, mesh)
  net = model.create_model(config, mesh)
  step_fn = train_step.make_train_step(config, net, mesh,
                                       schedules.make_schedule(config, 1, steps + warmup))
  device = mesh.devices.flat[0]
  name = peak_name(device.device_kind)
  peak = PEAKS[name].get(config.model.dtype) if name else None
  flops = train_flops_per_image(config)
  with jax.set_mesh(mesh):
    state = train_step.create_train_state(config, net, mesh)
    images = _random_batch(config, mesh, batch)
    stats = _device_stats(config, mesh, published=True)
    metrics = None

    def run_step():
      nonlocal state, metrics
      state, metrics = step_fn(state, images, stats)
      return metrics

    start = time.perf_counter()
    jax.block_until_ready(run_step())
    first_step_s = time.perf_counter() - start
    for _ in range(warmup - 1):
      run_step()
    seconds = time_steps(run_step, steps)
    result = {
        'device': {'platform': device.platform, 'kind': device.device_kind,
                   'count': mesh.devices.size, 'peak': name,
                   'peak_tflops_dense': peak},
        'mesh': {'data': mesh.shape['data'], 'tower': mesh.shape['tower']},
        'train_flops_per_image': flops,
        'first_step_s': first_step_s,
        **throughput(batch, seconds, flops, peak),
        'final_loss': float(metrics['loss']),
        'peak_memory_bytes': _peak_memory(mesh.devices.flat),
    }
    if data == 'pipeline':
      result['end_to_end'], state = _pipeline(config, mesh, step_fn, state, steps, warmup,
                                              float(np.mean(seconds)))
  return result


def benchmark_torch(config: ml_collections.ConfigDict, *, steps: int, warmup: int,
                    layouts: list[str], modes: list[str], channels_last: bool,
                    jax_platform: str) -> dict:
  """The PyTorch rows (one per layout and mode), or why there are none."""
  try:
    from alexnet_jax.tools import torch_reference  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    if e.name != 'torch':
      raise
    return {'skipped': 'PyTorch is not installed: pip install torch to compare.'}
  import torch  # pylint: disable=g-import-not-at-top
  for name, given, known in (('layout', layouts, torch_reference.LAYOUTS),
                             ('mode', modes, TORCH_MODES)):
    if set(given) - set(known):
      raise ValueError(f'PyTorch {name}s {given}: use some of {known}.')
  dev = torch_reference.device()
  if jax_platform == 'gpu' and dev.type != 'cuda':
    return {'skipped': f'JAX runs on a GPU but PyTorch {torch.__version__} has no CUDA: '
                       'install a CUDA build of PyTorch to compare.'}
  bf16 = config.model.dtype == 'bfloat16'
  peak_kind = peak_name(torch.cuda.get_device_name(dev)) if dev.type == 'cuda' else None
  peak = PEAKS[peak_kind].get(config.model.dtype) if peak_kind else None
  rows = []
  for layout in layouts:
    twin = config.copy_and_resolve_references()
    twin.model.update(layout=layout, towers=2 if layout == 'paper' else 1, remove_conv='',
                      extra_conv6=False)
    for mode in modes:
      net = torch_reference.build(layout, config)
      timed = torch_reference.time_training(
          net, config, batch=config.train.batch_size, steps=steps, warmup=warmup, bf16=bf16,
          channels_last=channels_last, compile_net=mode == 'compile')
      rows.append({
          'layout': layout, 'mode': mode, 'channels_last': channels_last,
          'autocast_bf16': bf16, 'optimizer': f"SGD ({timed['optimizer']})",
          'params': torch_reference.num_params(net),
          **throughput(config.train.batch_size, timed['step_seconds'],
                       train_flops_per_image(twin), peak),
          'peak_memory_bytes': timed['peak_memory_bytes'],
      })
      del net
  return {'version': torch.__version__, 'device': str(dev),
          'device_name': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu',
          'num_threads': torch.get_num_threads(), 'rows': rows}


def _versions() -> dict:
  names = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
  return {'python': platform.python_version(),
          **{n: importlib.metadata.version(n) for n in names}}


def _gib(n: int | None) -> str:
  return 'n/a' if n is None else f'{n / 2**30:.2f} GiB'


def _line(what: str, r: dict) -> str:
  ms = r['ms_per_step']
  mfu = 'n/a (no peak for this device)' if r['mfu'] is None else f"{100 * r['mfu']:.1f}%"
  return (f"{what:<52}{r['images_per_s']:>10,.0f} images/s  {ms['mean']:8.2f} ms/step "
          f"(median {ms['median']:.2f}, min {ms['min']:.2f}, max {ms['max']:.2f})  "
          f"{r['tflops_per_s']:7.2f} TFLOP/s  MFU {mfu}")


def format_report(report: dict) -> str:
  """The console summary of a benchmark report."""
  j, c = report['jax'], report['config']
  lines = [f"AlexNet {c['layout']} ({c['towers']} towers), {c['dtype']}, batch {c['batch']}, "
           f"{c['crop_size']}px crops, mesh data={j['mesh']['data']} x "
           f"tower={j['mesh']['tower']} on {j['device']['count']} x {j['device']['kind']}; "
           f"{j['train_flops_per_image'] / 1e9:.3f} GFLOP per image per step",
           _line('JAX (data on device)', j),
           f"  compile + first step {j['first_step_s']:.1f} s, peak device memory "
           f"{_gib(j['peak_memory_bytes'])}, final loss {j['final_loss']:.3f}"]
  if e := j.get('end_to_end'):
    lines.append(f"JAX end to end ({e['source']}, {e['worker_count']} Grain workers): "
                 f"{e['images_per_s']:,.0f} images/s, {e['ms_per_step']:.2f} ms/step, waiting "
                 f"for data {100 * e['data_wait_fraction']:.0f}% of the step time (host: next "
                 f"batch {e['host_next_batch_ms']:.2f} ms, to device "
                 f"{e['host_to_device_ms']:.2f} ms per step)")
  t = report.get('torch')
  if t and 'skipped' in t:
    lines.append(f"PyTorch: skipped. {t['skipped']}")
  elif t:
    for row in t['rows']:
      what = (f"PyTorch {t['version']} {row['layout']} {row['mode']}"
              f"{' channels_last' if row['channels_last'] else ''}")
      lines.append(_line(what, row) + f"  JAX/PyTorch {row['jax_over_torch']:.2f}x")
    lines.append(f"JAX / best PyTorch row: {t['jax_over_best']:.2f}x")
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, *, steps: int, warmup: int, data: str = 'on_device',
        torch_options: dict | None = None, command: str = '') -> dict:
  """The whole benchmark of `config` as a JSON-able report (what --json writes)."""
  report = {
      'command': command,
      'config': {'layout': config.model.layout, 'towers': config.model.towers,
                 'dtype': config.model.dtype, 'batch': config.train.batch_size,
                 'crop_size': config.data.crop_size, 'num_classes': config.model.num_classes,
                 'lrn': config.model.lrn, 'augment_on_device': config.data.augment_on_device},
      'steps': steps, 'warmup': warmup, 'versions': _versions(),
      'jax': benchmark_jax(config, steps=steps, warmup=warmup, data=data),
      'torch': None,
  }
  if torch_options is not None:
    t = benchmark_torch(config, steps=steps, warmup=warmup,
                        jax_platform=report['jax']['device']['platform'], **torch_options)
    if 'rows' in t:
      jax_rate = report['jax']['images_per_s']
      for row in t['rows']:
        row['jax_over_torch'] = jax_rate / row['images_per_s']
      t['jax_over_best'] = jax_rate / max(r['images_per_s'] for r in t['rows'])
      report['versions']['torch'] = t['version']
    report['torch'] = t
  return report


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config.copy_and_resolve_references()
  preflight.check_config(config)
  cpu_devices = FLAGS.cpu_devices or config.host_devices
  if cpu_devices:  # Before JAX starts its backends.
    sharding.use_host_devices(cpu_devices)
  if FLAGS.batch:
    config.train.batch_size = FLAGS.batch
  if jax.device_count() < config.mesh.tower:
    raise app.UsageError(
        f'mesh.tower={config.mesh.tower} needs {config.mesh.tower} devices and there are '
        f'{jax.device_count()}: add --config.mesh.tower=1 (both towers on each device), or '
        f'--cpu_devices={config.mesh.tower} on a CPU.')
  torch_options = None
  if FLAGS.torch:
    torch_options = {'layouts': FLAGS.torch_layouts, 'modes': FLAGS.torch_modes,
                     'channels_last': FLAGS.torch_channels_last}
  report = run(config, steps=FLAGS.steps, warmup=FLAGS.warmup, data=FLAGS.data,
               torch_options=torch_options,
               command=' '.join(['python -m alexnet_jax.tools.bench', *sys.argv[1:]]))
  report['config_overrides'] = [a for a in sys.argv[1:] if a.startswith('--config.')]
  print(format_report(report))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(report, f, indent=2)
    print(f'Wrote {FLAGS.json}')


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  flags.DEFINE_integer('batch', 0, 'Global batch (0: the config\'s train.batch_size).')
  flags.DEFINE_integer('steps', 20, 'Steps timed.')
  flags.DEFINE_integer('warmup', 3, 'Steps run before timing (the first compiles).')
  flags.DEFINE_integer('cpu_devices', 0, 'Force this many host CPU devices (0: the config\'s '
                       'host_devices, else the real devices).')
  flags.DEFINE_enum('data', 'on_device', DATA_MODES, "on_device: one random batch kept on "
                    "the devices; pipeline: that, then steps fed by config.data's Grain "
                    'pipeline (end to end).')
  flags.DEFINE_string('json', '', 'Write the report here as JSON.')
  flags.DEFINE_bool('torch', False, 'Also time the same work in PyTorch, if installed.')
  flags.DEFINE_list('torch_layouts', ['paper', 'torchvision'],
                    'PyTorch nets to time: paper (two towers), torchvision.')
  flags.DEFINE_list('torch_modes', ['eager'], 'eager and/or compile (torch.compile).')
  flags.DEFINE_bool('torch_channels_last', True, 'PyTorch tensors in channels_last memory '
                    'format.')
  command_line.run(main)
