"""Gangplank's benchmarks: figures and ratios measured side by side in one run."""

import os

# Before anything imports Keras.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
