"""Pre-aggregated histograms reach any reader of the provider as genuine histograms."""

from __future__ import annotations

import gc
import logging

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from gangplank import catalogue, producer
from gangplank.histogram import HistogramFamily, bucket_counts, validate_bounds


def _metrics(reader: InMemoryMetricReader) -> dict[str, object]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        m.name: m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if sm.scope.name == "gangplank"
    }


def test_attached_family_is_exported_by_the_sdk_reader(meter_provider, reader) -> None:
    family = HistogramFamily(catalogue.PREDICT_DURATION)
    assert producer.attach(meter_provider, family)
    series = family.series({"method": "predict"})
    for value in (0.00005, 0.001, 0.001, 2.0, 100.0):
        series.observe(value)

    metric = _metrics(reader)["gangplank.predict.duration"]
    assert metric.unit == "s"  # type: ignore[attr-defined]
    assert metric.description == catalogue.PREDICT_DURATION.description  # type: ignore[attr-defined]
    (point,) = metric.data.data_points  # type: ignore[attr-defined]
    assert isinstance(point, HistogramDataPoint)
    assert point.attributes == {"method": "predict"}
    assert point.count == 5
    assert point.sum == pytest.approx(102.00205)
    assert point.min == 0.00005 and point.max == 100.0
    bounds = list(catalogue.LATENCY_SECONDS_BUCKETS)
    assert list(point.explicit_bounds) == bounds
    assert point.bucket_counts[0] == 1  # <= 0.0001
    assert point.bucket_counts[bounds.index(0.001)] == 2  # le is inclusive
    assert point.bucket_counts[-1] == 1  # +Inf


def test_two_producers_of_one_metric_become_one_metric(meter_provider, reader) -> None:
    first, second = (HistogramFamily(catalogue.PREDICT_DURATION) for _ in range(2))
    producer.attach(meter_provider, first)
    producer.attach(meter_provider, second)
    first.series({"model_name": "a"}).observe(0.1)
    second.series({"model_name": "b"}).observe(0.2)
    metric = _metrics(reader)["gangplank.predict.duration"]
    names = sorted(p.attributes["model_name"] for p in metric.data.data_points)  # type: ignore[attr-defined]
    assert names == ["a", "b"]


def test_producer_joins_the_gangplank_scope_of_real_instruments(meter_provider, reader) -> None:
    meter = meter_provider.get_meter("gangplank", "x")
    catalogue.TRAIN_EPOCHS.create(meter).set(3)
    family = HistogramFamily(catalogue.TRAIN_WEIGHTS, catalogue.WEIGHT_BUCKETS_1_0)
    producer.attach(meter_provider, family)
    family.series().replace(np.zeros(10))
    data = reader.get_metrics_data()
    scopes = [sm for rm in data.resource_metrics for sm in rm.scope_metrics]
    assert [s.scope.name for s in scopes] == ["gangplank"]
    assert {m.name for m in scopes[0].metrics} == {
        "gangplank.train.epochs.count",
        "gangplank.train.model.weights",
    }


def test_detach_and_garbage_collection_stop_the_export(meter_provider, reader) -> None:
    family = HistogramFamily(catalogue.PREDICT_DURATION)
    producer.attach(meter_provider, family)
    family.series().observe(1.0)
    assert "gangplank.predict.duration" in _metrics(reader)
    producer.detach(meter_provider, family)
    assert "gangplank.predict.duration" not in _metrics(reader)

    other = HistogramFamily(catalogue.PREDICT_DURATION)
    producer.attach(meter_provider, other)
    other.series().observe(1.0)
    del other
    gc.collect()
    assert "gangplank.predict.duration" not in _metrics(reader)


def test_a_failing_producer_is_logged_and_skipped(meter_provider, reader, caplog) -> None:
    class Broken:
        def produce(self):
            raise RuntimeError("boom")

    broken = Broken()
    good = HistogramFamily(catalogue.PREDICT_DURATION)
    producer.attach(meter_provider, broken)
    producer.attach(meter_provider, good)
    good.series().observe(0.5)
    with caplog.at_level(logging.ERROR, logger="gangplank.producer"):
        assert "gangplank.predict.duration" in _metrics(reader)
    assert "boom" in caplog.text


def test_attach_to_a_non_sdk_provider_returns_false() -> None:
    from opentelemetry.metrics import NoOpMeterProvider

    assert not producer.attach(NoOpMeterProvider(), HistogramFamily(catalogue.PREDICT_DURATION))


def test_histogram_series_is_exact_from_many_threads() -> None:
    import threading

    family = HistogramFamily(catalogue.PREDICT_BATCH_SIZE)
    series = family.series({"method": "predict"})

    def work() -> None:
        for _ in range(5000):
            series.observe(3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    point = series.point({}, 0)
    assert point.count == 40000
    assert sum(point.bucket_counts) == 40000
    assert point.sum == 120000


def test_bucket_counts_follow_prometheus_le_semantics() -> None:
    values = np.array([-2.0, -1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 2.0, np.nan], dtype=np.float32)
    counts = bucket_counts(values, (-1.0, 0.0, 1.0))
    assert counts.tolist() == [2, 3, 2, 1]


def test_replace_makes_a_snapshot() -> None:
    family = HistogramFamily(catalogue.TRAIN_WEIGHTS, catalogue.WEIGHT_BUCKETS_0_3)
    series = family.series()
    series.replace(np.full(100, 0.01))
    series.replace(np.full(7, 0.01))
    assert series.point({}, 0).count == 7


@pytest.mark.parametrize("bounds", [[], [1, 1], [2, 1], ["a"], [0, float("inf")]])
def test_bad_bucket_boundaries_are_refused(bounds) -> None:
    with pytest.raises(ValueError, match="buckets"):
        validate_bounds(bounds)


def test_provider_readers_are_found() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    assert producer.readers_of(provider) == [reader]
    provider.shutdown()
