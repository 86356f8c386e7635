"""The example Prometheus/Alertmanager configs and alert rules: linted, unit-tested, and live.

``promtool``/``amtool`` check the files the way CI and users do; ``promtool test rules``
runs ``alerts_test.yml`` (a firing and a silent case for every alert). The live test runs a
real Prometheus with the rules and a real Alertmanager, feeds Gangplank's own drift series
(an :class:`~gangplank.InstrumentedModel` behind a :class:`~gangplank.ScrapeEndpoint`) and
waits for ``DriftDetected`` to reach the Alertmanager.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import gangplank
from servers import Process, Prometheus, ensure_binary, free_port, http_get, poll

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "prometheus"
PROMETHEUS_YML = EXAMPLES / "prometheus.yml"
ALERTS_YML = EXAMPLES / "alerts.yml"
ALERTS_TEST_YML = EXAMPLES / "alerts_test.yml"
ALERTMANAGER_YML = EXAMPLES / "alertmanager.yml"

SEED_EXPRESSION = "avg_over_time(gangplank_predict_drift_p_value[5m]) < 0.05"
ALERTS = {
    "DriftDetected",
    "PredictLatencyP99High",
    "PredictErrorRatioHigh",
    "DriftWindowsFlaggedRatioHigh",
    "TrainingStalled",
    "NonFiniteLoss",
    "TrainingLastSuccessTooOld",
}


def run(*argv: str, cwd: Path = EXAMPLES) -> str:
    """Run a checker; fail the test with its output unless it exits 0."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{output}"
    return output


def rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule of alerts.yml by name."""
    document = yaml.safe_load(ALERTS_YML.read_text())
    found: dict[str, dict[str, Any]] = {}
    for group in document["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in found, f"duplicate alert {rule['alert']}"
            found[rule["alert"]] = rule
    return found


def test_promtool_check_config() -> None:
    output = run(ensure_binary("promtool"), "check", "config", str(PROMETHEUS_YML))
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_check_rules() -> None:
    output = run(ensure_binary("promtool"), "check", "rules", str(ALERTS_YML))
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_promtool_test_rules() -> None:
    output = run(ensure_binary("promtool"), "test", "rules", str(ALERTS_TEST_YML))
    assert "SUCCESS" in output


def test_amtool_check_config() -> None:
    output = run(ensure_binary("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert "SUCCESS" in output


def test_seed_drift_expression_unchanged() -> None:
    assert f"expr: {SEED_EXPRESSION}\n" in ALERTS_YML.read_text()
    assert rules()["DriftDetected"]["expr"] == SEED_EXPRESSION


def test_every_alert_is_complete_and_unit_tested() -> None:
    found = rules()
    assert set(found) == ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" in rule, name
    tests = yaml.safe_load(ALERTS_TEST_YML.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    assert firing == ALERTS, f"no firing case for {ALERTS - firing}"
    assert silent == ALERTS, f"no silent case for {ALERTS - silent}"


def test_prometheus_yml_routes() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for sc in job["static_configs"] for t in sc["targets"]]
        for name, job in jobs.items()
    }
    assert jobs["pushgateway"]["honor_labels"] is True
    assert targets["pushgateway"] == ["localhost:9091"]
    assert targets["gangplank-serving"] == ["localhost:9464"]
    assert jobs["otel-collector"]["honor_labels"] is True
    assert targets["otel-collector"] == ["localhost:8889"]
    assert config["rule_files"] == ["alerts.yml"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["localhost:9093"]


# --- live: real Prometheus evaluating the rules, real Alertmanager receiving ----------------


class Alertmanager(Process):
    """A real Alertmanager on a free loopback port, clustering off."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            ensure_binary("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        super().__init__(f"alertmanager-{self.port}", argv, self.url + "/-/ready", workdir)

    def alerts(self) -> list[dict[str, Any]]:
        return list(json.loads(http_get(self.url + "/api/v2/alerts")))


@pytest.fixture(scope="module")
def alerting_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """Alertmanager with the example config, and Prometheus with the rules (``for: 0s``)."""
    workdir = tmp_path_factory.mktemp("alerting")
    manager = Alertmanager(workdir, ALERTMANAGER_YML)
    manager.start()
    document = yaml.safe_load(ALERTS_YML.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    immediate = workdir / "alerts-immediate.yml"
    immediate.write_text(yaml.safe_dump(document))
    prometheus = Prometheus(workdir, rule_files=[str(immediate)], alertmanager_url=manager.url)
    try:
        prometheus.start()
    except BaseException:
        manager.stop()
        raise
    yield prometheus, manager
    prometheus.stop()
    manager.stop()


class FakeModel:
    """An instant 'model': predict and __call__ return one row per input row."""

    def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
        return np.zeros((len(x), 1))

    def __call__(self, x: Any, **kwargs: Any) -> np.ndarray:
        return self.predict(x)


def test_drift_detected_reaches_alertmanager(alerting_stack: tuple[Any, Any]) -> None:
    prometheus, manager = alerting_stack
    endpoint = gangplank.ScrapeEndpoint(port=0)
    provider = gangplank.configure(endpoint, set_global=False)
    try:
        drifting = gangplank.InstrumentedModel(
            FakeModel(),
            provider,
            name="drifting",
            drift=gangplank.drift.FunctionDetector(
                lambda x, y: gangplank.Drift(drift_detected=1, p_value=0.01), name="seed_fn"
            ),
        )
        healthy = gangplank.InstrumentedModel(
            FakeModel(),
            provider,
            name="healthy",
            drift=gangplank.drift.FunctionDetector(
                lambda x, y: gangplank.Drift(drift_detected=0, p_value=0.9), name="seed_fn"
            ),
        )
        x = np.ones((4, 3))
        drifting.predict(x)
        healthy.predict(x)
        prometheus.scrape(f"127.0.0.1:{endpoint.port}", job="serving")

        # Both p-values arrive through Prometheus; only the low one makes an alert.
        prometheus.wait_for(
            'gangplank_predict_drift_p_value{job="serving"}', check=lambda r: len(r) == 2
        )

        def drift_alerts() -> list[dict[str, Any]]:
            return [a for a in manager.alerts() if a["labels"]["alertname"] == "DriftDetected"]

        alerts = poll(drift_alerts, timeout=60, what="DriftDetected in Alertmanager")
        assert len(alerts) == 1, alerts
        alert = alerts[0]
        assert alert["labels"]["model_name"] == "drifting"
        assert alert["labels"]["detector"] == "seed_fn"
        assert alert["labels"]["job"] == "serving"
        assert alert["labels"]["severity"] == "warning"
        assert alert["status"]["state"] == "active"
        assert "mean p-value of 0.01 " in alert["annotations"]["description"]
        # The healthy model is evaluated by the same rule and stays silent.
        firing = prometheus.query('ALERTS{alertname="DriftDetected", alertstate="firing"}')
        assert {r["metric"]["model_name"] for r in firing} == {"drifting"}
    finally:
        provider.shutdown()
