"""A reader that exposes OpenTelemetry metrics in a ``prometheus_client`` registry.

It is the base of the push and scrape routes, and on its own lets an application that already
serves a ``prometheus_client`` registry show Gangplank's series there. Unlike the exporter's
``PrometheusMetricReader`` it never emits a family twice: a flush between two scrapes or pushes
does not queue a second copy, and concurrent scrapes are serialised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.exporter.prometheus._mapping import sanitize_attribute, sanitize_full_name
from opentelemetry.sdk.metrics.export import ExponentialHistogram, Histogram, MetricsData
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PrometheusMetric
from prometheus_client.samples import Sample

from .producer import MetricProducer, merge

__all__ = ("RegistryReader",)

_logger = logging.getLogger(__name__)


class _Serialised:
    """Registers in place of the exporter's collector so collections never interleave.

    It also restores ``_count`` and ``_sum`` on histograms with negative buckets (weights):
    ``prometheus_client`` leaves them out, but Gangplank's series always had them.
    """

    def __init__(self, inner: Any, lock: threading.Lock) -> None:
        self._inner = inner
        self._lock = lock
        self.sums: dict[str, list[tuple[dict[str, str], float]]] = {}

    def describe(self) -> list[PrometheusMetric]:
        # Defined so that registering never triggers a collection.
        return []

    def collect(self) -> Iterable[PrometheusMetric]:
        with self._lock:
            families = list(self._inner.collect())
            for family in families:
                if family.type == "histogram":
                    self._complete(family)
            return families

    def _complete(self, family: PrometheusMetric) -> None:
        if any(s.name == family.name + "_count" for s in family.samples):
            return
        candidates = [
            entry
            for otel_name, entries in self.sums.items()
            if family.name == otel_name or family.name.startswith(otel_name + "_")
            for entry in entries
        ]
        for sample in list(family.samples):
            if sample.name != family.name + "_bucket" or sample.labels.get("le") != "+Inf":
                continue
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            family.samples.append(Sample(family.name + "_count", labels, sample.value))
            for attributes, total in candidates:
                if attributes.items() <= labels.items():
                    family.samples.append(Sample(family.name + "_sum", labels, total))
                    break

    def remember_sums(self, metrics_data: MetricsData) -> None:
        """Note the sums of histograms whose first bucket is negative."""
        sums: dict[str, list[tuple[dict[str, str], float]]] = {}
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if not isinstance(metric.data, Histogram):
                        continue
                    for point in metric.data.data_points:
                        if point.explicit_bounds and point.explicit_bounds[0] < 0:
                            attributes = {
                                sanitize_attribute(k): v if isinstance(v, str) else json.dumps(v)
                                for k, v in (point.attributes or {}).items()
                            }
                            sums.setdefault(sanitize_full_name(metric.name), []).append(
                                (attributes, point.sum)
                            )
        self.sums = sums


_warned_exponential: set[str] = set()


def _without_exponential(metrics_data: MetricsData | None) -> MetricsData | None:
    """Drop exponential histograms, which the Prometheus text format cannot carry."""
    if metrics_data is None:
        return None
    changed = False
    resource_metrics = []
    for rm in metrics_data.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            kept = [m for m in sm.metrics if not isinstance(m.data, ExponentialHistogram)]
            if len(kept) != len(sm.metrics):
                changed = True
                for m in sm.metrics:
                    if (
                        isinstance(m.data, ExponentialHistogram)
                        and m.name not in _warned_exponential
                    ):
                        _warned_exponential.add(m.name)
                        _logger.warning(
                            "%s uses an exponential histogram aggregation, which cannot be "
                            "exposed to Prometheus in text format; it is left out. Use explicit "
                            "bucket boundaries for it.",
                            m.name,
                        )
            scopes.append(dataclasses.replace(sm, metrics=kept))
        resource_metrics.append(dataclasses.replace(rm, scope_metrics=scopes))
    return MetricsData(resource_metrics=resource_metrics) if changed else metrics_data


class RegistryReader(PrometheusMetricReader):
    """Expose a MeterProvider's metrics in a ``prometheus_client`` registry.

    Args:
        registry: the registry to expose in. Defaults to a new private
            ``CollectorRegistry``, available as ``.registry``.
        disable_target_info: leave out the ``target_info`` series. Defaults to False.

    Example:
    ```python
    reader = gangplank.RegistryReader(prometheus_client.REGISTRY)
    provider = gangplank.configure(reader)
    prometheus_client.start_http_server(8000)  # your existing endpoint
    ```
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, disable_target_info: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collect_lock = threading.Lock()
        self._own_producers: list[MetricProducer] = []
        super().__init__(disable_target_info=disable_target_info, registry=self.registry)
        self.registry.unregister(self._collector)
        self._serialised = _Serialised(self._collector, self._collect_lock)
        self.registry.register(self._serialised)
        self._closed = False

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if metrics_data is None:
            return
        merged = _without_exponential(merge(metrics_data, self._own_producers))
        if merged is not None:
            self._serialised.remember_sums(merged)
        queued = getattr(self._collector, "_metrics_datas", None)
        if queued is not None:
            # Keep only the newest collection: an older one would repeat every family.
            queued.clear()
        super()._receive_metrics(merged, timeout_millis, **kwargs)  # type: ignore[arg-type]

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing to flush: the registry is read when it is scraped or pushed."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Remove the metrics from the registry."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(KeyError):
            self.registry.unregister(self._serialised)

    def add_producer(self, producer: MetricProducer) -> None:
        """Export ``producer``'s metrics through this reader only (used by subclasses)."""
        self._own_producers.append(producer)
