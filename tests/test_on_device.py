"""The net on JAX's default device against the same net on the CPU (the GPU check's tests).

Cross-cutting: nn/model.py's logits, training/train_step.py's training steps,
training/evaluate.py's ten-patch step and run/checkpointing.py's save and restore, each
on the default device against the CPU.

In the test suite the default device is one of conftest.py's CPU devices, so these tests
compare the CPU with itself and only show that the code runs. tools/gpu_check.py runs
them with JAX_PLATFORMS=cuda,cpu: the default device is then the GPU and the CPU is the
reference, for the logits (float32 and the bfloat16 path), training steps, the ten-patch
evaluation step and an Orbax checkpoint saved from the device.

Inputs are the synthetic source's shapes, scaled to unit size, through a net whose kernels
are redrawn with std sqrt(2 / fan-in) and biases zero, so that activations keep their
scale through the eight layers and the logits depend on the image. Logit errors are
||x - ref|| / ||ref - its mean over the batch|| (what differs between the examples).
Tolerances, from bfloat16's errors against float32 measured on CPU (logits 0.03; the
updates of two training steps 0.04 for fc8's kernels to 0.23 for conv1's, cosines 0.974
to 0.999) and for float32 a GPU's TF32 convolutions and matmuls, whose operands keep 10
mantissa bits to bfloat16's 7 (8 times less rounding): float32 logits and losses 1e-2,
updates 0.1; bfloat16 logits and losses 0.1, updates a cosine of at least 0.9.
"""

import functools
import os

import jax
import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.data import statistics, synthetic
from alexnet_jax.nn import model
from alexnet_jax.run import checkpointing
from alexnet_jax.training import evaluate, schedules, sharding, train_step

CROP, IMAGE, BATCH = 67, 72, 8  # Small inputs, fast tests; the layers are the paper's.
SCALE = 64.0  # Pixels (0..255) -> (pixels - 128) / SCALE: unit-sized inputs.
TOLERANCE = {'float32': 1e-2, 'bfloat16': 0.1}  # Logits and losses.
FLOAT32_UPDATES, BFLOAT16_COSINE = 0.1, 0.9


def _config(layout='paper', dtype='float32'):
  config = default.get_config()
  config.model.update(layout=layout, towers=2 if layout == 'paper' else 1, dtype=dtype,
                      num_classes=10)
  config.data.update(crop_size=CROP, image_size=IMAGE)
  config.mesh.tower = 1
  return config


def _device(platform: str):
  """The first device of the default backend ('default') or of the CPU ('cpu'): the same
  device when the default backend is the CPU, so the cached results below are shared."""
  return jax.devices()[0] if platform == 'default' else jax.devices('cpu')[0]


def _relative_error(x, ref) -> float:
  x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref - ref.mean(axis=0)))


def _shapes(size: int) -> np.ndarray:
  """BATCH uint8 images of the synthetic source's classes 0, 1, ..., 9, 0, ..."""
  rng = np.random.default_rng(1)
  return np.stack([synthetic.render(i % len(synthetic.CLASSES), rng, size)
                   for i in range(BATCH)])


def _batch() -> dict:
  return {'image': (_shapes(CROP).astype(np.float32) - 128) / SCALE,
          'label': np.arange(BATCH, dtype=np.int32) % 10}


def test_the_default_device_is_the_one_expected():
  """gpu_check.py names the platform (ALEXNET_TEST_PLATFORM=gpu): JAX must not have fallen
  back to the CPU, where these tests would compare the CPU with itself."""
  expected = os.environ.get('ALEXNET_TEST_PLATFORM')
  if not expected:
    pytest.skip('ALEXNET_TEST_PLATFORM is not set (tools/gpu_check.py sets it).')
  assert _device('default').platform == expected


@functools.cache
def _params(layout: str):
  """Parameters drawn on the host (the same numbers for both backends); see the docstring."""
  net = model.create_model(_config(layout))
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), _batch()['image'],
                                           train=False)['params'])
  rng = np.random.default_rng(7)

  def draw(path, leaf):
    if jax.tree_util.keystr(path).endswith("['kernel']"):
      return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree.map_with_path(draw, shapes)


@functools.cache
def _logits(layout: str, dtype: str, device) -> np.ndarray:
  config = _config(layout, dtype)
  net = model.create_model(config)
  mesh = sharding.make_mesh(config, [device])
  inputs = jax.device_put((_params(layout), _batch()['image']), device)
  with jax.set_mesh(mesh):
    return np.asarray(jax.jit(lambda p, x: net.apply({'params': p}, x, train=False))(*inputs))


@pytest.mark.parametrize('layout', ['paper', 'torchvision'])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_logits_match_the_cpus_float32(layout, dtype):
  got = _logits(layout, dtype, _device('default'))
  want = _logits(layout, 'float32', _device('cpu'))
  assert got.dtype == np.float32 and np.isfinite(got).all()
  assert _relative_error(got, want) < TOLERANCE[dtype]


@functools.cache
def _train(dtype: str, device, steps: int = 2):
  """`steps` training steps on one batch: (parameter updates, losses)."""
  config = _config(dtype=dtype)
  mesh = sharding.make_mesh(config, [device])
  net = model.create_model(config)
  step_fn = train_step.make_train_step(config, net, mesh, schedules.make_schedule(config, 1, 10))
  with jax.set_mesh(mesh):
    state = train_step.create_train_state(config, net, mesh)
    state = state.replace(params=jax.device_put(_params('paper'),
                                                train_step.shardings_of(state.params)))
    batch = jax.device_put(_batch(), sharding.batch_sharding(mesh))
    losses = []
    for _ in range(steps):
      state, metrics = step_fn(state, batch, None)
      losses.append(float(metrics['loss']))
  updates = jax.tree.map(lambda new, old: np.asarray(new) - old, state.params,
                         _params('paper'))
  return updates, losses


@pytest.mark.slow
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_training_steps_match_the_cpu(dtype):
  """Same dropout masks on both sides: JAX's random bits do not depend on the backend."""
  updates, losses = _train(dtype, _device('default'))
  ref_updates, ref_losses = _train('float32', _device('cpu'))
  assert np.all(np.isfinite(losses))
  np.testing.assert_allclose(losses, ref_losses, rtol=TOLERANCE[dtype])
  for (path, update), ref in zip(jax.tree.leaves_with_path(updates),
                                 jax.tree.leaves(ref_updates)):
    where = jax.tree_util.keystr(path)
    if dtype == 'float32':
      error = np.linalg.norm(update - ref) / np.linalg.norm(ref)
      assert error < FLOAT32_UPDATES, (where, error)
    else:
      cosine = np.sum(update * ref) / np.linalg.norm(update) / np.linalg.norm(ref)
      assert cosine > BFLOAT16_COSINE, (where, cosine)


@functools.cache
def _error_sums(device) -> dict:
  config = _config()
  net = model.create_model(config)
  mesh = sharding.make_mesh(config, [device])
  rng = np.random.default_rng(2)
  stats = statistics.DataStats(
      mean_image=np.full((IMAGE, IMAGE, 3), 128, np.float32),
      pca_eigval=np.array([30.0, 5.0, 1.0], np.float32),
      pca_eigvec=np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32),
      pixel_scale=np.full(3, SCALE, np.float32))
  batch = jax.device_put(
      {'image': _shapes(IMAGE), 'label': np.arange(BATCH, dtype=np.int32) % 10,
       'mask': np.arange(BATCH) < BATCH - 2},  # Two padding rows, counted nowhere.
      sharding.batch_sharding(mesh))
  with jax.set_mesh(mesh):
    sums = evaluate.make_eval_step(config, net, mesh)(
        [jax.device_put(_params('paper'), device)], batch, jax.device_put(stats, device))
  return {k: float(v) for k, v in sums.items()}


def test_ten_patch_evaluation_matches_the_cpu():
  """Error counts of 6 examples, centre and ten patches: at most one near-tie may flip."""
  got, want = _error_sums(_device('default')), _error_sums(_device('cpu'))
  assert set(got) == {'count', 'centre_top1_error', 'centre_top5_error',
                      'ten_patch_top1_error', 'ten_patch_top5_error'}
  assert got['count'] == want['count'] == BATCH - 2
  for name in got:
    assert abs(got[name] - want[name]) <= 1, (name, got, want)


@pytest.mark.slow
def test_a_checkpoint_saved_from_the_device_restores_exactly_on_the_device_and_the_cpu(
    tmp_path):
  config = _config()
  net = model.create_model(config)
  mesh = sharding.make_mesh(config, [_device('default')])
  with jax.set_mesh(mesh):
    state = train_step.create_train_state(config, net, mesh)
  saved = jax.device_get(state)
  ckpt = checkpointing.Checkpointer(tmp_path, keep=1, keep_best=False)
  ckpt.save(3, state, meta={'epoch': 0.5})
  ckpt.close()
  ckpt = checkpointing.Checkpointer(tmp_path, keep=1, keep_best=False, read_only=True)
  for device in (_device('default'), _device('cpu')):
    mesh = sharding.make_mesh(config, [device])
    restored, meta = ckpt.restore(None, train_step.abstract_train_state(config, net, mesh))
    assert meta == {'epoch': 0.5}
    for leaf in jax.tree.leaves(restored):
      assert leaf.sharding.device_set == {device}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
  ckpt.close()
