"""Command: the whole GPU check in one call, every result under --out.

On a machine with one NVIDIA GPU and no network, in a copy of the checkout that holds
`.gpu_wheels/` (filled beforehand by `bash alexnet_jax/tools/gpu_wheels.sh` where pip can
download), with a time limit of about 540 s:

  bash alexnet_jax/tools/gpu_check.sh --out=OUT

gpu_check.sh installs the carried wheels where they are not installed yet, then runs this
module; everything ends within --total_s (450 s). Runs left out for lack of time are
named at the end with the command that runs them alone (--parts, --bench_runs).

The dry run on the CPU, the same parts at tiny sizes (tests/test_gpu_check.py runs it):
one CPU device, 64 px crops, two of test_on_device.py's tests, the two-tower audit on two
forced CPU devices, a 5-step demo, the pipeline on the demo's images without workers, one
bench run without PyTorch:

  bash alexnet_jax/tools/gpu_check.sh --cpu --out=runs/gpu_check

The parts, in this order; each runs child processes (`python -m ...`), each child is
killed at its time limit, and a part that fails or times out does not stop the next. On
the GPU the children run with JAX_PLATFORMS=cuda (a GPU that does not start fails them at
once instead of leaving them on the CPU) and XLA_PYTHON_CLIENT_MEM_FRACTION=.5:

  environment  versions (jax, jaxlib, its CUDA plugin, flax, optax, orbax, numpy, torch,
               torchvision, triton), JAX's devices and platform version (any backend),
               PyTorch's CUDA and cuDNN, nvidia-smi, cores, memory, /dev/shm.
  tests        pytest on the GPU (JAX_PLATFORMS=cuda,cpu; ALEXNET_TEST_PLATFORM=gpu makes
               a test fail if JAX fell back to the CPU): tests/test_on_device.py (the
               GPU against the CPU: logits in float32 and bfloat16, training steps, the
               ten-patch evaluation, a checkpoint) and the one-device tests of the net,
               LRN, augmentation, the update rule and checkpoints (GPU_TESTS).
  audit        tools.hlo_audit of the compiled training and evaluation steps: mesh
               tower=1 on the GPU; then tower=2 on two devices, compiled (not run)
               against a mocked second GPU process (JAX_MOCK_GPU_TOPOLOGY=1x2x1), where
               the backend allows it (the JSON says what it answered).
  compile      (on the GPU only) tools.compile_for's prediction for this GPU model
               (compile-only devices, as for a node not at hand) and the same step
               compiled on the GPU itself (--here), paper net, mesh tower=1, batch 128:
               memory per device and collectives side by side, with their ratios.
  demo         configs/demo.py with host_devices=0 and mesh.tower=1 (generated data).
  pipeline     generated 256 px images prepared (data.prepare), then `tools.bench
               --data=pipeline` for the paper net, bf16, batch 1024, Grain workers on
               every core, host then device augmentation: the data-wait fraction.
  bench        `tools.bench`, paper net and torchvision layout, bfloat16 and float32,
               batch 1024 and 128, mesh tower=1, PyTorch's twins (eager, torch.compile,
               channels_last; bf16 autocast with bfloat16) in the same process
               (BENCH_RUNS, most wanted first). This part gets all the time the others
               leave; runs that no longer fit are listed with the command to run them.

Results, rewritten after every part (a run killed from outside still returns what it
finished); three files, few enough to copy back from any remote machine:

  OUT/gpu_check.json  environment, and per part: status (passed, failed, timed_out,
                      incomplete, error), seconds, each child's command, exit status and
                      log, and the part's numbers (tests counted, demo errors, images/s,
                      MFU, JAX over PyTorch, data-wait fraction, collectives); targets.
  OUT/bench.json      the full JSON report of every bench run (pipeline runs included).
  OUT/logs.tar.gz     every child's output, the tests' JUnit XML, the audits' JSON, the
                      demo's results.json and log.
"""

import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET

from absl import app, flags

from alexnet_jax.runtime import command_line
from alexnet_jax.tools import targets

PARTS = ('environment', 'tests', 'audit', 'compile', 'demo', 'pipeline', 'bench')
GPU_ONLY_PARTS = ('compile',)  # Left out of the CPU dry run.
# Seconds each part may take (scaled down when --total_s is less than their sum); the
# last part run also gets what earlier parts left unused.
BUDGET_S = {'environment': 20, 'tests': 85, 'audit': 55, 'compile': 40, 'demo': 65,
            'pipeline': 80, 'bench': 105}
# What compile_for's prediction is compared with the real compile on: bytes per device.
COMPILE_MEMORY = ('arguments', 'outputs', 'temporaries', 'generated_code', 'total')
MIN_CHILD_S = 10  # A child is not started with less time than this left in its part.
LOG_TAIL_BYTES = 4 << 20  # Longer logs travel as their last 4 MiB.
VERSIONED = ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda13-pjrt', 'jax-cuda12-plugin',
             'jax-cuda12-pjrt', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'grain',
             'tensorflow-datasets', 'ml-collections', 'array-record', 'torch', 'torchvision',
             'triton')

# The tests that need one device and mean something on a GPU (on CPU, the dry run runs
# two of test_on_device.py's only).
GPU_TESTS = ('tests/test_on_device.py', 'tests/test_model.py', 'tests/test_lrn.py',
             'tests/test_augment.py', 'tests/test_optimizer.py',
             'tests/test_checkpointing.py::test_roundtrip_restores_state_and_meta',
             'tests/test_checkpointing.py::test_state_may_be_donated_once_save_returns',
             '--deselect=tests/test_optimizer.py::test_state_follows_param_shardings')
CPU_TESTS = ('tests/test_on_device.py::test_the_default_device_is_the_one_expected',
             'tests/test_on_device.py::test_logits_match_the_cpus_float32')
# The CPU dry run's net: the paper's layers on small crops; and its few images.
CPU_TINY = ('--config.data.crop_size=64', '--config.data.image_size=72',
            '--config.model.num_classes=10')
CPU_DEMO_DATA = ('--config.data.synthetic_train_size=40', '--config.data.synthetic_eval_size=10',
                 '--config.data.prepare_processes=1')


@dataclasses.dataclass(frozen=True)
class BenchRun:
  """One `tools.bench` command: the JAX step, and PyTorch's twins if `torch_modes`."""
  name: str
  layout: str
  dtype: str
  batch: int
  steps: int
  warmup: int
  torch_modes: tuple[str, ...] = ()
  channels_last: bool = True
  limit_s: float = 60  # Killed after this long.
  min_s: float = 40  # Not started with less time than this left.
  extra: tuple[str, ...] = ()  # More flags (the CPU dry run's small net).

  def argv(self, json_path: str) -> list[str]:
    """The command after `python`, writing its report to `json_path`."""
    args = ['-m', 'alexnet_jax.tools.bench', '--config=configs/ilsvrc2012.py',
            '--config.mesh.tower=1', f'--config.model.dtype={self.dtype}',
            f'--batch={self.batch}', f'--steps={self.steps}', f'--warmup={self.warmup}',
            f'--json={json_path}', *self.extra]
    if self.layout == 'torchvision':
      args += ['--config.model.layout=torchvision', '--config.model.towers=1']
    if self.torch_modes:
      args += ['--torch', f"--torch_modes={','.join(self.torch_modes)}"]
      if not self.channels_last:
        args.append('--notorch_channels_last')
    return args


# Most wanted first (the GPU targets of docs/benchmarks.md are bf16, batch 1024 and 128).
# The paper runs time both PyTorch twins (paper and torchvision layouts); the torchvision
# runs are compared with those rows (`comparisons` in the JSON). torch.compile has runs of
# its own, so that a slow compilation cannot take the eager rows and JAX's numbers down
# with it (JAX's step comes from the compilation cache there).
BENCH_RUNS = (
    BenchRun('paper-bfloat16-1024', 'paper', 'bfloat16', 1024, 30, 5, ('eager',), limit_s=90),
    BenchRun('paper-bfloat16-128', 'paper', 'bfloat16', 128, 100, 5, ('eager',), limit_s=90),
    BenchRun('paper-bfloat16-1024-compile', 'paper', 'bfloat16', 1024, 30, 5, ('compile',),
             limit_s=150),
    BenchRun('paper-bfloat16-128-compile', 'paper', 'bfloat16', 128, 100, 5, ('compile',),
             limit_s=150),
    BenchRun('torchvision-bfloat16-1024', 'torchvision', 'bfloat16', 1024, 30, 5),
    BenchRun('torchvision-bfloat16-128', 'torchvision', 'bfloat16', 128, 100, 5),
    BenchRun('paper-float32-1024', 'paper', 'float32', 1024, 30, 5, ('eager',), limit_s=90),
    BenchRun('paper-float32-128', 'paper', 'float32', 128, 100, 5, ('eager',), limit_s=90),
    BenchRun('torchvision-float32-1024', 'torchvision', 'float32', 1024, 30, 5),
    BenchRun('torchvision-float32-128', 'torchvision', 'float32', 128, 100, 5),
    BenchRun('paper-bfloat16-1024-contiguous', 'paper', 'bfloat16', 1024, 30, 5, ('eager',),
             channels_last=False, limit_s=90),
)
CPU_BENCH_RUNS = (  # JAX alone: PyTorch's CPU twins are tests/test_bench.py's.
    BenchRun('paper-float32-4', 'paper', 'float32', 4, 2, 1, limit_s=120, min_s=MIN_CHILD_S,
             extra=CPU_TINY),
)
# The GPU targets (docs/benchmarks.md, "To be measured on an H100"): (run, what, measure,
# at least). 'over_best_torch': JAX's images/s
# in the run over the fastest PyTorch row of any run of the same dtype and batch.
TARGETS = (
    ('paper-bfloat16-1024', 'paper net, bf16, batch 1024: >= 45,000 images/s (stretch 60,000)',
     'images_per_s', 45_000),
    ('paper-bfloat16-128', 'paper net, bf16, batch 128: >= 25,000 images/s',
     'images_per_s', 25_000),
    ('paper-bfloat16-1024', 'paper net, bf16, batch 1024: >= 1.2x the best PyTorch row',
     'over_best_torch', 1.2),
    ('paper-bfloat16-128', 'paper net, bf16, batch 128: >= 1.2x the best PyTorch row',
     'over_best_torch', 1.2),
)


def _version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def read_environment() -> dict:
  """Versions, the host, JAX's devices, PyTorch's CUDA, nvidia-smi: each read apart, so
  that one that fails (a GPU that does not start) leaves the others in the report."""
  import psutil  # pylint: disable=g-import-not-at-top
  found = {
      'python': platform.python_version(), 'machine': platform.machine(),
      'cpu_count': os.cpu_count(), 'memory_bytes': psutil.virtual_memory().total,
      'dev_shm_bytes': shutil.disk_usage('/dev/shm').total if os.path.isdir('/dev/shm')
                       else None,
      'versions': {n: v for n in VERSIONED if (v := _version(n))},
  }
  try:
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.devices()
    found['jax'] = {'platform': devices[0].platform,
                    'platform_version': devices[0].client.platform_version,
                    'device_kinds': [d.device_kind for d in devices]}
  except Exception as e:  # pylint: disable=broad-except  (reported, not raised)
    found['jax'] = {'error': f'{type(e).__name__}: {e}'}
  if _version('torch'):
    try:
      import torch  # pylint: disable=g-import-not-at-top
      cuda = torch.cuda.is_available()
      found['torch'] = {'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),
                        'device': torch.cuda.get_device_name(0) if cuda else None}
    except Exception as e:  # pylint: disable=broad-except  (reported, not raised)
      found['torch'] = {'error': f'{type(e).__name__}: {e}'}
  if shutil.which('nvidia-smi'):
    smi = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                          '--format=csv,noheader'], capture_output=True, text=True,
                         timeout=30)
    found['nvidia_smi'] = smi.stdout.strip() or smi.stderr.strip()
  return found


def write_environment(path: str) -> None:
  with open(path, 'w') as f:
    json.dump(read_environment(), f, indent=2)


def junit_counts(path: str) -> dict:
  """Tests counted in a JUnit XML file, and each failure or error with its message."""
  root = ET.parse(path).getroot()
  suites = [root] if root.tag == 'testsuite' else root.findall('testsuite')
  counts = {k: sum(int(s.get(k, 0)) for s in suites)
            for k in ('tests', 'failures', 'errors', 'skipped')}
  counts['passed'] = counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']
  counts['not_passed'] = [
      {'test': f"{case.get('classname')}::{case.get('name')}", 'kind': problem.tag,
       'message': (problem.get('message') or '')[:500]}
      for case in root.iter('testcase') for problem in case
      if problem.tag in ('failure', 'error')]
  return counts


def bench_summary(report: dict) -> dict:
  """The numbers of one tools.bench report that a table row needs."""
  j = report['jax']
  summary = {'command': report['command'], 'device': j['device']['kind'],
             'images_per_s': j['images_per_s'], 'ms_per_step': j['ms_per_step']['median'],
             'mfu': j['mfu'], 'first_step_s': j['first_step_s'],
             'peak_memory_bytes': j['peak_memory_bytes'], 'final_loss': j['final_loss']}
  if e := j.get('end_to_end'):
    summary['end_to_end'] = e
  t = report.get('torch')
  if t and 'rows' in t:
    summary['torch'] = [{k: row[k] for k in ('layout', 'mode', 'channels_last',
                                             'autocast_bf16', 'images_per_s', 'mfu',
                                             'jax_over_torch')} for row in t['rows']]
    summary['jax_over_best_torch'] = t['jax_over_best']
  elif t:
    summary['torch_skipped'] = t['skipped']
  return summary


def comparisons(runs: dict) -> list[dict]:
  """Each JAX run against the fastest PyTorch row of its layout, dtype and batch in any run."""
  found = []
  for name, run in runs.items():
    rows = [(row, other) for other, o in runs.items() for row in o.get('torch', [])
            if row['layout'] == run['layout'] and o['dtype'] == run['dtype']
            and o['batch'] == run['batch']]
    if rows:
      row, source = max(rows, key=lambda r: r[0]['images_per_s'])
      found.append({'run': name, 'torch_row': f"{row['layout']} {row['mode']}"
                    f"{' channels_last' if row['channels_last'] else ''} (run {source})",
                    'jax_images_per_s': run['images_per_s'],
                    'torch_images_per_s': row['images_per_s'],
                    'jax_over_torch': run['images_per_s'] / row['images_per_s']})
  return found


def targets_met(runs: dict) -> list[dict]:
  """TARGETS measured, for the runs that are there (and, for a ratio, PyTorch rows)."""
  found = []
  for name, what, measure, least in TARGETS:
    if name not in runs:
      continue
    run = runs[name]
    value = run['images_per_s']
    if measure == 'over_best_torch':
      rates = [row['images_per_s'] for o in runs.values() for row in o.get('torch', [])
               if (o['dtype'], o['batch']) == (run['dtype'], run['batch'])]
      if not rates:
        continue
      value /= max(rates)
    found.append({'target': what, 'measured': value, 'met': value >= least})
  return found


def compile_comparison(predicted: dict, real: dict) -> dict:
  """compile_for's reports for one target, predicted (compile-only) and real (--here):
  per memory part and per mesh axis's collective bytes, both and real over predicted."""
  def pair(a: int | None, b: int | None) -> dict:
    return {'predicted': a, 'real': b, 'real_over_predicted': b / a if a and b else None}

  axes = sorted(set(predicted.get('collectives') or {}) | set(real.get('collectives') or {}))
  return {
      'device_kind': real['device_kind'], 'batch': real['batch'],
      'memory': {k: pair(predicted['memory'][k], real['memory'][k]) for k in COMPILE_MEMORY},
      'collective_bytes': {a: pair((predicted['collectives'] or {}).get(a, {}).get('bytes'),
                                   (real['collectives'] or {}).get(a, {}).get('bytes'))
                           for a in axes},
      'paper_rule': {'predicted': predicted['paper_rule'], 'real': real['paper_rule']},
      'compile_seconds': pair(predicted['compile_seconds'], real['compile_seconds'])}


def _stop(proc: subprocess.Popen) -> None:
  """Ends a child, if still running, and whatever it started (its process group): INT
  (pytest then still writes its report), TERM, KILL, each after up to 5 s for the child."""
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:  # Nothing of the group is left.
      return
    try:
      proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
      pass


class Check:
  """Runs the parts, keeps the report, and writes the results after each part."""

  def __init__(self, out: str, work: str, cpu: bool, total_s: float,
               bench_runs: list[str] = ()):
    self.out, self.work, self.cpu, self.bench_runs = out, work, cpu, list(bench_runs)
    self.logs = os.path.join(work, 'logs')
    os.makedirs(self.logs, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    self.start = time.monotonic()
    self.deadline = self.start + total_s
    self.part_end = self.deadline
    self.report = {'mode': 'cpu' if cpu else 'gpu',
                   'command': shlex.join(['python', '-m', __name__, *sys.argv[1:]]),
                   'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                   'total_s': total_s, 'work': work, 'parts': {}}
    self.bench_reports = {}

  def child_env(self, extra: dict | None = None) -> dict:
    """The children's environment: the project importable, unbuffered output, a shared
    JAX compilation cache; JAX on the CPU, or on CUDA alone (no silent fall-back to the
    CPU) with half the GPU's memory (PyTorch's twins share it)."""
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (command_line.PROJECT, os.environ.get('PYTHONPATH')) if p)
    env.update(PYTHONUNBUFFERED='1',
               JAX_COMPILATION_CACHE_DIR=os.path.join(self.work, 'jax_cache'))
    if self.cpu:
      env['JAX_PLATFORMS'] = 'cpu'
    else:
      env.update(JAX_PLATFORMS='cuda', XLA_PYTHON_CLIENT_MEM_FRACTION='.5')
    env.update(extra or {})
    return env

  def child(self, name: str, argv: list[str], limit_s: float, env: dict | None = None,
            min_s: float = MIN_CHILD_S) -> dict:
    """Runs `python argv` in the project, output to logs/<name>.log; returns its record.

    It gets `limit_s`, or what is left of its part if less; with less than `min_s` left it
    is not started (the record says so).
    """
    record = {'name': name, 'command': shlex.join(['python', *argv]),
              'log': f'logs/{name}.log'}
    limit = min(limit_s, self.part_end - time.monotonic())
    if limit < min_s:
      return {**record, 'skipped': f'{max(0, limit):.0f} s left in this part'}
    start = time.monotonic()
    with open(os.path.join(self.logs, f'{name}.log'), 'w') as log:
      log.write(f"$ {record['command']}\n")
      log.flush()
      proc = subprocess.Popen([sys.executable, *argv], cwd=command_line.PROJECT,
                              env=self.child_env(env), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
      try:
        rc, timed_out = proc.wait(timeout=limit), False
      except subprocess.TimeoutExpired:
        rc, timed_out = None, True
      finally:
        _stop(proc)
    record.update(rc=rc, timed_out=timed_out, limit_s=round(limit),
                  seconds=round(time.monotonic() - start, 1))
    print(f"  {name}: {'timed out' if timed_out else f'exit {rc}'} after "
          f"{record['seconds']:.0f} s", flush=True)
    return record

  def run(self, parts: list[str]) -> dict:
    """Runs `parts` in order, each within its share of BUDGET_S (scaled down to fit
    --total_s), the last also with what the others left."""
    scale = min(1.0, self.report['total_s'] / sum(BUDGET_S[p] for p in parts))
    for i, name in enumerate(parts):
      later = scale * sum(BUDGET_S[p] for p in parts[i + 1:])
      now = time.monotonic()
      self.part_end = self.deadline - later
      if i + 1 < len(parts):
        self.part_end = min(self.part_end, now + scale * BUDGET_S[name])
      print(f'[{name}] up to {max(0, self.part_end - now):.0f} s', flush=True)
      result = {'children': []}
      try:
        getattr(self, name)(result)
        result['status'] = _status(result['children'])
      except Exception as e:  # pylint: disable=broad-except  (the next part still runs)
        result.update(status='error', error=f'{type(e).__name__}: {e}')
      result['seconds'] = round(time.monotonic() - now, 1)
      self.report['parts'][name] = result
      print(f"[{name}] {result['status']} in {result['seconds']:.0f} s", flush=True)
      self.write()
    self.report['seconds'] = round(time.monotonic() - self.start, 1)
    self.write()
    return self.report

  def write(self) -> None:
    """gpu_check.json, bench.json and logs.tar.gz under --out, each replaced whole."""
    for name, payload in (('gpu_check.json', self.report), ('bench.json', self.bench_reports)):
      with open(os.path.join(self.out, name + '.tmp'), 'w') as f:
        json.dump(payload, f, indent=2)
      os.replace(os.path.join(self.out, name + '.tmp'), os.path.join(self.out, name))
    path = os.path.join(self.out, 'logs.tar.gz')
    with tarfile.open(path + '.tmp', 'w:gz') as tar:
      for file in sorted(os.listdir(self.logs)):
        with open(os.path.join(self.logs, file), 'rb') as f:
          size = f.seek(0, os.SEEK_END)
          f.seek(max(0, size - LOG_TAIL_BYTES))
          data = f.read()
        info = tarfile.TarInfo(f'logs/{file}')
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    os.replace(path + '.tmp', path)

  def _json(self, name: str) -> dict | None:
    path = os.path.join(self.logs, name)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def environment(self, result: dict) -> None:
    path = os.path.join(self.logs, 'environment.json')
    result['children'].append(self.child(  # Any backend: what JAX finds is the news.
        'environment', ['-c', 'from alexnet_jax.tools import gpu_check; '
                        f'gpu_check.write_environment({path!r})'], BUDGET_S['environment'],
        None if self.cpu else {'JAX_PLATFORMS': ''}, min_s=1))
    self.report['environment'] = self._json('environment.json')

  def tests(self, result: dict) -> None:
    # One device, as on the GPU; the platform the tests must find (test_on_device.py).
    env = ({'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
            'ALEXNET_TEST_PLATFORM': 'cpu'} if self.cpu else
           {'JAX_PLATFORMS': 'cuda,cpu', 'ALEXNET_TEST_PLATFORM': 'gpu'})
    xml = os.path.join(self.logs, 'tests.xml')
    result['selection'] = list(CPU_TESTS if self.cpu else GPU_TESTS)
    result['children'].append(self.child(
        'tests', ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--durations=10',
                  f'--junitxml={xml}', *result['selection']], BUDGET_S['tests'], env))
    if os.path.exists(xml):
      result.update(junit_counts(xml))

  def audit(self, result: dict) -> None:
    if self.cpu:  # Two forced CPU devices, one per tower.
      runs = [('audit_tower2', 2, {}, ['--cpu_devices=2', '--config.train.batch_size=8',
                                       '--config.eval.batch_size=8', *CPU_TINY])]
    else:  # The GPU alone; then tower=2 over it and a mocked second GPU (compiled, not run).
      runs = [('audit_tower1', 1, {}, ['--config.train.batch_size=128']),
              ('audit_tower2_mock_gpu', 2, {'JAX_MOCK_GPU_TOPOLOGY': '1x2x1'},
               ['--config.train.batch_size=128'])]
    result['meshes'] = {}
    for name, tower, env, overrides in runs:
      argv = ['-m', 'alexnet_jax.tools.hlo_audit', '--config=configs/ilsvrc2012.py',
              f'--config.mesh.tower={tower}', *overrides, f'--json={self.logs}/{name}.json']
      result['children'].append(self.child(name, argv, BUDGET_S['audit'], env))
      if audit := self._json(f'{name}.json'):
        kinds = {}
        for c in audit['train_step']['collectives']:
          kinds[c['kind']] = kinds.get(c['kind'], 0) + 1
        result['meshes'][name] = {
            **{k: audit[k] for k in ('platform', 'device_kind', 'mesh', 'batch', 'problems')},
            'train_step': {'kinds': kinds, 'totals': audit['train_step']['totals']},
            'eval_step': {'totals': audit['eval_step']['totals']}}
    if not self.cpu:
      result['two_devices'] = (
          'compiled for a mocked second GPU (JAX_MOCK_GPU_TOPOLOGY=1x2x1)'
          if 'audit_tower2_mock_gpu' in result['meshes'] else
          'not compiled: the GPU backend did not give a mocked second GPU (or ran out of '
          'time); see logs/audit_tower2_mock_gpu.log')

  def compile(self, result: dict) -> None:
    kind = (self.report.get('environment') or {}).get('jax', {}).get('device_kinds', [''])[0]
    gpu = targets.gpu_named(kind)
    if gpu is None:
      raise ValueError(f'compile_for describes no GPU reported as {kind!r} '
                       '(tools/targets.py: GPUS)')
    argv = ['-m', 'alexnet_jax.tools.compile_for', '--config=configs/ilsvrc2012.py',
            '--config.mesh.tower=1', '--config.train.batch_size=128', f'--target={gpu}:1']
    for name, extra in (('compile_predicted', []), ('compile_real', ['--here'])):
      result['children'].append(self.child(
          name, [*argv, *extra, f'--json={self.logs}/{name}.json'], BUDGET_S['compile']))
    predicted, real = self._json('compile_predicted.json'), self._json('compile_real.json')
    if predicted and real:
      result['comparison'] = compile_comparison(predicted, real)

  def demo(self, result: dict) -> None:
    workdir = os.path.join(self.work, 'demo')
    argv = ['-m', 'alexnet_jax.main', '--config=configs/demo.py', f'--workdir={workdir}',
            '--config.host_devices=0', '--config.mesh.tower=1',
            f"--config.data.data_dir={os.path.join(self.work, 'demo_data')}"]
    if self.cpu:
      argv += [*CPU_DEMO_DATA, '--config.train.batch_size=8', '--config.eval.batch_size=10',
               '--config.train.num_epochs=1', '--config.train.log_every_steps=5']
    result['children'].append(self.child('demo', argv, BUDGET_S['demo']))
    if os.path.exists(os.path.join(workdir, 'results.json')):
      shutil.copy(os.path.join(workdir, 'results.json'),
                  os.path.join(self.logs, 'demo_results.json'))
    if os.path.isdir(os.path.join(workdir, 'logs')):  # The run's own log (main.py).
      for file in os.listdir(os.path.join(workdir, 'logs')):
        shutil.copy(os.path.join(workdir, 'logs', file), os.path.join(self.logs, f'demo_{file}'))
    results = self._json('demo_results.json')
    if results:
      result.update({k: results[k] for k in ('step', 'epoch', 'preempted', 'final')})

  def pipeline(self, result: dict) -> None:
    common = ['--config=configs/ilsvrc2012.py', '--config.mesh.tower=1',
              '--config.data.source=synthetic']
    if self.cpu:  # The demo's images, already prepared if the demo ran.
      common += [f"--config.data.data_dir={os.path.join(self.work, 'demo_data')}",
                 *CPU_DEMO_DATA, *CPU_TINY]
      timing = ['--batch=8', '--steps=2', '--warmup=1', '--config.data.worker_count=0']
      modes = (('host', False),)
    else:
      # 1,024 images, one batch: the stream repeats them, each time newly augmented. The
      # warm-up outlasts the burst of batches that all workers deliver together at start.
      workers = os.cpu_count()
      common += [f"--config.data.data_dir={os.path.join(self.work, 'pipeline_data')}",
                 '--config.data.synthetic_train_size=1024',
                 '--config.data.synthetic_eval_size=10', '--config.model.dtype=bfloat16']
      timing = ['--batch=1024', '--steps=40', f'--warmup={workers + 4}',
                f'--config.data.worker_count={workers}']
      modes = (('host', False), ('device', True))
    min_s = MIN_CHILD_S if self.cpu else 40  # Time for a bench run's start and compilation.
    prepared = self.child('pipeline_prepare', ['-m', 'alexnet_jax.data.prepare', *common],
                          BUDGET_S['pipeline'] / 2)
    result['children'].append(prepared)
    if prepared.get('rc') != 0:
      return
    result['runs'] = {}
    for mode, on_device in modes:
      name = f'pipeline_{mode}'
      path = os.path.join(self.logs, f'{name}.json')
      result['children'].append(self.child(
          name, ['-m', 'alexnet_jax.tools.bench', *common, *timing, '--data=pipeline',
                 f'--config.data.augment_on_device={on_device}', f'--json={path}'],
          BUDGET_S['pipeline'], min_s=min_s))
      if report := self._json(f'{name}.json'):
        self.bench_reports[name] = report
        result['runs'][name] = bench_summary(report)

  def bench(self, result: dict) -> None:
    runs = {r.name: r for r in (CPU_BENCH_RUNS if self.cpu else BENCH_RUNS)}
    names = self.bench_runs or list(runs)
    result['runs'], not_run = {}, []
    for name in names:
      run = runs[name]
      path = os.path.join(self.logs, f'bench_{name}.json')
      record = self.child(f'bench_{name}', run.argv(path), run.limit_s, min_s=run.min_s)
      result['children'].append(record)
      if 'skipped' in record:
        not_run.append(name)
      elif report := self._json(f'bench_{name}.json'):
        self.bench_reports[name] = report
        result['runs'][name] = {'layout': run.layout, 'dtype': run.dtype,
                                'batch': run.batch, **bench_summary(report)}
    result['comparisons'] = comparisons(result['runs'])
    result['targets'] = targets_met(result['runs'])
    if not_run:
      result['not_run'] = not_run
      result['to_run_them'] = ('bash alexnet_jax/tools/gpu_check.sh --out=$OUT --parts=bench '
                               f"--bench_runs={','.join(not_run)}")


def _status(children: list[dict]) -> str:
  if any(c.get('timed_out') for c in children):
    return 'timed_out'
  if any(c.get('rc') not in (0, None) for c in children):
    return 'failed'
  if not children or any('skipped' in c for c in children):
    return 'incomplete'
  return 'passed'


def summary_lines(report: dict) -> list[str]:
  """The short table printed last (a remote runner often returns only the output's end)."""
  parts = report['parts']
  lines = [f"GPU check ({report['mode']}), {report.get('seconds', 0):.0f} s:"]
  for name, part in parts.items():
    error = f"  {part['error']}" if 'error' in part else ''
    lines.append(f"  {name:<12}{part['status']:<11}{part['seconds']:6.0f} s{error}")
  if env := report.get('environment'):
    jax_found = env['jax'].get('error') or (
        f"{env['jax']['device_kinds']} {env['jax']['platform_version']}")
    lines.append(f'  {jax_found}; ' + ', '.join(f'{k} {v}' for k, v in env['versions'].items()))
  if t := parts.get('tests'):
    lines.append(f"  tests: {t.get('passed', 0)} passed, {t.get('failures', 0)} failed, "
                 f"{t.get('errors', 0)} errors, {t.get('skipped', 0)} skipped")
    lines += [f"    {p['kind']}: {p['test']}: {(p['message'].splitlines() or [''])[0][:150]}"
              for p in t.get('not_passed', [])]
  if (d := parts.get('demo')) and d.get('final'):
    f = d['final']
    lines.append(f"  demo: step {d['step']}, top-1 error {100 * f['centre_top1_error']:.1f}% "
                 f"centre, {100 * f.get('ten_patch_top1_error', float('nan')):.1f}% ten patches")
  for name, r in parts.get('pipeline', {}).get('runs', {}).items():
    e = r['end_to_end']
    lines.append(f"  {name}: {e['images_per_s']:,.0f} images/s end to end "
                 f"({r['images_per_s']:,.0f} on device), waiting for data "
                 f"{100 * e['data_wait_fraction']:.0f}%")
  for name, r in parts.get('bench', {}).get('runs', {}).items():
    best = (f", {r['jax_over_best_torch']:.2f}x best PyTorch row"
            if 'jax_over_best_torch' in r else '')
    mfu = f", MFU {100 * r['mfu']:.1f}%" if r['mfu'] is not None else ''
    lines.append(f"  {name}: {r['images_per_s']:,.0f} images/s{mfu}{best}")
  for t in parts.get('bench', {}).get('targets', []):
    lines.append(f"  target {'met' if t['met'] else 'MISSED'}: {t['target']} "
                 f"(measured {t['measured']:,.2f})")
  if cmd := parts.get('bench', {}).get('to_run_them'):
    lines.append(f'  not run for lack of time: {cmd} (with --total_s=the seconds left)')
  for name, m in parts.get('audit', {}).get('meshes', {}).items():
    lines.append(f"  {name}: {m['mesh']} on {m['device_kind']}: {m['train_step']['kinds']}, "
                 f"{len(m['problems'])} problems")
  if two := parts.get('audit', {}).get('two_devices'):
    lines.append(f'  two devices: {two}')
  if c := parts.get('compile', {}).get('comparison'):
    lines.append(f"  compile_for on {c['device_kind']}, batch {c['batch']}, real/predicted: " +
                 ', '.join(f"{k} {v['real_over_predicted']:.2f}" for k, v in c['memory'].items()
                           if v['real_over_predicted'] is not None))
  return lines


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if set(FLAGS.parts) - set(PARTS[1:]):
    raise app.UsageError(f"--parts={','.join(FLAGS.parts)}: use some of {PARTS[1:]}.")
  runs = [r.name for r in (CPU_BENCH_RUNS if FLAGS.cpu else BENCH_RUNS)]
  if set(FLAGS.bench_runs) - set(runs):
    raise app.UsageError(f"--bench_runs={','.join(FLAGS.bench_runs)}: use some of {runs}.")
  parts = [p for p in PARTS if (p == 'environment' or p in FLAGS.parts)
           and not (FLAGS.cpu and p in GPU_ONLY_PARTS)]
  work = FLAGS.work or tempfile.mkdtemp(prefix='gpu_check_')
  report = Check(os.path.abspath(FLAGS.out), os.path.abspath(work), FLAGS.cpu, FLAGS.total_s,
                 FLAGS.bench_runs).run(parts)
  print('\n'.join(summary_lines(report)))
  return 0 if all(p['status'] == 'passed' for p in report['parts'].values()) else 1


if __name__ == '__main__':
  flags.DEFINE_string('out', None, 'Folder for gpu_check.json, bench.json, logs.tar.gz.')
  flags.mark_flags_as_required(['out'])
  flags.DEFINE_string('work', '', 'Scratch folder (data, checkpoints, logs); default: a new '
                      'one under the system temp folder.')
  flags.DEFINE_bool('cpu', False, 'Dry run on the CPU at tiny sizes.')
  flags.DEFINE_list('parts', list(PARTS[1:]), 'Parts to run (the environment always is).')
  flags.DEFINE_list('bench_runs', [], 'Bench runs, by name (default: all, most wanted '
                    'first; see BENCH_RUNS).')
  flags.DEFINE_float('total_s', 450, 'Seconds for everything; each part has BUDGET_S of it, '
                     'the last also what the others left.')
  command_line.run(main)
