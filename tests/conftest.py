"""Test set-up: eight CPU devices, forced before JAX starts, for the mesh and HLO tests; then
the fixtures several test modules share (no test module imports another).

Markers (registered in pyproject.toml, [tool.pytest.ini_options]): `slow` for a test that
takes more than ~15 s on a 2-core machine or trains a net for more than a few steps,
`multiprocess` for one that starts Python processes of the project or several JAX
processes. The quick loop leaves both out:

  python -m pytest -q -m "not slow and not multiprocess" tests
"""

import os

from alexnet_jax.training import sharding

# Patient collectives: tests run beside other work on small CI machines (sharding.py).
os.environ['XLA_FLAGS'] = sharding.patient_xla_flags(
    os.environ.get('XLA_FLAGS', '--xla_force_host_platform_device_count=8'))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# pylint: disable=g-import-not-at-top,wrong-import-position  (JAX starts after the above)
import contextlib
import io
import pathlib
import struct
import types

import jax
import ml_collections
import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from alexnet_jax.configs import demo, torchvision_alexnet
from alexnet_jax.nn import model
from alexnet_jax.runtime import cache
from alexnet_jax.training import saved_nets, train, train_step

# torchvision AlexNet's convolutional layers in its state dict (OIHW).
CONV_SHAPES = {'features.0': (64, 3, 11, 11), 'features.3': (192, 64, 5, 5),
               'features.6': (384, 192, 3, 3), 'features.8': (256, 384, 3, 3),
               'features.10': (256, 256, 3, 3)}


# --- The training loop's tiny runs (test_train, test_evaluate_saved, and their users) -------

@pytest.fixture(autouse=True, scope='session')
def _own_cache(tmp_path_factory):
  """The project's cache (downloaded weights, the record of where datasets were prepared)
  in a temporary folder, for the tests and the commands they start: never the user's."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(cache.ENV, str(tmp_path_factory.mktemp('alexnet_jax_cache')))
    yield


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A directory for the generated dataset, one per test module."""
  return str(tmp_path_factory.mktemp('data'))


def _tiny_config(data_dir: str, **train_fields) -> ml_collections.ConfigDict:
  """The demo config, smaller: 8 forced devices as mesh (data=4, tower=2)."""
  config = demo.get_config()
  config.host_devices = 0  # conftest.py forces 8 CPU devices.
  config.data.data_dir = data_dir
  config.data.synthetic_train_size = 96
  config.data.synthetic_eval_size = 37  # Not a multiple of the batch.
  config.model.init = 'caffe'  # With §2's mean image: pixels on the 0..255 scale.
  config.data.mean = 'dataset'
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = 'plateau'  # The paper's schedule, its state in checkpoints.
  config.optimizer.plateau_patience = 1
  config.train.batch_size = 16
  config.eval.batch_size = 16
  config.train.num_steps = 6
  config.train.log_every_steps = 1
  config.train.eval_every_steps = 3
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  for name, value in train_fields.items():
    setattr(config.train, name, value)
  return config


@pytest.fixture(scope='session')
def tiny_config():
  """`tiny_config(data_dir, **train_fields)`: a fresh tiny config (8 steps at most of 16
  images on mesh data=4 x tower=2; 96 generated training images, 37 for evaluation)."""
  return _tiny_config


@pytest.fixture(scope='session')
def final_params():
  """`final_params(workdir, config)`: (step, parameters on the host) of the run's latest
  checkpoint, read the one way a saved net is read (saved_nets.restore)."""

  def read(workdir, config):
    restored = saved_nets.restore(config, str(workdir))
    return restored.step, jax.device_get(restored.params)

  return read


@pytest.fixture(scope='session')
def end_to_end_run(tmp_path_factory):
  """A finished 6-step two-tower run that evaluates at steps 3 and 6 (one batch of training
  images, no dropout, so the loss falls): its .config (copy it before changing it),
  .workdir, .console (what it printed) and .results (what train_and_evaluate returned)."""
  config = _tiny_config(str(tmp_path_factory.mktemp('data')))
  config.data.synthetic_train_size = 16
  config.model.dropout_rate = 0.0
  config.optimizer.learning_rate = 0.01
  workdir = tmp_path_factory.mktemp('end_to_end')
  console = io.StringIO()
  with contextlib.redirect_stdout(console):
    results = train.train_and_evaluate(config, str(workdir))
  return types.SimpleNamespace(config=config, workdir=workdir, console=console.getvalue(),
                               results=results)


# --- TensorBoard event files (test_metric_writer, test_conv1_kernels) ------------------------

def _read_events(logdir) -> list:
  """Every event of the one event file in `logdir`, parsing the TFRecord framing and CRCs
  by hand."""
  (path,) = pathlib.Path(logdir).glob('events.out.tfevents.*')
  data, events, offset = path.read_bytes(), [], 0
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack('<Q', header)
    assert struct.unpack('<I', data[offset + 8:offset + 12])[0] == masked_crc32c(header)
    record = data[offset + 12:offset + 12 + length]
    crc = data[offset + 12 + length:offset + 16 + length]
    assert struct.unpack('<I', crc)[0] == masked_crc32c(record)
    offset += 16 + length
    events.append(event_pb2.Event.FromString(record))
  return events


@pytest.fixture(scope='session')
def read_events():
  """`read_events(logdir)`: the events of the one TensorBoard event file in `logdir`."""
  return _read_events


# --- torchvision's AlexNet (test_pretrained, test_published_weights, test_fine_tuning) ------

def _torchvision_config(crop: int, classes: int = 3, path: str = '') -> ml_collections.ConfigDict:
  config = torchvision_alexnet.get_config()
  config.data.image_size = config.data.crop_size = crop
  config.model.num_classes = classes
  config.model.pretrained = path
  config.mesh.data = 1
  return config


def _abstract_params(config):
  net = model.create_model(config)
  mesh = sharding.make_mesh(config, jax.devices()[:1])  # One of the forced CPU devices.
  return train_step.abstract_train_state(config, net, mesh).params


def _conv_arrays(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  arrays = {}
  for prefix, shape in CONV_SHAPES.items():
    arrays[f'{prefix}.weight'] = rng.normal(0, 0.01, shape).astype(np.float32)
    arrays[f'{prefix}.bias'] = rng.normal(0, 0.1, shape[:1]).astype(np.float32)
  return arrays


@pytest.fixture(scope='session')
def torchvision_config():
  """`torchvision_config(crop, classes=3, path='')`: configs/torchvision_alexnet.py on
  crops of `crop` px, for `classes` classes, model.pretrained=path, on one device."""
  return _torchvision_config


@pytest.fixture(scope='session')
def abstract_params():
  """`abstract_params(config)`: shapes, dtypes and shardings of the net's parameters on
  one device."""
  return _abstract_params


@pytest.fixture(scope='session')
def conv_arrays():
  """`conv_arrays(seed=0)`: random weights and biases of torchvision AlexNet's
  convolutional layers, by their state-dict names (OIHW)."""
  return _conv_arrays
