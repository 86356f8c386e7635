"""The push route: a reader that pushes to a Prometheus Pushgateway, for batch jobs.

Pushes run on one background thread; the caller never waits on the network for longer than
it asks to. A push is a PUT of exactly what a scrape of the reader's registry shows, so the
group is replaced as a whole. Failures are logged once per failure streak and counted in
``gangplank_export_failures_total{route="pushgateway"}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
)

from .exposition import RegistryReader
from .failures import FailureLog

__all__ = ("PushgatewayReader",)

_logger = logging.getLogger(__name__)

Handler = Callable[..., Callable[[], None]]


def _validate_gateway(gateway: str) -> str:
    if not isinstance(gateway, str) or not gateway.strip():
        raise ValueError("gateway must be a Pushgateway address such as 'http://localhost:9091'")
    url = gateway.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"gateway must be an http:// or https:// URL, got {_redact(gateway)!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"gateway has an invalid port: {_redact(gateway)!r}") from error
    if not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"gateway has no valid host: {_redact(gateway)!r}")
    del port
    return url.rstrip("/")


def _redact(url: str) -> str:
    """``url`` without any ``user:password@`` part, for logs and errors."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return "<invalid URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class PushgatewayReader(RegistryReader):
    """Push a MeterProvider's metrics to a Prometheus Pushgateway.

    Use it for training and evaluation jobs, which end before Prometheus could scrape them.
    Prometheus must scrape the Pushgateway with ``honor_labels: true``.

    Args:
        gateway: the Pushgateway URL, e.g. ``"http://localhost:9091"`` (``https://`` works;
            no scheme means ``http://``).
        job: the ``job`` grouping label.
        grouping_key: further grouping labels, e.g. ``{"instance": "worker-3"}``. Values
            may contain ``/``.
        handler: a ``prometheus_client`` push handler (custom auth or TLS). Defaults to
            plain HTTP(S), or basic auth when ``username`` is given.
        username: basic-auth user name. Defaults to None.
        password: basic-auth password; never logged.
        timeout: seconds any one push may take, and the longest a flush or shutdown waits.
            Defaults to 5.
        delete_on_shutdown: delete the group from the Pushgateway at shutdown (the
            Pushgateway has no expiry). Defaults to False.

    Example:
    ```python
    reader = gangplank.PushgatewayReader("http://localhost:9091", job="train-mnist")
    provider = gangplank.configure(reader, set_global=False)
    model.fit(x, y, callbacks=[gangplank.TrainingMetrics(provider)])
    provider.shutdown()  # final push, retried within the timeout
    ```
    """

    def __init__(
        self,
        gateway: str,
        job: str,
        *,
        grouping_key: Mapping[str, str] | None = None,
        handler: Handler | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        delete_on_shutdown: bool = False,
    ) -> None:
        self.gateway = _validate_gateway(gateway)
        if not isinstance(job, str) or not job.strip():
            raise ValueError("job must be a non-empty string")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if handler is not None and username is not None:
            raise ValueError("give either handler or username/password, not both")
        self.job = job
        self.grouping_key = {str(k): str(v) for k, v in (grouping_key or {}).items()}
        self.timeout = float(timeout)
        self.delete_on_shutdown = delete_on_shutdown
        if username is not None:
            user, secret = username, password or ""

            def handler(url: str, method: str, timeout: Any, headers: Any, data: Any) -> Any:
                return basic_auth_handler(url, method, timeout, headers, data, user, secret)

        self._handler: Handler = handler or default_handler
        super().__init__()
        self._failures = FailureLog("pushgateway", _logger)
        self.add_producer(self._failures)
        self._cond = threading.Condition()
        self._requested = 0  # generation of the newest push request
        self._finished = 0  # generation of the newest push that ended (either way)
        self._succeeded = 0  # generation of the newest push that succeeded
        self._retry_until = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def failures(self) -> int:
        """How many pushes have failed."""
        return self._failures.count

    def request_push(self, *, retry_for: float = 0.0) -> int:
        """Ask for a push without waiting; return its ticket for :meth:`wait`.

        With ``retry_for`` seconds, a failed push is retried until it succeeds or that time
        has passed (used for the last push of a run).
        """
        with self._cond:
            if self._stopping:
                return self._requested
            self._requested += 1
            if retry_for > 0:
                self._retry_until = max(self._retry_until, time.monotonic() + retry_for)
            self._ensure_thread()
            self._cond.notify_all()
            return self._requested

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for push ``ticket``; True if it (or a later) succeeded."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while self._finished < ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._succeeded >= ticket

    def push(self, timeout: float | None = None, *, retry: bool = False) -> bool:
        """Push now and wait up to ``timeout`` seconds (default: the reader's timeout).

        Never raises; returns whether the push succeeded in time.
        """
        wait = self.timeout if timeout is None else timeout
        return self.wait(self.request_push(retry_for=wait if retry else 0.0), wait)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Push, waiting at most ``timeout_millis`` or the reader's timeout."""
        return self.push(min(timeout_millis / 1000, self.timeout))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Make a last push (retried within the timeout), optionally delete the group, stop."""
        if self._closed:
            return
        budget = min(timeout_millis / 1000, self.timeout)
        deadline = time.monotonic() + budget
        self.push(budget, retry=True)
        if self.delete_on_shutdown:
            self._delete(max(0.1, deadline - time.monotonic()))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        super().shutdown(timeout_millis)

    # --- the worker -----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name=f"gangplank-push-{self.job}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                while self._finished >= self._requested and not self._stopping:
                    self._cond.wait()
                if self._stopping and self._finished >= self._requested:
                    return
                ticket = self._requested
            ok = self._push_once()
            with self._cond:
                if ok:
                    self._succeeded = ticket
                    self._finished = ticket
                    self._retry_until = 0.0
                    backoff = 0.05
                elif time.monotonic() < self._retry_until and not self._stopping:
                    self._cond.wait(backoff)  # a new request or shutdown wakes it early
                    backoff = min(backoff * 2, 1.0)
                    continue
                else:
                    self._finished = ticket
                self._cond.notify_all()

    def _push_once(self) -> bool:
        try:
            push_to_gateway(
                self.gateway,
                job=self.job,
                registry=self.registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout,
                handler=self._handler,
            )
        except Exception as error:
            self._failures.failed(
                "Push to Pushgateway %s (job %r) failed: %s; will keep trying",
                _redact(self.gateway),
                self.job,
                _describe(error),
            )
            return False
        self._failures.succeeded(f"Push to Pushgateway {_redact(self.gateway)}")
        return True

    def _delete(self, timeout: float) -> None:
        try:
            delete_from_gateway(
                self.gateway,
                job=self.job,
                grouping_key=self.grouping_key,
                timeout=timeout,
                handler=self._handler,
            )
        except Exception as error:
            _logger.warning(
                "Deleting group of job %r from %s failed: %s",
                self.job,
                _redact(self.gateway),
                _describe(error),
            )


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 300 else text[:297] + "..."
