"""Max pooling (§3.4) with a backward pass that suits XLA's CPU backend.

The gradient of a max pool goes, in each window, to the position that held the maximum (the
first such position in row-major order when several tie, as in XLA's select-and-scatter and
PyTorch). XLA:CPU lowers that select-and-scatter to a reduce-window over four materialised
int32 index arrays and a scatter, a cost docs/benchmarks.md measures. Here the backward pass instead walks the
window's z*z offsets in row-major order, gives each output's gradient to the first offset
whose input equals the output, and adds the offsets' contributions back in place with
strided padding: the same numbers, ties included (tests/test_max_pool.py), in a few fused
loops. On other backends select-and-scatter is a native kernel, and the usual max pool is
used (kernel_choice.py decides, from the net's devices).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: int, stride: int, by_offsets: bool) -> jax.Array:
  """Max over window x window patches every `stride` positions, no padding; x is NHWC.
  `by_offsets`: with the backward pass of the module docstring (for XLA:CPU)."""
  if by_offsets:
    return _max_pool(x, window, stride)
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding='VALID')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, stride):
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max,
                               (1, window, window, 1), (1, stride, stride, 1), 'VALID')


def _forward(x, window, stride):
  y = _max_pool(x, window, stride)
  return y, (x, y)


def _backward(window, stride, residuals, dy):
  x, y = residuals
  n, height, width, maps = x.shape
  span_h, span_w = stride * (y.shape[1] - 1) + 1, stride * (y.shape[2] - 1) + 1
  taken = jnp.zeros(y.shape, bool)  # Outputs whose gradient an earlier offset received.
  dx = jnp.zeros_like(x)
  zero = jnp.zeros((), x.dtype)
  for i in range(window):
    for j in range(window):
      at_offset = jax.lax.slice(x, (0, i, j, 0), (n, i + span_h, j + span_w, maps),
                                (1, stride, stride, 1))
      first = (at_offset == y) & ~taken
      taken = taken | first
      dx = dx + jax.lax.pad(jnp.where(first, dy, zero), zero, (
          (0, 0, 0), (i, height - i - span_h, stride - 1), (j, width - j - span_w, stride - 1),
          (0, 0, 0)))
  return (dx,)


_max_pool.defvjp(_forward, _backward)
