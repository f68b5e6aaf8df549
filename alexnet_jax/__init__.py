"""alexnet_jax: a JAX/Flax reproduction of AlexNet (Krizhevsky, Sutskever & Hinton, 2012)."""
