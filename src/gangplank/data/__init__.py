"""Small data sets that ship with Gangplank, for the demo and the examples (no downloads)."""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ("SPECIES", "load_iris")

SPECIES = ("setosa", "versicolor", "virginica")


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """Fisher's Iris measurements: ``(features float32 (150, 4), labels int32 (150,))``.

    Features are sepal length, sepal width, petal length and petal width in centimetres;
    labels index :data:`SPECIES`.
    """
    text = resources.files(__package__).joinpath("iris.csv").read_text()
    rows = [line.split(",") for line in text.splitlines()[1:] if line]
    features = np.array([[float(v) for v in row[:4]] for row in rows], dtype=np.float32)
    labels = np.array([SPECIES.index(row[4]) for row in rows], dtype=np.int32)
    return features, labels
