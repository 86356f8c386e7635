"""Serving metrics as a real Prometheus sees them, scraping a ScrapeEndpoint or the seed's port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import prometheus_client
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from test_proxy import Instant

import gangplank
from gangplank.drift import ChiSquare
from servers import Prometheus, free_port, http_get

pytestmark = pytest.mark.servers


@pytest.fixture
def endpoint() -> Iterator[gangplank.ScrapeEndpoint]:
    scrape = gangplank.ScrapeEndpoint(port=0)
    yield scrape
    scrape.shutdown()


@pytest.fixture
def provider(endpoint: gangplank.ScrapeEndpoint) -> Iterator[MeterProvider]:
    meter_provider = MeterProvider(metric_readers=[endpoint])
    yield meter_provider
    meter_provider.shutdown()


def test_prometheus_sees_exact_counts_and_the_latency_histogram(
    prometheus: Prometheus, endpoint: gangplank.ScrapeEndpoint, provider: MeterProvider
) -> None:
    served = gangplank.InstrumentedModel(Instant(), provider, name="exact", version="2")
    x = np.zeros((3, 2))
    for _ in range(7):
        served.predict(x)
    for _ in range(4):
        served(np.zeros((5, 2)))
    with pytest.raises(ValueError):
        served.predict("fail")
    prometheus.scrape(f"127.0.0.1:{endpoint.port}", suite="serving-exact")

    sel = '{suite="serving-exact",model_name="exact",model_version="2"}'
    prometheus.wait_for_value(f"gangplank_predict_total{sel}", 21)
    prometheus.wait_for_value(f"gangplank_predict_call_total{sel}", 20)
    assert prometheus.value(f"gangplank_predict_time_seconds_total{sel}") > 0
    assert prometheus.value(f"gangplank_predict_call_time_seconds_total{sel}") > 0
    predict = '{suite="serving-exact",model_name="exact",method="predict"}'
    assert prometheus.value(f"gangplank_predict_duration_seconds_count{predict}") == 8
    assert (
        prometheus.value(f'gangplank_predict_duration_seconds_bucket{{le="+Inf",{predict[1:]}') == 8
    )
    quantile = prometheus.value(
        f"histogram_quantile(0.99, gangplank_predict_duration_seconds_bucket{predict})"
    )
    assert quantile is not None and 0 < quantile <= 0.0001
    assert prometheus.value(f'gangplank_predict_batch_size_bucket{{le="4.0",{predict[1:]}') == 7
    assert prometheus.value(f"gangplank_predict_batch_size_sum{predict}") == 21
    errors = 'gangplank_predict_errors_total{suite="serving-exact",error_type="ValueError"}'
    assert prometheus.value(errors) == 1
    assert prometheus.value(f"gangplank_predict_in_flight{predict}") == 0


def test_prometheus_counts_eight_threads_exactly(
    prometheus: Prometheus, endpoint: gangplank.ScrapeEndpoint, provider: MeterProvider
) -> None:
    served = gangplank.InstrumentedModel(Instant(), provider, name="threads")
    x = np.zeros((2, 1))

    def work() -> None:
        for _ in range(1000):
            served.predict(x)
            served(x)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    prometheus.scrape(f"127.0.0.1:{endpoint.port}", suite="serving-threads")
    sel = '{suite="serving-threads",model_name="threads"}'
    prometheus.wait_for_value(f"gangplank_predict_total{sel}", 16_000)
    prometheus.wait_for_value(f"gangplank_predict_call_total{sel}", 16_000)
    prometheus.wait_for_value(f"sum(gangplank_predict_duration_seconds_count{sel})", 16_000)


def test_drift_series_and_the_seed_alert_expression(
    prometheus: Prometheus, endpoint: gangplank.ScrapeEndpoint, provider: MeterProvider
) -> None:
    rng = np.random.default_rng(0)
    reference = rng.choice(3, size=10_000, p=[0.6, 0.3, 0.1])
    served = gangplank.InstrumentedModel(
        Instant(), provider, name="drifting", drift=ChiSquare(reference, window=100)
    )
    for _ in range(10):  # every prediction is class 2: drift in every window
        served.predict(np.tile([0.0, 0.1, 0.9], (50, 1)))
    assert served.drift_monitor is not None and served.drift_monitor.join(10)
    prometheus.scrape(f"127.0.0.1:{endpoint.port}", suite="serving-drift")

    sel = '{suite="serving-drift",model_name="drifting",detector="chi_square"}'
    prometheus.wait_for_value(f"gangplank_predict_drift_windows_total{sel}", 5)
    assert prometheus.value(f"gangplank_predict_drift_detected_total{sel}") == 5
    assert prometheus.value(f"gangplank_predict_drift_p_value{sel}") < 1e-6
    assert prometheus.value(f"gangplank_predict_drift_test_statistic{sel}") > 100
    alert = prometheus.wait_for(
        'avg_over_time(gangplank_predict_drift_p_value{suite="serving-drift"}[5m]) < 0.05'
    )
    assert alert[0]["metric"]["model_name"] == "drifting"
    served.unwrap()


def test_prometheus_model_serves_the_seed_series_on_its_port(prometheus: Prometheus) -> None:
    registry = prometheus_client.CollectorRegistry()

    def get_drift_metrics(x: Any, y: Any) -> gangplank.Drift:
        return gangplank.Drift(drift_detected=1, p_value=0.01, test_statistic=3.0)

    port = free_port()
    served = gangplank.PrometheusModel(
        Instant(), registry=registry, port=port, get_drift_metrics_func=get_drift_metrics
    )
    try:
        assert served.port == port
        for _ in range(3):
            served.predict(np.zeros((4, 2)))
        served(np.zeros((2, 2)))
        assert served.drift_monitor is not None and served.drift_monitor.join(10)
        page = http_get(f"http://127.0.0.1:{port}/metrics")
        assert "gangplank_predict_total{" in page
        prometheus.scrape(f"127.0.0.1:{port}", suite="serving-seed")
        sel = '{suite="serving-seed"}'
        prometheus.wait_for_value(f"gangplank_predict_total{sel}", 12)
        prometheus.wait_for_value(f"gangplank_predict_call_total{sel}", 2)
        assert prometheus.value(f"gangplank_predict_time_seconds_total{sel}") > 0
        assert prometheus.value(f"gangplank_predict_call_time_seconds_total{sel}") > 0
        assert prometheus.value(f"gangplank_predict_drift_detected_total{sel}") == 3
        assert prometheus.value(f"gangplank_predict_drift_test_statistic{sel}") == 3.0
        prometheus.wait_for(
            'avg_over_time(gangplank_predict_drift_p_value{suite="serving-seed"}[5m]) < 0.05'
        )
    finally:
        served.unwrap()
