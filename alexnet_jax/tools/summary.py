"""A table of the configured net, layer by layer, like docs/paper.md's and the paper's Figure 2.

  python -m alexnet_jax.tools.summary --config=configs/ilsvrc2012.py
  python -m alexnet_jax.tools.summary --config=configs/ilsvrc2012.py --config.model.towers=1
  python -m alexnet_jax.tools.summary --config=configs/figure1.py

For each layer: its kernels (over both towers), which maps each kernel sees, the output
shape (before and after pooling; "avg" marks average pooling), parameters and
multiply-accumulates per image.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags
from ml_collections import config_flags

from alexnet_jax.nn import model
from alexnet_jax.runtime import command_line
from alexnet_jax.training import preflight


@dataclasses.dataclass(frozen=True)
class LayerRow:
  name: str
  kernels: str  # e.g. '96 of 11x11x3'
  sees: str  # 'image', 'own tower' or 'both towers'
  neurons: int  # Outputs of the layer before pooling (Figure 2's caption counts these).
  output: str  # e.g. '55x55x96 -> 27x27x96'
  params: int
  macs: int  # Forward multiply-accumulates per image.


def layer_rows(config: ml_collections.ConfigDict) -> list[LayerRow]:
  """The rows of the summary for a full config (input: data.crop_size squared RGB)."""
  net = model.create_model(config)
  size = config.data.crop_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

  def shapes(x):
    variables = net.init(jax.random.key(0), x, train=False)
    _, captured = net.apply(variables, x, train=False, capture_intermediates=True)
    return variables['params'], captured['intermediates']

  params, outputs = jax.eval_shape(shapes, images)
  convs, dense = model.layer_plan(config.model)
  rows = []
  for i, layer in enumerate([*convs, *dense]):
    kernel, bias = params[layer.name]['kernel'], params[layer.name]['bias']
    shape = outputs[layer.name]['__call__'][0].shape[1:]
    positions = math.prod(shape[:-1])
    if isinstance(layer, model.ConvLayer):
      kh, kw, cin, cout = kernel.shape
      sees = ('image' if i == 0 else
              'both towers' if layer.sees_both_towers else 'own tower')
      out = 'x'.join(map(str, shape))
      if layer.pool:
        pooled = model.pooled_side(layer, shape[0], config.model.pool_window,
                                   config.model.pool_stride)
        out += f' -> {pooled}x{pooled}x{shape[-1]}' + (' avg' if layer.pool == 'avg' else '')
      kernels = f'{cout} of {kh}x{kw}x{cin}'
    else:
      sees, out, kernels = 'both towers', str(shape[-1]), f'{kernel.shape[1]} of {kernel.shape[0]}'
    rows.append(LayerRow(layer.name, kernels, sees, math.prod(shape), out,
                         kernel.size + bias.size, positions * kernel.size))
  return rows


def format_table(config: ml_collections.ConfigDict) -> str:
  rows = layer_rows(config)
  m = config.model
  lines = [f'AlexNet, layout={m.layout}, towers={m.towers}, input '
           f'{config.data.crop_size}x{config.data.crop_size}x3, {m.num_classes} classes',
           f"{'layer':<7}{'kernels':<20}{'sees':<13}{'output':<26}{'params':>12}{'MACs/image':>15}"]
  for r in rows:
    lines.append(f'{r.name:<7}{r.kernels:<20}{r.sees:<13}{r.output:<26}{r.params:>12,}'
                 f'{r.macs:>15,}')
  lines.append(f"{'total':<66}{sum(r.params for r in rows):>12,}"
               f'{sum(r.macs for r in rows):>15,}')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  preflight.check_config(FLAGS.config)
  print(format_table(FLAGS.config))


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  command_line.run(main)
