"""The config a run saved in its workdir: resume or evaluate a run without retyping it.

  python -m alexnet_jax.main --workdir=runs/alexnet
  python -m alexnet_jax.main --workdir=runs/alexnet --config.train.num_epochs=120
  python -m alexnet_jax.main --workdir=runs/alexnet --config.eval.only=True

`alexnet_jax.main` uses this file, with the workdir as its argument, whenever --config is
left out (explicitly: --config=configs/saved_run.py:runs/alexnet). Overrides apply on top;
those that would change the experiment are refused as on any rerun (saved_config.py).
"""

from alexnet_jax.configs import default
from alexnet_jax.run import saved_config


def get_config(workdir: str):
  return saved_config.load_into(default.get_config(), workdir)
