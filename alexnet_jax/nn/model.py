"""The paper's net (§3.5, Figure 2) and its variants, as one Flax module.

Besides the ImageNet net, `model.layout='cifar10'` is the four-layer CIFAR-10 net of
Figure 1 (§3.1), which the paper trains to compare ReLU with tanh.

The net has two towers ("GPU 1" and "GPU 2"). Every layer's kernels are split between them:
conv2, conv4 and conv5 see only the maps of their own tower; conv3 and the fully connected
layers see the maps of both. Parameters keep the layout of one device holding both towers
(a tower-local kernel is a grouped-convolution kernel, HWIO, with the towers' kernels
consecutive along O), so a checkpoint does not depend on the mesh.

On a mesh with a 'tower' axis (see sharding.py) each layer runs under `jax.shard_map`: a
device computes its own tower's kernels as an ordinary convolution, and the only
cross-device traffic of the forward pass is the explicit all-gather of the other tower's
maps in front of conv3, fc6, fc7 and fc8, where the paper's GPUs communicate. (Letting
XLA partition a grouped convolution instead gathers the whole batch onto every device:
tests/test_hlo_audit.py shows it.)
Without a mesh the same code runs both towers on one device.
"""

import dataclasses
import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, PartitionSpec as P

from alexnet_jax.nn import kernel_choice, lrn, max_pool, strided_conv

LAYOUTS = ('paper', 'torchvision', 'cifar10')
INITS = ('paper', 'caffe', 'cuda-convnet', 'he')
REMOVABLE = ('', 'conv3', 'conv4', 'conv5')
TOWERS = (1, 2)  # Figure 2's two, or footnote 2's one.
ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}  # §3.1's ReLU, and Figure 1's rival.
DTYPES = ('float32', 'bfloat16')
MATMUL_PRECISIONS = ('default', 'high', 'highest')  # jax.default_matmul_precision's names.


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One convolutional layer of the plan, with what follows it."""
  name: str
  features: int  # Kernels, over all towers.
  kernel: int
  stride: int
  padding: int | str  # Zero rows/columns each side, or 'convnet' (see _convnet_padding).
  sees_both_towers: bool  # conv3: every kernel sees the maps of both towers.
  lrn: bool = False
  pool: str = ''  # '' (none), 'max' (§3.4) or 'avg'; window and stride from the config.
  pool_padding: str = 'valid'  # 'valid': every window inside the maps. 'convnet':
  #   cuda-convnet's out = 1 + ceil((size - window) / stride), the last window cut off at
  #   the bottom/right edge.
  paper_bias: float = 0.0  # §5: 1 in conv2, conv4, conv5 (and fc6, fc7), 0 elsewhere.
  cuda_convnet_std: float = 0.01


@dataclasses.dataclass(frozen=True)
class DenseLayer:
  """One fully connected layer; all of them see the neurons of both towers."""
  name: str
  features: int
  paper_bias: float = 0.0
  caffe_std: float = 0.01
  last: bool = False


def _cifar10_plan(model: ml_collections.ConfigDict) -> tuple[list[ConvLayer], list[DenseLayer]]:
  """Figure 1's four-layer net (§3.1): cuda-convnet's CIFAR-10 example, layers-18pct.cfg.

  Three convolutions of 5x5 kernels (32, 32, 64; stride 1, padding 2), each followed by
  3/2 pooling in cuda-convnet's geometry (max after conv1, average after conv2 and conv3:
  32 -> 16 -> 8 -> 4 for 32x32 images), then fc4, the only fully connected layer, straight
  to the classes (the cfg's fc10). The cfg's two `rnorm` layers (a normalisation within
  each map, not §3.3's across maps) are left out: Figure 1 compares the neurons alone, and
  layers-80sec.cfg, the same convolutions, has none. cuda-convnet applies conv1's ReLU after
  its max pooling; max pooling commutes with ReLU and tanh (both increasing), so applying it
  before, as everywhere here, is the same net. model.init='cuda-convnet' gives the cfg's
  initW: std 1e-4 in conv1, 0.01 in conv2, conv3 and fc4; biases 0. With no hidden fully
  connected layer there is no dropout (model.dropout_rate has nothing to act on).
  """
  wanted = {'towers': 1, 'lrn': False, 'remove_conv': '', 'extra_conv6': False}
  fixes = [f'model.{name}={value!r}' for name, value in wanted.items() if model[name] != value]
  if fixes:
    raise ValueError("model.layout=cifar10 is Figure 1's four-layer net: one tower, no "
                     f'response normalisation, three conv layers. Set {", ".join(fixes)}.')
  cifar_conv = functools.partial(ConvLayer, kernel=5, stride=1, padding=2,
                                 sees_both_towers=False, pool_padding='convnet')
  convs = [cifar_conv('conv1', 32, pool='max', cuda_convnet_std=1e-4),
           cifar_conv('conv2', 32, pool='avg'),
           cifar_conv('conv3', 64, pool='avg')]
  return convs, [DenseLayer('fc4', model.num_classes, last=True)]


def layer_plan(model: ml_collections.ConfigDict) -> tuple[list[ConvLayer], list[DenseLayer]]:
  """The layers of the configured variant, in order (docs/paper.md, "The net").

  The fields' own values are checked by training/preflight.py (every caller's start); what
  is checked here is how they combine.
  """
  if model.layout == 'cifar10':
    return _cifar10_plan(model)
  if model.layout == 'torchvision':
    if model.towers != 1:
      raise ValueError('model.layout=torchvision is a one-tower net: set model.towers=1.')
    widths, conv1_padding, lrn_layers = (64, 192, 384, 256, 256), 2, False
  elif model.towers == 2:  # Figure 2.
    widths, conv1_padding, lrn_layers = (96, 256, 384, 384, 256), 'convnet', model.lrn
  else:  # Footnote 2's one tower: half the kernels, but conv5 and the FC layers keep theirs.
    widths, conv1_padding, lrn_layers = (48, 128, 192, 192, 256), 'convnet', model.lrn
  convs = [
      ConvLayer('conv1', widths[0], 11, 4, conv1_padding, False, lrn=lrn_layers, pool='max'),
      ConvLayer('conv2', widths[1], 5, 1, 2, False, lrn=lrn_layers, pool='max', paper_bias=1.),
      ConvLayer('conv3', widths[2], 3, 1, 1, True, cuda_convnet_std=0.03),
      ConvLayer('conv4', widths[3], 3, 1, 1, False, paper_bias=1., cuda_convnet_std=0.03),
      ConvLayer('conv5', widths[4], 3, 1, 1, False, pool='max', paper_bias=1.,
                cuda_convnet_std=0.03),
  ]
  if model.remove_conv:  # §7: removing any middle layer costs about 2% top-1.
    index = [c.name for c in convs].index(model.remove_conv)
    removed = convs.pop(index)
    if removed.pool:
      convs[-1] = dataclasses.replace(convs[-1], pool=removed.pool)
  if model.extra_conv6:  # Table 2's "1 CNN*": a sixth conv layer over the last pooling layer.
    convs.append(ConvLayer('conv6', widths[4], 3, 1, 1, False, paper_bias=1.,
                           cuda_convnet_std=0.03))
  dense = [
      DenseLayer('fc6', 4096, paper_bias=1., caffe_std=0.005),
      DenseLayer('fc7', 4096, paper_bias=1., caffe_std=0.005),
      DenseLayer('fc8', model.num_classes, last=True),
  ]
  return convs, dense


def _initializers(layer: ConvLayer | DenseLayer, scheme: str):
  """Weight and bias initialisers of one layer under an init scheme (§5; docs/paper.md,
  "Training")."""
  if scheme == 'he':  # Not the paper's: He et al. 2015, for inputs of unit scale.
    variance = 1.0 if isinstance(layer, DenseLayer) and layer.last else 2.0  # No ReLU after fc8.
    return (nn.initializers.variance_scaling(variance, 'fan_in', 'normal'),
            nn.initializers.zeros)
  std = 0.01
  if scheme == 'caffe' and isinstance(layer, DenseLayer):
    std = layer.caffe_std
  if scheme == 'cuda-convnet' and isinstance(layer, ConvLayer):
    std = layer.cuda_convnet_std
  bias = layer.paper_bias
  if scheme == 'caffe' and bias:
    bias = 0.1  # bvlc_alexnet: "initialization to 1 gave flat loss".
  return nn.initializers.normal(std), nn.initializers.constant(bias)


def _convnet_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """cuda-convnet's geometry: out = 1 + ceil((size - kernel) / stride), padding at the end.

  For a 224 input and conv1 (11, stride 4) that is 3 zero rows/columns at the bottom/right,
  giving Figure 2's 55x55 (docs/paper.md, "Input geometry"); a 227 input (Caffe) needs none.
  """
  out = 1 + math.ceil((size - kernel) / stride)
  return 0, max(0, (out - 1) * stride + kernel - size)


def pooled_side(layer: ConvLayer, size: int, window: int, stride: int) -> int:
  """The side of `layer`'s pooled maps for `size` x `size` maps; 0 if nothing is left."""
  if size < window:
    return 0
  if layer.pool_padding == 'convnet':
    return 1 + math.ceil((size - window) / stride)
  return (size - window) // stride + 1


def pool_maps(x: jax.Array, layer: ConvLayer, window: int, stride: int,
              kernels: kernel_choice.Kernels) -> jax.Array:
  """`layer`'s pooling of x: max (§3.4) or average, in its geometry (see ConvLayer)."""
  padding = 'VALID'
  if layer.pool_padding == 'convnet':
    padding = [_convnet_padding(x.shape[i], window, stride) for i in (1, 2)]
  if layer.pool == 'max' and padding == 'VALID':
    return max_pool.max_pool(x, window, stride, kernels.max_pool_by_offsets)
  if layer.pool == 'max':  # The padding is -inf: a cut-off window takes the max of the rest.
    return nn.max_pool(x, (window,) * 2, strides=(stride,) * 2, padding=padding)
  # Padding counts as zeros: cuda-convnet divides a cut-off window's sum by window² too
  # (its AvgPooler(sizeX * sizeX)).
  return nn.avg_pool(x, (window,) * 2, strides=(stride,) * 2, padding=padding,
                     count_include_pad=True)


def _map_sides(model: ml_collections.ConfigDict, crop: int) -> list[tuple[int, int | None]]:
  """Per convolutional layer, for `crop` x `crop` inputs: the side of its maps, and of
  them pooled (None: the layer does not pool); 0 once the crop is too small."""
  convs, _ = layer_plan(model)
  size, sides = crop, []
  for layer in convs:
    if layer.padding == 'convnet':
      pad = sum(_convnet_padding(size, layer.kernel, layer.stride))
    else:
      pad = 2 * layer.padding
    size = max(0, (size + pad - layer.kernel) // layer.stride + 1)
    pooled = pooled_side(layer, size, model.pool_window, model.pool_stride) if layer.pool else None
    sides.append((size, pooled))
    size = size if pooled is None else pooled
  return sides


def fc6_input_side(model: ml_collections.ConfigDict, crop: int) -> int:
  """The side of the maps fc6 (the first fully connected layer) sees for `crop` x `crop`
  inputs; 0 if the crop is too small."""
  size, pooled = _map_sides(model, crop)[-1]
  return size if pooled is None else pooled


def pooled_sides(model: ml_collections.ConfigDict, crop: int) -> list[int]:
  """The side of the maps after each pooling layer, in order, for `crop` x `crop` inputs."""
  return [pooled for _, pooled in _map_sides(model, crop) if pooled is not None]


def smallest_crop(model: ml_collections.ConfigDict) -> int:
  """The smallest input side that leaves the first fully connected layer at least one
  position of maps."""
  return next(crop for crop in range(1, 4096) if fc6_input_side(model, crop) > 0)


def _tower_mesh_size() -> int:
  """Devices along the 'tower' axis of the mesh in context; 0 when there is no mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 0
  if 'tower' not in mesh.axis_names or 'data' not in mesh.axis_names:
    raise ValueError(f'The mesh in context has axes {mesh.axis_names}; alexnet_jax needs '
                     "('data', 'tower'): build it with sharding.make_mesh.")
  return mesh.shape['tower']


def _per_tower(fn: Callable, in_specs, out_specs) -> Callable:
  """fn on each device's share of the towers (shard_map), or on all of them without a mesh."""
  if _tower_mesh_size() == 0:
    return fn
  if jax.sharding.get_abstract_mesh().shape['data'] == 1:
    # Manual over 'tower' only: a shard_map manual over a 'data' axis of one device sums
    # every gradient over that one device in the backward pass, an all-reduce XLA:CPU
    # does not remove (docs/benchmarks.md, "Three things XLA:CPU did for nothing").
    def over_towers(spec):
      return P(*(None if axis == 'data' else axis for axis in spec))
    return jax.shard_map(fn, in_specs=tuple(map(over_towers, in_specs)),
                         out_specs=over_towers(out_specs), axis_names={'tower'})
  return jax.shard_map(fn, in_specs=in_specs, out_specs=out_specs)


def _gather_towers(x: jax.Array) -> jax.Array:
  """Inside _per_tower: the maps of every tower, concatenated along the last axis."""
  if _tower_mesh_size() > 1:
    return jax.lax.all_gather(x, 'tower', axis=x.ndim - 1, tiled=True)
  return x


def _normalise_towers(x: jax.Array, *, maps_per_tower: int, **lrn_args) -> jax.Array:
  """LRN of the towers on this device, each over its own maps only."""
  return lrn.local_response_norm(x, towers=x.shape[-1] // maps_per_tower, **lrn_args)


_MAPS = P('data', None, None, 'tower')  # Activations: batch over 'data', maps over 'tower'.
_NEURONS = P('data', 'tower')


class TowerConv(nn.Module):
  """A convolutional layer whose kernels are split between the towers."""
  layer: ConvLayer
  towers: int
  init_scheme: str
  dtype: jnp.dtype
  kernels: kernel_choice.Kernels

  @nn.compact
  def __call__(self, x: jax.Array, input_split: bool) -> jax.Array:
    """x: (batch, h, w, maps); `input_split` when x's maps belong to the towers (all but conv1)."""
    layer = self.layer
    in_maps = x.shape[-1]
    per_kernel = in_maps // self.towers if input_split and not layer.sees_both_towers else in_maps
    w_init, b_init = _initializers(layer, self.init_scheme)
    kernel = self.param('kernel', w_init, (layer.kernel, layer.kernel, per_kernel,
                                           layer.features))
    bias = self.param('bias', b_init, (layer.features,))
    if layer.padding == 'convnet':
      padding = [_convnet_padding(x.shape[i], layer.kernel, layer.stride) for i in (1, 2)]
    else:
      padding = [(layer.padding, layer.padding)] * 2

    def conv(x, kernel, bias):
      if layer.sees_both_towers:
        x = _gather_towers(x)  # conv3: the paper's GPUs exchange their maps here.
      # One ordinary convolution per tower on this device, each over its own tower's maps.
      # (The same as feature_group_count=towers, but XLA's CPU backend runs a grouped
      # convolution far slower than the separate ones: docs/benchmarks.md, "CPU speed:
      # the grouped convolutions".)
      towers = x.shape[-1] // kernel.shape[2]
      ys = [strided_conv.conv(xt.astype(self.dtype), kt.astype(self.dtype), layer.stride,
                              padding, self.kernels.space_to_depth_from_bytes)
            for xt, kt in zip(jnp.split(x, towers, axis=-1), jnp.split(kernel, towers, axis=-1))]
      y = ys[0] if towers == 1 else jnp.concatenate(ys, axis=-1)
      return y + bias.astype(self.dtype)

    x_spec = _MAPS if input_split else P('data')
    return _per_tower(conv, (x_spec, P(None, None, None, 'tower'), P('tower')), _MAPS)(
        x, kernel, bias)


class TowerDense(nn.Module):
  """A fully connected layer whose neurons are split between the towers; each sees all inputs."""
  layer: DenseLayer
  init_scheme: str
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (batch, ...) with the towers' maps or neurons consecutive along the last axis."""
    w_init, b_init = _initializers(self.layer, self.init_scheme)
    kernel = self.param('kernel', w_init, (math.prod(x.shape[1:]), self.layer.features))
    bias = self.param('bias', b_init, (self.layer.features,))

    def dense(x, kernel, bias):
      x = _gather_towers(x)  # The paper's GPUs exchange their neurons before every FC layer.
      x = x.reshape(x.shape[0], -1)  # fc6 flattens (h, w, maps), h slowest.
      return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)

    in_spec = _MAPS if x.ndim == 4 else _NEURONS
    return _per_tower(dense, (in_spec, P(None, 'tower'), P('tower')), _NEURONS)(x, kernel, bias)


class AlexNet(nn.Module):
  """The paper's net and its ablations; `config` is the `model` part of the config,
  `kernels` the implementations its devices' platform wants (kernel_choice.py)."""
  config: ml_collections.FrozenConfigDict
  kernels: kernel_choice.Kernels

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """images: (batch, h, w, 3) float pixels minus the mean. Returns float32 logits.

    With `mutable=['activations']`, apply() also returns every hidden layer's output after
    its nonlinearity (before LRN, pooling and dropout), as '<layer>_output'.
    """
    cfg = self.config
    # Every convolution and matmul of the net, forward and backward (their transposes keep
    # the precision they were traced with), on every backend: model.matmul_precision.
    with jax.default_matmul_precision(cfg.matmul_precision):
      dtype = jnp.dtype(cfg.dtype)
      activation = ACTIVATIONS[cfg.activation]
      alpha = lrn.effective_alpha(cfg.lrn_alpha, cfg.lrn_size, cfg.lrn_alpha_convention)
      convs, dense = layer_plan(cfg)

      x = images
      for i, layer in enumerate(convs):
        x = TowerConv(layer, cfg.towers, cfg.init, dtype, self.kernels, name=layer.name)(
            x, input_split=i > 0)
        x = activation(x)
        self.sow('activations', f'{layer.name}_output', x)
        if layer.lrn:  # §3.3, after the ReLU, inside each tower.
          normalise = functools.partial(
              _normalise_towers, maps_per_tower=layer.features // cfg.towers, size=cfg.lrn_size,
              k=cfg.lrn_k, alpha=alpha, beta=cfg.lrn_beta)
          x = _per_tower(normalise, (_MAPS,), _MAPS)(x)
        if layer.pool:  # §3.4: overlapping pooling, z=3 > s=2.
          x = pool_maps(x, layer, cfg.pool_window, cfg.pool_stride, self.kernels)

      # §4.2: dropout on the outputs of fc6 and fc7; the torchvision layout drops their inputs.
      dropout_before = cfg.layout == 'torchvision'
      for layer in dense:
        if dropout_before and not layer.last:
          x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
        x = TowerDense(layer, cfg.init, dtype, name=layer.name)(x)
        if not layer.last:
          x = activation(x)
          self.sow('activations', f'{layer.name}_output', x)  # fc7's: §6.1's similarity.
          if not dropout_before:
            x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
      return x.astype(jnp.float32)


def create_model(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> AlexNet:
  """The model of a full config (its `model` part), with the kernels for the devices of
  `mesh` (without one: of the process's default backend, e.g. for a summary)."""
  kernels = (kernel_choice.for_mesh(mesh) if mesh is not None
             else kernel_choice.for_platform(jax.default_backend()))
  return AlexNet(ml_collections.FrozenConfigDict(config.model), kernels)
