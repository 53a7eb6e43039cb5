"""pllbench: partial-label learning under instance-dependent candidates."""

__version__ = "0.1.0"
