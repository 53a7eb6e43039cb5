"""Built-in methods; importing this package registers them (one file per method)."""

from . import dirk, proden  # noqa: F401
