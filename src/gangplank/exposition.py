"""A reader that exposes OpenTelemetry metrics in a ``prometheus_client`` registry.

It is the base of the push and scrape routes, and on its own lets an application that already
serves a ``prometheus_client`` registry show Gangplank's series there. Unlike the exporter's
``PrometheusMetricReader`` it never emits a family twice: a flush between two scrapes or pushes
does not queue a second copy, and concurrent scrapes are serialised.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricsData
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PrometheusMetric

from .producer import MetricProducer, merge

__all__ = ("RegistryReader",)

_logger = logging.getLogger(__name__)


class _Serialised:
    """Registers in place of the exporter's collector so collections never interleave."""

    def __init__(self, inner: Any, lock: threading.Lock) -> None:
        self._inner = inner
        self._lock = lock

    def describe(self) -> list[PrometheusMetric]:
        # Defined so that registering never triggers a collection.
        return []

    def collect(self) -> Iterable[PrometheusMetric]:
        with self._lock:
            return list(self._inner.collect())


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
        merged = merge(metrics_data, self._own_producers)
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
