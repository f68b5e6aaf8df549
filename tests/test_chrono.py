"""The training clock leaves evaluation and saving out of images/s, data wait and ETA."""

from alexnet_jax.runtime import chrono


def test_paused_time_is_not_training_time(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(chrono.time, 'time', lambda: now[0])
  clock = chrono.Chrono(step=10)
  now[0] += 2.0  # Four training steps...
  with clock.paused():
    now[0] += 50.0  # ... and an evaluation with a checkpoint.
  clock.waited_for_data(0.5)
  window = clock.window(step=14, batch_size=32)
  assert window == {'images_per_second': 4 * 32 / 2.0, 'data_wait_fraction': 0.25}
  assert clock.eta(14, 24, 32) == '0h00m05s'  # Ten more steps at 2 steps/s.
  clock.reset(14)
  now[0] += 1.0
  assert clock.window(16, 32) == {'images_per_second': 64.0, 'data_wait_fraction': 0.0}
