"""Shared fixtures: a Keras backend for the run, in-memory providers, and real servers."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from servers import Prometheus, Pushgateway


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An SDK in-memory reader (the provider comes from the ``meter_provider`` fixture)."""
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    """A fresh MeterProvider reading into ``reader``; never the global one."""
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """A real Pushgateway for the whole session (tests use their own job names)."""
    gateway = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, pushgateway: Pushgateway
) -> Iterator[Prometheus]:
    """A real Prometheus scraping the Pushgateway (``honor_labels``) every second.

    ``prometheus.scrape("127.0.0.1:PORT")`` adds a scrape target at run time.
    """
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), pushgateway.url)
    server.start()
    yield server
    server.stop()
