"""Weight histograms: exact Prometheus ``le`` semantics, every dtype, the seed's bounds."""

from __future__ import annotations

import keras
import numpy as np
import prometheus_client
import pytest

import gangplank
from gangplank import catalogue
from gangplank.histogram import HistogramFamily, bucket_counts
from gangplank.weights import (
    HISTOGRAM_WEIGHT_BUCKETS_0_3,
    HISTOGRAM_WEIGHT_BUCKETS_1_0,
    layer_weights,
    model_weights,
    summarize,
)


def _seed_histogram(values: np.ndarray, bounds: tuple[float, ...]) -> list[float]:
    """What the seed produced: one ``Histogram.observe`` per weight; the ``le`` buckets."""
    registry = prometheus_client.CollectorRegistry()
    histogram = prometheus_client.Histogram("w", "w", buckets=bounds, registry=registry)
    for value in values.ravel():
        histogram.observe(float(value))
    samples = next(iter(registry.collect())).samples
    return [s.value for s in samples if s.name == "w_bucket"]


def test_seed_bucket_constants() -> None:
    assert len(HISTOGRAM_WEIGHT_BUCKETS_1_0) == 21
    assert len(HISTOGRAM_WEIGHT_BUCKETS_0_3) == 13
    assert HISTOGRAM_WEIGHT_BUCKETS_1_0[0] == -1.0 and HISTOGRAM_WEIGHT_BUCKETS_1_0[-1] == 1.0
    assert HISTOGRAM_WEIGHT_BUCKETS_1_0[10] == 0.0 and HISTOGRAM_WEIGHT_BUCKETS_1_0[11] == 0.1
    assert HISTOGRAM_WEIGHT_BUCKETS_0_3[0] == -0.3 and HISTOGRAM_WEIGHT_BUCKETS_0_3[-1] == 0.3
    assert HISTOGRAM_WEIGHT_BUCKETS_0_3[1] == -0.25
    np.testing.assert_allclose(np.diff(HISTOGRAM_WEIGHT_BUCKETS_1_0), 0.1, atol=1e-12)
    np.testing.assert_allclose(np.diff(HISTOGRAM_WEIGHT_BUCKETS_0_3), 0.05, atol=1e-12)
    assert gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0 == HISTOGRAM_WEIGHT_BUCKETS_1_0
    assert gangplank.HISTOGRAM_WEIGHT_BUCKETS_0_3 == HISTOGRAM_WEIGHT_BUCKETS_0_3


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_matches_the_seeds_per_weight_histogram(dtype: type) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 0.5, size=5000).astype(dtype)
    # Values sitting exactly on (or one ulp around) a bound go in the right bucket.
    on_bounds = np.array(HISTOGRAM_WEIGHT_BUCKETS_1_0, dtype=dtype)
    values = np.concatenate([values, on_bounds, np.nextafter(on_bounds, dtype(2))])
    summary = summarize([values], HISTOGRAM_WEIGHT_BUCKETS_1_0)
    buckets = _seed_histogram(values, HISTOGRAM_WEIGHT_BUCKETS_1_0)
    assert list(summary.cumulative_counts) == buckets
    assert summary.count == values.size
    total = float(values.astype(np.float64).sum())
    assert summary.sum == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert summary.min == float(values.min()) and summary.max == float(values.max())


def test_integer_and_bool_arrays() -> None:
    summary = summarize([np.array([-2, 0, 1, 5]), np.array([True, False])], (0.0, 1.0))
    assert summary.bucket_counts == (3, 2, 1)
    assert summary.count == 6 and summary.sum == 5.0


def test_non_finite_values_are_not_counted() -> None:
    values = np.array([0.05, np.nan, np.inf, -np.inf, -0.5], dtype=np.float32)
    summary = summarize([values], HISTOGRAM_WEIGHT_BUCKETS_0_3)
    assert summary.count == 2
    assert sum(summary.bucket_counts) == 2
    assert summary.sum == pytest.approx(-0.45)
    assert summary.min == pytest.approx(-0.5) and summary.max == pytest.approx(0.05)


def test_empty_input() -> None:
    summary = summarize([np.zeros((0, 3), np.float32)], (0.0,))
    assert summary.count == 0 and summary.bucket_counts == (0, 0)
    assert summary.min == 0.0 and summary.max == 0.0


def test_large_input_uses_the_chunked_parallel_path_and_stays_exact() -> None:
    rng = np.random.default_rng(2)
    arrays = [rng.normal(0, 0.4, size=n).astype(np.float32) for n in (1_500_001, 700_000, 3)]
    summary = summarize(arrays, HISTOGRAM_WEIGHT_BUCKETS_1_0)
    flat = np.concatenate(arrays).astype(np.float64)
    assert list(summary.bucket_counts) == bucket_counts(flat, HISTOGRAM_WEIGHT_BUCKETS_1_0).tolist()
    assert summary.count == flat.size
    assert summary.sum == pytest.approx(float(flat.sum()), rel=1e-9)


@pytest.mark.parametrize("bounds", [(), (1.0, 0.0), (0.0, 0.0), ("a",), (float("nan"),)])
def test_invalid_bounds(bounds: tuple) -> None:
    with pytest.raises(ValueError):
        summarize([np.zeros(3)], bounds)


def test_model_weights_and_layers() -> None:
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="hidden"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    arrays = model_weights(model)
    assert sum(a.size for a in arrays) == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights
    )
    assert sum(a.size for a in model_weights(model, trainable=False)) == model.count_params()
    layers = dict(layer_weights(model))
    assert list(layers) == ["hidden", "norm", "out"]
    assert sum(a.size for a in layers["norm"]) == 8  # gamma and beta only


def test_series_assign_is_exported_as_a_histogram() -> None:
    family = HistogramFamily(catalogue.TRAIN_WEIGHTS, HISTOGRAM_WEIGHT_BUCKETS_0_3)
    summary = summarize([np.array([-0.3, 0.0, 0.31])], HISTOGRAM_WEIGHT_BUCKETS_0_3)
    family.series({"run": "a"}).assign(
        summary.bucket_counts, summary.count, summary.sum, summary.min, summary.max
    )
    (metric,) = family.produce()
    (point,) = metric.data.data_points
    assert point.count == 3 and point.bucket_counts[0] == 1 and point.bucket_counts[-1] == 1
    assert point.min == -0.3 and point.max == 0.31
    with pytest.raises(ValueError):
        family.series().assign([1, 2], 3, 0.0, 0.0, 0.0)
