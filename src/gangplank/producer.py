"""Merge metrics aggregated outside the SDK into what a MeterProvider's readers collect.

The OpenTelemetry specification calls such a source a *MetricProducer*; the Python SDK has
none, so Gangplank attaches its producers to each reader of a provider: when the reader
collects, the producers' metrics join the ``gangplank`` scope before the reader exports them
(the hook is the collect callback the SDK hands each reader).
This works for any reader (Gangplank's, the SDK's periodic and in-memory readers, the
Prometheus exporter's), so every route sees the same genuine histograms.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .version import __version__

__all__ = ("MetricProducer", "attach", "detach", "readers_of")

_logger = logging.getLogger(__name__)

SCOPE_NAME = "gangplank"
_ATTRIBUTE = "_gangplank_producers"
_lock = threading.Lock()


class MetricProducer(Protocol):
    """Anything that can hand over finished OpenTelemetry metrics at collection time."""

    def produce(self) -> Sequence[Metric]:
        """Return the metrics to export now."""


def readers_of(meter_provider: MeterProvider) -> list[Any] | None:
    """The metric readers of an SDK MeterProvider, or None for any other provider."""
    readers = getattr(meter_provider, "_metric_readers", None)
    return list(readers) if readers is not None else None


def attach(meter_provider: MeterProvider, producer: MetricProducer) -> bool:
    """Export ``producer``'s metrics through every reader of ``meter_provider``.

    The producer is held weakly: it stops being exported when it is garbage collected.
    Returns False (and logs at debug level) when the provider is not an SDK MeterProvider.
    """
    readers = readers_of(meter_provider)
    if readers is None:
        _logger.debug(
            "%r is not an SDK MeterProvider; pre-aggregated histograms will not be exported",
            meter_provider,
        )
        return False
    resource = getattr(getattr(meter_provider, "_sdk_config", None), "resource", None)
    for reader in readers:
        _hook(reader, resource).add(producer)
    return True


def detach(meter_provider: MeterProvider, producer: MetricProducer) -> None:
    """Stop exporting ``producer`` through ``meter_provider``'s readers."""
    for reader in readers_of(meter_provider) or ():
        producers = reader.__dict__.get(_ATTRIBUTE)
        if producers is not None:
            producers.discard(producer)


def _hook(reader: Any, resource: Resource | None) -> weakref.WeakSet[Any]:
    with _lock:
        producers = reader.__dict__.get(_ATTRIBUTE)
        if producers is not None:
            return producers
        producers = weakref.WeakSet()
        # The SDK gives each reader a collect callback when the provider is built; wrapping it
        # adds the producers even when the SDK's own instruments have nothing to report.
        collect = reader._collect

        def _collect(*args: Any, **kwargs: Any) -> MetricsData | None:
            metrics_data = collect(*args, **kwargs) if collect is not None else None
            return merge(metrics_data, list(producers), resource)

        reader._collect = _collect
        setattr(reader, _ATTRIBUTE, producers)
        return producers


def merge(
    metrics_data: MetricsData | None,
    producers: Sequence[MetricProducer],
    resource: Resource | None = None,
) -> MetricsData | None:
    """``metrics_data`` with the producers' metrics added to the ``gangplank`` scope.

    Metrics of the same name from several producers (e.g. two model proxies) become one
    metric with all their data points. A failing producer is logged and skipped.
    """
    extra: dict[str, Metric] = {}
    for producer in producers:
        try:
            produced = list(producer.produce())
        except Exception:  # a broken producer must not break the collection
            _logger.exception("Gangplank metric producer %r failed; skipped", producer)
            continue
        for metric in produced:
            known = extra.get(metric.name)
            extra[metric.name] = metric if known is None else _combine(known, metric)
    if not extra:
        return metrics_data

    resource_metrics = list(metrics_data.resource_metrics) if metrics_data else []
    if not resource_metrics:
        resource_metrics = [
            ResourceMetrics(resource=resource or Resource.create(), scope_metrics=[], schema_url="")
        ]
    first = resource_metrics[0]
    scopes = list(first.scope_metrics)
    for index, scope_metrics in enumerate(scopes):
        if scope_metrics.scope.name == SCOPE_NAME:
            existing = {m.name for m in scope_metrics.metrics}
            added = [m for name, m in extra.items() if name not in existing]
            scopes[index] = ScopeMetrics(
                scope=scope_metrics.scope,
                metrics=list(scope_metrics.metrics) + added,
                schema_url=scope_metrics.schema_url,
            )
            break
    else:
        scopes.append(
            ScopeMetrics(
                scope=InstrumentationScope(SCOPE_NAME, __version__),
                metrics=list(extra.values()),
                schema_url="",
            )
        )
    resource_metrics[0] = ResourceMetrics(
        resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
    )
    return MetricsData(resource_metrics=resource_metrics)


def _combine(first: Metric, second: Metric) -> Metric:
    points = list(first.data.data_points) + list(second.data.data_points)
    return Metric(
        name=first.name,
        description=first.description,
        unit=first.unit,
        data=dataclasses.replace(first.data, data_points=points),  # type: ignore[arg-type]
    )
