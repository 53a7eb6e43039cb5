"""Built-in dataset loaders; importing this package registers them."""

from . import cifar, flowers, fmnist, pets, synthetic  # noqa: F401
