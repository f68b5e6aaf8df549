"""Every configuration field of alexnet_jax, with its default and what it means.

Other configs import this file and change only what differs (see ilsvrc2012.py, demo.py).
Any field can be overridden on the command line, e.g. `--config.model.lrn=False`.
Section numbers (§) refer to Krizhevsky, Sutskever & Hinton, NIPS 2012.
"""

import ml_collections


def get_config():
  """Returns the default configuration: the paper's net and recipe on ILSVRC-2012."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter init, dropout and the data order.
  config.host_devices = 0  # If > 0: run on this many CPU devices forced on the host (the
  #   offline demo, or trying a mesh without accelerators), in each process of a
  #   multi-process job (launch/local_multiprocess.sh); 0: the real devices.

  # --- The net (§3, Figure 2) -------------------------------------------------------------
  config.model = model = ml_collections.ConfigDict()
  model.layout = 'paper'  # 'paper' (two towers, 96-256-384-384-256), 'torchvision'
  #                         (one tower, 64-192-384-256-256, no LRN, "one weird trick") or
  #                         'cifar10' (Figure 1's four-layer CIFAR-10 net, 32-32-64 + fc).
  model.towers = 2  # 2: the paper's net. 1: one tower with half the kernels (footnote 2).
  model.num_classes = 1000
  model.activation = 'relu'  # 'relu' (§3.1) or 'tanh' (the Figure 1 baseline).
  model.lrn = True  # Local response normalisation after conv1 and conv2 (§3.3).
  model.lrn_size = 5  # n: adjacent kernel maps summed over.
  model.lrn_k = 2.0
  model.lrn_alpha = 1e-4
  model.lrn_beta = 0.75
  model.lrn_alpha_convention = 'printed'  # 'printed': alpha as in the §3.3 formula.
  #   'divided': alpha/n as in cuda-convnet, Caffe and PyTorch (effective 2e-5 for 1e-4).
  model.pool_window = 3  # Overlapping pooling z=3, s=2 (§3.4); z=2, s=2 is the ablation.
  model.pool_stride = 2
  model.dropout_rate = 0.5  # On the outputs of fc6 and fc7 (§4.2).
  model.extra_conv6 = False  # The "1 CNN*" of Table 2: a sixth conv layer after pool5.
  model.remove_conv = ''  # '', 'conv3', 'conv4' or 'conv5': the depth ablation of §7.
  model.init = 'paper'  # 'paper': N(0, 0.01^2), biases 1 in conv2/4/5 and fc6/7 (§5).
  #   'caffe': std 0.01 (0.005 in fc6/fc7), biases 0.1. 'cuda-convnet': std 0.03 in conv3-5.
  #   'he' (not the paper's): std sqrt(2 / fan-in), biases 0; needs data.mean='torchvision'.
  model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
  model.matmul_precision = 'default'  # How float32 convolutions and matmuls are computed:
  #   'default': each backend's fast path (TF32 tensor cores on A100/H100; one bfloat16
  #   pass on TPUs, where even the towers' exchanged maps become bfloat16), accumulating
  #   in float32. 'high': three bfloat16 passes on TPUs. 'highest': float32 throughout, as
  #   the paper's GPUs computed (§3.2), at several times the TPU's matmul time. The
  #   default keeps what accelerators are fast at, which SGD's noise does not notice, and
  #   every measured speed; 'highest' is for comparing numbers across backends. CPUs
  #   compute float32 in float32 under every setting.
  model.pretrained = ''  # A fresh run starts from these weights: torchvision AlexNet's
  #   state dict (.pth from torch.save, .npz or .safetensors; layout 'torchvision' only),
  #   or 'torchvision': its published ImageNet weights, downloaded once into
  #   ~/.cache/alexnet_jax (published_weights.py). Layers missing from the file (or fc8 for
  #   another class count) start fresh.
  model.pretrained_layers = ''  # Load only these layers of model.pretrained, e.g.
  #   'conv1,conv2,conv3,conv4,conv5'; '': every layer the file has.

  # --- Devices ------------------------------------------------------------------------------
  config.mesh = mesh = ml_collections.ConfigDict()
  mesh.tower = 2  # Devices per tower group: 2 puts each tower on its own device, 1 runs
  #                 both towers on every device. Must be 1 or model.towers.
  mesh.data = -1  # Devices the batch is split over; -1: all devices / mesh.tower.

  # --- Data (§2, §4.1) ----------------------------------------------------------------------
  config.data = data = ml_collections.ConfigDict()
  data.source = 'imagenet2012'  # 'imagenet2012': the official tars, prepared once at
  #   256x256 (shorter side 256, central crop). 'folder': root/<split>/<class>/*.jpg.
  #   'tfds': any TFDS catalog dataset by name (data.name). 'synthetic': generated images.
  data.name = ''  # TFDS dataset name for source='tfds' (e.g. 'cifar10').
  data.data_dir = '~/tensorflow_datasets'  # Where prepared datasets live.
  data.manual_dir = ''  # Where the ILSVRC2012_img_{train,val}.tar archives are.
  data.folder = ''  # Root of an image folder for source='folder'.
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.image_size = 256  # Shorter side rescaled to this, central square crop (§2).
  data.crop_size = 224  # Random training crops and test patches (§4.1); the net's input.
  #   224: cuda-convnet's geometry (conv1 pads 3 rows/cols at the bottom/right, giving
  #   Figure 2's 55x55); 227: Caffe's (no padding, the same shapes).
  data.jpeg_quality = 90  # Quality of the re-encoded 256x256 JPEGs.
  data.flip = True  # Random horizontal reflections (§4.1).
  data.pca_noise_std = 0.1  # sigma of the PCA colour noise alphas (§4.1); 0 turns it off.
  data.pca_stats = 'imagenet'  # 'imagenet': the published ImageNet eigenpairs; 'dataset':
  #   computed over the training set by `python -m alexnet_jax.data.prepare` and cached.
  data.mean = 'dataset'  # 'dataset': per-pixel mean image of the training set (§2),
  #   cached beside the data; 'imagenet': the per-channel constants; 'torchvision': what
  #   torchvision's pretrained nets expect, RGB/255 minus (0.485, 0.456, 0.406) divided by
  #   (0.229, 0.224, 0.225); 'none'.
  data.augment_on_device = False  # True: the host ships uint8 256x256 images and the
  #   jitted step crops, flips, adds colour noise and subtracts the mean.
  data.worker_count = 4  # Grain worker processes decoding and augmenting (0: in-process).
  data.worker_buffer_size = 2
  data.shuffle_seed = 0
  data.synthetic_train_size = 1024  # Images per split for source='synthetic'.
  data.synthetic_eval_size = 256
  data.val_labels_file = ''  # ILSVRC-2012 validation ground truth: one wnid per line, line k
  #   for ILSVRC2012_val_<k>.JPEG; '': the copy shipped with tensorflow-datasets.
  data.prepare_processes = 0  # Processes converting images in `data.prepare`; 0: all cores.
  data.allow_partial = False  # True: a source with fewer images or classes than published
  #   (ILSVRC-2012's 1,281,167 / 50,000 in 1,000 classes) is a deliberate subset, prepared
  #   with a note; False: preparing it stops and says what is missing.

  # --- Training (§5) ------------------------------------------------------------------------
  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 128  # Global batch, split over the 'data' mesh axis.
  train.num_epochs = 90.0
  train.num_steps = -1  # If > 0, overrides num_epochs.
  train.log_every_steps = 100
  train.eval_every_steps = -1  # -1: once per epoch.
  # A training step that runs this many times longer than the median step, and longer than
  # watchdog_min_seconds, is a hang: every thread's stack goes to the log and the run
  # exits with status 75 for a scheduler to requeue (runtime/watchdog.py).
  train.watchdog_factor = 100.0
  train.watchdog_min_seconds = 180.0

  config.optimizer = opt = ml_collections.ConfigDict()
  opt.learning_rate = 0.01  # epsilon (§5).
  opt.momentum = 0.9
  opt.weight_decay = 5e-4  # On weights only, not biases.
  opt.schedule = 'plateau'  # 'plateau': /10 when the validation error stops improving,
  #   at most `plateau_max_drops` times (§5). 'steps': /10 at `step_epochs`. 'cosine'.
  opt.plateau_patience = 2  # Evaluations without improvement before a drop.
  opt.plateau_min_delta = 0.0  # Improvement in top-1 error that counts.
  opt.plateau_max_drops = 3
  opt.step_epochs = '30,60,80'  # Epochs at which 'steps' divides the rate by 10.
  opt.warmup_epochs = 0.0  # Linear warm-up (not in the paper), for large batches.
  opt.lr_multipliers = ''  # Fine-tuning: per-layer factors on the learning rate, e.g.
  #   'conv1=0,conv2=0,fc8=10'; 0 freezes a layer (not in the paper).

  # --- Evaluation (§4.1 test-time patches) -------------------------------------------------
  config.eval = ev = ml_collections.ConfigDict()
  ev.batch_size = 128
  ev.ten_patch = True  # Also report the ten-patch (corners + centre, flipped) error: at
  #   the last evaluation of a training run (the others use the centre patch) and in eval.only.
  ev.only = False  # Evaluate a checkpoint and exit (no training).
  ev.checkpoint_step = -1  # Which checkpoint for eval.only; -1: the latest.
  ev.ensemble_workdirs = ''  # Comma-separated workdirs whose softmax outputs are averaged.

  # --- Checkpoints --------------------------------------------------------------------------
  config.checkpoint = ckpt = ml_collections.ConfigDict()
  ckpt.every_steps = 1000
  ckpt.keep = 3  # The last N, plus the best by validation top-1 error.
  ckpt.keep_best = True
  ckpt.async_save = True
  return config
