"""A run's workdir and what it keeps: checkpoints, the config, and who holds it.

`workdir` names a run's files and folders and restores its checkpoints (latest, best or
a given step) onto any mesh; `checkpointing` writes and verifies the Orbax checkpoints
(each step's checksums, damaged steps set aside); `saved_config` keeps the config a run
was started with and refuses a rerun that would change the experiment; `workdir_lock`
keeps a second run out of a workdir.

May import: jax, orbax, ml_collections, numpy, the standard library and
`alexnet_jax.runtime`. Nothing that knows the net or the data.
"""
