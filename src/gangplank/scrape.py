"""The scrape route: a reader that serves ``/metrics`` for Prometheus, for serving processes."""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from .exposition import RegistryReader

__all__ = ("ScrapeEndpoint",)

_logger = logging.getLogger(__name__)


class ScrapeEndpoint(RegistryReader):
    """Serve a MeterProvider's metrics on an HTTP ``/metrics`` endpoint.

    The server starts when the endpoint is constructed and runs on a daemon thread until
    :meth:`shutdown`. It answers in the Prometheus text format, or OpenMetrics when the
    scraper asks for it.

    Args:
        port: the TCP port; ``0`` picks a free one (read it back from ``.port``).
            Defaults to 9464, OpenTelemetry's Prometheus port.
        addr: the address to bind. Defaults to ``"127.0.0.1"``; use ``"0.0.0.0"`` to be
            scraped from other hosts.
        registry: the ``prometheus_client`` registry to serve. Defaults to a private one.

    Example:
    ```python
    endpoint = gangplank.ScrapeEndpoint(port=9464)
    provider = gangplank.configure(endpoint)
    # curl http://127.0.0.1:9464/metrics
    ```
    """

    def __init__(
        self,
        port: int = 9464,
        addr: str = "127.0.0.1",
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        super().__init__(registry)
        try:
            server, thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as error:
            super().shutdown()
            if error.errno == errno.EADDRINUSE:
                raise OSError(
                    error.errno, f"cannot serve metrics on {addr}:{port}: the port is in use"
                ) from error
            raise OSError(error.errno, f"cannot serve metrics on {addr}:{port}: {error}") from error
        self._server: Any = server
        self._thread: threading.Thread = thread
        self.addr = addr
        self.port: int = server.server_address[1]
        _logger.info("Serving metrics on http://%s:%d/metrics", addr, self.port)

    @property
    def url(self) -> str:
        """The endpoint's ``/metrics`` URL."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop the server and release the port."""
        if self._closed:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout_millis / 1000)
        super().shutdown(timeout_millis)
