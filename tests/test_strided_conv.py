"""strided_conv.py: the same outputs and gradients as XLA's strided convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.nn import kernel_choice, strided_conv


def xla_conv(stride, padding):
  return lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('size,kernel,stride,padding', [
    (67, 11, 4, ((0, 1), (0, 1))),  # The paper's conv1 geometry: cuda-convnet's end padding.
    (63, 11, 4, ((2, 2), (2, 2))),  # torchvision's conv1.
    # Caffe's (227 px crops): the last rows go unused.
    pytest.param(71, 11, 4, ((0, 0), (0, 0)), marks=pytest.mark.slow),
    # Other kernels, strides and uneven padding.
    pytest.param(31, 5, 3, ((0, 0), (2, 1)), marks=pytest.mark.slow),
    pytest.param(30, 3, 2, ((1, 1), (1, 1)), marks=pytest.mark.slow),
])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_outputs_and_gradients_match_xla(size, kernel, stride, padding, dtype):
  keys = jax.random.split(jax.random.key(size), 3)
  x = jax.random.normal(keys[0], (2, size, size + 4, 3), dtype)
  w = jax.random.normal(keys[1], (kernel, kernel, 3, 5), dtype)
  expected_y, expected_vjp = jax.vjp(xla_conv(stride, padding), x, w)
  y, vjp = jax.vjp(lambda x, w: strided_conv._conv(x, w, stride, padding), x, w)
  np.testing.assert_array_equal(y, expected_y)
  dy = jax.random.normal(keys[2], y.shape, dtype)
  (expected_dx, expected_dw), (dx, dw) = expected_vjp(dy), vjp(dy)
  np.testing.assert_array_equal(dx, expected_dx)
  # The kernel gradient sums the same products in another order.
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.asarray(dw, np.float32), np.asarray(expected_dw, np.float32),
                             rtol=tolerance, atol=tolerance * float(jnp.abs(expected_dw).max()))


@pytest.mark.parametrize('platform', ['cpu', 'gpu', 'tpu'])
def test_used_for_large_strided_convolutions_on_cpu_only(platform):
  threshold = kernel_choice.for_platform(platform).space_to_depth_from_bytes

  def uses_custom_gradient(batch, stride):
    x = jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)
    kernel = jax.ShapeDtypeStruct((11, 11, 3, 96), jnp.float32)
    jaxpr = jax.make_jaxpr(
        lambda x, k: strided_conv.conv(x, k, stride, ((0, 3), (0, 3)), threshold))
    return 'custom_vjp' in str(jaxpr(x, kernel))
  # Batch 32: 55x55x96 float32 output gradients of 37 MB; batch 8: 9 MB, XLA's is faster.
  assert uses_custom_gradient(32, 4) == (platform == 'cpu')
  assert not uses_custom_gradient(8, 4)
  assert not uses_custom_gradient(32, 1)
