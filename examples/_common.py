"""Shared by the examples: the embedded Iris data and a small Keras classifier."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from gangplank.data import SPECIES, load_iris


def iris_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised Iris features and labels: 100 rows to train on, 50 to test."""
    features, labels = load_iris()
    order = np.random.default_rng(seed).permutation(len(labels))
    features, labels = features[order], labels[order]
    mean, std = features[:100].mean(axis=0), features[:100].std(axis=0)
    features = (features - mean) / std
    return features[:100], labels[:100], features[100:], labels[100:]


def classifier(seed: int = 0) -> keras.Model:
    """A compiled three-class MLP for the four Iris features."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(len(SPECIES), activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
