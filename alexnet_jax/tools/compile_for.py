"""Before you rent a node: compile the training step for GPUs or TPUs this machine lacks.

  python -m alexnet_jax.tools.compile_for --config=configs/ilsvrc2012.py --target=h100:8
  python -m alexnet_jax.tools.compile_for --config=configs/ilsvrc2012.py \
      --target=tpu:v4:2x2x2 --config.model.matmul_precision=highest --json=v4.json
  python -m alexnet_jax.tools.compile_for --config=configs/torchvision_alexnet.py \
      --target=a100-40:8 --max_batch

XLA compiles for devices it is only told about (targets.py): the step for the config's
mesh on the target's devices, as the real node would compile it. The command prints, and
writes with --json: the target, its devices and hosts, the mesh and batch; the memory
each device needs (arguments, outputs, temporaries, generated code) against what it has,
and whether the step fits (with --max_batch: the largest batch that does, found by
compiling); the FLOPs of a step; the collectives per mesh axis and the paper's rule
checked on them by hlo_audit's code; the matmul precision in effect; the compile time.
A step that does not fit ends the command with an error (exit status 2) after the report.

With --here it compiles on this machine's own devices instead, which must be the target's
(platform and count, e.g. --target=h200:1 on one H200): what the real device compiles, to
compare with what was predicted for it (tools/gpu_check does).

Needs the target's extra: `pip install -e '.[compile-gpu]'` (XLA's CUDA compiler; neither
NVIDIA's libraries nor a driver) or `pip install -e '.[compile-tpu]'` (libtpu).
What the GPU compile does not see: it picks convolution algorithms without timing them,
so cuDNN's workspace may be under-counted, and it never fails for lack of memory (the
comparison with the device's memory is this command's). The TPU compiler refuses a step
that does not fit its HBM itself.
"""

import copy
import dataclasses
import importlib.util
import json
import os
import time

import jax
from absl import flags
from ml_collections import config_flags

from alexnet_jax.runtime import command_line, errors
from alexnet_jax.tools import bench, hlo_audit, targets
from alexnet_jax.training import preflight

# The --max_batch search's granularity: batches of whole multiples of this per replica.
BATCH_STEP_PER_REPLICA = 32
MAX_COMPILES = 16  # The search's limit; memory grows almost linearly, so it needs ~5.
# libtpu outside a TPU VM: ask no cloud metadata server for the VM's TPU, and take no lock
# on the local TPU chips (there are none; another JAX process that loaded libtpu holds it).
TPU_COMPILE_ONLY_ENV = {'TPU_SKIP_MDS_QUERY': '1', 'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}
# The modules that compile for each platform (jax's CUDA 12 or CUDA 13 plugin: a GPU machine
# may have either) and the extra that installs one.
_EXTRA = {'cuda': (('jax_plugins.xla_cuda12', 'jax_plugins.xla_cuda13'), 'compile-gpu'),
          'tpu': (('libtpu',), 'compile-tpu')}


@dataclasses.dataclass
class Attempt:
  """One compile of the step at one batch: its memory per device, or the compiler's refusal."""
  batch: int
  seconds: float
  memory: dict | None = None  # Bytes per device (`memory_of`); None when refused.
  refusal: str = ''  # The compiler's first line when it ran out of memory.
  compiled: jax.stages.Compiled | None = None
  mesh: jax.sharding.Mesh | None = None

  @property
  def fits(self) -> bool:
    return self.memory is not None and self.memory['total'] <= self.memory['device']


def installed(module: str) -> bool:
  """Whether `module` can be imported; a missing parent package (jax_plugins) counts too."""
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    return False


def devices_of(target: targets.Target) -> list:
  """The target's compile-only devices; a UserError naming the extra if it is missing."""
  modules, extra = _EXTRA[target.platform]
  if not any(installed(m) for m in modules):
    raise errors.UserError(
        f'Compiling for --target={target.spec} needs the {extra} extra (not installed '
        f"here): pip install -e '.[{extra}]' in the project's checkout.")
  return targets.topology_devices(target)


def devices_here(target: targets.Target) -> list:
  """This machine's devices for --here; a UserError unless they are the target's."""
  platform = {'cuda': 'gpu', 'tpu': 'tpu'}[target.platform]
  devices = [d for d in jax.devices() if d.platform == platform]
  if len(devices) < target.devices:
    raise errors.UserError(
        f'--here compiles on this machine\'s own devices, but it has {len(devices)} '
        f'{platform.upper()} device(s) where --target={target.spec} names {target.devices}: '
        'leave out --here to compile for the target, or name what this machine has.')
  return devices[:target.devices]


def memory_of(compiled: jax.stages.Compiled, target: targets.Target) -> dict:
  """Bytes per device: the program's parts, their total, and what a device may use."""
  m = compiled.memory_analysis()
  parts = {'arguments': m.argument_size_in_bytes, 'outputs': m.output_size_in_bytes,
           'aliased': m.alias_size_in_bytes, 'temporaries': m.temp_size_in_bytes,
           'generated_code': m.generated_code_size_in_bytes}
  # Donated arguments are overwritten by the outputs that alias them: counted once.
  total = sum(parts.values()) - 2 * parts['aliased']
  return {**parts, 'total': total, 'device': target.usable_memory,
          'device_physical': target.memory}


def attempt(config, devices: list, target: targets.Target, batch: int) -> Attempt:
  """Compiles the step of `config` at global batch `batch` on `devices`."""
  config = copy.deepcopy(config)
  config.train.batch_size = batch
  start = time.perf_counter()
  try:
    compiled, mesh = hlo_audit.compile_train_step(config, devices)
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return Attempt(batch, time.perf_counter() - start, refusal=str(e).strip().splitlines()[0])
  return Attempt(batch, time.perf_counter() - start, memory_of(compiled, target), '',
                 compiled, mesh)


def _guess(tried: list[Attempt], lo: Attempt | None, hi: Attempt | None, budget: int,
           step: int) -> int:
  """The next batch to try: where a line through the bracket's ends (or, with nothing
  too large yet, the two largest batches that fit) reaches `budget` (memory grows almost
  linearly with the batch), inside the bracket."""
  if hi is not None and hi.memory is not None:
    pair = [a for a in (lo, hi) if a is not None]
  else:
    pair = sorted((a for a in tried if a.fits), key=lambda a: a.batch)[-2:]
  if len(pair) == 2 and pair[1].memory['total'] > pair[0].memory['total']:
    (b0, m0), (b1, m1) = ((a.batch, a.memory['total']) for a in pair)
    guess = b0 + (budget - m0) * (b1 - b0) / (m1 - m0)
  elif pair:
    guess = pair[-1].batch * budget / pair[-1].memory['total']
  else:
    guess = hi.batch / 2
  guess = int(guess) // step * step
  if lo is not None:
    guess = max(guess, lo.batch + step)
  if hi is not None:
    guess = min(guess, hi.batch - step)
    # Bisect where the line cannot aim (the compiler refused without a size) or where it
    # kept one end of the bracket twice (memory jumps where XLA changes algorithms).
    stuck = len(tried) >= 3 and lo is not None and tried[-1].fits == tried[-2].fits
    if hi.memory is None or stuck:
      low = lo.batch if lo else 0
      guess = min(guess, low + max(1, (hi.batch - low) // step // 2) * step)
  return guess


def largest_batch(config, devices: list, target: targets.Target, first: Attempt,
                  step: int) -> tuple[Attempt | None, list[Attempt]]:
  """The largest batch, a multiple of `step`, whose step fits, and every compile tried."""
  lo, hi = (first, None) if first.fits else (None, first)
  tried = [first]
  while len(tried) < MAX_COMPILES and not (lo and hi and hi.batch - lo.batch <= step):
    batch = _guess(tried, lo, hi, target.usable_memory, step)
    if batch < step:
      break  # Not even `step` images fit.
    result = attempt(config, devices, target, batch)
    tried.append(result)
    lo, hi = (result, hi) if result.fits else (lo, result)
  return lo, tried


def precision_note(config, target: targets.Target) -> str:
  """A warning when float32 layers are computed in reduced-precision passes, else ''."""
  precision = config.model.matmul_precision
  if config.model.dtype != 'float32' or precision == 'highest':
    return ''
  passes = ('one bfloat16 pass' if precision == 'default' else 'three bfloat16 passes'
            ) if target.tpu else 'TF32 tensor-core passes'
  return (f'Warning: model.dtype=float32 with model.matmul_precision={precision!r}: on '
          f'{target.spec} the convolutions and matmuls run in {passes}, not in float32 as '
          "the paper's did; set --config.model.matmul_precision=highest for float32 "
          'throughout.')


def _gib(n: int | None) -> str:
  return '-' if n is None else f'{n / 2**30:.2f} GiB'


def flops_of(config, result: Attempt) -> dict:
  """FLOPs of a step: the compiler's count where it gives one (per device, times the
  devices), else the net's own (bench.train_flops_per_image)."""
  costs = result.compiled.cost_analysis()
  costs = costs[0] if isinstance(costs, list) and costs else costs
  if costs and costs.get('flops', 0) > 0:
    per_step, source = int(costs['flops'] * result.mesh.devices.size), 'compiler'
  else:
    per_step, source = bench.train_flops_per_image(config) * result.batch, 'net'
  return {'flops_per_step': per_step, 'flops_per_image': per_step // result.batch,
          'flops_source': source}


def report(config, target: targets.Target, devices: list, result: Attempt) -> dict:
  """The JSON report of one compile (module docstring); `fits` False without memory."""
  out = {'target': target.spec, 'device_kind': devices[0].device_kind,
         'devices': len(devices), 'hosts': len({d.process_index for d in devices}),
         'batch': result.batch, 'memory': result.memory, 'fits': result.fits,
         'refusal': result.refusal, 'compile_seconds': round(result.seconds, 1),
         'matmul_precision': config.model.matmul_precision, 'dtype': config.model.dtype,
         'precision_warning': precision_note(config, target)}
  if result.compiled is None:
    return {**out, 'mesh': None, 'collectives': None, 'paper_rule': None,
            'flops_per_step': None}
  collectives = hlo_audit.parse_collectives(result.compiled.as_text(), result.mesh)
  problems = hlo_audit.train_step_violations(config, collectives, result.mesh)
  return {**out, 'mesh': {'data': result.mesh.shape['data'], 'tower': result.mesh.shape['tower']},
          'collectives': hlo_audit.report(collectives)['totals'],
          'paper_rule': {'holds': not problems, 'violations': problems},
          **flops_of(config, result)}


def format_report(r: dict) -> str:
  """The report as the lines the command prints."""
  mesh = r['mesh'] and f"data {r['mesh']['data']} x tower {r['mesh']['tower']}"
  lines = [f"{r['target']}: {r['devices']} x {r['device_kind']} on {r['hosts']} host(s), "
           f"mesh {mesh or '-'}, global batch {r['batch']:,}, {r['dtype']}, matmul "
           f"precision {r['matmul_precision']!r}; compiled in {r['compile_seconds']} s."]
  m = r['memory']
  if m:
    lines.append(f"Per device: arguments {_gib(m['arguments'])}, outputs {_gib(m['outputs'])} "
                 f"(aliasing the arguments: {_gib(m['aliased'])}), temporaries "
                 f"{_gib(m['temporaries'])}, code {_gib(m['generated_code'])}; total "
                 f"{_gib(m['total'])} of {_gib(m['device'])} usable: "
                 f"{'fits' if r['fits'] else 'does NOT fit'}.")
  else:
    lines.append(f"The compiler refused the step: {r['refusal']}")
  if r['flops_per_step']:
    lines.append(f"FLOPs: {r['flops_per_step'] / 1e12:.3f} T per step, "
                 f"{r['flops_per_image'] / 1e9:.3f} G per image ({r['flops_source']}'s count).")
  for axis, total in (r['collectives'] or {}).items():
    lines.append(f"Across {axis!r}: {total['count']} collectives, {total['bytes']:,} bytes "
                 'per device per step.')
  if r['paper_rule']:
    lines += r['paper_rule']['violations'] or [
        "The paper's rule holds: the towers exchange data only at conv3 and the fully "
        "connected layers, the replicas only reduce."]
  if r['precision_warning']:
    lines.append(r['precision_warning'])
  return '\n'.join(lines)


def does_not_fit(r: dict, best: Attempt | None, searched: bool) -> errors.UserError:
  """The one-paragraph error for a step that does not fit its target."""
  need = (f"needs {_gib(r['memory']['total'])} per device of the "
          f"{_gib(r['memory']['device'])} usable") if r['memory'] else (
              f"was refused by the compiler ({r['refusal'][:300]})")
  advice = ('Add --max_batch to find the largest batch that fits.' if not searched else
            f'The largest batch that fits is {best.batch:,} ({_gib(best.memory["total"])} '
            f'per device): set --config.train.batch_size={best.batch}.' if best else
            'No batch fits: use more devices or a smaller net.')
  return errors.UserError(f"The training step at batch {r['batch']:,} does not fit "
                          f"{r['target']}: it {need}. {advice}")


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.here:
    # Compile-only devices need no accelerator backend; don't let JAX look for one.
    jax.config.update('jax_platforms', 'cpu')
    for name, value in TPU_COMPILE_ONLY_ENV.items():
      os.environ.setdefault(name, value)
  config = FLAGS.config
  preflight.check_config(config)
  target = targets.parse(FLAGS.target)
  devices = devices_here(target) if FLAGS.here else devices_of(target)
  first = attempt(config, devices, target, config.train.batch_size)
  r = report(config, target, devices, first)
  print(format_report(r))
  best = None
  if FLAGS.max_batch:
    data = len(devices) // config.mesh.tower
    best, tried = largest_batch(config, devices, target, first, BATCH_STEP_PER_REPLICA * data)
    r['max_batch'] = {'batch': best and best.batch, 'memory': best and best.memory,
                      'tried': [(a.batch, a.fits) for a in tried]}
    closed = best is None or any(not a.fits and a.batch - best.batch <=
                                 BATCH_STEP_PER_REPLICA * data for a in tried)
    r['max_batch']['converged'] = closed
    print(f"Largest batch that fits: {'' if closed else 'at least '}"
          f"{f'{best.batch:,}' if best else 'none'} "
          f"({len(tried)} compiles: {', '.join(str(a.batch) for a in tried)}).")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(r, f, indent=2)
  if not r['fits']:
    raise does_not_fit(r, best, FLAGS.max_batch)
  return 0 if r['paper_rule']['holds'] else 1


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.DEFINE_string('target', None, 'The hardware: h100:8, h100:2x8, a100-40:8, '
                      'tpu:v4:2x2x2, tpu:v5e:2x4, ... (targets.py).')
  flags.DEFINE_string('json', '', 'Also write the report here as JSON.')
  flags.DEFINE_bool('here', False, "Compile on this machine's own devices (the target's "
                    'platform and count) instead of compile-only ones.')
  flags.DEFINE_bool('max_batch', False, 'Also find the largest global batch that fits, by '
                    'compiling (a few compiles).')
  flags.mark_flags_as_required(['config', 'target'])
  command_line.run(main)
