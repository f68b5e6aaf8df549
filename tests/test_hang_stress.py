"""The hang stress command: how a run's exit status is counted."""

from alexnet_jax.tools import hang_stress


def test_exit_codes_are_sorted_into_hangs_and_other_failures():
  assert [hang_stress._outcome(c) for c in (0, 75, 134, -6, 1, 2)] == [
      'ok', 'hang', 'hang', 'hang', 'failed', 'failed']
