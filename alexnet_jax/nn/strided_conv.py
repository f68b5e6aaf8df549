"""conv1's strided convolution (§3.5: 11x11 kernels, stride 4) with a weight gradient that
suits XLA's CPU backend.

The gradient of a strided convolution's kernel is itself a convolution, one whose kernel
is the output gradient dilated by the stride. XLA:CPU runs that dilated convolution at a
fraction of its usual speed: for the paper's conv1 it costs more than the forward pass
(docs/benchmarks.md, "conv1's kernel gradient"). Here the backward pass instead rearranges the (padded) input by space-to-depth, stride x stride
blocks of pixels becoming stride² x 3 maps, so that each kernel offset of whole blocks
(3x3 of them for an 11x11 kernel at stride 4) is one ordinary matrix product of the
rearranged input's window with the output gradient; the products fill a 12x12 kernel,
of which the 11x11 corner is the gradient. The same numbers up to float rounding
(tests/test_strided_conv.py). The input gradient stays XLA's own (conv1 needs none in
training, and XLA drops it). For small batches or images XLA's own kernel gradient is
faster, and on other backends it is the only one used (kernel_choice.py decides, from the
net's devices and the size of the output gradient).
"""

import functools
import math

import jax
import jax.numpy as jnp

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def conv(x: jax.Array, kernel: jax.Array, stride: int,
         padding: tuple[tuple[int, int], tuple[int, int]],
         space_to_depth_from_bytes: int | None = None) -> jax.Array:
  """The convolution of NHWC x with HWIO kernel, `stride` in both directions; with the
  space-to-depth kernel gradient when strided and its output gradient has at least
  `space_to_depth_from_bytes` bytes (None: never)."""
  padding = tuple(map(tuple, padding))
  if stride > 1 and space_to_depth_from_bytes is not None:
    out_h, out_w = ((x.shape[i] + sum(padding[i - 1]) - kernel.shape[0]) // stride + 1
                    for i in (1, 2))
    gradient_bytes = x.shape[0] * out_h * out_w * kernel.shape[3] * x.dtype.itemsize
    if gradient_bytes >= space_to_depth_from_bytes:
      return _conv(x, kernel, stride, padding)
  return _plain_conv(x, kernel, stride, padding)


def _plain_conv(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                      dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, stride, padding):
  return _plain_conv(x, kernel, stride, padding)


def _forward(x, kernel, stride, padding):
  return _plain_conv(x, kernel, stride, padding), (x, kernel)


def _space_to_depth(x, stride, padding, blocks):
  """x padded and cut to `blocks` (rows, columns) of stride x stride pixels, each block
  one position: (batch, rows, columns, stride * stride * maps), in (row, column, map) order."""
  batch, height, width, maps = x.shape
  (top, _), (left, _) = padding
  rows, columns = blocks
  x = jnp.pad(x, ((0, 0), (top, max(0, rows * stride - height - top)),
                  (left, max(0, columns * stride - width - left)), (0, 0)))
  x = x[:, :rows * stride, :columns * stride]
  x = x.reshape(batch, rows, stride, columns, stride, maps).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, rows, columns, stride * stride * maps)


def _kernel_gradient(x, dy, kernel_shape, stride, padding):
  size, _, maps, features = kernel_shape
  _, out_h, out_w, _ = dy.shape
  offsets = math.ceil(size / stride)  # Kernel offsets in whole blocks, per direction.
  blocks = _space_to_depth(x, stride, padding, (out_h + offsets - 1, out_w + offsets - 1))
  dy = dy.reshape(-1, features)
  # Offset (a, b): every output position's block window starts a rows and b columns later.
  parts = [dy.T @ blocks[:, a:a + out_h, b:b + out_w].reshape(-1, blocks.shape[-1])
           for a in range(offsets) for b in range(offsets)]
  grad = jnp.stack(parts).reshape(offsets, offsets, features, stride, stride, maps)
  # (a, b, feature, p, q, map) -> kernel row a * stride + p, column b * stride + q.
  grad = grad.transpose(0, 3, 1, 4, 5, 2).reshape(offsets * stride, offsets * stride, maps,
                                                   features)
  return grad[:size, :size]


def _backward(stride, padding, residuals, dy):
  x, kernel = residuals
  _, input_gradient = jax.vjp(lambda x: _plain_conv(x, kernel, stride, padding), x)
  kernel_gradient = _kernel_gradient(x, dy, kernel.shape, stride, padding)
  # Inside shard_map, a kernel replicated over mesh axes along which the batch is split
  # gets the sum of the shards' gradients, as autodiff would give it.
  summed_axes = tuple(sorted(_varying_axes(kernel_gradient) - _varying_axes(kernel)))
  if summed_axes:
    kernel_gradient = jax.lax.psum(kernel_gradient, summed_axes)
  return input_gradient(dy)[0], kernel_gradient


def _varying_axes(x) -> frozenset:
  """The manual mesh axes along which x differs between devices (none outside shard_map)."""
  aval = jax.typeof(x)
  manual = getattr(aval, 'manual_axis_type', None)  # jax >= 0.10; before, `vma`.
  return manual.varying if manual is not None else getattr(aval, 'vma', frozenset())


_conv.defvjp(_forward, _backward)
