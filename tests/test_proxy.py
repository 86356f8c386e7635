"""The instrumented model proxy on an in-memory reader: series, transparency, threads."""

from __future__ import annotations

import bisect
import threading
from typing import Any

import keras
import numpy as np
import prometheus_client
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import gangplank
from gangplank import catalogue

# --- helpers ------------------------------------------------------------------------------


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Every metric the reader sees, by OpenTelemetry name."""
    found: dict[str, Any] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found[metric.name] = metric
    return found


def value(metrics: dict[str, Any], name: str, **attributes: Any) -> Any:
    """The value (sums, gauges) or the point (histograms) whose attributes include these."""
    matches = [
        point
        for point in metrics[name].data.data_points
        if all(point.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(matches) == 1, (name, attributes, [p.attributes for p in matches])
    point = matches[0]
    return point.value if hasattr(point, "value") else point


class Instant:
    """A thread-safe stand-in model: returns its input at once (or raises on request)."""

    name = "instant"

    def __init__(self) -> None:
        self.trainable = True

    def predict(self, x: Any, batch_size: int | None = None, verbose: Any = 0) -> Any:
        if isinstance(x, str):
            raise ValueError(x)
        return x

    def __call__(self, x: Any, training: bool = False) -> Any:
        if isinstance(x, str):
            raise KeyError(x)
        return x

    def predict_on_batch(self, x: Any) -> Any:
        return x


def registry_sample(
    registry: prometheus_client.CollectorRegistry, name: str, **labels: str
) -> float | None:
    """The one sample called ``name`` whose labels include ``labels``, or None."""
    found = [
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def mlp(inputs: int = 3, outputs: int = 2) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(outputs),
        ]
    )
    return model


# --- series --------------------------------------------------------------------------------


def test_seed_series_names_units_and_exact_counts(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    served = gangplank.InstrumentedModel(Instant(), meter_provider, version="7")
    x4, x5, x7 = np.zeros((4, 2)), np.zeros((5, 2)), np.zeros((7, 2))
    for _ in range(3):
        served.predict(x4)
    for _ in range(2):
        served(x5)
    served.predict_on_batch(x7)

    metrics = collect(reader)
    model = {"model_name": "instant", "model_version": "7"}
    assert value(metrics, "gangplank.predict", **model) == 12
    assert value(metrics, "gangplank.predict.call", **model) == 10
    assert value(metrics, "gangplank.predict.time", **model) > 0
    assert value(metrics, "gangplank.predict.call.time", **model) > 0
    seed_names = {
        catalogue.PREDICT_COUNT: "gangplank_predict_total",
        catalogue.PREDICT_TIME: "gangplank_predict_time_seconds_total",
        catalogue.PREDICT_CALL_COUNT: "gangplank_predict_call_total",
        catalogue.PREDICT_CALL_TIME: "gangplank_predict_call_time_seconds_total",
        catalogue.PREDICT_DURATION: "gangplank_predict_duration_seconds",
    }
    for instrument, prometheus in seed_names.items():
        metric = metrics[instrument.name]
        assert instrument.prometheus_name == prometheus
        assert metric.unit == instrument.unit
        assert metric.description == instrument.description
        assert metric.data.is_monotonic if hasattr(metric.data, "is_monotonic") else True

    for method, calls, rows in (("predict", 3, 4), ("__call__", 2, 5), ("predict_on_batch", 1, 7)):
        duration = value(metrics, "gangplank.predict.duration", method=method, **model)
        assert duration.count == calls
        assert list(duration.explicit_bounds) == list(catalogue.LATENCY_SECONDS_BUCKETS)
        assert sum(duration.bucket_counts) == calls
        batch = value(metrics, "gangplank.predict.batch_size", method=method, **model)
        assert (batch.count, batch.sum) == (calls, calls * rows)
        assert batch.bucket_counts[bisect.bisect_left(catalogue.BATCH_SIZE_BUCKETS, rows)] == calls
        assert value(metrics, "gangplank.predict.in_flight", method=method, **model) == 0
    # Seed counters carry only the model attributes; the histograms add the method.
    point = metrics["gangplank.predict"].data.data_points[0]
    assert dict(point.attributes) == model
    assert "gangplank.predict.errors" not in metrics


def test_exceptions_are_counted_by_type_and_reraised_unchanged(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    served = gangplank.InstrumentedModel(Instant(), meter_provider, name="m")
    with pytest.raises(ValueError, match="boom") as raised:
        served.predict("boom")
    assert raised.value.args == ("boom",)
    with pytest.raises(KeyError):
        served("bad")
    with pytest.raises(KeyError):
        served("bad")
    served.predict(np.zeros((2, 1)))

    metrics = collect(reader)
    assert (
        value(metrics, "gangplank.predict.errors", method="predict", error_type="ValueError") == 1
    )
    assert value(metrics, "gangplank.predict.errors", method="__call__", error_type="KeyError") == 2
    assert value(metrics, "gangplank.predict", model_name="m") == 2  # failures return no rows
    assert value(metrics, "gangplank.predict.duration", method="predict").count == 2
    assert value(metrics, "gangplank.predict.duration", method="__call__").count == 2
    assert value(metrics, "gangplank.predict.in_flight", method="__call__") == 0


def test_error_type_cardinality_is_bounded(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    class Failing(Instant):
        def predict(self, x: Any, **kwargs: Any) -> Any:
            raise type(f"Error{x}", (Exception,), {})()

    served = gangplank.InstrumentedModel(Failing(), meter_provider)
    total = gangplank.proxy.MAX_ERROR_TYPES + 5
    for i in range(total):
        with pytest.raises(Exception, match=r"^$"):
            served.predict(i)
    points = collect(reader)["gangplank.predict.errors"].data.data_points
    assert len(points) == gangplank.proxy.MAX_ERROR_TYPES + 1
    assert sum(p.value for p in points) == total
    assert value(collect(reader), "gangplank.predict.errors", error_type="other") == 5


def test_proxies_sharing_a_provider_are_counted_apart(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    a = gangplank.InstrumentedModel(Instant(), meter_provider, name="a", version="1")
    b = gangplank.InstrumentedModel(Instant(), meter_provider, name="a", version="2")
    c = gangplank.InstrumentedModel(Instant(), meter_provider, name="c", attributes={"team": "x"})
    a.predict(np.zeros((1, 1)))
    b.predict(np.zeros((2, 1)))
    b.predict(np.zeros((2, 1)))
    c.predict(np.zeros((3, 1)))
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict", model_name="a", model_version="1") == 1
    assert value(metrics, "gangplank.predict", model_name="a", model_version="2") == 4
    assert value(metrics, "gangplank.predict", model_name="c", team="x") == 3
    assert len(metrics["gangplank.predict"].data.data_points) == 3


def test_eight_threads_count_exactly(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    served = gangplank.InstrumentedModel(Instant(), meter_provider, name="threads")
    x = np.zeros((3, 2))
    calls = 2000
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for i in range(calls):
            served.predict(x) if i % 2 else served(x)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict", model_name="threads") == 8 * calls // 2 * 3
    assert value(metrics, "gangplank.predict.call", model_name="threads") == 8 * calls // 2 * 3
    assert value(metrics, "gangplank.predict.duration", method="predict").count == 8 * calls // 2
    assert (
        value(metrics, "gangplank.predict.batch_size", method="__call__").sum == 8 * calls * 3 / 2
    )
    assert value(metrics, "gangplank.predict.in_flight", method="predict") == 0


def test_unknown_batch_sizes_are_skipped(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    class Opaque(Instant):
        def predict(self, x: Any, **kwargs: Any) -> Any:
            return sum(1 for _ in x)  # an int: no rows

    served = gangplank.InstrumentedModel(Opaque(), meter_provider)
    assert served.predict(iter(range(3))) == 3
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict.duration", method="predict").count == 1
    assert value(metrics, "gangplank.predict", model_name="instant") == 0
    assert "gangplank.predict.batch_size" not in metrics


def test_classifier_metrics_have_bounded_cardinality(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    served = gangplank.InstrumentedModel(Instant(), meter_provider, classes=["cat", "dog"])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]]
    )
    served.predict(probabilities)
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict.class", **{"class": "cat"}) == 1
    assert value(metrics, "gangplank.predict.class", **{"class": "dog"}) == 2
    assert value(metrics, "gangplank.predict.class", **{"class": "other"}) == 2
    confidence = value(metrics, "gangplank.predict.confidence", method="predict")
    assert confidence.count == 5
    assert confidence.sum == pytest.approx(0.9 + 0.8 + 0.7 + 0.8 + 1.0)
    assert list(confidence.explicit_bounds) == list(catalogue.CONFIDENCE_BUCKETS)

    binary = gangplank.InstrumentedModel(Instant(), meter_provider, name="binary", classes=2)
    binary.predict(np.array([[0.2], [0.9], [0.6]]))
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict.class", model_name="binary", **{"class": "1"}) == 2
    assert value(metrics, "gangplank.predict.class", model_name="binary", **{"class": "0"}) == 1


def test_classes_off_by_default(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    gangplank.InstrumentedModel(Instant(), meter_provider).predict(np.eye(3))
    metrics = collect(reader)
    assert "gangplank.predict.class" not in metrics
    assert "gangplank.predict.confidence" not in metrics
    assert "gangplank.predict.lock_wait" not in metrics


def test_unwrap_returns_the_model_and_removes_its_series(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    model = Instant()
    served = gangplank.InstrumentedModel(model, meter_provider, name="gone")
    kept = gangplank.InstrumentedModel(Instant(), meter_provider, name="kept")
    served.predict(np.zeros((1, 1)))
    kept.predict(np.zeros((1, 1)))
    assert served.__wrapped__ is model
    assert served.unwrap() is model
    names = {
        p.attributes["model_name"] for p in collect(reader)["gangplank.predict"].data.data_points
    }
    assert names == {"kept"}


def test_rejects_objects_that_cannot_predict(meter_provider: MeterProvider) -> None:
    with pytest.raises(TypeError, match="predict"):
        gangplank.InstrumentedModel(object(), meter_provider)


# --- transparency on Keras ------------------------------------------------------------------


@pytest.mark.crossbackend
def test_transparent_on_a_keras_model(
    meter_provider: MeterProvider, reader: InMemoryMetricReader, tmp_path: Any
) -> None:
    model = mlp()
    served = gangplank.InstrumentedModel(model, meter_provider)
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")

    np.testing.assert_array_equal(served.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(np.asarray(served(x)), np.asarray(model(x)))
    np.testing.assert_array_equal(np.asarray(served.predict_on_batch(x)), model.predict_on_batch(x))
    assert isinstance(served, keras.Model)
    assert served.name == model.name
    assert served.layers == model.layers
    assert served.count_params() == model.count_params()

    lines: list[str] = []
    served.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    expected: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: expected.append(line))
    assert lines == expected and any("dense" in line for line in lines)

    served.trainable = False
    assert model.trainable is False
    served.custom_tag = "v1"
    assert model.custom_tag == "v1"
    del served.custom_tag
    assert not hasattr(model, "custom_tag")

    path = tmp_path / "served.keras"
    served.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

    metrics = collect(reader)
    assert value(metrics, "gangplank.predict", model_name=model.name) == 6
    assert value(metrics, "gangplank.predict.call", model_name=model.name) == 6


@pytest.mark.crossbackend
def test_multi_input_multi_output_and_dict_inputs(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model(
        {"a": a, "b": b}, [keras.layers.Dense(1)(joined), keras.layers.Dense(4)(joined)]
    )
    served = gangplank.InstrumentedModel(model, meter_provider, name="multi")
    inputs = {"a": np.ones((5, 2), "float32"), "b": np.ones((5, 3), "float32")}

    out = served.predict(inputs, verbose=0)
    raw = model.predict(inputs, verbose=0)
    assert len(out) == 2
    for got, want in zip(out, raw, strict=True):
        np.testing.assert_array_equal(got, want)
    called = served(inputs)
    assert [tuple(o.shape) for o in called] == [(5, 1), (5, 4)]
    lists = keras.Model([a, b], keras.layers.Dense(2)(joined))
    listed = gangplank.InstrumentedModel(lists, meter_provider, name="lists")
    listed.predict_on_batch([inputs["a"][:3], inputs["b"][:3]])

    metrics = collect(reader)
    assert value(metrics, "gangplank.predict", model_name="multi") == 5
    assert value(metrics, "gangplank.predict.call", model_name="multi") == 5
    batch = value(metrics, "gangplank.predict.batch_size", model_name="lists")
    assert (batch.count, batch.sum) == (1, 3)


def test_serialize_makes_a_shared_keras_model_safe_from_threads(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    model = mlp()
    served = gangplank.InstrumentedModel(model, meter_provider, name="locked", serialize=True)
    x = np.random.default_rng(1).normal(size=(2, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    results: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(served.predict(x, verbose=0))
        except BaseException as error:  # pragma: no cover - the failure being tested
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 20
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-6)
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict", model_name="locked") == 40
    assert value(metrics, "gangplank.predict.lock_wait", method="predict") >= 0.0


# --- the seed's PrometheusModel ----------------------------------------------------------


def test_prometheus_model_exposes_the_seed_series_in_a_registry() -> None:
    registry = prometheus_client.CollectorRegistry()
    seen: list[tuple[Any, Any]] = []

    def get_drift_metrics(x: Any, y: Any) -> gangplank.Drift:
        seen.append((x, y))
        return gangplank.Drift(drift_detected=1, p_value=0.01, test_statistic=4.5)

    model = Instant()
    served = gangplank.PrometheusModel(
        model, registry=registry, get_drift_metrics_func=get_drift_metrics
    )
    assert served.model is model and served.registry is registry
    x = np.zeros((3, 2))
    assert served.predict(x) is x
    served.predict(x)
    served(x)
    assert served.drift_monitor is not None and served.drift_monitor.join(10)

    def sample(name: str, **labels: str) -> float | None:
        return registry_sample(registry, name, model_name="instant", **labels)

    assert sample("gangplank_predict_total") == 6
    assert sample("gangplank_predict_call_total") == 3
    assert sample("gangplank_predict_time_seconds_total") > 0
    assert sample("gangplank_predict_call_time_seconds_total") > 0
    detector = {"detector": "get_drift_metrics"}
    # As in the seed, only predict() feeds the drift function.
    assert sample("gangplank_predict_drift_detected_total", **detector) == 2
    assert sample("gangplank_predict_drift_p_value", **detector) == 0.01
    assert sample("gangplank_predict_drift_test_statistic", **detector) == 4.5
    assert len(seen) == 2 and seen[0][0] is x
    assert registry_sample(registry, "target_info") is None
    served.unwrap()


def test_drift_module_and_names_are_exported() -> None:
    assert gangplank.drift.Drift is gangplank.Drift
    assert gangplank.Drift() == (None, None, None)
    assert gangplank.Drift(1, 0.5, 2.0).p_value == 0.5
    for name in ("Drift", "InstrumentedModel", "PrometheusModel", "drift"):
        assert name in gangplank.__all__
