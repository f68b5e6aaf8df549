"""Learning-rate schedules and the paper's plateau controller (§5)."""

import json

import jax
import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.training import schedules


def _config(**optimizer):
  config = default.get_config()
  config.optimizer.update(optimizer)
  return config


def test_steps_divides_by_ten_at_the_given_epochs():
  schedule = schedules.make_schedule(_config(schedule='steps', step_epochs='2,3'),
                                     steps_per_epoch=10, total_steps=50)
  lrs = np.array([schedule(s) for s in range(40)])
  np.testing.assert_allclose(lrs[:20], 0.01, rtol=1e-6)
  np.testing.assert_allclose(lrs[20:30], 0.001, rtol=1e-6)
  np.testing.assert_allclose(lrs[30:], 0.0001, rtol=1e-6)


def test_schedule_is_jittable_and_float32():
  schedule = schedules.make_schedule(_config(schedule='steps', step_epochs='1'), 10, 20)
  lrs = jax.jit(jax.vmap(schedule))(np.arange(20))
  assert lrs.dtype == np.float32
  np.testing.assert_allclose(lrs, [0.01] * 10 + [0.001] * 10, rtol=1e-6)


def test_cosine_goes_from_base_to_zero_after_warmup():
  schedule = schedules.make_schedule(_config(schedule='cosine', warmup_epochs=1.0),
                                     steps_per_epoch=10, total_steps=110)
  np.testing.assert_allclose([schedule(s) for s in range(10)],
                             0.01 * np.arange(1, 11) / 10, rtol=1e-6)  # linear warm-up
  np.testing.assert_allclose(schedule(10), 0.01, rtol=1e-6)
  np.testing.assert_allclose(schedule(60), 0.005, rtol=1e-5)  # half way: half the rate
  np.testing.assert_allclose(schedule(110), 0.0, atol=1e-9)
  assert all(schedule(s) > schedule(s + 1) for s in range(10, 109))


def test_plateau_schedule_is_the_constant_base_rate():
  schedule = schedules.make_schedule(_config(schedule='plateau', learning_rate=0.02), 10, 100)
  np.testing.assert_allclose([schedule(s) for s in (0, 50, 99)], 0.02, rtol=1e-6)


@pytest.mark.parametrize('overrides, message', [
    ({'schedule': 'linear'}, "schedule='linear'"),
    ({'schedule': 'steps', 'step_epochs': '30,x'}, "step_epochs='30,x'"),
    ({'schedule': 'steps', 'step_epochs': '60,30'}, 'increasing'),
])
def test_bad_fields_are_named_in_the_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    schedules.make_schedule(_config(**overrides), 10, 100)


def test_plateau_divides_by_ten_when_the_error_stops_improving():
  plateau = schedules.Plateau(patience=2, min_delta=0.01, max_drops=3)
  factors = [plateau.update(e) for e in [0.9, 0.8, 0.795, 0.8, 0.7, 0.7, 0.7]]
  # 0.795 improves by less than min_delta: with 0.8 after it, two evaluations without
  # improvement -> first drop. 0.7 improves; two more without -> second drop.
  assert factors == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01])


def test_plateau_drops_at_most_max_drops_times():
  plateau = schedules.Plateau(patience=1, min_delta=0.0, max_drops=3)
  factors = [plateau.update(0.5) for _ in range(10)]
  assert factors[-1] == pytest.approx(1e-3)
  assert plateau.num_drops == 3


def test_plateau_never_drops_for_other_schedules():
  plateau = schedules.Plateau.from_config(_config(schedule='cosine', plateau_patience=1))
  assert [plateau.update(0.5) for _ in range(5)] == [1.0] * 5


def test_plateau_state_roundtrips_through_json():
  plateau = schedules.Plateau(patience=2, min_delta=0.0, max_drops=3)
  errors = [0.9, 0.8, 0.85, 0.85, 0.8, 0.8, 0.79, 0.8, 0.8]
  for e in errors[:4]:
    plateau.update(e)
  resumed = schedules.Plateau(patience=2, min_delta=0.0, max_drops=3).from_state_dict(
      json.loads(json.dumps(plateau.state_dict())))
  assert [resumed.update(e) for e in errors[4:]] == [plateau.update(e) for e in errors[4:]]
  assert resumed.state_dict() == plateau.state_dict()
  assert resumed.num_drops == 3  # at 0.85, 0.85 | 0.8, 0.8 | 0.8, 0.8


def test_plateau_rejects_non_finite_errors():
  with pytest.raises(ValueError, match='non-finite'):
    schedules.Plateau(patience=2, min_delta=0.0, max_drops=3).update(float('nan'))
