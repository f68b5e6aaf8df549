"""The optimizer step equals the paper's update rule (§5) computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax.training import optimizer

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


def _params(rng):
  return {
      'conv1': {'kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                'bias': rng.normal(size=(4,)).astype(np.float32)},
      # A bias stacked per tower is 2-D but still a bias.
      'towers': {'kernel': rng.normal(size=(2, 5, 3)).astype(np.float32),
                 'bias': rng.normal(size=(2, 3)).astype(np.float32)},
  }


def test_weight_decay_mask_skips_biases():
  mask = optimizer.weight_decay_mask(_params(np.random.default_rng(0)))
  assert mask == {'conv1': {'kernel': True, 'bias': False},
                  'towers': {'kernel': True, 'bias': False}}


def test_steps_equal_the_rule_by_hand_across_a_learning_rate_drop():
  rng = np.random.default_rng(0)
  params = _params(rng)
  tx = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY)
  state = tx.init(params)
  update = jax.jit(tx.update)

  # The hand computation, in float64 numpy: v <- 0.9 v - 0.0005 eps w - eps g; w <- w + v.
  w_ref = jax.tree.map(np.float64, params)
  v_ref = jax.tree.map(np.zeros_like, w_ref)
  decay = {'conv1': {'kernel': WEIGHT_DECAY, 'bias': 0.0},
           'towers': {'kernel': WEIGHT_DECAY, 'bias': 0.0}}
  learning_rates = [0.01, 0.01, 0.01, 0.001, 0.001]  # /10 after step 3 (§5).
  for step, eps in enumerate(learning_rates):
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    updates, state = update(grads, state, params, learning_rate=jnp.float32(eps))
    params = optax.apply_updates(params, updates)

    v_ref = jax.tree.map(lambda v, w, g, d: MOMENTUM * v - d * eps * w - eps * g,
                         v_ref, w_ref, jax.tree.map(np.float64, grads), decay)
    w_ref = jax.tree.map(lambda w, v: w + v, w_ref, v_ref)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 state.velocity, v_ref)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 params, w_ref)

  # Had the drop rescaled the velocity (eps after the accumulation, as in optax.sgd), the
  # comparison after step 3 would fail: the velocity is far from zero there.
  assert np.abs(v_ref['conv1']['kernel']).max() > 1e-3


def test_lr_drop_keeps_the_velocity_scale():
  """With zero gradient and no decay, the velocity decays by 0.9 whatever eps does."""
  params = {'bias': jnp.zeros(3)}
  tx = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY)
  _, state = tx.update({'bias': jnp.ones(3)}, tx.init(params), params, learning_rate=0.01)
  _, state = tx.update({'bias': jnp.zeros(3)}, state, params, learning_rate=0.001)
  # optax.sgd(momentum=0.9) would give 0.9 * (-0.001) here: it applies eps after the trace.
  np.testing.assert_allclose(state.velocity['bias'], 0.9 * -0.01 * np.ones(3), rtol=1e-6)


def test_weight_decay_pulls_weights_not_biases():
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}
  tx = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params, learning_rate=0.01)
  np.testing.assert_allclose(updates['kernel'], -WEIGHT_DECAY * 0.01, rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)


def test_update_without_params_is_a_clear_error():
  tx = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY)
  params = {'kernel': jnp.ones((2, 2))}
  with pytest.raises(ValueError, match='needs params'):
    tx.update(params, tx.init(params), learning_rate=0.01)


def test_state_follows_param_shardings():
  mesh = jax.make_mesh((4, 2), ('data', 'tower'))
  sharding = NamedSharding(mesh, P('data', 'tower'))
  params = {'kernel': jax.device_put(jnp.ones((8, 4)), sharding),
            'bias': jax.device_put(jnp.ones(4), NamedSharding(mesh, P('tower')))}
  tx = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY)
  with jax.set_mesh(mesh):
    state = jax.jit(tx.init)(params)
    updates, state = jax.jit(tx.update)(params, state, params, learning_rate=0.01)
  for name, p in params.items():
    assert state.velocity[name].sharding.is_equivalent_to(p.sharding, p.ndim)
    assert updates[name].sharding.is_equivalent_to(p.sharding, p.ndim)
    assert state.velocity[name].dtype == jnp.float32


def test_layer_multipliers_scale_eps_and_zero_freezes_the_layer():
  rng = np.random.default_rng(3)
  params = _params(rng)
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  plain = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY)
  scaled = optimizer.paper_sgd(MOMENTUM, WEIGHT_DECAY, {'conv1': 3.0, 'towers': 0.0})
  base, _ = plain.update(grads, plain.init(params), params, learning_rate=0.01)
  tripled, _ = plain.update(grads, plain.init(params), params, learning_rate=0.03)
  updates, state = scaled.update(grads, scaled.init(params), params, learning_rate=0.01)
  for name in ('kernel', 'bias'):  # conv1: the rule with eps x 3, weight decay included.
    np.testing.assert_allclose(updates['conv1'][name], tripled['conv1'][name], rtol=1e-6)
    assert not np.allclose(updates['conv1'][name], base['conv1'][name])
    np.testing.assert_array_equal(updates['towers'][name], 0.0)  # Frozen: no update...
    np.testing.assert_array_equal(state.velocity['towers'][name], 0.0)  # ...nor velocity.


def test_multiplier_text_is_parsed_or_refused():
  assert optimizer.parse_lr_multipliers('') == {}
  assert optimizer.parse_lr_multipliers(' conv1=0, fc8=10 ') == {'conv1': 0.0, 'fc8': 10.0}
  assert optimizer.frozen_layers({'conv1': 0.0, 'fc8': 10.0}) == {'conv1'}
  for bad in ('conv1', 'conv1=x', 'conv1=-1', 'conv1=0,conv1=1', '=2'):
    with pytest.raises(ValueError, match='is not layer=factor'):
      optimizer.parse_lr_multipliers(bad)
