"""Build and run the Gangplank OpenTelemetry Collector for tests.

Plain helper module (stdlib only, no pytest fixtures): ``test_collector.py`` wraps it.

* :func:`collector_binary` builds the collector with ``otel-collector/build.sh``
  (cached outside the repository, so only the first call of a machine is slow)
  and returns the binary's path, or ``None`` when no Go toolchain is installed.
* :class:`Collector` runs that binary with ``otel-collector/config.yaml`` on free
  loopback ports and waits until its health check answers.

Remote write: when ``remote_write_url`` is ``None`` the remote-write pipeline is
switched off by merging a small overlay config (``--config`` given twice) that
routes that pipeline to the ``debug`` exporter instead, so nothing tries to
reach a Prometheus that is not there. Give a URL (e.g. of a fake remote-write
receiver) to exercise the ``prometheus_remote_write`` exporter.

Example::

    binary = collector_binary()
    if binary is not None:
        with Collector(binary, tmp_path) as col:
            post_otlp_json(col.otlp_http_endpoint + "/v1/metrics", payload)
            text = col.wait_for_metric("test_requests_total")
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_DIR = REPO_ROOT / "otel-collector"
BUILD_SCRIPT = COLLECTOR_DIR / "build.sh"
CONFIG_PATH = COLLECTOR_DIR / "config.yaml"

#: A collector binary built beforehand (``tests/run.sh`` exports it); skips build.sh.
PREBUILT_ENV = "GANGPLANK_OTELCOL"

#: Exit status of build.sh when no Go toolchain is installed.
GO_MISSING_EXIT_CODE = 3

_NO_REMOTE_WRITE_OVERLAY = """\
# Written by tests/collector.py: no remote-write target in this test, so the
# remote-write pipeline goes to the debug exporter instead.
service:
  pipelines:
    metrics/remotewrite:
      exporters: [debug]
"""

#: Logged by the collector service once every pipeline and extension started.
_READY_LINE = "Everything is ready"

_UNSET = object()
_binary: object = _UNSET
_binary_lock = threading.Lock()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def collector_binary(timeout: float | None = None) -> str | None:
    """Build (or reuse) the collector and return the binary's absolute path.

    ``$GANGPLANK_OTELCOL``, when set, is used as is. Otherwise returns ``None`` when Go is
    not installed (build.sh exits with status 3).
    Raises :class:`RuntimeError`, with the tail of the build's stderr, on any
    other build failure. A successful result (or ``None``) is cached for the
    life of the process; failures are not cached.
    """
    global _binary
    with _binary_lock:
        if _binary is not _UNSET:
            return _binary  # type: ignore[return-value]
        prebuilt = os.environ.get(PREBUILT_ENV, "").strip()
        if prebuilt:
            # tests/run.sh builds once and exports the path.
            if not os.access(prebuilt, os.X_OK):
                raise RuntimeError(f"{PREBUILT_ENV}={prebuilt!r} is not an executable file")
            _binary = prebuilt
            return prebuilt
        try:
            proc = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr or ""
            if isinstance(stderr, bytes):
                stderr = stderr.decode(errors="replace")
            raise RuntimeError(
                f"collector build timed out after {timeout}s:\n{_tail(stderr)}"
            ) from exc
        if proc.returncode == GO_MISSING_EXIT_CODE:
            _binary = None
            return None
        if proc.returncode != 0:
            raise RuntimeError(
                f"collector build failed (exit {proc.returncode}):\n{_tail(proc.stderr)}"
            )
        lines = proc.stdout.strip().splitlines()
        path = lines[-1].strip() if lines else ""
        if not path or not os.access(path, os.X_OK):
            raise RuntimeError(
                f"collector build printed no executable path (stdout={proc.stdout!r}):\n"
                f"{_tail(proc.stderr)}"
            )
        _binary = path
        return path


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class CollectorError(RuntimeError):
    """The collector failed to start (the message holds the tail of its log)."""


class Collector:
    """One collector process on free loopback ports.

    After :meth:`start`:

    * ``otlp_http_endpoint``: ``"http://127.0.0.1:PORT"`` (POST ``/v1/metrics``)
    * ``otlp_grpc_endpoint``: ``"127.0.0.1:PORT"``
    * ``prometheus_exporter_address``: ``"127.0.0.1:PORT"`` (scrape ``/metrics``)
    * ``prometheus_metrics_url``: ``"http://127.0.0.1:PORT/metrics"``
    * ``health_check_url``, ``telemetry_port``, ``ports`` (dict of all ports)
    * ``log_path``: the collector's stdout+stderr (appended to on restart)

    :meth:`restart` stops the process and starts it again on the SAME ports.
    Usable as a context manager (starts on enter if needed, stops on exit).
    """

    PORT_NAMES = ("otlp_http", "otlp_grpc", "prometheus", "health_check", "telemetry")

    def __init__(
        self,
        binary: str | os.PathLike[str],
        workdir: str | os.PathLike[str],
        remote_write_url: str | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.remote_write_url = remote_write_url
        self.config_path = Path(config_path) if config_path else CONFIG_PATH
        self.extra_env = dict(env or {})
        self.log_path = self.workdir / "otelcol.log"
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------ addresses
    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port('otlp_http')}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self._port('otlp_grpc')}"

    @property
    def prometheus_exporter_address(self) -> str:
        return f"127.0.0.1:{self._port('prometheus')}"

    @property
    def prometheus_metrics_url(self) -> str:
        return f"http://{self.prometheus_exporter_address}/metrics"

    @property
    def health_check_url(self) -> str:
        return f"http://127.0.0.1:{self._port('health_check')}/"

    @property
    def telemetry_port(self) -> int:
        return self._port("telemetry")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _port(self, name: str) -> int:
        if name not in self.ports:
            raise RuntimeError("collector ports are chosen by start()")
        return self.ports[name]

    # ------------------------------------------------------------ lifecycle
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> Collector:
        """Start on fresh free ports and wait for the health check (200)."""
        if self.is_running():
            raise RuntimeError("collector is already running")
        attempts = 3
        for attempt in range(1, attempts + 1):
            self.ports = dict(zip(self.PORT_NAMES, _free_ports(len(self.PORT_NAMES)), strict=True))
            try:
                self._launch_and_wait(timeout)
                return self
            except CollectorError as exc:
                # Another process may have taken a port between choosing and binding.
                if attempt < attempts and "address already in use" in str(exc).lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def restart(self, timeout: float = 60.0) -> Collector:
        """Stop, then start again on the same ports."""
        if not self.ports:
            return self.start(timeout)
        self.stop()
        self._launch_and_wait(timeout)
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        return proc.returncode

    def __enter__(self) -> Collector:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; do not leak processes
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    # ------------------------------------------------------------ internals
    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            OTLP_HTTP_ENDPOINT=f"127.0.0.1:{self.ports['otlp_http']}",
            OTLP_GRPC_ENDPOINT=f"127.0.0.1:{self.ports['otlp_grpc']}",
            PROM_EXPORTER_ENDPOINT=f"127.0.0.1:{self.ports['prometheus']}",
            HEALTH_CHECK_ENDPOINT=f"127.0.0.1:{self.ports['health_check']}",
            COLLECTOR_TELEMETRY_PORT=str(self.ports["telemetry"]),
            # Unused (pipeline switched off) when no URL is given.
            PROM_REMOTE_WRITE_URL=self.remote_write_url or "http://127.0.0.1:9/api/v1/write",
        )
        env.update(self.extra_env)
        return env

    def _command(self) -> list[str]:
        cmd = [self.binary, f"--config={self.config_path}"]
        if self.remote_write_url is None:
            overlay = self.workdir / "otelcol-no-remote-write.yaml"
            overlay.write_text(_NO_REMOTE_WRITE_OVERLAY)
            cmd.append(f"--config={overlay}")
        return cmd

    def _launch_and_wait(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== starting collector, ports {self.ports} ====\n".encode())
            log.flush()
            log_offset = log.tell()
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise CollectorError(
                    f"collector exited with status {code} during startup; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            # The health check alone is not proof: if another process holds
            # our health-check port it would answer for us. So also require
            # this run's own log to say that the service is up.
            if (
                _READY_LINE in self._log_since(log_offset)
                and self._healthy()
                and _port_open(self.ports["prometheus"])
            ):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise CollectorError(
                    f"collector not healthy after {timeout}s; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_check_url, timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # ------------------------------------------------------------ helpers
    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return ""

    def scrape(self, timeout: float = 5.0) -> str:
        """Text of the Prometheus exporter's ``/metrics``."""
        with urllib.request.urlopen(self.prometheus_metrics_url, timeout=timeout) as resp:
            return resp.read().decode()

    def wait_for_metric(
        self,
        match: str | Callable[[str], bool],
        timeout: float = 10.0,
    ) -> str:
        """Poll ``/metrics`` until ``match`` (substring or predicate) holds.

        The batch processor delays data by up to 1s, so a metric is not visible
        right after the OTLP request returns. Returns the matching scrape text;
        raises :class:`TimeoutError` with the last scrape otherwise.
        """
        check = match if callable(match) else (lambda text: match in text)
        deadline = time.monotonic() + timeout
        text = ""
        while True:
            try:
                text = self.scrape()
            except (urllib.error.URLError, OSError):
                text = ""
            if check(text):
                return text
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"metric {match!r} not exposed after {timeout}s; last scrape:\n{text}"
                )
            time.sleep(0.1)
