"""The collector route: a periodic OTLP/HTTP reader for an OpenTelemetry Collector."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from .failures import FailureLog
from .producer import merge

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


class _QuietDuringStreaks(logging.Filter):
    """Mutes the OTLP exporter's own per-retry logging while a failure streak goes on.

    The first failed export still shows the exporter's messages; after that Gangplank logs
    once per streak and counts the rest (``gangplank_export_failures_total``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.readers: weakref.WeakSet[_OTLPReader] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(reader._failures.streak for reader in list(self.readers))


_QUIET = _QuietDuringStreaks()
_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.metric_exporter"


class _OTLPReader(PeriodicExportingMetricReader):
    """A periodic reader whose shutdown never outlasts its export timeout.

    Failed exports are counted (``gangplank_export_failures_total{route="otlp"}``, sent with
    the next export that gets through) and logged once per failure streak.
    """

    def __init__(self, exporter: Any, interval: float, timeout: float) -> None:
        super().__init__(
            exporter,
            export_interval_millis=interval * 1000,
            export_timeout_millis=timeout * 1000,
        )
        self.timeout = timeout
        self._failures = FailureLog("otlp", _logger)
        self._flush_failed = False
        _QUIET.readers.add(self)
        exporter_logger = logging.getLogger(_EXPORTER_LOGGER)
        if _QUIET not in exporter_logger.filters:
            exporter_logger.addFilter(_QUIET)

    @property
    def failures(self) -> int:
        """How many exports have failed."""
        return self._failures.count

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if metrics_data.resource_metrics:
            metrics_data = merge(metrics_data, [self._failures]) or metrics_data
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._export_lock:
                result = self._exporter.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as error:  # the exporter should not raise; never let it escape
            result = MetricExportResult.FAILURE
            _logger.debug("OTLP exporter raised", exc_info=error)
        finally:
            detach(token)
        self._count(result is MetricExportResult.SUCCESS)

    def _count(self, succeeded: bool) -> None:
        endpoint = getattr(self._exporter, "_endpoint", "the collector")
        if succeeded:
            self._failures.succeeded(f"OTLP export to {endpoint}")
            return
        self._flush_failed = True
        self._failures.failed(
            "OTLP export to %s failed; will keep exporting every %gs",
            endpoint,
            self._export_interval_millis / 1000,
        )

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Export now; False when that export failed (the SDK's reader always says True)."""
        self._flush_failed = False
        super().force_flush(timeout_millis)
        return not self._flush_failed

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
