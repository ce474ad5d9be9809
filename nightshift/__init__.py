"""Nightshift's shared kernel: settings, dataset spec, lake layout and model registry."""

__version__ = "0.1.0"
