"""The local stack: ``examples/stack/start.sh``/``stop.sh`` for real, ``docker-compose.yml`` parsed.

The scripts run on free ports (their environment overrides) with a temporary state
directory. The test checks that each service answers, that Prometheus loaded the example
rules and found the Alertmanager, that Gangplank series arrive through the Pushgateway and
(when Go is installed) through the Collector, and that ``stop.sh`` leaves no process behind.
Docker cannot run here, so the compose file is checked statically: images, commands, ports
and every file it mounts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import gangplank
from servers import ensure_binary, free_port, http_get, poll

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
START = EXAMPLES / "stack" / "start.sh"
STOP = EXAMPLES / "stack" / "stop.sh"
COMPOSE = EXAMPLES / "docker-compose.yml"
SERVICES = ("prometheus", "pushgateway", "alertmanager", "collector")
ALERTS = {
    "DriftDetected",
    "PredictLatencyP99High",
    "PredictErrorRatioHigh",
    "DriftWindowsFlaggedRatioHigh",
    "TrainingStalled",
    "NonFiniteLoss",
    "TrainingLastSuccessTooOld",
}


# --- docker-compose.yml ------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def flags(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``--name=value`` command flags."""
    found = {}
    for arg in service.get("command", []):
        name, _, value = arg.partition("=")
        found[name] = value
    return found


def test_compose_services_and_images() -> None:
    services = compose()["services"]
    images = {name: service["image"].split(":")[0] for name, service in services.items()}
    assert images == {
        "prometheus": "prom/prometheus",
        "pushgateway": "prom/pushgateway",
        "alertmanager": "prom/alertmanager",
        "otel-collector": "otel/opentelemetry-collector-contrib",
        "grafana": "grafana/grafana",
    }
    for name, service in services.items():
        tag = service["image"].partition(":")[2]
        assert tag and tag != "latest", f"{name}: pin the image version"
        # Host networking: the example configs' localhost targets work unchanged.
        assert service["network_mode"] == "host", name
        assert "ports" not in service, f"{name}: ports do not apply with host networking"


def test_compose_ports_match_the_prometheus_config() -> None:
    services = compose()["services"]
    config = yaml.safe_load((EXAMPLES / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0].split(":")[1]
        for job in config["scrape_configs"]
    }
    alertmanager = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert flags(services["prometheus"])["--web.listen-address"] == "127.0.0.1:9090"
    assert targets["prometheus"] == "9090"
    assert (
        flags(services["pushgateway"])["--web.listen-address"]
        == f"127.0.0.1:{targets['pushgateway']}"
    )
    assert (
        flags(services["alertmanager"])["--web.listen-address"]
        == "127.0.0.1:" + alertmanager.split(":")[1]
    )
    assert flags(services["alertmanager"])["--cluster.listen-address"] == ""
    environment = services["otel-collector"]["environment"]
    assert environment["PROM_EXPORTER_ENDPOINT"] == f"127.0.0.1:{targets['otel-collector']}"
    assert environment["OTLP_HTTP_ENDPOINT"] == "127.0.0.1:4318"
    datasource = yaml.safe_load(compose()["configs"]["grafana-datasource"]["content"])
    assert datasource["datasources"][0]["url"] == "http://127.0.0.1:9090"
    assert datasource["datasources"][0]["type"] == "prometheus"


def test_compose_mounts_existing_files() -> None:
    document = compose()
    named_volumes = set(document.get("volumes") or {})
    mounted: dict[str, str] = {}
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                path = (EXAMPLES / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which does not exist"
                mounted[target] = str(path.relative_to(REPO))
            else:
                assert source in named_volumes, f"{name}: undeclared volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in document["configs"], name
    assert mounted["/etc/prometheus/prometheus.yml"] == "examples/prometheus/prometheus.yml"
    assert mounted["/etc/prometheus/alerts.yml"] == "examples/prometheus/alerts.yml"
    assert mounted["/etc/alertmanager/alertmanager.yml"] == "examples/prometheus/alertmanager.yml"
    assert mounted["/etc/gangplank/config.yaml"] == "otel-collector/config.yaml"
    assert (
        mounted["/etc/gangplank/collector-no-remote-write.yaml"]
        == "examples/stack/collector-no-remote-write.yaml"
    )
    assert mounted["/etc/gangplank/dashboards/dashboard.json"] == "examples/grafana/dashboard.json"
    # The collector is started with the files that are mounted.
    command = document["services"]["otel-collector"]["command"]
    assert command == [
        "--config=/etc/gangplank/config.yaml",
        "--config=/etc/gangplank/collector-no-remote-write.yaml",
    ]
    # Grafana provisions the dashboard from the directory it is mounted in.
    provider = yaml.safe_load(document["configs"]["grafana-dashboards"]["content"])
    assert provider["providers"][0]["options"]["path"] == "/etc/gangplank/dashboards"


# --- start.sh / stop.sh for real ---------------------------------------------------------


def collector_available() -> bool:
    """Whether build.sh gives a Collector binary (exit 3: no Go)."""
    proc = subprocess.run(
        ["bash", str(REPO / "otel-collector" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode == 3:
        return False
    assert proc.returncode == 0, proc.stderr[-2000:]
    return True


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Stack:
    def __init__(self, state: Path, with_collector: bool) -> None:
        self.state = state
        self.with_collector = with_collector
        names = (
            "PROMETHEUS_PORT",
            "PUSHGATEWAY_PORT",
            "ALERTMANAGER_PORT",
            "SERVING_PORT",
            "OTLP_HTTP_PORT",
            "OTLP_GRPC_PORT",
            "COLLECTOR_PROMETHEUS_PORT",
            "COLLECTOR_HEALTH_PORT",
            "COLLECTOR_TELEMETRY_PORT",
        )
        self.ports = {name: free_port() for name in names}
        self.env = dict(
            os.environ,
            GANGPLANK_STACK_DIR=str(state),
            GANGPLANK_STACK_COLLECTOR="1" if with_collector else "0",
            SCRAPE_INTERVAL="1s",
            **{name: str(port) for name, port in self.ports.items()},
        )
        self.pids: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def run(self, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def read_pids(self) -> dict[str, int]:
        for name in SERVICES:
            pidfile = self.state / f"{name}.pid"
            if pidfile.exists():
                self.pids[name] = int(pidfile.read_text())
        return self.pids

    def kill_leftovers(self) -> None:
        """Last resort after a failure: our own recorded pids only."""
        for pid in self.pids.values():
            if alive(pid):
                os.kill(pid, 9)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for name in ("prometheus", "prometheus-pushgateway", "prometheus-alertmanager"):
        ensure_binary(name)
    running = Stack(tmp_path_factory.mktemp("stack") / "state", collector_available())
    started = running.run(START)
    running.read_pids()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        running.run(STOP)
        running.kill_leftovers()


def test_start_starts_every_service(stack: Stack) -> None:
    expected = {"prometheus", "pushgateway", "alertmanager"}
    if stack.with_collector:
        expected.add("collector")
    assert set(stack.pids) == expected
    assert all(alive(pid) for pid in stack.pids.values())
    http_get(stack.url("PROMETHEUS_PORT") + "/-/ready")
    http_get(stack.url("PUSHGATEWAY_PORT") + "/-/ready")
    http_get(stack.url("ALERTMANAGER_PORT") + "/-/ready")
    if stack.with_collector:
        http_get(stack.url("COLLECTOR_HEALTH_PORT") + "/")
    # Data and logs stay in the state directory.
    assert (stack.state / "prometheus-data").is_dir()
    assert (stack.state / "alertmanager-data").is_dir()
    assert (stack.state / "prometheus.log").exists()


def test_prometheus_runs_the_example_config(stack: Stack) -> None:
    prometheus = stack.url("PROMETHEUS_PORT")

    def rules() -> set[str]:
        groups = json.loads(http_get(prometheus + "/api/v1/rules"))["data"]["groups"]
        return {rule["name"] for group in groups for rule in group["rules"]}

    def alertmanagers() -> list[str]:
        body = json.loads(http_get(prometheus + "/api/v1/alertmanagers"))
        return [a["url"] for a in body["data"]["activeAlertmanagers"]]

    def targets() -> dict[str, str]:
        body = json.loads(http_get(prometheus + "/api/v1/targets"))
        return {t["labels"]["job"]: t["scrapeUrl"] for t in body["data"]["activeTargets"]}

    # Service discovery runs in the background after start-up: poll until it settled.
    expected_targets = {
        "pushgateway": stack.url("PUSHGATEWAY_PORT") + "/metrics",
        "gangplank-serving": stack.url("SERVING_PORT") + "/metrics",
        "otel-collector": stack.url("COLLECTOR_PROMETHEUS_PORT") + "/metrics",
        "prometheus": stack.url("PROMETHEUS_PORT") + "/metrics",
    }
    expected_alertmanagers = [stack.url("ALERTMANAGER_PORT") + "/api/v2/alerts"]
    poll(lambda: rules() == ALERTS, timeout=30, what="the example rules")
    poll(lambda: targets() == expected_targets, timeout=30, what="the example targets")
    poll(lambda: alertmanagers() == expected_alertmanagers, timeout=30, what="Alertmanager")


class Instant:
    def predict(self, x: Any, **kwargs: Any) -> Any:
        return np.zeros((len(x), 1))

    __call__ = predict


def query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    url = stack.url("PROMETHEUS_PORT") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return list(json.loads(http_get(url))["data"]["result"])


def test_push_route_through_the_stack(stack: Stack) -> None:
    reader = gangplank.PushgatewayReader(stack.url("PUSHGATEWAY_PORT"), job="stack-push")
    provider = gangplank.configure(reader, set_global=False)
    try:
        gangplank.InstrumentedModel(Instant(), provider, name="pushed").predict(np.ones((5, 2)))
        assert reader.wait(reader.request_push())
    finally:
        provider.shutdown()
    result = poll(
        lambda: query(stack, 'gangplank_predict_total{job="stack-push", model_name="pushed"}'),
        timeout=30,
        what="the pushed series in Prometheus",
    )
    assert float(result[0]["value"][1]) == 5


def test_collector_route_through_the_stack(stack: Stack) -> None:
    if not stack.with_collector:
        pytest.skip("Go is not installed: the stack runs without the Collector")
    reader = gangplank.otlp_reader(stack.url("OTLP_HTTP_PORT"), interval=3600)
    provider = gangplank.configure(reader, service_name="stack-otlp", set_global=False)
    try:
        gangplank.InstrumentedModel(Instant(), provider, name="sent").predict(np.ones((7, 2)))
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    # honor_labels keeps the job the Collector derived from service.name.
    result = poll(
        lambda: query(stack, 'gangplank_predict_total{job="stack-otlp", model_name="sent"}'),
        timeout=30,
        what="the OTLP series in Prometheus",
    )
    assert float(result[0]["value"][1]) == 7


def test_start_refuses_a_second_stack(stack: Stack) -> None:
    again = stack.run(START)
    assert again.returncode != 0
    assert "already running" in again.stderr
    assert all(alive(pid) for pid in stack.pids.values())


def test_stop_stops_everything(tmp_path: Path) -> None:
    """A stack of its own (the module's stays up for the other tests), started then stopped."""
    stack = Stack(tmp_path / "state", collector_available())
    try:
        started = stack.run(START)
        assert started.returncode == 0, started.stderr
        pids = dict(stack.read_pids())
        assert len(pids) == (4 if stack.with_collector else 3)
        assert all(alive(pid) for pid in pids.values())
        stopped = stack.run(STOP)
        assert stopped.returncode == 0, stopped.stderr
        poll(lambda: not any(alive(pid) for pid in pids.values()), timeout=15, what="all gone")
        assert not list(stack.state.glob("*.pid"))
        for name in ("PROMETHEUS_PORT", "PUSHGATEWAY_PORT", "ALERTMANAGER_PORT", "OTLP_HTTP_PORT"):
            with pytest.raises(OSError):
                http_get(stack.url(name) + "/", timeout=2)
        # Stopping again is harmless; --purge removes the state directory.
        again = stack.run(STOP, "--purge")
        assert again.returncode == 0, again.stderr
        assert not stack.state.exists()
    finally:
        stack.run(STOP)
        stack.kill_leftovers()


def test_start_fails_cleanly_on_a_busy_port(tmp_path: Path) -> None:
    """Prometheus's port is taken: start.sh fails and stops what it had already started."""
    stack = Stack(tmp_path / "state", with_collector=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        stack.ports["PROMETHEUS_PORT"] = busy.getsockname()[1]
        stack.env["PROMETHEUS_PORT"] = str(busy.getsockname()[1])
        try:
            failed = stack.run(START)
            stack.read_pids()
            assert failed.returncode != 0
            assert f"port {busy.getsockname()[1]} for prometheus is already in use" in failed.stderr
            # The Pushgateway and Alertmanager, started before, were stopped again.
            assert "pushgateway stopped" in failed.stderr
            assert "alertmanager stopped" in failed.stderr
            assert not list(stack.state.glob("*.pid"))
            started = [int(pid) for pid in re.findall(r"ready \(pid (\d+)\)", failed.stderr)]
            assert len(started) == 2, failed.stderr
            stack.pids.update(zip(("pushgateway", "alertmanager"), started, strict=True))
            poll(lambda: not any(alive(pid) for pid in started), timeout=15, what="stopped")
        finally:
            stack.run(STOP)
            stack.kill_leftovers()
