"""Test set-up: eight CPU devices, forced before JAX starts, for the mesh and HLO tests."""

import os

from alexnet_jax.training import sharding

# Patient collectives: tests run beside other work on small CI machines (sharding.py).
os.environ['XLA_FLAGS'] = sharding.patient_xla_flags(
    os.environ.get('XLA_FLAGS', '--xla_force_host_platform_device_count=8'))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
