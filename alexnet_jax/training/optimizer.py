"""The paper's optimizer: SGD with momentum and weight decay, exactly as in §5.

Krizhevsky et al. (§5) write the update for a weight w as

    v <- 0.9 * v - 0.0005 * eps * w - eps * <dL/dw>
    w <- w + v

The learning rate eps enters *before* the momentum accumulation: the velocity v already
carries it, so dividing eps by 10 (§5) leaves the velocity accumulated so far untouched.
optax's `sgd` / `trace` apply the learning rate after the accumulation instead, which
rescales the whole velocity at a drop; hence this small transformation.

Weight decay applies to weights, not biases, as in Krizhevsky's cuda-convnet and Caffe.

Fine-tuning (not in the paper) may scale eps per layer (`optimizer.lr_multipliers`, e.g.
'conv1=0,conv2=0,fc8=10'): a layer's update is the rule above with eps times its
multiplier; 0 freezes the layer (no update at all, weight decay included).

Usage (the learning rate is an extra argument, so it can be a traced scalar):

    tx = paper_sgd(momentum=0.9, weight_decay=5e-4)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params, learning_rate=lr)
    params = optax.apply_updates(params, updates)  # w + v
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class PaperSgdState(NamedTuple):
  """The optimizer state: the velocity v of §5, float32, shaped and sharded like params."""
  velocity: Any


def _leaf_name(path) -> str:
  """The name of a pytree leaf: the last dict key or attribute on its path."""
  last = path[-1] if path else None
  return str(getattr(last, 'key', getattr(last, 'name', '')))


def weight_decay_mask(params):
  """Which leaves are weights (decayed) and which are biases (not decayed).

  A leaf is a bias when it is named 'bias' (whatever its rank, so biases stacked per
  tower count too) or when it is a vector or a scalar; every other leaf (conv kernels,
  fully connected matrices) is a weight.

  Args:
    params: the parameter pytree.

  Returns:
    A pytree of Python bools with the structure of `params`: True where decayed.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, p: _leaf_name(path) != 'bias' and jnp.ndim(p) > 1, params)


def parse_lr_multipliers(text: str) -> dict[str, float]:
  """'conv1=0,fc8=10' -> {'conv1': 0.0, 'fc8': 10.0}; '' -> {}.

  Raises:
    ValueError: an entry is not `layer=number`, names a layer twice, or is negative.
  """
  multipliers = {}
  for entry in filter(None, (e.strip() for e in text.split(','))):
    layer, _, value = entry.partition('=')
    try:
      factor = float(value)
    except ValueError:
      factor = -1.0
    if not layer.strip() or factor < 0 or layer.strip() in multipliers:
      raise ValueError(f'optimizer.lr_multipliers={text!r}: {entry!r} is not layer=factor '
                       "with a factor >= 0 and each layer once (e.g. 'conv1=0,fc8=10').")
    multipliers[layer.strip()] = factor
  return multipliers


def frozen_layers(multipliers: dict[str, float]) -> set[str]:
  """The layers a multiplier of 0 freezes."""
  return {layer for layer, factor in multipliers.items() if factor == 0}


def paper_sgd(momentum: float, weight_decay: float,
              lr_multipliers: dict[str, float] | None = None
              ) -> optax.GradientTransformationExtraArgs:
  """The update rule of §5 as an optax transformation.

  Args:
    momentum: the 0.9 of §5.
    weight_decay: the 0.0005 of §5, applied to weights only (see `weight_decay_mask`).
    lr_multipliers: {top-level parameter name (a layer): factor}: that layer's eps is
      eps x factor; 0 leaves it unchanged. Layers not named keep eps.

  Returns:
    A transformation whose `update(grads, state, params, *, learning_rate)` returns
    the new velocity v as the updates (so `optax.apply_updates` computes w + v) and the
    state holding it. `learning_rate` is the current eps, a float or a traced scalar.
  """

  def init_fn(params):
    # zeros_like keeps each parameter's sharding (eagerly, and under jit with an
    # explicit mesh); with automatic axes give jit the params' shardings as out_shardings.
    return PaperSgdState(
        velocity=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params))

  def update_fn(grads, state, params=None, *, learning_rate):
    if params is None:
      raise ValueError('paper_sgd needs params for its weight decay: '
                       'call update(grads, state, params, learning_rate=...).')
    base_eps = jnp.asarray(learning_rate, jnp.float32)

    def step(path, decay, v, w, g):
      factor = (lr_multipliers or {}).get(str(getattr(path[0], 'key', '')), 1.0)
      if factor == 0:  # Frozen.
        return jnp.zeros_like(v)
      eps = base_eps * factor
      g = g.astype(jnp.float32)
      if decay:
        return momentum * v - weight_decay * eps * w.astype(jnp.float32) - eps * g
      return momentum * v - eps * g

    velocity = jax.tree.map_with_path(step, weight_decay_mask(params), state.velocity, params,
                                      grads)
    return velocity, PaperSgdState(velocity=velocity)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
