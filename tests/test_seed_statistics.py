"""experiments/seed_statistics.py: Student's t against its closed forms and published
quantiles, and Welch's interval against a hand computation."""

import math

import pytest

from alexnet_jax.experiments import seed_statistics as stats


@pytest.mark.parametrize('x', [0.0, 0.3, 1.0, 2.5, 12.0, -4.0])
def test_t_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(x):
  assert stats.t_cdf(x, 1) == pytest.approx(0.5 + math.atan(x) / math.pi, abs=1e-9)  # Cauchy.
  assert stats.t_cdf(x, 2) == pytest.approx(0.5 + x / (2 * math.sqrt(2 + x * x)), abs=1e-9)


@pytest.mark.parametrize('df, quantile', [(1, 12.7062), (2, 4.3027), (4, 2.7764),
                                          (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_the_published_table(df, quantile):
  assert stats.t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)


def test_t_quantile_between_whole_degrees_of_freedom_and_its_range():
  assert stats.t_quantile(0.975, 2) > stats.t_quantile(0.975, 2.5) > stats.t_quantile(0.975, 3)
  assert stats.t_quantile(0.5, 3) == pytest.approx(0, abs=1e-9)
  assert stats.t_cdf(stats.t_quantile(0.9, 3.7), 3.7) == pytest.approx(0.9, abs=1e-9)
  for p, df in ((1.0, 3), (0.4, 3), (0.9, 0)):
    with pytest.raises(ValueError, match='Need 0.5 <= p < 1 and df > 0'):
      stats.t_quantile(p, df)


def test_welch_interval_by_hand():
  a, b = [45.0, 46.0, 47.0, 48.0], [40.0, 42.0]
  # mean 46.5 - 41 = 5.5; variances 5/3 and 2, so squared standard errors 5/12 and 1;
  # Welch-Satterthwaite: (17/12)^2 / ((5/12)^2/3 + 1^2/1) = 1.897... degrees of freedom.
  d = stats.difference(a, b)
  df = (17 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 1)
  half = stats.t_quantile(0.975, df) * math.sqrt(17 / 12)
  assert d.degrees_of_freedom == pytest.approx(df)
  assert (d.delta, d.low, d.high) == pytest.approx((5.5, 5.5 - half, 5.5 + half))
  assert 4.30 < stats.t_quantile(0.975, df) < 12.71  # Between the table's 1 and 2 d.o.f.
  assert d.low == pytest.approx(0.1034, abs=1e-4) and d.excludes_zero is True
  assert d.text() == '+5.50 [+0.10, +10.90]'
  # Equal spreads and sizes: Student's interval with n_a + n_b - 2 degrees of freedom.
  equal = stats.difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
  assert equal.degrees_of_freedom == pytest.approx(4)
  assert (equal.low, equal.high) == pytest.approx((-3 - 2.7764 * math.sqrt(2 / 3),
                                                   -3 + 2.7764 * math.sqrt(2 / 3)), abs=1e-4)
  assert equal.excludes_zero is True


def test_no_interval_from_one_run_and_an_exact_one_without_spread():
  one = stats.difference([3.0], [1.0, 2.0])
  assert (one.delta, one.low, one.excludes_zero, one.text()) == (1.5, None, None, '+1.50')
  flat = stats.difference([2.0, 2.0], [1.0, 1.0])
  assert (flat.low, flat.high, flat.excludes_zero) == (1.0, 1.0, True)
  assert stats.summary([1.0, 2.0, 3.0]).text() == '2.00 ± 1.00'
  assert stats.summary([4.0]).text() == '4.00'
  with pytest.raises(ValueError, match='No values'):
    stats.summary([])
