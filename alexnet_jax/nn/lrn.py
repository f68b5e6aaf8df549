"""Local response normalisation across channels (§3.3), computed inside each tower.

  b_i = a_i / (k + alpha' * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta

N is the number of maps of one tower: each tower normalises only its own maps, as each GPU
did in the paper. alpha' is alpha as the formula is printed ('printed'), or alpha / n
('divided'), the convention of cuda-convnet, Caffe and PyTorch (docs/paper.md, "Layers").
"""

import jax
import jax.numpy as jnp

ALPHA_CONVENTIONS = ('printed', 'divided')


def effective_alpha(alpha: float, size: int, convention: str) -> float:
  """The alpha that multiplies the sum of squares under `convention` (one of
  ALPHA_CONVENTIONS; training/preflight.py checks the config's)."""
  return alpha if convention == 'printed' else alpha / size


def local_response_norm(x: jax.Array, *, towers: int, size: int, k: float, alpha: float,
                        beta: float) -> jax.Array:
  """Normalises x (..., channels) across channels, separately within each of `towers`.

  The channel axis holds `towers` consecutive blocks of maps; the window of `size` adjacent
  maps never reaches into another tower's block; `size` is odd (training/preflight.py
  checks the config's). `alpha` is the effective alpha (see `effective_alpha`). Computed
  in float32 whatever the dtype of x.
  """
  channels = x.shape[-1]
  if channels % towers:
    raise ValueError(f'{channels} channels do not split into {towers} towers.')
  blocks = x.astype(jnp.float32).reshape(*x.shape[:-1], towers, channels // towers)
  half = size // 2
  window_sums = jax.lax.reduce_window(
      jnp.square(blocks), 0.0, jax.lax.add,
      window_dimensions=(1,) * (blocks.ndim - 1) + (size,),
      window_strides=(1,) * blocks.ndim,
      padding=((0, 0),) * (blocks.ndim - 1) + ((half, half),))
  normalised = blocks * jnp.power(k + alpha * window_sums, -beta)
  return normalised.reshape(x.shape).astype(x.dtype)
