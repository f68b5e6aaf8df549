"""max_pool.py: the same outputs and gradients as Flax's max pool, ties included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.nn import kernel_choice, max_pool


def maps_with_ties(shape, dtype=jnp.float32):
  """Random maps after a ReLU (zeros tie), with a flat patch (equal positive values tie)."""
  x = np.maximum(np.random.default_rng(0).normal(size=shape), 0)
  x[:, 2:7, 1:6, :] = 0.75
  return jnp.asarray(x, dtype)


@pytest.mark.parametrize('side,window,stride', [
    (13, 3, 2), (27, 3, 2),  # The paper's overlapping pools (after conv2 and conv5).
    *(pytest.param(*p, marks=pytest.mark.slow) for p in [(12, 3, 2), (13, 2, 2), (9, 3, 3)]),
])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_outputs_and_gradients_match_flax(side, window, stride, dtype):
  x = maps_with_ties((2, side, side + 1, 4), dtype)
  ours = lambda x: max_pool.max_pool(x, window, stride, by_offsets=True)
  flax_pool = lambda x: nn.max_pool(x, (window, window), strides=(stride, stride),
                                    padding='VALID')
  np.testing.assert_array_equal(ours(x), flax_pool(x))
  # A loss whose gradient differs at every output, so a misrouted one shows.
  weights = jnp.asarray(np.random.default_rng(1).normal(size=flax_pool(x).shape), dtype)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * weights).astype(jnp.float32))(x)
  expected, got = grad(flax_pool), grad(ours)
  # The same inputs receive gradient; where overlapping windows chose the same input,
  # their contributions may be added in another order (bfloat16: a few units in the last
  # place of a sum that cancels).
  np.testing.assert_array_equal(got != 0, expected != 0)
  tolerance = {'rtol': 1e-6} if dtype == jnp.float32 else {'rtol': 1e-2, 'atol': 2 ** -6}
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(expected, np.float32),
                             **tolerance)
  # Each output's gradient went to exactly one input: the first maximum of its window.
  assert int(jnp.sum(expected != 0)) <= weights.size


def test_the_cpu_backward_has_no_select_and_scatter():
  x = maps_with_ties((1, 13, 13, 2))
  by_offsets = kernel_choice.for_platform('cpu').max_pool_by_offsets
  jaxpr = str(jax.make_jaxpr(jax.grad(
      lambda x: jnp.sum(max_pool.max_pool(x, 3, 2, by_offsets))))(x))
  assert 'select_and_scatter' not in jaxpr and 'custom_vjp' in jaxpr
  flax_jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(
      nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID'))))(x))
  assert 'select_and_scatter' in flax_jaxpr  # What the rewrite avoids.
