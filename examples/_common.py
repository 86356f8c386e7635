"""Shared by the examples: JAX unless told otherwise, and the demo's Iris data and model."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from gangplank.demo import iris_classifier as classifier
from gangplank.demo import iris_split

__all__ = ("classifier", "iris_split")
