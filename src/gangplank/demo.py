"""``gangplank demo``: train, evaluate and serve a small model with every series exported.

It runs on the Iris measurements that ship with Gangplank (no download) and, by default,
exports through an in-process scrape endpoint on 127.0.0.1, so nothing else is needed.
Halfway through serving it shifts the inputs, so the drift detectors have something to find.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import keras
import numpy as np
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from . import drift
from .callback import TrainingMetrics
from .catalogue import WEIGHT_BUCKETS_1_0
from .data import SPECIES, load_iris
from .otlp import otlp_reader
from .provider import configure
from .proxy import InstrumentedModel
from .pushgateway import PushgatewayReader
from .scrape import ScrapeEndpoint

__all__ = ("DemoOptions", "iris_classifier", "iris_split", "run")

_HIDDEN_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


@dataclass
class DemoOptions:
    """What ``gangplank demo`` does; the CLI flags map onto these fields."""

    port: int = 9464
    pushgateway: str | None = None
    otlp: str | None = None
    epochs: int = 20
    requests: int = 120
    serve: bool = False
    seed: int = 7
    batch_size: int = 16


class _Progress(keras.callbacks.Callback):
    """One line per epoch, readable by a person."""

    def __init__(self, out: TextIO, epochs: int) -> None:
        super().__init__()
        self.out = out
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        every = max(1, self.epochs // 5)
        if (epoch + 1) % every == 0 or epoch + 1 == self.epochs:
            self.out.write(
                f"  epoch {epoch + 1:>3}/{self.epochs}  loss {logs.get('loss', float('nan')):.3f}"
                f"  accuracy {logs.get('accuracy', float('nan')):.3f}"
                f"  val_accuracy {logs.get('val_accuracy', float('nan')):.3f}\n"
            )


def iris_classifier(seed: int = 0) -> keras.Model:
    """The compiled three-class MLP the demo and the examples train on Iris."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(16, activation="relu"),
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


def iris_split(
    seed: int = 0, standardize: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Iris as ``(x_train, y_train, x_test, y_test)``: 100 rows and 50, shuffled.

    Features are standardised with the training rows' mean and deviation unless
    ``standardize=False`` (then they are in centimetres).
    """
    features, labels = load_iris()
    order = np.random.default_rng(seed).permutation(len(labels))
    features, labels = features[order], labels[order]
    mean, std = features[:100].mean(axis=0), features[:100].std(axis=0)
    if standardize:
        features = (features - mean) / std
    return features[:100], labels[:100], features[100:], labels[100:]


def run(options: DemoOptions, out: TextIO) -> MeterProvider:
    """Run the demo, writing progress and the final table to ``out``; returns the provider."""
    endpoint = ScrapeEndpoint(port=options.port)
    readers: list[Any] = [endpoint]
    if options.pushgateway:
        readers.append(PushgatewayReader(options.pushgateway, job="gangplank-demo"))
    if options.otlp:
        readers.append(otlp_reader(options.otlp, interval=2.0))
    provider = configure(*readers, service_name="gangplank-demo", set_global=False)
    out.write(f"Gangplank demo: metrics on {endpoint.url}\n")

    x_train, y_train, x_test, y_test = iris_split(options.seed)
    model = iris_classifier(options.seed)
    out.write(f"Training a {model.count_params()}-weight classifier on Iris …\n")
    model.fit(
        x_train,
        y_train,
        validation_split=0.2,
        epochs=options.epochs,
        batch_size=options.batch_size,
        verbose=0,
        callbacks=[
            TrainingMetrics(provider, weight_buckets=WEIGHT_BUCKETS_1_0),
            _Progress(out, options.epochs),
        ],
    )
    results = model.evaluate(
        x_test, y_test, verbose=0, return_dict=True, callbacks=[TrainingMetrics(provider)]
    )
    out.write(f"Evaluated: loss {results['loss']:.3f}, accuracy {results['accuracy']:.3f}\n")

    reference = model.predict(x_train, verbose=0)
    detectors = [
        drift.ChiSquare(reference, window=60),
        drift.KS(x_train, window=60, on="inputs"),
    ]
    served = InstrumentedModel(model, provider, name="iris", version="1", drift=detectors)
    out.write(f"Serving {options.requests} requests; the inputs shift halfway …\n")
    rng = np.random.default_rng(options.seed)
    _serve(served, x_test, options.requests, rng)
    monitor = served.drift_monitor
    if monitor is not None:
        monitor.join(timeout=30)

    if options.pushgateway:
        readers[1].push()
    out.write("\nSeries exported (as a Prometheus scrape sees them):\n")
    out.write(table(generate_latest(endpoint.registry).decode()))
    out.write(f"\nSee them yourself:  curl -s {endpoint.url}\n")
    if options.serve:
        out.write("Serving until Ctrl-C …\n")
        try:
            while True:
                _serve(served, x_test, 10, rng, shift=False)
                time.sleep(1.0)
        except KeyboardInterrupt:
            out.write("Stopping.\n")
    return provider


def _serve(
    served: InstrumentedModel,
    x: np.ndarray,
    requests: int,
    rng: np.random.Generator,
    shift: bool = True,
) -> None:
    for i in range(requests):
        size = int(rng.integers(1, 9))
        batch = x[rng.integers(0, len(x), size)]
        if shift and i >= requests // 2:
            # Petal measurements drift upwards: more flowers look like virginica.
            batch = batch + np.array([0.0, 0.0, 1.5, 1.5], dtype=np.float32)
        if i % 3 == 0:
            served(batch)
        else:
            served.predict(batch, verbose=0)


def table(exposition: str, families: Sequence[str] = ("gangplank_",)) -> str:
    """A readable table of the Gangplank samples in a text exposition (buckets left out)."""
    rows: list[tuple[str, str, str]] = []
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith(tuple(families)):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(
                f"{k}={v}" for k, v in sorted(sample.labels.items()) if k not in _HIDDEN_LABELS
            )
            rows.append((sample.name, labels, f"{sample.value:.6g}"))
    if not rows:
        return "  (none)\n"
    width = max(len(r[0]) for r in rows)
    label_width = min(60, max(len(r[1]) for r in rows))
    return "".join(f"  {n:<{width}}  {lab:<{label_width}}  {v:>12}\n" for n, lab, v in rows)
