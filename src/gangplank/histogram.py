"""Histograms aggregated inside Gangplank rather than by the OpenTelemetry SDK.

Two uses: a hot path (the model proxy) that cannot afford ``Histogram.record`` on every call,
and bulk data (millions of weights) bucketed with NumPy in one pass. Either way the result is
a set of genuine histogram data points, which ``producer.py`` merges into every reader.
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from .catalogue import Instrument, Kind

__all__ = ("HistogramFamily", "Series", "bucket_counts")

Attributes = Mapping[str, str | int | float | bool]


def validate_bounds(bounds: Sequence[float]) -> tuple[float, ...]:
    """Return ``bounds`` as floats, or raise ValueError if they are not strictly increasing."""
    try:
        values = tuple(float(b) for b in bounds)
    except (TypeError, ValueError) as error:
        raise ValueError(f"histogram buckets must be numbers, got {bounds!r}") from error
    if not values:
        raise ValueError("histogram buckets must not be empty")
    if any(not np.isfinite(v) for v in values):
        raise ValueError(f"histogram buckets must be finite, got {bounds!r}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"histogram buckets must be strictly increasing, got {bounds!r}")
    return values


def bucket_counts(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Count ``values`` into the buckets ``(-inf, b0], (b0, b1], …, (bn, +inf)``.

    NaN values are not counted. Returns ``len(bounds) + 1`` integer counts.
    """
    flat = np.asarray(values).ravel()
    edges = np.asarray(bounds, dtype=flat.dtype if flat.dtype.kind == "f" else np.float64)
    if flat.dtype.kind == "f" and np.isnan(flat).any():
        flat = flat[~np.isnan(flat)]
    # side="left" puts a value equal to a bound into that bound's bucket (Prometheus "le").
    indices = np.searchsorted(edges, flat, side="left")
    return np.bincount(indices, minlength=len(edges) + 1)


class Series:
    """One histogram time series (one attribute set): thread-safe, cheap to observe."""

    __slots__ = ("_lock", "bounds", "count", "counts", "max", "min", "start_ns", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._lock = threading.Lock()
        self.start_ns = time.time_ns()
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def observe(self, value: float) -> None:
        """Add one value."""
        index = bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.count += 1
            self.sum += value
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value

    def observe_array(self, values: Any) -> None:
        """Add every finite value of an array in one NumPy pass."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return
        counts = bucket_counts(flat, self.bounds)
        total = float(flat.sum())
        low, high = float(flat.min()), float(flat.max())
        with self._lock:
            for i, c in enumerate(counts.tolist()):
                self.counts[i] += c
            self.count += int(flat.size)
            self.sum += total
            self.min = min(self.min, low)
            self.max = max(self.max, high)

    def replace(self, values: Any) -> None:
        """Make the series a snapshot of ``values`` (e.g. the weights now), dropping the past."""
        fresh = Series(self.bounds)
        fresh.observe_array(values)
        with self._lock:
            self.start_ns = fresh.start_ns
            self.counts = fresh.counts
            self.count = fresh.count
            self.sum = fresh.sum
            self.min = fresh.min
            self.max = fresh.max

    def assign(
        self, bucket_counts: Sequence[int], count: int, total: float, low: float, high: float
    ) -> None:
        """Make the series a snapshot already bucketed elsewhere (``gangplank.weights``)."""
        if len(bucket_counts) != len(self.bounds) + 1:
            raise ValueError("bucket_counts must have one entry per bound plus +Inf")
        with self._lock:
            self.start_ns = time.time_ns()
            self.counts = [int(c) for c in bucket_counts]
            self.count = int(count)
            self.sum = float(total)
            self.min = float(low) if count else float("inf")
            self.max = float(high) if count else float("-inf")

    def point(self, attributes: Attributes, now_ns: int) -> HistogramDataPoint:
        """A cumulative data point for this series."""
        with self._lock:
            counts = list(self.counts)
            count, total, low, high = self.count, self.sum, self.min, self.max
            start = self.start_ns
        return HistogramDataPoint(
            attributes=dict(attributes),
            start_time_unix_nano=start,
            time_unix_nano=now_ns,
            count=count,
            sum=total,
            bucket_counts=counts,
            explicit_bounds=list(self.bounds),
            min=low if count else 0.0,
            max=high if count else 0.0,
        )


class HistogramFamily:
    """All series of one pre-aggregated catalogue histogram, keyed by attributes.

    A family is a *metric producer*: attach it to a MeterProvider with
    :func:`gangplank.producer.attach` and every reader of that provider exports it.
    """

    def __init__(self, instrument: Instrument, buckets: Sequence[float] | None = None) -> None:
        if instrument.kind is not Kind.PREAGGREGATED_HISTOGRAM:
            raise TypeError(f"{instrument.name} is not a pre-aggregated histogram")
        chosen = buckets if buckets is not None else instrument.buckets
        if chosen is None:
            raise ValueError(f"{instrument.name} needs bucket boundaries")
        self.instrument = instrument
        self.bounds = validate_bounds(chosen)
        self._series: dict[tuple[tuple[str, Any], ...], tuple[Attributes, Series]] = {}
        self._lock = threading.Lock()

    def series(self, attributes: Attributes | None = None) -> Series:
        """The series for ``attributes``, created on first use."""
        attrs = dict(attributes or {})
        key = tuple(sorted(attrs.items()))
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.setdefault(key, (attrs, Series(self.bounds)))
        return found[1]

    def clear(self) -> None:
        """Forget every series."""
        with self._lock:
            self._series.clear()

    def produce(self) -> list[Metric]:
        """The family as an OpenTelemetry metric, or nothing if it has no series yet."""
        with self._lock:
            entries = list(self._series.values())
        if not entries:
            return []
        now = time.time_ns()
        return [
            Metric(
                name=self.instrument.name,
                description=self.instrument.description,
                unit=self.instrument.unit,
                data=Histogram(
                    data_points=[series.point(attrs, now) for attrs, series in entries],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                ),
            )
        ]
