"""The instrumented model proxy: inference metrics at near-zero cost per call.

:class:`InstrumentedModel` wraps a Keras model (or anything with ``predict``, ``__call__`` and
``predict_on_batch``). The hot path only adds to plain in-process accumulators under one lock;
OpenTelemetry reads them at collection time: counters through observable instruments, the
latency and batch-size histograms as pre-aggregated histograms merged into every reader
(see ``producer.py``). Drift detection is handed to a worker thread through a bounded buffer.

:class:`PrometheusModel` is the seed's constructor (Gangplank 0.5) over the same machinery.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import prometheus_client
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from . import catalogue
from .drift import DriftMonitor, as_labels, to_numpy
from .histogram import HistogramFamily
from .producer import attach
from .provider import get_meter, resolve

__all__ = ("InstrumentedModel", "PrometheusModel")

_logger = logging.getLogger(__name__)

METHODS = ("predict", "__call__", "predict_on_batch")
MAX_ERROR_TYPES = 32
"""Distinct exception type names counted per method; further ones count as ``other``."""

_LATENCY = catalogue.PREDICT_DURATION.buckets or ()
_BATCH = catalogue.PREDICT_BATCH_SIZE.buckets or ()
_perf_counter = time.perf_counter


class _Cell:
    """Accumulators of one method of one model (one attribute set); one lock guards all."""

    __slots__ = (
        "attributes",
        "batch_counts",
        "batch_max",
        "batch_min",
        "batch_n",
        "batch_sum",
        "calls",
        "class_counts",
        "class_labels",
        "duration_counts",
        "duration_max",
        "duration_min",
        "duration_sum",
        "errors",
        "in_flight",
        "lock",
        "lock_wait",
        "method",
        "model_attributes",
        "rows",
        "serialized",
        "start_ns",
        "time",
        "users",
    )

    def __init__(self, model_attributes: dict[str, Any], method: str) -> None:
        self.model_attributes = model_attributes
        self.method = method
        self.attributes = {**model_attributes, "method": method}
        self.lock = threading.Lock()
        self.start_ns = time.time_ns()
        self.calls = 0
        self.rows = 0
        self.time = 0.0
        self.in_flight = 0
        self.lock_wait = 0.0
        self.serialized = False
        self.errors: dict[str, int] = {}
        self.duration_counts = [0] * (len(_LATENCY) + 1)
        self.duration_sum = 0.0
        self.duration_min = float("inf")
        self.duration_max = float("-inf")
        self.batch_counts = [0] * (len(_BATCH) + 1)
        self.batch_n = 0
        self.batch_sum = 0.0
        self.batch_min = float("inf")
        self.batch_max = float("-inf")
        self.class_labels: list[str] | None = None
        self.class_counts: list[int] = []
        self.users = 0

    def points(self, now_ns: int) -> tuple[HistogramDataPoint, HistogramDataPoint | None]:
        """Cumulative duration and batch-size data points."""
        with self.lock:
            duration = (
                list(self.duration_counts),
                sum(self.duration_counts),
                self.duration_sum,
                self.duration_min,
                self.duration_max,
            )
            batch = (
                list(self.batch_counts),
                self.batch_n,
                self.batch_sum,
                self.batch_min,
                self.batch_max,
            )
        return _point(self.attributes, self.start_ns, now_ns, _LATENCY, *duration), (
            _point(self.attributes, self.start_ns, now_ns, _BATCH, *batch) if batch[1] else None
        )


def _point(
    attributes: dict[str, Any],
    start_ns: int,
    now_ns: int,
    bounds: Sequence[float],
    counts: list[int],
    count: int,
    total: float,
    low: float,
    high: float,
) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=count,
        sum=total,
        bucket_counts=counts,
        explicit_bounds=list(bounds),
        min=low if count else 0.0,
        max=high if count else 0.0,
    )


Callback = Callable[[CallbackOptions], Iterable[Observation]]


class _ServingState:
    """The serving instruments of one MeterProvider; reads every proxy's cells at collection."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        self.lock = threading.Lock()
        self.cells: dict[tuple[Any, ...], _Cell] = {}
        self.confidence = HistogramFamily(catalogue.PREDICT_CONFIDENCE)
        meter = get_meter(meter_provider)
        self.instruments = [
            catalogue.PREDICT_COUNT.create(meter, [self._field("predict", "rows")]),
            catalogue.PREDICT_TIME.create(meter, [self._field("predict", "time")]),
            catalogue.PREDICT_CALL_COUNT.create(meter, [self._field("__call__", "rows")]),
            catalogue.PREDICT_CALL_TIME.create(meter, [self._field("__call__", "time")]),
            catalogue.PREDICT_ERRORS.create(meter, [self._errors]),
            catalogue.PREDICT_IN_FLIGHT.create(meter, [self._in_flight]),
            catalogue.PREDICT_LOCK_WAIT.create(meter, [self._lock_wait]),
            catalogue.PREDICT_CLASS.create(meter, [self._classes]),
        ]
        self.exported = attach(meter_provider, self)

    def acquire(self, model_attributes: dict[str, Any], method: str) -> _Cell:
        key = (tuple(sorted(model_attributes.items())), method)
        with self.lock:
            cell = self.cells.get(key)
            if cell is None:
                cell = self.cells[key] = _Cell(model_attributes, method)
            cell.users += 1
            return cell

    def release(self, cell: _Cell) -> None:
        key = (tuple(sorted(cell.model_attributes.items())), cell.method)
        with self.lock:
            cell.users -= 1
            if cell.users <= 0 and self.cells.get(key) is cell:
                del self.cells[key]

    def _snapshot(self) -> list[_Cell]:
        with self.lock:
            return list(self.cells.values())

    def _field(self, method: str, field: str) -> Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(getattr(cell, field), cell.model_attributes)
                for cell in self._snapshot()
                if cell.method == method
            ]

        return callback

    def _errors(self, options: CallbackOptions) -> Iterable[Observation]:
        observed = []
        for cell in self._snapshot():
            with cell.lock:
                errors = list(cell.errors.items())
            for error_type, count in errors:
                observed.append(Observation(count, {**cell.attributes, "error_type": error_type}))
        return observed

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(cell.in_flight, cell.attributes) for cell in self._snapshot()]

    def _lock_wait(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(cell.lock_wait, cell.attributes)
            for cell in self._snapshot()
            if cell.serialized
        ]

    def _classes(self, options: CallbackOptions) -> Iterable[Observation]:
        observed = []
        for cell in self._snapshot():
            if cell.class_labels is None:
                continue
            with cell.lock:
                counts = list(cell.class_counts)
            for label, count in zip(cell.class_labels, counts, strict=True):
                if count:
                    observed.append(Observation(count, {**cell.attributes, "class": label}))
        return observed

    def produce(self) -> list[Metric]:
        """The latency and batch-size histograms of every cell (a metric producer)."""
        now = time.time_ns()
        durations, batches = [], []
        for cell in self._snapshot():
            duration, batch = cell.points(now)
            durations.append(duration)
            if batch is not None:
                batches.append(batch)
        metrics = []
        for instrument, points in (
            (catalogue.PREDICT_DURATION, durations),
            (catalogue.PREDICT_BATCH_SIZE, batches),
        ):
            if points:
                metrics.append(
                    Metric(
                        name=instrument.name,
                        description=instrument.description,
                        unit=instrument.unit,
                        data=Histogram(
                            data_points=points,
                            aggregation_temporality=AggregationTemporality.CUMULATIVE,
                        ),
                    )
                )
        return metrics + self.confidence.produce()


_STATES: weakref.WeakKeyDictionary[Any, _ServingState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()
_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def _serving_state(meter_provider: MeterProvider | None) -> _ServingState:
    provider = resolve(meter_provider)
    with _STATES_LOCK:
        state = _STATES.get(provider)
        if state is None:
            state = _STATES[provider] = _ServingState(provider)
            if not state.exported:
                _logger.warning(
                    "%r is not an SDK MeterProvider: the latency, batch-size and confidence "
                    "histograms will not be exported (counters will)",
                    provider,
                )
        return state


def _model_lock(model: Any) -> threading.Lock:
    with _STATES_LOCK:
        try:
            lock = _MODEL_LOCKS.get(model)
            if lock is None:
                lock = _MODEL_LOCKS[model] = threading.Lock()
            return lock
        except TypeError:  # not weak-referenceable or not hashable: one lock per proxy
            return threading.Lock()


def rows(value: Any) -> int | None:
    """Rows (batch size) of a model input or output, or None when it cannot be known.

    Arrays and tensors give their first dimension; lists and tuples of arrays (multi-input or
    multi-output) and dicts give their first leaf's; a plain list gives its length; generators,
    datasets and other iterables give None.
    """
    shape = getattr(value, "shape", None)
    if shape is not None:
        try:
            return int(shape[0]) if len(shape) else 1
        except (TypeError, ValueError, IndexError):
            return None
    if isinstance(value, (list, tuple)):
        if not value:
            return 0
        first = value[0]
        if hasattr(first, "shape") or isinstance(first, Mapping):
            return rows(first)
        return len(value)
    if isinstance(value, Mapping):
        for leaf in value.values():
            return rows(leaf)
    return None


def _first_argument(args: tuple[Any, ...], kwargs: dict[str, Any], *names: str) -> Any:
    if args:
        return args[0]
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return None


_ARGUMENT_NAMES = {"predict": ("x",), "__call__": ("inputs", "x"), "predict_on_batch": ("x",)}
_OWN = frozenset(
    (
        "__wrapped__",
        "_gp_cells",
        "_gp_classes",
        "_gp_drift_methods",
        "_gp_lock",
        "_gp_monitor",
        "_gp_state",
        "_gp_unknown_logged",
        "_gp_failed_classes",
        "_gp_server",
    )
)


class InstrumentedModel:
    """A transparent proxy that records a model's inference metrics.

    ``predict``, ``__call__`` and ``predict_on_batch`` are timed and counted; every other
    attribute read, write and delete goes to the wrapped model, outputs are returned
    unchanged, and exceptions are counted by type and re-raised unchanged. Any object with
    those methods works (duck typing). Several proxies may share one provider; they are told
    apart by their ``model_name``/``model_version`` attributes, and two proxies with the same
    attributes add up.

    Series (Prometheus names): ``gangplank_predict_total`` (rows returned by ``predict``),
    ``gangplank_predict_time_seconds_total``, ``gangplank_predict_call_total`` and
    ``gangplank_predict_call_time_seconds_total`` (the seed's), plus
    ``gangplank_predict_duration_seconds`` and ``gangplank_predict_batch_size`` histograms
    per ``method``, ``gangplank_predict_errors_total`` by ``method`` and ``error_type``,
    ``gangplank_predict_in_flight``; with ``classes``, ``gangplank_predict_class_total`` by
    ``class`` and the ``gangplank_predict_confidence`` histogram; with ``serialize``,
    ``gangplank_predict_lock_wait_seconds_total``; with ``drift``, the drift series (see
    :mod:`gangplank.drift`).

    Thread safety: counts are exact from any number of threads. Keras 3 on JAX is *not* safe
    when one model is called from several threads at once (it can raise
    ``TypeError: 'NoneType' object is not callable`` and leave the model unusable); pass
    ``serialize=True`` to take a lock around each model call (the wait is counted), or give
    each thread its own model.

    Args:
        model: the model to wrap.
        meter_provider: the provider to record on. Defaults to the global provider.
        name: the ``model_name`` attribute. Defaults to ``model.name`` if it is a string,
            else the model's class name.
        version: the ``model_version`` attribute. Defaults to none (no attribute).
        drift: a drift detector, a list of them, or a seed-style function
            ``(X, Y) -> gangplank.Drift``, evaluated on a worker thread. Defaults to None.
        attributes: further constant attributes of every series. Defaults to none.
        serialize: take a lock around every model call. Defaults to False.
        classes: opt-in classifier metrics: an int ``n`` counts predicted classes ``"0"`` …
            ``"n-1"``, a sequence names them; higher classes count as ``"other"``.
            Defaults to None (off).
        drift_capacity: batches the drift buffer holds before it drops. Defaults to 1024.

    Example:
    ```python
    provider = gangplank.configure(gangplank.ScrapeEndpoint(port=9464))
    served = gangplank.InstrumentedModel(model, provider, name="mnist", version="3")
    served.predict(x)  # same result as model.predict(x)
    ```
    """

    __slots__ = (*sorted(_OWN), "__weakref__")

    def __init__(
        self,
        model: Any,
        meter_provider: MeterProvider | None = None,
        *,
        name: str | None = None,
        version: str | None = None,
        drift: Any = None,
        attributes: Mapping[str, Any] | None = None,
        serialize: bool = False,
        classes: int | Sequence[str] | None = None,
        drift_capacity: int = 1024,
    ) -> None:
        for method in ("predict", "__call__"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"{model!r} has no {method}(); it cannot be served")
        if isinstance(model, InstrumentedModel):
            _logger.debug("wrapping an already instrumented model; both proxies will count")
        _set = object.__setattr__
        _set(self, "__wrapped__", model)
        base = dict(attributes or {})
        if name is None:
            model_name = getattr(model, "name", None)
            name = model_name if isinstance(model_name, str) else type(model).__name__
        base["model_name"] = str(name)
        if version is not None:
            base["model_version"] = str(version)
        state = _serving_state(meter_provider)
        _set(self, "_gp_state", state)
        cells = tuple(state.acquire(base, method) for method in METHODS)
        _set(self, "_gp_cells", cells)
        _set(self, "_gp_lock", _model_lock(model) if serialize else None)
        if serialize:
            for cell in cells:
                cell.serialized = True
        _set(self, "_gp_classes", self._class_labels(classes))
        if self._gp_classes is not None:
            for cell in cells:
                with cell.lock:
                    if cell.class_labels is None:
                        cell.class_labels = list(self._gp_classes)
                        cell.class_counts = [0] * len(cell.class_labels)
        monitor = (
            DriftMonitor(drift, meter_provider, attributes=base, capacity=drift_capacity)
            if drift is not None
            else None
        )
        _set(self, "_gp_monitor", monitor)
        _set(self, "_gp_drift_methods", frozenset(METHODS))
        _set(self, "_gp_unknown_logged", False)
        _set(self, "_gp_failed_classes", False)
        _set(self, "_gp_server", None)

    @staticmethod
    def _class_labels(classes: int | Sequence[str] | None) -> list[str] | None:
        if classes is None or classes is False:
            return None
        if isinstance(classes, (bool, int)):
            count = 10 if classes is True else int(classes)
            if count < 1:
                raise ValueError(f"classes must be a positive number, got {classes!r}")
            labels = [str(i) for i in range(count)]
        else:
            labels = [str(label) for label in classes]
            if not labels or len(set(labels)) != len(labels) or "other" in labels:
                raise ValueError("class names must be distinct, non-empty and not 'other'")
        return [*labels, "other"]

    # --- The instrumented methods ---------------------------------------------------------

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``predict``, timed and counted."""
        return self._gp_run(self._gp_cells[0], self.__wrapped__.predict, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``__call__``, timed and counted."""
        return self._gp_run(self._gp_cells[1], self.__wrapped__, args, kwargs)

    def predict_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        """The model's ``predict_on_batch``, timed and counted."""
        return self._gp_run(self._gp_cells[2], self.__wrapped__.predict_on_batch, args, kwargs)

    def _gp_run(
        self,
        cell: _Cell,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        lock = cell.lock
        with lock:
            cell.in_flight += 1
        start = _perf_counter()
        try:
            if self._gp_lock is None:
                result = function(*args, **kwargs)
            else:
                result = self._gp_serialised(cell, function, args, kwargs)
        except BaseException as error:
            self._gp_failed(cell, _perf_counter() - start, error)
            raise
        elapsed = _perf_counter() - start
        n = rows(result)
        x = None
        if n is None or self._gp_monitor is not None:
            x = _first_argument(args, kwargs, *_ARGUMENT_NAMES[cell.method])
            if n is None:
                n = rows(x)
                if n is None and not self._gp_unknown_logged:
                    object.__setattr__(self, "_gp_unknown_logged", True)
                    _logger.debug(
                        "batch size of %s(%s) unknown; not recorded", cell.method, type(x)
                    )
        d = bisect_left(_LATENCY, elapsed)
        with lock:
            cell.in_flight -= 1
            cell.calls += 1
            cell.time += elapsed
            cell.duration_counts[d] += 1
            cell.duration_sum += elapsed
            if elapsed < cell.duration_min:
                cell.duration_min = elapsed
            if elapsed > cell.duration_max:
                cell.duration_max = elapsed
            if n is not None:
                cell.rows += n
                cell.batch_counts[bisect_left(_BATCH, n)] += 1
                cell.batch_n += 1
                cell.batch_sum += n
                if n < cell.batch_min:
                    cell.batch_min = n
                if n > cell.batch_max:
                    cell.batch_max = n
        if self._gp_classes is not None:
            self._gp_classify(cell, result)
        if self._gp_monitor is not None and cell.method in self._gp_drift_methods:
            self._gp_monitor.submit(x if rows(x) is not None else None, result, n)
        return result

    def _gp_serialised(
        self,
        cell: _Cell,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        lock = self._gp_lock
        assert lock is not None
        asked = _perf_counter()
        with lock:
            waited = _perf_counter() - asked
            with cell.lock:
                cell.lock_wait += waited
            return function(*args, **kwargs)

    @staticmethod
    def _gp_failed(cell: _Cell, elapsed: float, error: BaseException) -> None:
        error_type = type(error).__name__
        d = bisect_left(_LATENCY, elapsed)
        with cell.lock:
            cell.in_flight -= 1
            cell.time += elapsed
            cell.duration_counts[d] += 1
            cell.duration_sum += elapsed
            cell.duration_min = min(cell.duration_min, elapsed)
            cell.duration_max = max(cell.duration_max, elapsed)
            errors = cell.errors
            if error_type not in errors and len(errors) >= MAX_ERROR_TYPES:
                error_type = "other"
            errors[error_type] = errors.get(error_type, 0) + 1

    def _gp_classify(self, cell: _Cell, result: Any) -> None:
        try:
            output = result
            while isinstance(output, (list, tuple)) and output:
                output = output[0]
            if isinstance(output, Mapping):
                output = next(iter(output.values()))
            probabilities = to_numpy(output)
            if probabilities.ndim == 0 or probabilities.size == 0:
                return
            labels = as_labels(probabilities).astype(np.int64)
            flat = probabilities.reshape(probabilities.shape[0], -1)
            if flat.shape[1] > 1:
                confidence = flat.max(axis=1)
            else:
                confidence = np.maximum(flat[:, 0], 1.0 - flat[:, 0])
            assert cell.class_labels is not None
            other = len(cell.class_labels) - 1
            labels = np.where((labels >= 0) & (labels < other), labels, other)
            counts = np.bincount(labels, minlength=other + 1).tolist()
            with cell.lock:
                for i, c in enumerate(counts):
                    if c:
                        cell.class_counts[i] += c
            self._gp_state.confidence.series(cell.attributes).observe_array(confidence)
        except Exception:
            if not self._gp_failed_classes:
                object.__setattr__(self, "_gp_failed_classes", True)
                _logger.warning(
                    "class metrics skipped: the output is not class probabilities",
                    exc_info=True,
                )

    # --- Proxy plumbing -------------------------------------------------------------------

    @property
    def drift_monitor(self) -> DriftMonitor | None:
        """The drift monitor (``.join(timeout)`` waits until queued data is evaluated)."""
        return self._gp_monitor

    def unwrap(self) -> Any:
        """Stop instrumenting: drop this proxy's series and drift worker; return the model."""
        if self._gp_monitor is not None:
            self._gp_monitor.close()
        state = self._gp_state
        for cell in self._gp_cells:
            state.release(cell)
        object.__setattr__(self, "_gp_cells", tuple(_Cell({}, m) for m in METHODS))
        return self.__wrapped__

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The wrapped model's class, so ``isinstance(proxy, keras.Model)`` holds."""
        return type(self.__wrapped__)

    def __getattr__(self, name: str) -> Any:
        if name in _OWN:
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.__wrapped__, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _OWN:
            object.__delattr__(self, name)
        else:
            delattr(self.__wrapped__, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self.__wrapped__)) | {"unwrap", "drift_monitor", "__wrapped__"})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.__wrapped__!r}>"


_REGISTRY_PROVIDERS: weakref.WeakKeyDictionary[Any, MeterProvider] = weakref.WeakKeyDictionary()


def _registry_provider(registry: prometheus_client.CollectorRegistry) -> MeterProvider:
    """One private MeterProvider exposing into ``registry`` (shared by its PrometheusModels)."""
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

    from .exposition import RegistryReader

    with _STATES_LOCK:
        provider = _REGISTRY_PROVIDERS.get(registry)
        if provider is None:
            reader = RegistryReader(registry, disable_target_info=True)
            provider = _REGISTRY_PROVIDERS[registry] = SdkMeterProvider(metric_readers=[reader])
        return provider


class PrometheusModel(InstrumentedModel):
    """The seed's proxy (Gangplank 0.5): a model whose inference series go to a registry.

    The series of :class:`InstrumentedModel` (which this is) appear in ``registry``, under the
    seed's names, and on ``port`` when given. ``get_drift_metrics_func(X, Y)`` returns a
    :class:`gangplank.Drift`; as in the seed it sees what ``predict`` returned, but it runs
    on a worker thread, not inside ``predict``: ``drift_detected`` is added to
    ``gangplank_predict_drift_detected_total``, the p-value and statistic set
    ``gangplank_predict_drift_p_value`` and ``gangplank_predict_drift_test_statistic``
    (with a ``detector`` label).

    Args:
        model: the Keras model to wrap.
        registry: the ``prometheus_client`` registry. Defaults to ``prometheus_client.REGISTRY``.
        port: serve the registry on this port (``/metrics``). Defaults to None (don't serve).
        get_drift_metrics_func: a function ``(X, Y) -> Drift``. Defaults to None.
        addr: the address the server binds when ``port`` is given. Defaults to
            ``"127.0.0.1"`` (the seed bound every interface: pass ``"0.0.0.0"`` for that).
        **kwargs: further :class:`InstrumentedModel` arguments (``name``, ``version``, …).

    Example:
    ```python
    model = gangplank.PrometheusModel(keras_model, port=8000)
    model.predict(x)  # curl localhost:8000/metrics | grep gangplank_predict_total
    ```
    """

    __slots__ = ("_gp_registry",)

    def __init__(
        self,
        model: Any,
        registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY,
        port: int | None = None,
        get_drift_metrics_func: Callable[[Any, Any], Any] | None = None,
        *,
        addr: str = "127.0.0.1",
        **kwargs: Any,
    ) -> None:
        object.__setattr__(self, "_gp_registry", registry)
        super().__init__(
            model, _registry_provider(registry), drift=get_drift_metrics_func, **kwargs
        )
        # As in the seed, the drift function sees what predict() returned, not model(x).
        object.__setattr__(self, "_gp_drift_methods", frozenset(("predict",)))
        if port is not None:
            server = prometheus_client.start_http_server(port, addr=addr, registry=registry)
            object.__setattr__(self, "_gp_server", server)

    @property
    def model(self) -> Any:
        """The wrapped model (as in the seed)."""
        return self.__wrapped__

    @property
    def registry(self) -> prometheus_client.CollectorRegistry:
        """The registry the series are exposed in (as in the seed)."""
        return self._gp_registry

    @property
    def port(self) -> int | None:
        """The port the registry is served on, or None."""
        server = self._gp_server
        return None if server is None else int(server[0].server_address[1])

    def unwrap(self) -> Any:
        """Stop instrumenting and serving; return the model."""
        server = self._gp_server
        if server is not None:
            object.__setattr__(self, "_gp_server", None)
            server[0].shutdown()
            server[0].server_close()
        return super().unwrap()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_gp_registry":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
