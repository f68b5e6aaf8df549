"""LRN (§3.3) against the printed formula, computed independently, and its tower locality."""

import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.nn import lrn
from alexnet_jax.training import preflight


def lrn_by_formula(a, towers, n, k, alpha, beta):
  """b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta per tower."""
  out = np.empty_like(a)
  per_tower = a.shape[-1] // towers
  for t in range(towers):
    block = a[..., t * per_tower:(t + 1) * per_tower]
    for i in range(per_tower):
      lo, hi = max(0, i - n // 2), min(per_tower - 1, i + n // 2)
      s = np.sum(block[..., lo:hi + 1] ** 2, axis=-1)
      out[..., t * per_tower + i] = block[..., i] / (k + alpha * s) ** beta
  return out


@pytest.mark.parametrize('convention,alpha_used', [('printed', 1e-4), ('divided', 1e-4 / 5)])
@pytest.mark.parametrize('towers', [1, 2])
def test_lrn_equals_printed_formula(convention, alpha_used, towers):
  rng = np.random.default_rng(0)
  # Large activations so that the alpha term matters (relu outputs of tens to hundreds).
  a = rng.uniform(0, 300, size=(2, 3, 3, 16)).astype(np.float64)
  alpha = lrn.effective_alpha(1e-4, 5, convention)
  assert alpha == pytest.approx(alpha_used)
  got = np.asarray(lrn.local_response_norm(a.astype(np.float32), towers=towers, size=5, k=2.0,
                                           alpha=alpha, beta=0.75))
  want = lrn_by_formula(a, towers, 5, 2.0, alpha_used, 0.75)
  np.testing.assert_allclose(got, want, rtol=2e-6)
  # The normalisation is not a no-op on this input.
  assert np.max(np.abs(want - a / 2.0 ** 0.75)) > 1e-2 * np.max(np.abs(want))


def test_lrn_is_tower_local():
  rng = np.random.default_rng(1)
  a = rng.uniform(0, 100, size=(2, 4, 4, 12)).astype(np.float32)
  b = a.copy()
  b[..., 6:] = rng.uniform(0, 100, size=(2, 4, 4, 6))  # Change every map of tower 2.
  norm = lambda x: np.asarray(lrn.local_response_norm(x, towers=2, size=5, k=2.0, alpha=1e-3,
                                                      beta=0.75))
  np.testing.assert_array_equal(norm(a)[..., :6], norm(b)[..., :6])
  assert not np.allclose(norm(a)[..., 6:], norm(b)[..., 6:])
  # With one tower the same change reaches the maps next to the boundary.
  one = lambda x: np.asarray(lrn.local_response_norm(x, towers=1, size=5, k=2.0, alpha=1e-3,
                                                     beta=0.75))
  assert not np.allclose(one(a)[..., 4:6], one(b)[..., 4:6])


def test_bad_lrn_settings_are_refused_by_the_config_check():
  config = default.get_config()
  config.model.lrn_alpha_convention = 'pytorch'
  config.model.lrn_size = 4
  problems = '\n'.join(preflight.config_problems(config))
  assert 'model.lrn_alpha_convention' in problems and 'model.lrn_size=4' in problems
