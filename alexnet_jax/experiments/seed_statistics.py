"""How far apart two sets of runs are, beyond the spread of their seeds: Welch's interval.

Runs that differ only in their seed (initialisation, dropout, augmentation, data order)
give different errors; a variant's change against the baseline is trustworthy only when
it is larger than that spread allows. For two groups of runs, A (say a variant's seeds)
and B (the baseline's), `difference` gives the difference of their means, mean(A) -
mean(B), with a confidence interval from Welch's t: the standard error
sqrt(s_A^2/n_A + s_B^2/n_B), and Student's t quantile at the Welch-Satterthwaite degrees
of freedom, so the two groups may have different spreads and need not be paired by seed.
An interval needs at least two runs in each group (a standard deviation of each).

Student's t quantile is computed here (its density integrated with Simpson's rule, the
quantile found by bisection), so no statistics package is needed.
"""

import dataclasses
import math
import statistics

LEVEL = 0.95  # The intervals' confidence.
_SIMPSON_INTERVALS = 2000  # Even; the CDF is accurate to ~1e-9 at these degrees of freedom.


@dataclasses.dataclass(frozen=True)
class Summary:
  """A group of runs' values: how many, their mean and standard deviation (None: one)."""
  n: int
  mean: float
  sd: float | None

  def text(self, digits: int = 2) -> str:
    if self.sd is None:
      return f'{self.mean:.{digits}f}'
    return f'{self.mean:.{digits}f} ± {self.sd:.{digits}f}'


@dataclasses.dataclass(frozen=True)
class Difference:
  """mean(A) - mean(B), and its interval (None: a group has fewer than two runs)."""
  delta: float
  low: float | None
  high: float | None
  degrees_of_freedom: float | None

  @property
  def excludes_zero(self) -> bool | None:
    """Whether the interval lies wholly on one side of zero; None without an interval."""
    if self.low is None:
      return None
    return self.low > 0 or self.high < 0

  def text(self, digits: int = 2) -> str:
    if self.low is None:
      return f'{self.delta:+.{digits}f}'
    return f'{self.delta:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]'


def summary(values: list[float]) -> Summary:
  if not values:
    raise ValueError('No values to summarise.')
  return Summary(len(values), statistics.fmean(values),
                 statistics.stdev(values) if len(values) > 1 else None)


def _t_density(x: float, df: float) -> float:
  log_norm = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
              - 0.5 * math.log(df * math.pi))
  return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: float) -> float:
  """P(T <= x) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
  if x < 0:
    return 1 - t_cdf(-x, df)
  h = x / _SIMPSON_INTERVALS
  total = _t_density(0, df) + _t_density(x, df)
  for i in range(1, _SIMPSON_INTERVALS):
    total += (4 if i % 2 else 2) * _t_density(i * h, df)
  return 0.5 + total * h / 3


def t_quantile(p: float, df: float) -> float:
  """The x with P(T <= x) = p, for 0.5 <= p < 1."""
  if not 0.5 <= p < 1 or df <= 0:
    raise ValueError(f'Need 0.5 <= p < 1 and df > 0, got p={p}, df={df}.')
  low, high = 0.0, 1.0
  while t_cdf(high, df) < p:  # Heavy tails at df near 1: widen until the quantile is inside.
    low, high = high, 2 * high
  for _ in range(60):
    middle = (low + high) / 2
    low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
  return (low + high) / 2


def difference(a: list[float], b: list[float], level: float = LEVEL) -> Difference:
  """mean(a) - mean(b) with Welch's `level` confidence interval (None with n < 2 in either)."""
  sa, sb = summary(a), summary(b)
  delta = sa.mean - sb.mean
  if sa.sd is None or sb.sd is None:
    return Difference(delta, None, None, None)
  va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
  if va + vb == 0:  # Every run of both groups alike: no spread, the difference is exact.
    return Difference(delta, delta, delta, math.inf)
  df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
  half = t_quantile((1 + level) / 2, df) * math.sqrt(va + vb)
  return Difference(delta, delta - half, delta + half, df)
