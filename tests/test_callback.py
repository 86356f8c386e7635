"""TrainingMetrics on an in-memory reader: hooks called directly, plus tiny real fits."""

from __future__ import annotations

import gc
import logging
import math
import re
from typing import Any

import keras
import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import gangplank
from gangplank import catalogue
from gangplank.weights import summarize

LOGGER = "gangplank.callback"


# --- helpers -------------------------------------------------------------------------------


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """``{otel name: Metric}`` from one collection."""
    data = reader.get_metrics_data()
    found: dict[str, Any] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found[metric.name] = metric
    return found


def value(metrics: dict[str, Any], name: str, **attributes: Any) -> Any:
    """The value (number) or histogram point of the one series of ``name`` with ``attributes``."""
    points = [
        p
        for p in metrics[name].data.data_points
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(points) == 1, (name, attributes, points)
    point = points[0]
    return point.value if hasattr(point, "value") else point


def data(n: int = 64, features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    return x, y


def small_model(lr: Any = 0.01, batchnorm: bool = False) -> keras.Model:
    layers: list[Any] = [keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="hidden")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(name="norm"))
    layers.append(keras.layers.Dense(1, activation="sigmoid", name="out"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(lr), "binary_crossentropy", metrics=["accuracy"])
    return model


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture
def callback(meter_provider: MeterProvider) -> gangplank.TrainingMetrics:
    return gangplank.TrainingMetrics(meter_provider)


def run_epochs(cb: gangplank.TrainingMetrics, model: Any, epoch_logs: list[dict[str, Any]]) -> None:
    """Drive the hooks the way ``fit`` does, without fitting."""
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, logs in enumerate(epoch_logs):
        cb.on_epoch_begin(epoch)
        cb.on_train_batch_begin(0)
        cb.on_train_batch_end(0, logs)
        cb.on_epoch_end(epoch, logs)
    cb.on_train_end(epoch_logs[-1] if epoch_logs else None)


# --- fit and evaluate ----------------------------------------------------------------------


@pytest.mark.crossbackend
def test_fit_with_validation_records_every_train_series(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(80)
    model = small_model(batchnorm=True)
    cb = gangplank.TrainingMetrics(meter_provider)
    history = model.fit(
        x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0, callbacks=[cb]
    )
    m = collect(reader)
    assert value(m, "gangplank.train.epochs.count") == 3
    assert value(m, "gangplank.train.loss") == pytest.approx(history.history["loss"][-1])
    assert value(m, "gangplank.train.accuracy") == pytest.approx(history.history["accuracy"][-1])
    assert value(m, "gangplank.train.val_loss") == pytest.approx(history.history["val_loss"][-1])
    assert value(m, "gangplank.train.val_accuracy") == pytest.approx(
        history.history["val_accuracy"][-1]
    )
    assert value(m, "gangplank.train.model.parameters.count") == model.count_params()
    assert value(m, "gangplank.train.model.trainable_parameters") == trainable_count(model)
    assert value(m, "gangplank.train.model.non_trainable_parameters") == 12  # BN mean + var
    assert value(m, "gangplank.train.learning_rate") == pytest.approx(0.01)
    assert value(m, "gangplank.train.steps") == 3 * 4  # 60 training rows, batches of 16
    assert value(m, "gangplank.train.samples") == 3 * 60
    assert value(m, "gangplank.train.nonfinite_loss") == 0
    duration = value(m, "gangplank.train.epoch.duration")
    assert duration.count == 3 and duration.sum > 0
    assert list(duration.explicit_bounds) == list(catalogue.EPOCH_SECONDS_BUCKETS)
    assert value(m, "gangplank.train.elapsed_time") >= duration.sum
    start = value(m, "gangplank.train.start.timestamp")
    assert value(m, "gangplank.train.last_success.timestamp") >= start > 1.7e9
    # fit's validation passes never produce the test series.
    assert not [name for name in m if name.startswith("gangplank.test.")]
    assert "gangplank.train.model.weights" not in m  # no buckets given
    assert cb.errors == 0


def test_instruments_follow_the_catalogue(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(32)
    model = small_model()
    cb = gangplank.TrainingMetrics(meter_provider, weight_buckets=(0.0,))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    model.evaluate(x, y, verbose=0, callbacks=[cb])
    m = collect(reader)
    by_name = {i.name: i for i in catalogue.CATALOGUE}
    checked = 0
    for name, metric in m.items():
        if name in by_name:
            assert metric.unit == by_name[name].unit, name
            assert metric.description == by_name[name].description, name
            checked += 1
    assert checked >= 17


@pytest.mark.crossbackend
def test_evaluate_gives_the_test_series(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(50)
    model = small_model()
    cb = gangplank.TrainingMetrics(
        meter_provider, weight_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0
    )
    model.fit(x, y, epochs=1, batch_size=10, validation_data=(x, y), verbose=0, callbacks=[cb])
    assert not [name for name in collect(reader) if name.startswith("gangplank.test.")]
    result = model.evaluate(x, y, batch_size=10, verbose=0, callbacks=[cb], return_dict=True)
    m = collect(reader)
    assert value(m, "gangplank.test.loss") == pytest.approx(result["loss"])
    assert value(m, "gangplank.test.accuracy") == pytest.approx(result["accuracy"])
    assert value(m, "gangplank.test.model.parameters.count") == model.count_params()
    assert value(m, "gangplank.test.steps") == 5
    assert value(m, "gangplank.test.elapsed_time") > 0
    point = value(m, "gangplank.test.model.weights")
    assert point.count == trainable_count(model)
    # The train series did not move.
    assert value(m, "gangplank.train.epochs.count") == 1
    assert cb.errors == 0


def test_evaluate_without_fit_and_a_list_result(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(30)
    model = small_model()
    cb = gangplank.TrainingMetrics(meter_provider)
    loss, accuracy = model.evaluate(x, y, verbose=0, callbacks=[cb])
    m = collect(reader)
    assert value(m, "gangplank.test.loss") == pytest.approx(loss)
    assert value(m, "gangplank.test.accuracy") == pytest.approx(accuracy)
    assert not [name for name in m if name.startswith("gangplank.train.") and "learning" in name]


@pytest.mark.crossbackend
def test_weight_histogram_at_train_end(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(32)
    model = small_model(batchnorm=True)
    bounds = gangplank.HISTOGRAM_WEIGHT_BUCKETS_0_3
    cb = gangplank.TrainingMetrics(meter_provider, weight_buckets=bounds)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    point = value(collect(reader), "gangplank.train.model.weights")
    arrays = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    expected = summarize(arrays, bounds)
    assert point.count == trainable_count(model) == expected.count
    assert list(point.bucket_counts) == list(expected.bucket_counts)
    assert list(point.explicit_bounds) == list(bounds)
    assert point.sum == pytest.approx(sum(float(a.sum()) for a in arrays), rel=1e-5)


def test_weight_histogram_only_at_train_end(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    model = small_model()
    cb = gangplank.TrainingMetrics(meter_provider, weight_buckets=(0.0,))
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_epoch_end(0, {"loss": 1.0})
    assert "gangplank.train.model.weights" not in collect(reader)
    cb.on_train_end()
    gc.collect()  # the provider holds producers weakly: the callback must keep them alive
    assert value(collect(reader), "gangplank.train.model.weights").count == trainable_count(model)


@pytest.mark.parametrize("buckets", [[], [1.0, 0.0], [0.0, 0.0], ["x"], [float("inf")]])
def test_invalid_weight_buckets(meter_provider: MeterProvider, buckets: Any) -> None:
    with pytest.raises(ValueError, match="buckets"):
        gangplank.TrainingMetrics(meter_provider, weight_buckets=buckets)


def test_per_layer_histograms(reader: InMemoryMetricReader, meter_provider: MeterProvider) -> None:
    x, y = data(32)
    model = small_model(batchnorm=True)
    cb = gangplank.TrainingMetrics(meter_provider, per_layer=True, attributes={"run": "r1"})
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    m = collect(reader)
    counts = {
        p.attributes["layer"]: p.count for p in m["gangplank.train.layer.weights"].data.data_points
    }
    assert counts == {"hidden": 4 * 6 + 6, "norm": 12, "out": 6 + 1}
    point = value(m, "gangplank.train.layer.weights", layer="hidden", run="r1")
    assert list(point.explicit_bounds) == list(gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0)
    assert "gangplank.train.model.weights" not in m  # whole-model histogram needs buckets


def test_learning_rate_schedule_is_evaluated_at_the_optimizer_step(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(40)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = small_model(lr=schedule)
    cb = gangplank.TrainingMetrics(meter_provider)
    model.fit(x, y, epochs=2, batch_size=20, verbose=0, callbacks=[cb])
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == 4
    assert value(collect(reader), "gangplank.train.learning_rate") == pytest.approx(0.1 * 0.5**4)


def test_learning_rate_logs_key_shares_the_gauge(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(32)
    model = small_model()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.05 / (epoch + 1))
    cb = gangplank.TrainingMetrics(meter_provider)
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[scheduler, cb])
    assert history.history["learning_rate"][-1] == pytest.approx(0.025)
    m = collect(reader)
    assert len(m["gangplank.train.learning_rate"].data.data_points) == 1
    assert value(m, "gangplank.train.learning_rate") == pytest.approx(0.025)
    assert (
        m["gangplank.train.learning_rate"].description == catalogue.TRAIN_LEARNING_RATE.description
    )


# --- options -------------------------------------------------------------------------------


def test_metrics_restricts_the_logs_keys(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cb = gangplank.TrainingMetrics(meter_provider, metrics=["loss", "val_loss"])
    run_epochs(cb, small_model(), [{"loss": 1.0, "val_loss": 2.0, "accuracy": 0.5}])
    m = collect(reader)
    assert value(m, "gangplank.train.loss") == 1.0
    assert value(m, "gangplank.train.val_loss") == 2.0
    assert "gangplank.train.accuracy" not in m
    assert value(m, "gangplank.train.epochs.count") == 1  # fixed series are unaffected
    assert gangplank.TrainingMetrics(meter_provider, metrics="loss").metrics == ["loss"]
    with pytest.raises(ValueError):
        gangplank.TrainingMetrics(meter_provider, metrics=[1, 2])  # type: ignore[list-item]


@pytest.mark.parametrize("freq", ["batch", 1, 3])
def test_per_batch_series(
    reader: InMemoryMetricReader, meter_provider: MeterProvider, freq: Any
) -> None:
    cb = gangplank.TrainingMetrics(meter_provider, update_freq=freq)
    cb.set_model(small_model())
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    for batch in range(4):
        cb.on_train_batch_end(batch, {"loss": float(batch)})
    every = 1 if freq == "batch" else freq
    expected = float(max(b for b in range(4) if (b + 1) % every == 0))
    assert value(collect(reader), "gangplank.train.batch.loss") == expected
    cb.on_epoch_end(0, {"loss": 9.0})
    cb.on_epoch_begin(1)
    cb.on_train_batch_end(0, {"loss": 7.0})  # global step 5
    cb.on_train_batch_end(1, {"loss": 8.0})  # global step 6
    m = collect(reader)
    assert value(m, "gangplank.train.batch.loss") == (8.0 if every in (1, 3) else expected)
    assert value(m, "gangplank.train.loss") == 9.0
    assert value(m, "gangplank.train.steps") == 4


def test_per_batch_series_in_a_real_fit(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(64)
    cb = gangplank.TrainingMetrics(meter_provider, update_freq=2)
    model = small_model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    m = collect(reader)
    assert math.isfinite(value(m, "gangplank.train.batch.loss"))
    assert "gangplank.train.batch.accuracy" in m
    assert value(m, "gangplank.train.steps") == 4


def test_no_per_batch_series_by_default(
    reader: InMemoryMetricReader, meter_provider: MeterProvider, callback: Any
) -> None:
    run_epochs(callback, small_model(), [{"loss": 1.0}])
    assert not [name for name in collect(reader) if ".batch." in name]


@pytest.mark.parametrize("freq", [0, -1, "epochs", 1.5, True, None])
def test_invalid_update_freq(meter_provider: MeterProvider, freq: Any) -> None:
    with pytest.raises(ValueError, match="update_freq"):
        gangplank.TrainingMetrics(meter_provider, update_freq=freq)


def test_attributes_on_every_series(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    attributes = {"model": "mlp", "version": 3, "shadow": False}
    cb = gangplank.TrainingMetrics(
        meter_provider, attributes=attributes, weight_buckets=(0.0,), update_freq=1
    )
    model = small_model()
    run_epochs(cb, model, [{"loss": 1.0, "val_loss": 1.5}])
    cb.on_test_begin()
    cb.on_test_end({"loss": 2.0})
    m = collect(reader)
    assert len(m) >= 20
    for name, metric in m.items():
        for point in metric.data.data_points:
            for key, expected in attributes.items():
                assert point.attributes.get(key) == expected, name


@pytest.mark.parametrize(
    "attributes",
    [
        {"job": "x"},
        {"instance": "x"},
        {"le": "1"},
        {"__name__": "x"},
        {"__meta": "x"},
        {"layer": "x"},
        {"": "x"},
        {1: "x"},
        {"ok": ["a", "b"]},
        {"ok": {"a": 1}},
        {"ok": None},
        {"ok": np.zeros(2)},
        "job=x",
    ],
)
def test_invalid_attributes(meter_provider: MeterProvider, attributes: Any) -> None:
    with pytest.raises(ValueError):
        gangplank.TrainingMetrics(meter_provider, attributes=attributes)


def test_numpy_scalar_attribute_is_accepted(meter_provider: MeterProvider) -> None:
    cb = gangplank.TrainingMetrics(meter_provider, attributes={"fold": np.int64(2)})
    assert cb.attributes == {"fold": 2} and type(cb.attributes["fold"]) is int


def test_uses_the_global_provider_by_default() -> None:
    from opentelemetry import metrics

    cb = gangplank.TrainingMetrics()
    assert cb.meter_provider is metrics.get_meter_provider()
    run_epochs(cb, small_model(), [{"loss": 1.0}])  # a no-op or proxy provider: no crash
    assert cb.errors == 0


# --- bad input -------------------------------------------------------------------------------


def test_bad_logs_values_are_skipped_or_converted(
    reader: InMemoryMetricReader, meter_provider: MeterProvider, callback: Any
) -> None:
    logs = {
        "loss": 0.5,
        "text": "high",
        "missing": None,
        "nan_metric": float("nan"),
        "inf_metric": float("inf"),
        "zero_d": np.array(3.0),
        "numpy_scalar": np.float32(1.25),
        "tensor": keras.ops.convert_to_tensor(2.5),
        "int_metric": 7,
        "flag": True,
        "vector": np.array([1.0, 2.0]),
        "nested": {"a": 1.0, "deeper": {"c": 2.0}, "bad": "x"},
        "obj": object(),
    }
    run_epochs(callback, small_model(), [logs])
    m = collect(reader)
    assert value(m, "gangplank.train.zero_d") == 3.0
    assert value(m, "gangplank.train.numpy_scalar") == 1.25
    assert value(m, "gangplank.train.tensor") == 2.5
    assert value(m, "gangplank.train.int_metric") == 7
    assert value(m, "gangplank.train.flag") == 1
    assert value(m, "gangplank.train.nested_a") == 1.0
    assert value(m, "gangplank.train.nested_deeper_c") == 2.0
    for skipped in ("text", "missing", "nan_metric", "inf_metric", "vector", "nested_bad", "obj"):
        assert f"gangplank.train.{skipped}" not in m
    assert callback.errors == 0


def test_nan_loss_is_counted_and_not_exported(
    reader: InMemoryMetricReader, meter_provider: MeterProvider, callback: Any
) -> None:
    run_epochs(
        callback, small_model(), [{"loss": 0.7}, {"loss": float("nan")}, {"loss": float("inf")}]
    )
    m = collect(reader)
    assert value(m, "gangplank.train.nonfinite_loss") == 2
    assert value(m, "gangplank.train.loss") == 0.7  # the last finite value stays
    assert value(m, "gangplank.train.epochs.count") == 3


def test_nan_loss_in_a_real_fit(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(32)
    cb = gangplank.TrainingMetrics(meter_provider, weight_buckets=(0.0,))
    model = small_model()

    def nan_loss(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.sqrt(-1.0 - keras.ops.square(y_pred))

    model.compile("sgd", nan_loss)
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert math.isnan(history.history["loss"][-1])
    m = collect(reader)
    assert value(m, "gangplank.train.nonfinite_loss") == 2
    point = value(m, "gangplank.train.model.weights")  # NaN weights are left out
    assert point.count == sum(point.bucket_counts) <= trainable_count(model)
    assert cb.errors == 0


def test_odd_key_names_and_collisions(
    reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    callback: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs = {
        "val loss": 1.0,
        "my-metric": 2.0,
        "précision": 3.0,
        "1st": 4.0,
        "a-b": 5.0,
        "a b": 6.0,  # collides with a-b after sanitising: the first one wins
        "λ": 7.0,  # nothing usable left
        "epochs_count": 8.0,  # would shadow gangplank_train_epochs_count
        "steps_total": 9.0,  # would shadow the steps counter
        "model_weights_bucket": 10.0,
    }
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        run_epochs(callback, small_model(), [logs, logs])
    m = collect(reader)
    assert value(m, "gangplank.train.val_loss") == 1.0
    assert value(m, "gangplank.train.my_metric") == 2.0
    assert value(m, "gangplank.train.pr_cision") == 3.0
    assert value(m, "gangplank.train.1st") == 4.0
    assert value(m, "gangplank.train.a_b") == 5.0
    assert value(m, "gangplank.train.epochs.count") == 2
    assert "gangplank.train.epochs_count" not in m
    assert "gangplank.train.steps_total" not in m
    assert "gangplank.train.model_weights_bucket" not in m
    assert "collides" in caplog.text and "shadow" in caplog.text
    assert callback.errors == 0


def test_exposition_has_no_duplicate_families(
    meter_provider: MeterProvider,
) -> None:
    registry_reader = gangplank.RegistryReader()
    provider = MeterProvider(metric_readers=[registry_reader])
    try:
        cb = gangplank.TrainingMetrics(provider, weight_buckets=(0.0,), update_freq=1)
        logs = {"loss": 1.0, "val loss": 2.0, "val-loss": 3.0, "epochs_count": 1.0}
        run_epochs(cb, small_model(), [logs, logs])
        text = generate_latest(registry_reader.registry).decode()
        names = [f.name for f in text_string_to_metric_families(text)]
        assert len(names) == len(set(names))
        assert "gangplank_train_epochs_count" in text
        assert re.search(r"^gangplank_train_val_loss(\{[^}]*\})? 2\.0$", text, re.M)
    finally:
        provider.shutdown()


def test_multi_output_model(reader: InMemoryMetricReader, meter_provider: MeterProvider) -> None:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    out_a = keras.layers.Dense(1, name="out_a")(hidden)
    out_b = keras.layers.Dense(2, activation="softmax", name="out_b")(hidden)
    model = keras.Model(inputs, {"out_a": out_a, "out_b": out_b})
    model.compile(
        "sgd",
        loss={"out_a": "mse", "out_b": "sparse_categorical_crossentropy"},
        metrics={"out_b": ["accuracy"]},
    )
    x, y = data(32)
    cb = gangplank.TrainingMetrics(meter_provider)
    history = model.fit(
        x, {"out_a": y, "out_b": y.astype("int32")}, epochs=1, verbose=0, callbacks=[cb]
    )
    m = collect(reader)
    for key, series in history.history.items():
        assert value(m, f"gangplank.train.{key}") == pytest.approx(series[-1]), key
    assert value(m, "gangplank.train.model.parameters.count") == model.count_params()
    assert cb.errors == 0


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(3, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, inputs: Any) -> Any:
        return self.out(self.hidden(inputs))


def test_subclassed_model(reader: InMemoryMetricReader, meter_provider: MeterProvider) -> None:
    model = Subclassed()
    model.compile("adam", "mse")
    x, y = data(32)
    cb = gangplank.TrainingMetrics(meter_provider, weight_buckets=(0.0,), per_layer=True)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    m = collect(reader)
    assert value(m, "gangplank.train.model.parameters.count") == model.count_params() == 19
    assert value(m, "gangplank.train.model.weights").count == 19
    assert len(m["gangplank.train.layer.weights"].data.data_points) == 2
    assert value(m, "gangplank.train.learning_rate") == pytest.approx(0.001)


def test_uncompiled_and_unbuilt_models(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cb = gangplank.TrainingMetrics(meter_provider, weight_buckets=(0.0,), per_layer=True)
    run_epochs(cb, Subclassed(), [{"loss": 1.0}])  # never built, never compiled
    m = collect(reader)
    assert "gangplank.train.model.parameters.count" not in m
    assert "gangplank.train.learning_rate" not in m
    assert value(m, "gangplank.train.model.weights").count == 0
    built = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # built, uncompiled
    run_epochs(cb, built, [{"loss": 1.0}])
    cb.on_test_begin()
    cb.on_test_end({"loss": 2.0})
    m = collect(reader)
    assert value(m, "gangplank.train.model.parameters.count") == 3
    assert value(m, "gangplank.test.loss") == 2.0
    assert cb.errors == 0


def test_hooks_without_a_model_or_logs(
    reader: InMemoryMetricReader, meter_provider: MeterProvider, callback: Any
) -> None:
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_epoch_end(0)
    callback.on_test_begin()
    callback.on_test_end()
    callback.on_train_end()
    assert value(collect(reader), "gangplank.train.epochs.count") == 1
    assert callback.errors == 0


class Rows(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int) -> None:
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(index * self.batch, (index + 1) * self.batch)
        return self.x[rows], self.y[rows]


def test_py_dataset(reader: InMemoryMetricReader, meter_provider: MeterProvider) -> None:
    x, y = data(50)
    cb = gangplank.TrainingMetrics(meter_provider)
    model = small_model()
    model.fit(Rows(x, y, 16), epochs=2, verbose=0, callbacks=[cb])
    model.evaluate(Rows(x, y, 20), verbose=0, callbacks=[cb])
    m = collect(reader)
    assert value(m, "gangplank.train.steps") == 2 * 4
    assert value(m, "gangplank.train.samples") == 2 * 50  # the last batch has 2 rows
    assert value(m, "gangplank.test.steps") == 3
    assert cb.errors == 0


# --- runs, reuse, failures -------------------------------------------------------------------


class Boom(keras.callbacks.Callback):
    def __init__(self, at_epoch: int) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.at_epoch:
            raise RuntimeError("boom")


def test_interrupted_fit_has_no_success_timestamp_and_reuse_works(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(32)
    model = small_model()
    cb = gangplank.TrainingMetrics(meter_provider)
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cb, Boom(at_epoch=1)])
    m = collect(reader)
    assert "gangplank.train.last_success.timestamp" not in m
    assert value(m, "gangplank.train.start.timestamp") > 0
    assert value(m, "gangplank.train.epochs.count") == 2  # ours ran before Boom's

    # A stand-alone evaluate after the crash is still told apart from validation.
    model.evaluate(x, y, verbose=0, callbacks=[cb])
    assert "gangplank.test.loss" in collect(reader)

    # The same instance serves the next run; per-run state starts over.
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    m = collect(reader)
    assert value(m, "gangplank.train.epochs.count") == 1
    assert value(m, "gangplank.train.last_success.timestamp") > 0
    assert value(m, "gangplank.train.steps") == 2 + 1  # counters keep counting
    assert cb.errors == 0


def test_metric_errors_are_logged_once_per_streak(
    reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb = gangplank.TrainingMetrics(meter_provider)
    broken = {"on": True}
    real_set = cb._epochs.set

    def flaky_set(amount: float, attributes: Any = None) -> None:
        if broken["on"]:
            raise OSError("disk on fire")
        real_set(amount, attributes)

    cb._epochs.set = flaky_set
    cb.set_model(small_model())
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        cb.on_train_begin()
        for epoch in range(3):
            cb.on_epoch_begin(epoch)
            cb.on_epoch_end(epoch, {"loss": 1.0})
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "disk on fire" in warnings[0].getMessage()
        assert cb.errors == 4  # on_train_begin and three epochs
        broken["on"] = False
        cb.on_epoch_begin(3)
        cb.on_epoch_end(3, {"loss": 1.0})
        assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
        broken["on"] = True
        cb.on_epoch_begin(4)
        cb.on_epoch_end(4, {"loss": 1.0})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # a new streak logs again
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_metric_errors_never_stop_fit(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    x, y = data(32)
    cb = gangplank.TrainingMetrics(meter_provider, update_freq=1)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("bad instrument")

    cb._steps.add = broken
    cb._epochs.set = broken
    history = small_model().fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert len(history.history["loss"]) == 2
    assert cb.errors >= 2


def test_strict_mode_stops_the_run(meter_provider: MeterProvider) -> None:
    x, y = data(32)
    cb = gangplank.TrainingMetrics(meter_provider, strict=True)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("bad instrument")

    cb._epochs.set = broken
    model = small_model()
    with pytest.raises(ValueError, match="bad instrument"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    assert cb.errors >= 1


def test_async_safe_and_seed_compatible_signature() -> None:
    assert gangplank.TrainingMetrics.async_safe is True
    assert isinstance(gangplank.TrainingMetrics(), keras.callbacks.Callback)


# --- pushes --------------------------------------------------------------------------------


class RecordingReader(gangplank.PushgatewayReader):
    """A push reader that records push requests instead of pushing."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "recording", timeout=3)
        self.requests: list[float] = []
        self.flushes = 0

    def request_push(self, *, retry_for: float = 0.0) -> int:
        self.requests.append(retry_for)
        return len(self.requests)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.flushes += 1
        return True


def test_pushes_are_requested_without_waiting() -> None:
    push = RecordingReader()
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[push, memory])
    try:
        cb = gangplank.TrainingMetrics(provider)
        x, y = data(32)
        model = small_model()
        model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[cb])
        assert push.requests == [0.0, 0.0, 0.0, 3.0]  # each epoch, then the retried last one
        model.evaluate(x, y, verbose=0, callbacks=[cb])
        assert push.requests[-1] == 0.0 and len(push.requests) == 5
        assert push.flushes == 0
    finally:
        provider.shutdown()


def test_train_test_exporter_builds_on_training_metrics() -> None:
    exporter = gangplank.TrainTestExporter(
        "127.0.0.1:9", "seed-job", metrics=["loss"], histogram_buckets=(0.0,)
    )
    try:
        assert isinstance(exporter, gangplank.TrainingMetrics)
        assert exporter.reader.gateway == "http://127.0.0.1:9"
        assert exporter.reader.job == "seed-job"
        assert exporter.metrics == ["loss"] and exporter.weight_buckets == (0.0,)
        assert exporter.strict is False
        strict = gangplank.TrainTestExporter("127.0.0.1:9", "j", ignore_exceptions=False)
        assert strict.strict
        strict.close(timeout=0.2)
    finally:
        exporter.close(timeout=0.2)


def test_follows_a_global_provider_set_after_construction(tmp_path: Any) -> None:
    """Built before ``configure()``: weight histograms and pushes still use the new global."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import keras
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        import gangplank

        cb = gangplank.TrainingMetrics(weight_buckets=(0.0,))  # global is still a proxy
        reader = InMemoryMetricReader()
        gangplank.configure(reader)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        cb.set_model(model)
        cb.on_train_begin()
        cb.on_epoch_begin(0)
        cb.on_epoch_end(0, {"loss": 1.0})
        cb.on_train_end()
        names = {
            m.name: m
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        print(names["gangplank.train.model.weights"].data.data_points[0].count)
        print(names["gangplank.train.loss"].data.data_points[0].value)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["3", "1.0"]
