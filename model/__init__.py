"""The model's one home: architectures, the bundle format, the preprocessor, calibration and inference.

Scoring and training both import from here; this package imports only the kernel (`nightshift`).
"""
