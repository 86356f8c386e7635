"""The scrape route: a real Prometheus scraping a ScrapeEndpoint."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gangplank
from gangplank import catalogue
from gangplank.histogram import HistogramFamily
from gangplank.producer import attach
from gangplank.provider import get_meter
from servers import http_get


@pytest.fixture
def endpoint():
    endpoint = gangplank.ScrapeEndpoint(port=0)
    yield endpoint
    endpoint.shutdown()


def test_prometheus_scrapes_exact_values(endpoint, prometheus) -> None:
    provider = gangplank.configure(endpoint, set_global=False, service_name="scraped")
    meter = get_meter(provider)
    catalogue.TRAIN_STEPS.create(meter).add(41)
    latency = HistogramFamily(catalogue.PREDICT_DURATION)
    attach(provider, latency)
    for value in (0.002, 0.002, 0.3):
        latency.series({"method": "predict"}).observe(value)
    prometheus.scrape(f"127.0.0.1:{endpoint.port}", job="scrape-exact")
    prometheus.wait_for_value('gangplank_train_steps_total{job="scrape-exact"}', 41)
    prometheus.wait_for_value(
        'gangplank_predict_duration_seconds_count{job="scrape-exact",method="predict"}', 3
    )
    prometheus.wait_for_value(
        'gangplank_predict_duration_seconds_bucket{job="scrape-exact",le="0.0025"}', 2
    )
    p50 = prometheus.value(
        'histogram_quantile(0.5, gangplank_predict_duration_seconds_bucket{job="scrape-exact"})'
    )
    assert p50 is not None and 0.001 < p50 <= 0.0025
    provider.shutdown()


def test_flushes_never_duplicate_series(endpoint) -> None:
    provider = gangplank.configure(endpoint, set_global=False)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(2)
    for _ in range(3):
        provider.force_flush()
        endpoint.collect()
    names = [f.name for f in text_string_to_metric_families(http_get(endpoint.url))]
    assert len(names) == len(set(names))
    assert "gangplank_train_epochs_count" in names


def test_openmetrics_when_the_scraper_asks(endpoint) -> None:
    provider = gangplank.configure(endpoint, set_global=False)
    catalogue.TRAIN_STEPS.create(get_meter(provider)).add(1)
    request = urllib.request.Request(
        endpoint.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        body = response.read().decode()
    assert body.rstrip().endswith("# EOF")
    assert (
        "gangplank_train_steps_total 1.0"
        in body.replace(
            '{otel_scope_name="gangplank",otel_scope_schema_url="",otel_scope_version="1.0.0"}', ""
        )
        or "gangplank_train_steps_total{" in body
    )


def test_negative_bucket_histograms_keep_count_and_sum(endpoint) -> None:
    provider = gangplank.configure(endpoint, set_global=False)
    weights = HistogramFamily(catalogue.TRAIN_WEIGHTS, catalogue.WEIGHT_BUCKETS_0_3)
    attach(provider, weights)
    weights.series().replace([-0.5, 0.01, 0.02, 0.5])
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(http_get(endpoint.url))
        for s in f.samples
    }
    assert samples["gangplank_train_model_weights_count"] == 4
    assert samples["gangplank_train_model_weights_sum"] == pytest.approx(0.03)


def test_binds_loopback_by_default(endpoint) -> None:
    assert endpoint.addr == "127.0.0.1"
    assert endpoint._server.server_address[0] == "127.0.0.1"


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match="in use") as raised:
            gangplank.ScrapeEndpoint(port=port)
        assert raised.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("port", [-1, 70000, "9464", 1.5, True])
def test_bad_port_is_refused(port) -> None:
    with pytest.raises(ValueError, match="port"):
        gangplank.ScrapeEndpoint(port=port)


def test_shutdown_releases_the_port() -> None:
    endpoint = gangplank.ScrapeEndpoint(port=0)
    port = endpoint.port
    endpoint.shutdown()
    again = gangplank.ScrapeEndpoint(port=port)
    again.shutdown()


def test_exponential_histograms_are_left_out_with_a_warning(endpoint, caplog) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

    provider = MeterProvider(
        metric_readers=[endpoint],
        views=[View(instrument_name="exp*", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("t")
    meter.create_histogram("exp.latency", unit="s").record(0.5)
    meter.create_counter("kept").add(1)
    text = http_get(endpoint.url)
    assert "kept_total" in text
    assert "exp_latency" not in text
    assert "exponential" in caplog.text


def test_import_starts_nothing_and_loads_no_extra_backend() -> None:
    code = (
        "import sys, threading, keras\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "import gangplank\n"
        "after = {m.split('.')[0] for m in sys.modules}\n"
        "extra = (after - before) & {'tensorflow', 'torch', 'jax', 'flax'}\n"
        "assert not extra, extra\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_promtool_finds_nothing_but_the_seed_names_in_real_series(endpoint) -> None:
    import keras
    import numpy as np

    from servers import ensure_binary

    provider = gangplank.configure(endpoint, set_global=False)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2, activation="softmax")]
    )
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    callback = gangplank.TrainingMetrics(
        provider, weight_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0, per_layer=True
    )
    model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=[callback])
    model.evaluate(x, y, verbose=0, callbacks=[callback])
    served = gangplank.InstrumentedModel(
        model, provider, name="m", classes=2, drift=gangplank.drift.ChiSquare(y, window=16)
    )
    for _ in range(4):
        served.predict(x[:8], verbose=0)
    served(x[:4])
    served.drift_monitor.join(timeout=30)
    page = http_get(endpoint.url)
    assert "gangplank_predict_class_total" in page

    result = subprocess.run(
        [ensure_binary("promtool"), "check", "metrics"],
        input=page, capture_output=True, text=True, check=False,
    )  # fmt: skip
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # The seed's gauges end in _count, which the linter keeps for histograms and summaries.
    seed = (
        "gangplank_train_epochs_count",
        "gangplank_train_model_parameters_count",
        "gangplank_test_model_parameters_count",
    )
    unexpected = [p for p in problems if not p.startswith(seed)]
    assert any(p.startswith(seed) for p in problems), "promtool did not run"
    assert not unexpected, unexpected
    provider.shutdown()
