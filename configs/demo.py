"""The offline demo: the whole path on a laptop CPU in a few minutes, no downloads.

  python -m alexnet_jax.main --config=configs/demo.py --workdir=runs/demo

Generated images of ten shape classes (alexnet_jax/data/synthetic.py) -> prepared as a
TFDS ArrayRecord dataset -> Grain with the paper's augmentation -> the two-tower net with
each tower on its own (forced CPU) device -> the paper's optimizer -> Orbax checkpoints ->
centre and ten-patch evaluation -> TensorBoard events and results.json. Small images (72 px, 64 px
crops) keep it fast. The net is the paper's; the recipe differs where five epochs on 4,000
images need it: He's initialisation on inputs of unit scale (torchvision's per-channel
mean and deviation instead of §2's mean image). With §5's or Caffe's initialisation on
0..255 pixels the net sits at chance for hundreds of steps and leaves that plateau at a
step that rounding moves (docs/benchmarks.md, "The demo's spread"). Batch 32 at learning
rate 0.005 (0.01 falls back to chance within 250 steps), divided by 10 after epoch 4.
"""

from alexnet_jax.configs import default


def get_config():
  config = default.get_config()
  config.host_devices = 2  # One CPU device per tower.
  config.mesh.tower = 2
  config.model.num_classes = 10
  config.data.source = 'synthetic'
  config.data.data_dir = '~/.cache/alexnet_jax/demo_data'
  config.data.image_size = 72
  config.data.crop_size = 64
  config.data.synthetic_train_size = 4000
  config.data.synthetic_eval_size = 500
  config.data.worker_count = 0
  config.data.mean = 'torchvision'  # Inputs of unit scale, for He's initialisation.
  config.model.init = 'he'
  config.optimizer.learning_rate = 0.005
  config.optimizer.schedule = 'steps'
  config.optimizer.step_epochs = '4'
  config.train.batch_size = 32
  config.train.num_epochs = 5
  config.train.log_every_steps = 25
  config.eval.batch_size = 100
  config.checkpoint.every_steps = 250  # Every 2 epochs: each save costs training time.
  return config
