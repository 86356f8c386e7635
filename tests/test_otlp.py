"""The OTLP reader: construction and bounded shutdown (the Collector: test_collector.py)."""

from __future__ import annotations

import time

import pytest

import gangplank
from gangplank import catalogue
from gangplank.provider import get_meter
from servers import free_port, silent_server


def test_unreachable_collector_shutdown_returns_within_its_timeout() -> None:
    reader = gangplank.otlp_reader(f"http://127.0.0.1:{free_port()}", interval=60, timeout=1.0)
    provider = gangplank.configure(reader, set_global=False)
    catalogue.TRAIN_STEPS.create(get_meter(provider)).add(1)
    started = time.monotonic()
    provider.shutdown()
    # A bound, not a benchmark: without one, shutdown retries for the SDK's 10 s default.
    assert time.monotonic() - started < 5


def test_silent_collector_shutdown_is_bounded() -> None:
    with silent_server() as url:
        reader = gangplank.otlp_reader(url, interval=60, timeout=1.0)
        provider = gangplank.configure(reader, set_global=False)
        catalogue.TRAIN_STEPS.create(get_meter(provider)).add(1)
        started = time.monotonic()
        provider.shutdown()
        assert time.monotonic() - started < 5


def test_endpoint_gets_the_metrics_path() -> None:
    reader = gangplank.otlp_reader("http://collector:4318", interval=60)
    assert reader._exporter._endpoint == "http://collector:4318/v1/metrics"
    reader = gangplank.otlp_reader("http://collector:4318/custom/path", interval=60)
    assert reader._exporter._endpoint == "http://collector:4318/custom/path"


def test_environment_variables_are_honoured(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://envhost:4318")
    reader = gangplank.otlp_reader(interval=60)
    assert reader._exporter._endpoint == "http://envhost:4318/v1/metrics"


def test_temporality_is_cumulative_even_when_the_environment_asks_for_delta(monkeypatch) -> None:
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    # Prometheus remote-write drops delta sums, so the reader insists on cumulative.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    reader = gangplank.otlp_reader("http://collector:4318", interval=60)
    temporalities = set(reader._instrument_class_temporality.values())
    assert temporalities == {AggregationTemporality.CUMULATIVE}


@pytest.mark.parametrize(
    "kwargs",
    [{"endpoint": "collector:4318"}, {"interval": 0}, {"timeout": -1}, {"endpoint": "ftp://x"}],
)
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        gangplank.otlp_reader(**kwargs)


def test_configure_needs_readers() -> None:
    with pytest.raises(ValueError):
        gangplank.configure()
    with pytest.raises(TypeError):
        gangplank.configure("not a reader")  # type: ignore[arg-type]


def test_configure_sets_service_name_and_resource() -> None:
    reader = gangplank.RegistryReader()
    provider = gangplank.configure(
        reader,
        service_name="svc",
        resource_attributes={"service.instance.id": "w1"},
        set_global=False,
    )
    attributes = provider._sdk_config.resource.attributes
    assert attributes["service.name"] == "svc"
    assert attributes["service.instance.id"] == "w1"
    provider.shutdown()


def test_a_failure_streak_is_logged_once(caplog) -> None:
    import logging

    reader = gangplank.otlp_reader(f"http://127.0.0.1:{free_port()}", interval=3600, timeout=0.5)
    provider = gangplank.configure(reader, set_global=False)
    catalogue.TRAIN_STEPS.create(get_meter(provider)).add(1)
    with caplog.at_level(logging.DEBUG):
        assert not reader.force_flush()
        first = len([r for r in caplog.records if r.levelno >= logging.WARNING])
        assert not reader.force_flush()
        assert not reader.force_flush()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    ours = [r for r in loud if r.name == "gangplank.otlp"]
    assert len(ours) == 1
    # The exporter's own retry messages show for the first failure only.
    assert len(loud) == first
    assert reader.failures == 3
    provider.shutdown()
