"""The collector route: a periodic OTLP/HTTP reader for an OpenTelemetry Collector."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader

__all__ = ("otlp_reader",)

_logger = logging.getLogger(__name__)

_CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


class _OTLPReader(PeriodicExportingMetricReader):
    """A periodic reader whose shutdown never outlasts its export timeout."""

    def __init__(self, exporter: Any, interval: float, timeout: float) -> None:
        super().__init__(
            exporter,
            export_interval_millis=interval * 1000,
            export_timeout_millis=timeout * 1000,
        )
        self.timeout = timeout

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        super().shutdown(min(timeout_millis, self.timeout * 1000), **kwargs)


def otlp_reader(
    endpoint: str | None = None,
    *,
    interval: float = 10.0,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> PeriodicExportingMetricReader:
    """A reader that exports to an OpenTelemetry Collector over OTLP/HTTP every ``interval``.

    Temporality is cumulative, as Prometheus (and the Collector's remote-write exporter)
    needs. Needs the ``otlp`` extra: ``pip install gangplank[otlp]``.

    Args:
        endpoint: the collector, e.g. ``"http://collector:4318"`` (``/v1/metrics`` is
            added when the URL has no path). Defaults to the ``OTEL_EXPORTER_OTLP_*``
            environment variables, else ``http://localhost:4318``.
        interval: seconds between exports. Defaults to 10.
        headers: extra HTTP headers, e.g. an ``authorization`` token (never logged).
            Defaults to ``OTEL_EXPORTER_OTLP_HEADERS``.
        timeout: seconds one export, and shutdown, may take. Defaults to 10.

    Example:
    ```python
    provider = gangplank.configure(gangplank.otlp_reader("http://localhost:4318"))
    ```
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "otlp_reader needs the OTLP exporter: pip install 'gangplank[otlp]'"
        ) from error
    if not (isinstance(interval, (int, float)) and interval > 0):
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    exporter = OTLPMetricExporter(
        endpoint=_metrics_url(endpoint) if endpoint is not None else None,
        headers=dict(headers) if headers is not None else None,
        timeout=timeout,
        preferred_temporality=_CUMULATIVE,
    )
    return _OTLPReader(exporter, float(interval), float(timeout))


def _metrics_url(endpoint: str) -> str:
    problem = f"endpoint must be an http(s) URL such as http://host:4318, got {endpoint!r}"
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(problem)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/metrics"
    return endpoint
