"""The one-line setup: a MeterProvider wired to the routes the user picks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from .version import __version__

__all__ = ("configure", "get_meter")

_logger = logging.getLogger(__name__)


def configure(
    *readers: MetricReader,
    service_name: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
) -> MeterProvider:
    """Build a MeterProvider that exports through ``readers``.

    Args:
        *readers: one or more readers, e.g. :class:`gangplank.PushgatewayReader`,
            :class:`gangplank.ScrapeEndpoint` or :func:`gangplank.otlp_reader`.
        service_name: the ``service.name`` resource attribute (OTLP's ``job`` label).
            Defaults to ``OTEL_SERVICE_NAME`` or the SDK's default.
        resource_attributes: further resource attributes, e.g. ``service.instance.id``.
        set_global: also make it the global provider, so that callbacks and proxies built
            without ``meter_provider=`` use it. Defaults to True.

    Example:
    ```python
    provider = gangplank.configure(gangplank.ScrapeEndpoint(port=9464))
    model = gangplank.InstrumentedModel(model, meter_provider=provider)
    ```
    """
    if not readers:
        raise ValueError("configure() needs at least one metric reader")
    for reader in readers:
        if not isinstance(reader, MetricReader):
            raise TypeError(f"{reader!r} is not an OpenTelemetry MetricReader")
    attributes: dict[str, Any] = dict(resource_attributes or {})
    if service_name is not None:
        attributes[SERVICE_NAME] = service_name
    provider = MeterProvider(metric_readers=list(readers), resource=Resource.create(attributes))
    if set_global:
        metrics.set_meter_provider(provider)
        if metrics.get_meter_provider() is not provider:
            _logger.warning(
                "A global MeterProvider was already set; pass meter_provider= explicitly"
            )
    return provider


def get_meter(meter_provider: metrics.MeterProvider | None = None) -> metrics.Meter:
    """Gangplank's meter on ``meter_provider`` (the global provider when None)."""
    return metrics.get_meter("gangplank", __version__, meter_provider)


def resolve(meter_provider: metrics.MeterProvider | None) -> metrics.MeterProvider:
    """``meter_provider``, or the global provider when None."""
    return meter_provider if meter_provider is not None else metrics.get_meter_provider()
