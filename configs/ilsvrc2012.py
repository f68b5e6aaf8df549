"""The paper's recipe on ILSVRC-2012 (§4-§5): two towers, batch 128, 90 epochs, plateau /10.

  python -m alexnet_jax.prepare --config=configs/ilsvrc2012.py \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/alexnet

Ablations are one override away, e.g. --config.model.lrn=False, --config.model.towers=1
--config.mesh.tower=1, --config.model.pool_window=2, --config.data.pca_noise_std=0.
"""

from configs import default


def get_config():
  """The defaults are the paper's recipe; this file names it."""
  return default.get_config()
