"""Starting a net from torchvision's AlexNet weights (`model.pretrained=PATH`, or
`model.pretrained=torchvision`: fetched once by published_weights.py).

torchvision's `alexnet` is the one-tower "one weird trick" layout (`model.layout=
'torchvision'`, docs/paper.md, "The net"). Its state dict names the layers `features.{0,3,6,8,10}`
(conv1-conv5) and `classifier.{1,4,6}` (fc6-fc8). Converting to this project's layout:

- conv kernels OIHW -> HWIO; linear weights (out, in) -> (in, out);
- fc6's inputs: PyTorch flattens pool5's maps as (channel, row, column), this net as
  (row, column, channel) (model.py), so fc6's rows are reordered.

A file may hold only some layers (e.g. the convolutional ones), and `model.pretrained_layers`
may choose some of those it holds. Layers present (and chosen) with the right shapes are
loaded; absent ones keep their fresh initialisation; fc8 with another
class count is initialised fresh too (fine-tuning on other classes). Any other mismatch is
an error naming the layer, both shapes and what to change.
"""

import dataclasses
import math

import jax
import ml_collections
import numpy as np

from alexnet_jax.weights import published_weights, weight_files

# This net's layer -> torchvision's module prefix.
TORCHVISION_NAMES = {
    'conv1': 'features.0', 'conv2': 'features.3', 'conv3': 'features.6',
    'conv4': 'features.8', 'conv5': 'features.10',
    'fc6': 'classifier.1', 'fc7': 'classifier.4', 'fc8': 'classifier.6',
}


class PretrainedError(weight_files.WeightFileError):
  """A weights file that does not fit the configured net."""


@dataclasses.dataclass
class Pretrained:
  """Weights converted to this net's layout, and what was and was not loaded."""
  path: str
  params: dict  # layer -> {'kernel': array, 'bias': array}, float32, this net's layout.
  fresh: dict  # layer -> why it keeps its fresh initialisation.

  def summary(self) -> str:
    count = sum(a.size for layer in self.params.values() for a in layer.values())
    lines = [f'Pretrained weights from {self.path}: loaded {", ".join(self.params) or "none"}'
             f' ({count:,} parameters).']
    if self.fresh:
      lines.append('Initialised fresh: ' + '; '.join(
          f'{layer} ({why})' for layer, why in self.fresh.items()) + '.')
    return ' '.join(lines)


def _convert(layer: str, weight: np.ndarray) -> np.ndarray:
  """torchvision's weight of `layer` in this net's layout."""
  if weight.ndim == 4:  # Conv: OIHW -> HWIO.
    return weight.transpose(2, 3, 1, 0)
  if weight.ndim != 2:
    raise PretrainedError(f'{layer}: a {weight.ndim}-d weight where a matrix belongs.')
  if layer == 'fc6':
    # (out, channel*row*col) -> rows ordered (row, col, channel) as this net flattens.
    out, inputs = weight.shape
    side_squared = inputs // 256  # conv5 has 256 maps in the torchvision layout.
    side = math.isqrt(side_squared)
    if side * side * 256 == inputs:
      weight = weight.reshape(out, 256, side, side).transpose(0, 2, 3, 1).reshape(out, inputs)
  return weight.T


def _check_layout(config: ml_collections.ConfigDict) -> None:
  m = config.model
  if m.layout != 'torchvision':
    raise PretrainedError(
        f'model.pretrained={m.pretrained!r} holds torchvision AlexNet weights (one tower, '
        f'64-192-384-256-256 kernels), but this config builds the {m.layout!r} layout with '
        f'{m.towers} tower(s). Use configs/torchvision_alexnet.py (or '
        '--config.model.layout=torchvision --config.model.towers=1 --config.mesh.tower=1).')


def load(config: ml_collections.ConfigDict, abstract_params) -> Pretrained:
  """Reads `config.model.pretrained` and converts it for params shaped like `abstract_params`.

  Raises:
    PretrainedError: the config's net is not torchvision's layout, the file has names this
      net does not have, or a layer's shape differs (other than fc8's class count).
  """
  _check_layout(config)
  path = published_weights.resolve(config.model.pretrained)
  state = weight_files.read_state_dict(path)
  known = {f'{prefix}.{part}' for prefix in TORCHVISION_NAMES.values()
           for part in ('weight', 'bias')}
  unknown = sorted(set(state) - known)
  if unknown:
    raise PretrainedError(
        f'{path} has entries torchvision AlexNet does not have: {", ".join(unknown[:8])}'
        f'{" ..." if len(unknown) > 8 else ""}. Expected names like features.0.weight and '
        'classifier.6.bias (torchvision.models.alexnet().state_dict()).')
  chosen = [name.strip() for name in config.model.pretrained_layers.split(',') if name.strip()]
  strangers = sorted(set(chosen) - set(abstract_params))
  if strangers:
    raise PretrainedError(
        f'model.pretrained_layers={config.model.pretrained_layers!r} names {strangers}, which '
        f'the configured net does not have; its layers are {", ".join(abstract_params)}.')
  params, fresh = {}, {}
  for layer, shapes in abstract_params.items():
    if chosen and layer not in chosen:
      fresh[layer] = 'not in model.pretrained_layers'
      continue
    prefix = TORCHVISION_NAMES.get(layer)
    weight, bias = state.get(f'{prefix}.weight'), state.get(f'{prefix}.bias')
    if weight is None and bias is None:
      fresh[layer] = 'not in the file'
      continue
    if weight is None or bias is None:
      raise PretrainedError(f'{path} has only one of {prefix}.weight and {prefix}.bias.')
    kernel_shape, bias_shape = tuple(shapes['kernel'].shape), tuple(shapes['bias'].shape)
    kernel = _convert(layer, np.asarray(weight, np.float32))
    if kernel.shape == kernel_shape and bias.shape == bias_shape:
      params[layer] = {'kernel': kernel, 'bias': np.asarray(bias, np.float32)}
    elif layer == 'fc8' and kernel.shape[0] == kernel_shape[0]:
      fresh[layer] = (f'{bias.shape[0]} classes in the file, model.num_classes='
                      f'{bias_shape[0]}')
    else:
      hint = ''
      if layer == 'fc6':
        hint = (' fc6 depends on the crop: torchvision uses data.crop_size=224 (6x6 maps '
                'after conv5).')
      raise PretrainedError(
          f'{path}: {prefix}.weight has shape {tuple(weight.shape)}, i.e. {layer} '
          f'{kernel.shape} in this net\'s layout, but the configured net\'s {layer} is '
          f'{kernel_shape}.{hint}')
  return Pretrained(path, params, fresh)


def into(params, pretrained: Pretrained):
  """`params` with the loaded layers replaced, each placed on its leaf's sharding."""

  def place(layer: str, name: str, leaf: jax.Array) -> jax.Array:
    value = pretrained.params[layer][name]
    return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

  return {layer: ({name: place(layer, name, leaf) for name, leaf in leaves.items()}
                  if layer in pretrained.params else leaves)
          for layer, leaves in params.items()}
