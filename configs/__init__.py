"""The run configurations: `default.py` declares every field, the others change a few.

Installed as `alexnet_jax.configs` (pyproject.toml), so that configs import each other
wherever a command runs from. May import: ml_collections, `alexnet_jax.run` (saved_run's
config of a workdir) and `alexnet_jax.runtime`.
"""
