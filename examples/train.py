"""Train a model and push its metrics to a Pushgateway after every epoch.

python examples/train.py --pushgateway http://localhost:9091
python examples/train.py --short     # no Pushgateway: 2 epochs, print the series instead
"""

from __future__ import annotations

import argparse

import keras
from _common import classifier, iris_split
from prometheus_client import generate_latest

import gangplank


def main() -> None:
    parser = argparse.ArgumentParser(description="Train on Iris, pushing metrics.")
    parser.add_argument("--pushgateway", help="Pushgateway URL; without it nothing is pushed")
    parser.add_argument("--job", default="iris-train")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--short", action="store_true", help="2 epochs, print the series")
    args = parser.parse_args()

    reader = (
        gangplank.PushgatewayReader(args.pushgateway, job=args.job)
        if args.pushgateway
        else gangplank.RegistryReader()  # the same series, kept in-process
    )
    provider = gangplank.configure(reader, service_name=args.job, set_global=False)

    x_train, y_train, _, _ = iris_split()
    model = classifier()
    # Halve the learning rate every 10 epochs; Gangplank reads it from the optimizer.
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: lr / 2 if epoch and epoch % 10 == 0 else lr
    )
    metrics = gangplank.TrainingMetrics(
        provider, weight_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0, per_layer=True
    )
    model.fit(
        x_train,
        y_train,
        validation_split=0.2,
        epochs=2 if args.short else args.epochs,
        batch_size=16,
        verbose=0,
        callbacks=[schedule, metrics],
    )
    for line in generate_latest(reader.registry).decode().splitlines():
        if line.startswith("gangplank_train_") and "_bucket" not in line:
            print(line)
    provider.shutdown()  # with a Pushgateway: the final push, retried within its timeout


if __name__ == "__main__":
    main()
