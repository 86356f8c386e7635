"""The push route against a real Pushgateway and Prometheus, and its faults."""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

import bcrypt
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

import gangplank
from gangplank import catalogue
from gangplank.histogram import HistogramFamily
from gangplank.producer import attach
from gangplank.provider import get_meter
from servers import Pushgateway, free_port, poll, silent_server, status_server


def _provider(reader: gangplank.PushgatewayReader) -> MeterProvider:
    return gangplank.configure(reader, set_global=False, service_name="test")


def _family_names(text: str) -> list[str]:
    return [family.name for family in text_string_to_metric_families(text)]


def test_push_reaches_prometheus_with_exact_values(pushgateway, prometheus) -> None:
    reader = gangplank.PushgatewayReader(pushgateway.url, "push-exact")
    provider = _provider(reader)
    meter = get_meter(provider)
    catalogue.TRAIN_EPOCHS.create(meter).set(4)
    catalogue.TRAIN_STEPS.create(meter).add(96)
    weights = HistogramFamily(catalogue.TRAIN_WEIGHTS, catalogue.WEIGHT_BUCKETS_1_0)
    attach(provider, weights)
    weights.series().replace([0.05] * 10 + [2.0] * 3)

    assert reader.push()
    prometheus.wait_for_value('gangplank_train_epochs_count{job="push-exact"}', 4)
    prometheus.wait_for_value('gangplank_train_steps_total{job="push-exact"}', 96)
    prometheus.wait_for_value('gangplank_train_model_weights_count{job="push-exact"}', 13)
    prometheus.wait_for_value('gangplank_train_model_weights_bucket{job="push-exact",le="0.1"}', 10)
    provider.shutdown()


def test_flushes_never_duplicate_families(pushgateway) -> None:
    reader = gangplank.PushgatewayReader(pushgateway.url, "push-dupes")
    provider = _provider(reader)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
    # Collections outside a push used to queue a second copy of every family: the
    # Pushgateway rejects such a push with 400.
    reader.collect()
    provider.force_flush()
    reader.collect()
    assert reader.push()
    assert reader.failures == 0
    names = _family_names(pushgateway.metrics())
    ours = [n for n in names if n.startswith("gangplank_train_epochs")]
    assert ours == ["gangplank_train_epochs_count"]
    provider.shutdown()


def test_push_replaces_the_whole_group(pushgateway) -> None:
    reader = gangplank.PushgatewayReader(pushgateway.url, "push-put")
    provider = _provider(reader)
    meter = get_meter(provider)
    gauge = catalogue.TRAIN_EPOCHS.create(meter)
    gauge.set(1)
    assert reader.push()
    gauge.set(2)
    assert reader.push()
    lines = [
        line
        for line in pushgateway.metrics().splitlines()
        if line.startswith("gangplank_train_epochs_count{") and 'job="push-put"' in line
    ]
    assert len(lines) == 1 and lines[0].endswith(" 2")
    provider.shutdown()


def test_grouping_key_values_may_contain_slashes(pushgateway) -> None:
    reader = gangplank.PushgatewayReader(
        pushgateway.url, "push-slash", grouping_key={"instance": "host/worker/3"}
    )
    provider = _provider(reader)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
    assert reader.push()
    labels = [g["labels"] for g in pushgateway.groups()]
    assert {"job": "push-slash", "instance": "host/worker/3"} in labels
    provider.shutdown()


def test_shutdown_makes_a_final_push_and_can_delete_the_group(pushgateway) -> None:
    reader = gangplank.PushgatewayReader(pushgateway.url, "push-final")
    provider = _provider(reader)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(5)
    provider.shutdown()  # no explicit push: shutdown pushes
    assert any(g["labels"].get("job") == "push-final" for g in pushgateway.groups())

    deleting = gangplank.PushgatewayReader(pushgateway.url, "push-delete", delete_on_shutdown=True)
    provider = _provider(deleting)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(5)
    assert deleting.push()
    assert any(g["labels"].get("job") == "push-delete" for g in pushgateway.groups())
    provider.shutdown()
    assert not any(g["labels"].get("job") == "push-delete" for g in pushgateway.groups())


@pytest.mark.parametrize(
    ("gateway", "job"),
    [
        ("", "job"),
        ("ftp://host:21", "job"),
        ("http://", "job"),
        ("http://host:notaport", "job"),
        ("http://host:9091", ""),
        ("http://host:9091", None),
    ],
)
def test_invalid_gateway_or_job_is_a_clear_error(gateway, job) -> None:
    with pytest.raises(ValueError, match=r"gateway|job"):
        gangplank.PushgatewayReader(gateway, job)


def test_https_and_bare_host_addresses_are_accepted() -> None:
    assert gangplank.PushgatewayReader("https://pgw.example:9091", "j").gateway.startswith(
        "https://"
    )
    assert gangplank.PushgatewayReader("localhost:9091", "j").gateway == "http://localhost:9091"


def _failing_run(url: str, caplog: pytest.LogCaptureFixture, timeout: float = 0.5) -> None:
    reader = gangplank.PushgatewayReader(url, "faulty", timeout=timeout)
    provider = _provider(reader)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
    with caplog.at_level(logging.DEBUG, logger="gangplank.pushgateway"):
        results = [reader.push() for _ in range(3)]
        provider.force_flush()  # never raises
        provider.shutdown()
    assert results == [False, False, False]
    assert reader.failures >= 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "one warning per failure streak"


def test_pushgateway_refusing_connections_is_logged_once(caplog) -> None:
    _failing_run(f"http://127.0.0.1:{free_port()}", caplog)


def test_silent_pushgateway_never_blocks_beyond_the_timeout(caplog) -> None:
    with silent_server() as url:
        _failing_run(url, caplog, timeout=0.3)


def test_pushgateway_answering_500(caplog) -> None:
    with status_server(500) as url:
        _failing_run(url, caplog)
    assert "500" in caplog.text


def test_request_push_does_not_wait_for_the_network() -> None:
    with silent_server() as url:
        reader = gangplank.PushgatewayReader(url, "async", timeout=2)
        provider = _provider(reader)
        catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
        ticket = reader.request_push()
        # The push is still blocked on the silent server, yet we are back already.
        assert not reader.wait(ticket, timeout=0)
        provider.shutdown(timeout_millis=100)


def test_failures_are_counted_in_the_next_successful_push(tmp_path: Path) -> None:
    gateway = Pushgateway(tmp_path)
    reader = gangplank.PushgatewayReader(gateway.url, "restarted", timeout=1)
    provider = _provider(reader)
    gauge = catalogue.TRAIN_EPOCHS.create(get_meter(provider))
    gauge.set(1)
    assert not reader.push()  # not started yet
    gateway.start()
    try:
        gauge.set(2)
        assert reader.push()
        gateway.stop()
        gauge.set(3)
        assert not reader.push()  # down mid-run
        gateway.start()  # back, same port
        gauge.set(4)
        assert reader.push()
        text = gateway.metrics()
        assert "gangplank_train_epochs_count{" in text
        values = {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.labels.get("job") == "restarted"
        }
        assert values["gangplank_train_epochs_count"] == 4
        assert values["gangplank_export_failures_total"] == 2
    finally:
        provider.shutdown()
        gateway.stop()


def test_final_push_is_retried_until_the_gateway_is_back(tmp_path: Path) -> None:
    gateway = Pushgateway(tmp_path)
    reader = gangplank.PushgatewayReader(gateway.url, "retried", timeout=20)
    provider = _provider(reader)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(9)
    ticket = reader.request_push(retry_for=20)
    poll(lambda: reader.failures >= 1, timeout=10, what="a first failed attempt")
    gateway.start()
    try:
        assert reader.wait(ticket, timeout=20)
        assert any(g["labels"].get("job") == "retried" for g in gateway.groups())
    finally:
        provider.shutdown()
        gateway.stop()


def test_basic_auth(tmp_path: Path, caplog) -> None:
    password = "s3cret-Pa55"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f'basic_auth_users:\n  trainer: "{hashed}"\n')
    gateway = Pushgateway(tmp_path, web_config=web_config)
    token = base64.b64encode(f"trainer:{password}".encode()).decode()
    gateway.headers = {"Authorization": f"Basic {token}"}
    gateway.start()
    try:
        with caplog.at_level(logging.DEBUG):
            good = gangplank.PushgatewayReader(
                gateway.url, "auth", username="trainer", password=password, timeout=2
            )
            provider = _provider(good)
            catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
            assert good.push()
            assert any(g["labels"].get("job") == "auth" for g in gateway.groups())
            provider.shutdown()

            bad = gangplank.PushgatewayReader(gateway.url, "noauth", timeout=2)
            provider = _provider(bad)
            catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
            assert not bad.push()
            provider.shutdown()

            wrong = gangplank.PushgatewayReader(
                gateway.url.replace("http://", f"http://trainer:{password}@"), "inurl", timeout=2
            )
            provider = _provider(wrong)
            catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
            wrong.push()
            provider.shutdown()
        assert "401" in caplog.text or "Unauthorized" in caplog.text
        assert password not in caplog.text
        assert password not in repr(good.__dict__.get("gateway"))
    finally:
        gateway.stop()


def test_pushes_from_many_threads_coalesce(pushgateway) -> None:
    reader = gangplank.PushgatewayReader(pushgateway.url, "threads")
    provider = _provider(reader)
    catalogue.TRAIN_EPOCHS.create(get_meter(provider)).set(1)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(reader.push())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    provider.shutdown()
