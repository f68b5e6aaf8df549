"""One training step (forward, backward, the paper's update) and the state it updates.

The state is created already sharded over the mesh (parameters and momentum split over
'tower', replicated over 'data'); the step is jitted with the state donated, so the update
happens in place. Dropout and on-device augmentation draw their randomness from
fold_in(seed, step): a resumed run sees the same random numbers as an uninterrupted one.
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.data import augment, statistics
from alexnet_jax.training import optimizer, sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Updates done so far (int32).
  params: Any
  opt_state: Any  # The velocity of §5.
  lr_factor: jax.Array  # The paper's plateau drops so far: 0.1 ** drops (float32).
  first_bad_step: jax.Array  # The first step whose loss was not finite, or -1.


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  return optimizer.paper_sgd(config.optimizer.momentum, config.optimizer.weight_decay,
                             optimizer.parse_lr_multipliers(config.optimizer.lr_multipliers))


def input_shape(config: ml_collections.ConfigDict, batch: int) -> tuple[int, ...]:
  """The shape of a batch of model inputs (crops of data.crop_size)."""
  return (batch, config.data.crop_size, config.data.crop_size, 3)


def _init_fn(config: ml_collections.ConfigDict, model, mesh: Mesh) -> Callable:
  tx = make_optimizer(config)

  def init():
    images = jnp.zeros(input_shape(config, mesh.shape['data']), jnp.float32)
    params = model.init(jax.random.key(config.seed), images, train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), lr_factor=jnp.ones((), jnp.float32),
                      first_bad_step=jnp.full((), -1, jnp.int32))

  return init


def abstract_train_state(config: ml_collections.ConfigDict, model, mesh: Mesh):
  """Shapes, dtypes and shardings of the state (for creating it, or restoring onto `mesh`)."""
  with jax.set_mesh(mesh):
    abstract = jax.eval_shape(_init_fn(config, model, mesh))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      abstract, sharding.state_shardings(mesh, abstract))


def shardings_of(abstract_state):
  return jax.tree.map(lambda s: s.sharding, abstract_state)


def create_train_state(config: ml_collections.ConfigDict, model, mesh: Mesh) -> TrainState:
  """A fresh state, initialised directly into its shardings (no host copy of 61M floats)."""
  out_shardings = shardings_of(abstract_train_state(config, model, mesh))
  with jax.set_mesh(mesh):
    return jax.jit(_init_fn(config, model, mesh), out_shardings=out_shardings)()


def abstract_stats(config: ml_collections.ConfigDict):
  """Shapes of the data statistics the step reads: None unless data.augment_on_device."""
  if not config.data.augment_on_device:
    return None
  size = config.data.image_size
  return statistics.DataStats(
      mean_image=jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
      pca_eigval=jax.ShapeDtypeStruct((3,), jnp.float32),
      pca_eigvec=jax.ShapeDtypeStruct((3, 3), jnp.float32),
      pixel_scale=jax.ShapeDtypeStruct((3,), jnp.float32))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean negative log-probability of the labels under the softmax (§2's objective)."""
  with jax.named_scope('softmax'):
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def top_k_errors(logits: jax.Array, labels: jax.Array, ks=(1, 5)) -> dict[str, jax.Array]:
  """Per-example indicators: 1 where the label is not among the k highest scores.

  Ties go to the lower class index, as with argmax: a net that scores every class alike
  is right only for class 0, never for all.
  """
  label_score = jnp.take_along_axis(logits, labels[:, None], axis=1)
  lower_index = jnp.arange(logits.shape[1]) < labels[:, None]
  # Classes ranked above the label.
  rank = jnp.sum((logits > label_score) | ((logits == label_score) & lower_index), axis=1)
  broken = ~jnp.isfinite(label_score[:, 0])  # NaN compares false: count it as an error.
  return {f'top{k}_error': ((rank >= k) | broken).astype(jnp.float32) for k in ks}


def make_train_step(config: ml_collections.ConfigDict, model, mesh: Mesh,
                    schedule: Callable) -> Callable:
  """The jitted step: (state, batch, stats) -> (state, metrics); the state is donated.

  Call (and lower) it inside `jax.set_mesh(mesh)`: the model reads the mesh in context.

  batch: 'image' (model inputs, or uint8 images when data.augment_on_device) and 'label',
  split over 'data'. stats: statistics.DataStats, used only for on-device augmentation.
  """
  tx = make_optimizer(config)
  frozen = optimizer.frozen_layers(optimizer.parse_lr_multipliers(config.optimizer.lr_multipliers))
  data = config.data
  base_key = jax.random.key(config.seed)

  def step_fn(state: TrainState, batch, stats):
    key = jax.random.fold_in(base_key, state.step)
    dropout_key, augment_key = jax.random.split(key)
    images = batch['image']
    if data.augment_on_device:
      images = augment.device_augment(augment_key, images, stats, crop_size=data.crop_size,
                                      flip=data.flip, pca_noise_std=data.pca_noise_std)

    def loss_fn(params):
      # Frozen layers: no gradient, so XLA drops their backward pass too.
      params = {k: jax.lax.stop_gradient(v) if k in frozen else v for k, v in params.items()}
      logits = model.apply({'params': params}, images, train=True,
                           rngs={'dropout': dropout_key})
      return cross_entropy(logits, batch['label']), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    lr = schedule(state.step) * state.lr_factor
    updates, opt_state = tx.update(grads, state.opt_state, state.params, learning_rate=lr)
    finite = jnp.isfinite(loss)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        first_bad_step=jnp.where((state.first_bad_step < 0) & ~finite, state.step,
                                 state.first_bad_step))
    with jax.named_scope('softmax'):  # Errors read fc8's outputs, split over the towers.
      errors = jax.tree.map(jnp.mean, top_k_errors(logits, batch['label']))
    return new_state, {'loss': loss, 'learning_rate': lr, **errors}

  replicated = NamedSharding(mesh, P())
  out_shardings = (shardings_of(abstract_train_state(config, model, mesh)), replicated)
  # The update overwrites the donated weights in place. XLA:CPU's default copy insertion
  # cannot tell that the backward pass has read a weight by then (nothing orders fc7's input
  # gradient before fc7's update) and copies every such weight first, 67 MB for fc7 alone;
  # its region analysis can, and drops the copies (docs/benchmarks.md, "Three things
  # XLA:CPU did for nothing").
  cpu = mesh.devices.flat[0].platform == 'cpu'
  options = {'xla_cpu_copy_insertion_use_region_analysis': True} if cpu else None
  return jax.jit(step_fn, donate_argnums=(0,), out_shardings=out_shardings,
                 compiler_options=options)
