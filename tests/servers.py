"""Real Prometheus, Pushgateway and Alertmanager processes for the tests, on free loopback ports.

The binaries come from Debian's packages (installed here if missing and we are root). Nothing
is mocked: tests look at the data the way a user would, through the Prometheus HTTP API and
the ``/metrics`` pages.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PACKAGES = {
    "prometheus": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
}


def ensure_binary(name: str) -> str:
    """The path of a Debian-packaged binary, installing its package if missing (root only)."""
    found = shutil.which(name)
    if found:
        return found
    package = PACKAGES[name]
    if os.geteuid() != 0:
        raise RuntimeError(f"{name} is missing: apt-get install {package} (as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"installing {package} did not provide {name}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> str:
    """GET ``url`` and return the body as text (raises on HTTP errors)."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return str(response.read().decode())


def poll(
    check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Call ``check`` until it returns something truthy or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # servers starting up, series not there yet
            last_error = error
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or check}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


class Process:
    """A server process with a readiness URL; stopped (then killed) on :meth:`stop`."""

    def __init__(self, name: str, argv: list[str], ready_url: str, workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.ready_url = ready_url
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}  # e.g. basic auth, for readiness and queries

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            http_get(self.ready_url, timeout=2, headers=self.headers)
            return True

        try:
            poll(ready, timeout=timeout, what=f"{self.name} to be ready")
        except BaseException:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.log_tail()}") from None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Pushgateway(Process):
    """A real Pushgateway (admin API on, so tests can wipe it)."""

    def __init__(self, workdir: Path, web_config: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            ensure_binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-admin-api",
        ]
        if web_config is not None:
            argv.append(f"--web.config.file={web_config}")
        ready = self.url + "/-/ready"
        super().__init__(f"pushgateway-{self.port}", argv, ready, workdir)

    def metrics(self) -> str:
        """The Pushgateway's ``/metrics`` page."""
        return http_get(self.url + "/metrics", headers=self.headers)

    def groups(self) -> list[dict[str, Any]]:
        """``/api/v1/metrics``: every pushed group."""
        body = json.loads(http_get(self.url + "/api/v1/metrics", headers=self.headers))
        return list(body["data"])

    def wipe(self) -> None:
        request = urllib.request.Request(
            self.url + "/api/v1/admin/wipe", method="PUT", headers=self.headers
        )
        urllib.request.urlopen(request, timeout=5).close()


class Prometheus(Process):
    """A real Prometheus scraping the Pushgateway and any target a test registers.

    Targets are added through file-based service discovery, so tests can scrape endpoints
    on ports chosen at run time. It also accepts remote writes.
    """

    def __init__(
        self,
        workdir: Path,
        pushgateway_url: str | None = None,
        extra_scrape_configs: list[dict[str, Any]] | None = None,
        rule_files: list[str] | None = None,
        alertmanager_url: str | None = None,
        scrape_interval: str = "1s",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_dir = workdir / "targets"
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        scrape_configs: list[dict[str, Any]] = [
            {
                "job_name": "targets",
                "scrape_interval": scrape_interval,
                "file_sd_configs": [
                    {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                ],
            }
        ]
        if pushgateway_url:
            scrape_configs.append(
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "scrape_interval": scrape_interval,
                    "static_configs": [{"targets": [pushgateway_url.split("://", 1)[1]]}],
                }
            )
        scrape_configs.extend(extra_scrape_configs or [])
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        if rule_files:
            config["rule_files"] = rule_files
        if alertmanager_url:
            host = alertmanager_url.split("://", 1)[1]
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        self.config_path = workdir / "prometheus.yml"
        # JSON is valid YAML.
        self.config_path.write_text(json.dumps(config, indent=2))
        argv = [
            ensure_binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-remote-write-receiver",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        super().__init__(f"prometheus-{self.port}", argv, self.url + "/-/ready", workdir)
        self._target_count = 0
        self._lock = threading.Lock()

    @property
    def remote_write_url(self) -> str:
        return self.url + "/api/v1/write"

    def scrape(self, address: str, **labels: str) -> None:
        """Start scraping ``host:port`` (its ``/metrics``) every second."""
        with self._lock:
            self._target_count += 1
            path = self.targets_dir / f"t{self._target_count}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels}]))
        tmp.rename(path)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant PromQL query; return ``data.result``."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(http_get(url))
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr!r} returned {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def wait_for_value(
        self, expr: str, expected: float, timeout: float = 30.0, tolerance: float = 1e-9
    ) -> float:
        """Poll until ``expr`` has one value within ``tolerance`` of ``expected``."""

        def check() -> float | None:
            value = self.value(expr)
            if value is not None and abs(value - expected) <= tolerance * max(1.0, abs(expected)):
                return value if value != 0 else True  # type: ignore[return-value]
            return None

        poll(check, timeout=timeout, what=f"{expr} == {expected} (last: {self.query(expr)})")
        return expected

    def wait_for(
        self, expr: str, timeout: float = 30.0, check: Callable[[list[Any]], bool] = bool
    ) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns a result that satisfies ``check``; return it."""
        found: list[list[dict[str, Any]]] = []

        def attempt() -> bool:
            result = self.query(expr)
            if check(result):
                found.append(result)
                return True
            return False

        poll(attempt, timeout=timeout, what=f"query {expr!r}")
        return found[-1]

    def series_names(self, matcher: str) -> set[str]:
        """Every ``__name__`` matching a series selector, e.g. ``{job="x"}``."""
        url = self.url + "/api/v1/series?" + urllib.parse.urlencode({"match[]": matcher})
        body = json.loads(http_get(url))
        return {s["__name__"] for s in body["data"]}


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """An address that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@contextlib.contextmanager
def status_server(status: int) -> Iterator[str]:
    """An HTTP server that answers every request with ``status``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
