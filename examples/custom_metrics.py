"""Custom Keras metrics and your own ``logs`` keys are exported like the built-in ones.

python examples/custom_metrics.py [--short]
"""

from __future__ import annotations

import argparse

import keras
from _common import classifier, iris_split
from prometheus_client import generate_latest

import gangplank


class GradientFree(keras.callbacks.Callback):
    """Adds a key to ``logs``: Gangplank exports it as ``gangplank_train_weight_norm``."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            weights = self.model.trainable_weights
            logs["weight_norm"] = float(
                sum(float(keras.ops.sum(keras.ops.square(w))) for w in weights) ** 0.5
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="Custom metrics on Iris.")
    parser.add_argument("--short", action="store_true", help="2 epochs")
    args = parser.parse_args()

    x_train, y_train, _, _ = iris_split()
    model = classifier()
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top-2 accuracy"),
        ],
    )
    reader = gangplank.RegistryReader()
    provider = gangplank.configure(reader, set_global=False)
    model.fit(
        x_train,
        y_train,
        epochs=2 if args.short else 20,
        verbose=0,
        # GradientFree runs first so its key is in logs when Gangplank reads them.
        callbacks=[GradientFree(), gangplank.TrainingMetrics(provider, update_freq=5)],
    )
    for line in generate_latest(reader.registry).decode().splitlines():
        if line.startswith(("gangplank_train_top_2", "gangplank_train_weight_norm",
                            "gangplank_train_batch_loss")):  # fmt: skip
            print(line)
    provider.shutdown()


if __name__ == "__main__":
    main()
