"""Export failures: logged once per failure streak and counted as a metric.

Every route that talks to the network keeps one :class:`FailureLog`. The first failure of a
streak is a warning, the rest are debug lines, and the first success after a streak says so
at info level. The count is exported as ``gangplank_export_failures_total{route=…}`` with
the next collection that gets through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    NumberDataPoint,
    Sum,
)

from . import catalogue

__all__ = ("FailureLog",)


class FailureLog:
    """Failures of one route: a metric producer and a once-per-streak logger."""

    def __init__(self, route: str, logger: logging.Logger) -> None:
        self.route = route
        self.count = 0
        self.streak = 0
        self._logger = logger
        self._lock = threading.Lock()
        self._start = time.time_ns()

    def failed(self, message: str, *args: object) -> None:
        """Count a failure; log ``message % args`` as a warning if it starts a streak."""
        with self._lock:
            self.count += 1
            self.streak += 1
            first = self.streak == 1
        if first:
            self._logger.warning(
                message + "; further failures are logged at debug level and counted in "
                'gangplank_export_failures_total{route="%s"}',
                *args,
                self.route,
            )
        else:
            self._logger.debug(message, *args)

    def succeeded(self, target: str) -> None:
        """End a failure streak, if there was one."""
        with self._lock:
            streak, self.streak = self.streak, 0
        if streak:
            self._logger.info("%s succeeded again after %d failures", target, streak)

    def produce(self) -> Sequence[Metric]:
        """The failure count as ``gangplank.export.failures``."""
        spec = catalogue.EXPORT_FAILURES
        point = NumberDataPoint(
            attributes={"route": self.route},
            start_time_unix_nano=self._start,
            time_unix_nano=time.time_ns(),
            value=self.count,
        )
        data = Sum(
            data_points=[point],
            aggregation_temporality=AggregationTemporality.CUMULATIVE,
            is_monotonic=True,
        )
        return [Metric(spec.name, spec.description, spec.unit, data)]
