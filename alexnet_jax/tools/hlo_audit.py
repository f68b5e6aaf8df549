"""Where does the traffic go? The collectives of the compiled training step, and a check.

Compiles the full training step (forward, backward, the paper's update) for a config and a
mesh, lists every all-gather / all-reduce / reduce-scatter / collective-permute /
all-to-all with the mesh axes it spans, the bytes of its result on each device and the
layers its source ops belong to, and checks the paper's rule: across the 'tower' axis only
at conv3's input and the fully connected layers (with their softmax), and across 'data'
only reductions (gradients, loss, metrics), never a gather of the batch.

  python -m alexnet_jax.tools.hlo_audit --config=configs/ilsvrc2012.py --cpu_devices=8
  python -m alexnet_jax.tools.hlo_audit --config=configs/ilsvrc2012.py --cpu_devices=8 \
      --config.mesh.tower=1

--cpu_devices plans a mesh on forced host devices; without it the real devices are used.
--json=PATH also writes the audit as JSON (`report`).
"""

import dataclasses
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from alexnet_jax.data import statistics
from alexnet_jax.nn import model
from alexnet_jax.runtime import command_line
from alexnet_jax.training import evaluate, preflight, schedules, sharding, train_step

KINDS = ('all-gather', 'all-reduce', 'reduce-scatter', 'collective-permute', 'all-to-all')
# Where the paper's GPUs communicate (§3.2, Figure 2); 'softmax' is fc8's 1000-way output.
PAPER_EXCHANGES = ('conv3', 'fc6', 'fc7', 'fc8', 'softmax')
LAYER_NAMES = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'conv6', 'fc6', 'fc7', 'fc8',
               'softmax')
# XLA:GPU may concatenate the step's scalars (loss, metrics) into one reduction with the
# gradients; up to this many values beyond the gradients' are those. An activation reduced
# between replicas would add thousands.
COMBINED_SCALARS = 16
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2, 'f32': 4,
          's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
# The result type (a shape or a tuple of them, layouts included, which may hold
# parentheses on TPU: `{1,0:T(8,128)}`) up to the first collective's name.
_OP = re.compile(r'=\s*(.*?)\s+(' + '|'.join(KINDS) + r')(-start)?\(')


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of the compiled program."""
  kind: str
  shapes: tuple[str, ...]  # Result shapes, e.g. ('f32[4,13,13,256]',).
  bytes: int  # Bytes of the result on each device.
  axes: tuple[str, ...]  # Mesh axes along which its device groups extend.
  layers: tuple[str, ...]  # The net's layers named in its source ops' metadata.
  # Without source ops (XLA:GPU combines small collectives into one that names none): the
  # layers of the ops that produce its operands.
  producers: tuple[str, ...] = ()


def _result_shapes(text: str) -> tuple[str, ...]:
  return tuple(re.findall(r'[a-z]+\d*\[[\d,]*\]', text))


def _elements(shape: str) -> int:
  return math.prod(int(d) for d in shape.split('[')[1].rstrip(']').split(',') if d)


def _shape_bytes(shape: str) -> int:
  return _BYTES.get(shape.split('[')[0], 4) * _elements(shape)


def _device_groups(line: str, num_devices: int) -> list[list[int]]:
  """The groups of partition ids a collective runs over, from any of XLA's notations."""
  if m := re.search(r'source_target_pairs=\{([\d,{}]*)\}', line):
    return [[int(i) for i in g.split(',')] for g in re.findall(r'\{([\d,]+)\}', m.group(1))]
  if m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line):
    axes = re.findall(r"'(\w+)'=(\d+)", m.group(1))
    names, sizes = [a for a, _ in axes], [int(s) for _, s in axes]
    grouped = [names.index(a) for a in re.findall(r"'(\w+)'", m.group(2))]
    ids = np.arange(math.prod(sizes)).reshape(sizes)
    rest = [i for i in range(len(sizes)) if i not in grouped]
    ids = ids.transpose(rest + grouped).reshape(-1, math.prod(sizes[i] for i in grouped))
    return ids.tolist()
  if m := re.search(r'replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', line):
    shape = [int(d) for d in m.group(1).split(',')]
    ids = np.arange(num_devices).reshape([int(d) for d in m.group(2).split(',')])
    if m.group(3):
      ids = ids.transpose([int(d) for d in m.group(3).split(',')])
    return ids.reshape(shape).tolist()
  if m := re.search(r'replica_groups=\{([\d,{}]*)\}', line):
    groups = [[int(i) for i in g.split(',')] for g in re.findall(r'\{([\d,]+)\}', m.group(1))]
    return groups or [list(range(num_devices))]
  return [list(range(num_devices))]


def _axes_spanned(groups: list[list[int]], mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes along which members of some group differ (partition i = mesh.devices.flat[i])."""
  spanned = set()
  for group in groups:
    coords = np.array(np.unravel_index(group, mesh.devices.shape)).T
    spanned |= {mesh.axis_names[a] for a in range(coords.shape[1])
                if len(set(coords[:, a])) > 1}
  return tuple(a for a in mesh.axis_names if a in spanned)


def _async_results(kind: str, result_type: str) -> tuple[str, ...]:
  """The data shapes an asynchronous `<kind>-start` produces, from its result type.

  all-reduce-start returns its results only (jax 0.10's XLA) or ((operands), results)
  (jax 0.12's XLA:GPU); all-gather-start returns (operands, results);
  collective-permute-start returns (operand, result, u32[] contexts).
  """
  shapes = _result_shapes(result_type)
  if kind == 'all-reduce':
    # Layouts are dropped first: a TPU layout holds parentheses, {1,0:T(8,128)}.
    operands = re.match(r'\(\(([^()]*)\)', re.sub(r'\{[^{}]*\}', '', result_type))
    return shapes[len(_result_shapes(operands.group(1))):] if operands else shapes
  data = tuple(s for s in shapes if s != 'u32[]')  # Synchronisation contexts, not data.
  return data[len(data) // 2:]


def _layers(line: str) -> tuple[str, ...]:
  """The net's layers named in an instruction's op_name metadata."""
  op_names = ' '.join(re.findall(r'op_name="([^"]*)"', line))
  return tuple(n for n in LAYER_NAMES if re.search(rf'(^|[/(:]){n}(/|$|\))', op_names))


def _producer_layers(line: str, definitions: dict[str, str], depth: int = 8) -> tuple[str, ...]:
  """The layers of the nearest ops with a source name that produce `line`'s operands,
  through unnamed ones (bitcasts, tuples, concatenations) up to `depth` steps back."""
  found, frontier, seen = set(), [line], set()
  for _ in range(depth):
    operands = [name for text in frontier
                if (m := re.search(r'\s[a-z][\w-]*\(([^)]*)\)', text.split('=', 1)[-1]))
                for name in re.findall(r'%([\w.-]+)', m.group(1)) if name not in seen]
    seen.update(operands)
    frontier = []
    for name in operands:
      producer = definitions.get(name, '')
      if 'op_name="' in producer:
        found.update(_layers(producer))
      elif producer:
        frontier.append(producer)
  return tuple(n for n in LAYER_NAMES if n in found)


def parse_collectives(hlo_text: str, mesh: Mesh) -> list[Collective]:
  """Every collective in compiled HLO text (asynchronous pairs counted once, at -start)."""
  lines = hlo_text.splitlines()
  definitions = {m.group(1): line for line in lines
                 if (m := re.match(r'\s*(?:ROOT\s+)?%([\w.-]+)\s*=', line))}
  found = []
  for line in lines:
    m = _OP.search(line)
    if not m:
      continue
    shapes = (_async_results(m.group(2), m.group(1)) if m.group(3) else
              _result_shapes(m.group(1)))
    layers = _layers(line)
    found.append(Collective(
        kind=m.group(2), shapes=shapes, bytes=sum(_shape_bytes(s) for s in shapes),
        axes=_axes_spanned(_device_groups(line, mesh.devices.size), mesh), layers=layers,
        producers=() if layers else _producer_layers(line, definitions)))
  return found


def violations(collectives: list[Collective], gradient_elements: int = 0) -> list[str]:
  """Breaches of the paper's communication pattern, each as a sentence.

  `gradient_elements`: how many values a device's gradients hold (0 for a step without
  gradients). Reductions over 'data' must sum exactly those, once (XLA may split or fuse
  the tensors), plus scalars (loss, metrics, error sums; up to COMBINED_SCALARS of them
  fused with the gradients): any more is activation-shaped data reduced between replicas.
  """
  found = []
  for c in collectives:
    layers = c.layers or c.producers
    where = f"{c.kind} {', '.join(c.shapes)} over {c.axes} from {layers or 'unnamed ops'}"
    if 'tower' in c.axes and (not layers or set(layers) - set(PAPER_EXCHANGES)):
      found.append(f'{where}: crosses the towers outside conv3/fc6/fc7/fc8.')
    if 'data' in c.axes and c.kind != 'all-reduce':
      found.append(f'{where}: moves activations between data-parallel replicas '
                   '(only reductions of gradients, loss and metrics belong there).')
  reduced = sum(_elements(s) for c in collectives if 'data' in c.axes
                and c.kind == 'all-reduce' for s in c.shapes if _elements(s) > 1)
  if not gradient_elements <= reduced <= gradient_elements + COMBINED_SCALARS:
    found.append(f'{reduced:,} values are summed over the data-parallel replicas but the '
                 f'gradients hold {gradient_elements:,}: activation-shaped data is reduced '
                 'there (only gradients, loss and metrics belong there).')
  return found


def gradient_elements(abstract_state) -> int:
  """How many values one device's gradients hold (its share of every parameter)."""
  return sum(math.prod(p.sharding.shard_shape(p.shape))
             for p in jax.tree.leaves(abstract_state.params))


def format_report(collectives: list[Collective]) -> str:
  """A table of the collectives, then totals per mesh axis."""
  rows = [f"{'kind':<20}{'axes':<16}{'bytes/device':>14}  {'layers':<40}result"]
  for c in collectives:
    layers = ','.join(c.layers) or '-'
    if len(layers) > 38:
      layers = layers[:35] + '...'
    rows.append(f"{c.kind:<20}{'+'.join(c.axes) or '-':<16}{c.bytes:>14,}  "
                f"{layers:<40}{' '.join(c.shapes)[:80]}")
  for axis in ('tower', 'data'):
    crossing = [c for c in collectives if axis in c.axes]
    rows.append(f'across {axis!r}: {len(crossing)} collectives, '
                f'{sum(c.bytes for c in crossing):,} bytes per device per step')
  return '\n'.join(rows)


def report(collectives: list[Collective]) -> dict:
  """The collectives and their totals per mesh axis, as JSON-able values."""
  totals = {}
  for axis in ('tower', 'data'):
    crossing = [c for c in collectives if axis in c.axes]
    totals[axis] = {'count': len(crossing), 'bytes': sum(c.bytes for c in crossing)}
  return {'collectives': [dataclasses.asdict(c) for c in collectives], 'totals': totals}


def compile_train_step(config, devices=None) -> tuple[jax.stages.Compiled, Mesh]:
  """The training step of `config` compiled from abstract inputs for its mesh over
  `devices` (default: all devices; compile-only devices of hardware this machine lacks
  work too), and the mesh."""
  mesh = sharding.make_mesh(config, devices)
  sharding.check_batch(config.train.batch_size, mesh)
  net = model.create_model(config, mesh)
  step = train_step.make_train_step(config, net, mesh, schedules.make_schedule(config, 1, 1))
  state = train_step.abstract_train_state(config, net, mesh)
  batch_sh = sharding.batch_sharding(mesh)
  image_shape = train_step.input_shape(config, config.train.batch_size)
  image_dtype = jnp.float32
  if config.data.augment_on_device:
    image_shape = (config.train.batch_size, config.data.image_size, config.data.image_size, 3)
    image_dtype = jnp.uint8
  batch = {'image': jax.ShapeDtypeStruct(image_shape, image_dtype, sharding=batch_sh),
           'label': jax.ShapeDtypeStruct(image_shape[:1], jnp.int32, sharding=batch_sh)}
  with jax.set_mesh(mesh):
    return step.lower(state, batch, train_step.abstract_stats(config)).compile(), mesh


def audit_train_step(config, devices=None) -> tuple[list[Collective], Mesh]:
  """Compiles the training step of `config` on its mesh (abstract inputs) and audits it."""
  compiled, mesh = compile_train_step(config, devices)
  return parse_collectives(compiled.as_text(), mesh), mesh


def train_step_violations(config, collectives: list[Collective], mesh: Mesh) -> list[str]:
  """`violations` of a training step's collectives, gradients allowed over 'data'.

  With one data-parallel replica (mesh.data=1: one GPU, or the two towers alone) nothing
  is summed over 'data', gradients included.
  """
  if mesh.shape['data'] == 1:
    return violations(collectives)
  state = train_step.abstract_train_state(config, model.create_model(config, mesh), mesh)
  return violations(collectives, gradient_elements(state))


def audit_eval_step(config) -> tuple[list[Collective], Mesh]:
  """Compiles the evaluation step (centre and ten patches) on its mesh and audits it."""
  mesh = sharding.make_mesh(config)
  sharding.check_batch(config.eval.batch_size, mesh, 'eval.batch_size')
  net = model.create_model(config, mesh)
  step = evaluate.make_eval_step(config, net, mesh)
  params = train_step.abstract_train_state(config, net, mesh).params
  batch_sh = sharding.batch_sharding(mesh)
  size, b = config.data.image_size, config.eval.batch_size
  batch = {'image': jax.ShapeDtypeStruct((b, size, size, 3), jnp.uint8, sharding=batch_sh),
           'label': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=batch_sh),
           'mask': jax.ShapeDtypeStruct((b,), jnp.bool_, sharding=batch_sh)}
  replicated = NamedSharding(mesh, P())
  stats = statistics.DataStats(*(jax.ShapeDtypeStruct(shape, jnp.float32, sharding=replicated)
                                 for shape in ((size, size, 3), (3,), (3, 3), (3,))))
  with jax.set_mesh(mesh):
    compiled = step.lower([params], batch, stats).compile()
  return parse_collectives(compiled.as_text(), mesh), mesh


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.cpu_devices:
    sharding.use_host_devices(FLAGS.cpu_devices)
  config = FLAGS.config
  preflight.check_config(config)
  collectives, mesh = audit_train_step(config)
  problems = train_step_violations(config, collectives, mesh)
  print(f'Training step of {config.model.layout} net, towers={config.model.towers}, '
        f"mesh data={mesh.shape['data']} x tower={mesh.shape['tower']}, "
        f'global batch {config.train.batch_size}:')
  print(format_report(collectives))
  eval_collectives, _ = audit_eval_step(config)
  problems += violations(eval_collectives)
  print(f'\nEvaluation step (ten patches: {config.eval.ten_patch}), batch '
        f'{config.eval.batch_size}:')
  print(format_report(eval_collectives))
  print('\n'.join(problems) if problems else
        'OK: the towers exchange data only at conv3 and the fully connected layers.')
  if FLAGS.json:
    device = mesh.devices.flat[0]
    with open(FLAGS.json, 'w') as f:
      json.dump({'platform': device.platform, 'device_kind': device.device_kind,
                 'mesh': {'data': mesh.shape['data'], 'tower': mesh.shape['tower']},
                 'batch': config.train.batch_size, 'train_step': report(collectives),
                 'eval_step': report(eval_collectives), 'problems': problems}, f, indent=2)
  return 1 if problems else 0


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.DEFINE_integer('cpu_devices', 0, 'Force this many host CPU devices (0: real devices).')
  flags.DEFINE_string('json', '', 'Also write the audit here as JSON.')
  flags.mark_flags_as_required(['config'])
  command_line.run(main)
