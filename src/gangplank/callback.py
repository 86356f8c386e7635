"""The training callback: Keras ``fit`` and ``evaluate`` metrics on an OpenTelemetry meter.

:class:`TrainingMetrics` records every numeric ``logs`` value, run progress, model size,
learning rate, throughput counters and (optionally) weight histograms, then asks the
provider's :class:`~gangplank.PushgatewayReader` readers to push — without ever waiting on the
network on the training thread. :class:`TrainTestExporter` is Gangplank 0.5's callback, built
on it with a private provider that pushes to one Pushgateway.

Series (Prometheus names; every series carries the callback's ``attributes``):

* ``gangplank_train_<key>``: each numeric ``logs`` key at the end of every epoch (``loss``,
  ``val_loss``, ``accuracy``, keys other callbacks add such as ``learning_rate``);
  ``gangplank_train_batch_<key>`` every N batches with ``update_freq``.
* ``gangplank_train_epochs_count``, ``gangplank_train_elapsed_time_seconds``,
  ``gangplank_train_model_parameters_count``, ``gangplank_train_model_trainable_parameters``,
  ``gangplank_train_model_non_trainable_parameters``, ``gangplank_train_learning_rate``,
  ``gangplank_train_start_timestamp_seconds``,
  ``gangplank_train_last_success_timestamp_seconds``.
* ``gangplank_train_epoch_duration_seconds`` (histogram), ``gangplank_train_steps_total``,
  ``gangplank_train_samples_total``, ``gangplank_train_nonfinite_loss_total``.
* ``gangplank_train_model_weights`` (histogram, at the end of ``fit``, with
  ``weight_buckets``) and ``gangplank_train_layer_weights{layer=…}`` (with ``per_layer``).
* From a stand-alone ``evaluate`` (never from ``fit``'s validation passes):
  ``gangplank_test_<key>``, ``gangplank_test_elapsed_time_seconds``,
  ``gangplank_test_model_parameters_count``, ``gangplank_test_steps_total`` and
  ``gangplank_test_model_weights`` (with ``weight_buckets``).

``logs`` values that are not numbers (strings, ``None``, arrays of more than one value) are
skipped with a debug log; tensors and 0-d arrays are converted; nested dicts are flattened
(``outer_inner``). NaN and ±Inf are not exported as gauge values (the OpenTelemetry SDK
rejects them, so the gauge keeps its last finite value); a non-finite epoch ``loss``
increments ``gangplank_train_nonfinite_loss_total`` instead — alert on that.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from opentelemetry.metrics import MeterProvider

from . import catalogue
from .catalogue import Instrument, Kind, log_key_name, prometheus_name
from .histogram import HistogramFamily, Series
from .producer import attach, readers_of
from .provider import get_meter, resolve
from .pushgateway import Handler, PushgatewayReader
from .weights import WeightSummary, layer_weights, model_weights, summarize

__all__ = ("TrainTestExporter", "TrainingMetrics")

_logger = logging.getLogger(__name__)

AttributeValue = str | int | float | bool

_RESERVED_LABELS = frozenset({"job", "instance", "le", "quantile", "layer"})
_MAX_NESTING = 4
_LABEL_SANITISER = re.compile(r"[^A-Za-z0-9_]")


def _reserved_prometheus_names() -> frozenset[str]:
    names: set[str] = set()
    for instrument in catalogue.CATALOGUE:
        base = instrument.prometheus_name
        names.add(base)
        names.add(base.removesuffix("_total"))
        for suffix in ("_bucket", "_sum", "_count", "_created", "_total"):
            names.add(base + suffix)
    return frozenset(names)


_RESERVED_NAMES = _reserved_prometheus_names()


def validate_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Check user attributes; return them as a plain dict or raise ValueError.

    Names that Prometheus or the push route own (``job``, ``instance``, ``le``,
    ``quantile``, ``__*``) and Gangplank's own ``layer`` are refused: a data-point attribute
    named ``job`` makes an OpenTelemetry Collector drop the whole metric. Values must be
    scalars (str, int, float, bool).
    """
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise ValueError(f"attributes must be a mapping of names to values, got {attributes!r}")
    checked: dict[str, AttributeValue] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"attribute names must be non-empty strings, got {name!r}")
        label = _LABEL_SANITISER.sub("_", name)
        if label in _RESERVED_LABELS or name in _RESERVED_LABELS or label.startswith("__"):
            raise ValueError(
                f"attribute name {name!r} is reserved (job, instance, le, quantile, layer and "
                "names starting with '__' are set by Prometheus, the route or Gangplank)"
            )
        if isinstance(value, (bool, int, float, str)) and not isinstance(value, np.ndarray):
            checked[name] = value
        elif isinstance(value, np.generic) and np.ndim(value) == 0:
            checked[name] = value.item()
        else:
            raise ValueError(
                f"attribute {name!r} must be a str, int, float or bool, got {type(value).__name__}"
            )
    return checked


def _parse_update_freq(update_freq: str | int) -> int:
    """0 for per-epoch only, else record per-batch series every N batches."""
    if update_freq == "epoch":
        return 0
    if update_freq == "batch":
        return 1
    if isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1:
        raise ValueError(
            f"update_freq must be 'epoch', 'batch' or a positive integer, got {update_freq!r}"
        )
    return update_freq


def _numeric(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a single number."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, (bool, int, float)):
        return float(value)
    try:
        if not isinstance(value, np.ndarray | np.generic) and keras.ops.is_tensor(value):
            value = keras.ops.convert_to_numpy(value)
        array = np.asarray(value)
    except Exception:
        return None
    if array.size != 1 or array.dtype.kind not in "fiub":
        return None
    return float(array.reshape(()))


def _flatten(
    logs: Mapping[str, Any], prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, Any]]:
    for key, value in logs.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if depth < _MAX_NESTING:
                yield from _flatten(value, name, depth + 1)
            continue
        yield name, value


class _Guard:
    """Runs hooks: logs failures once per streak; raises them in strict mode."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.errors = 0
        self._streak = 0
        self._lock = threading.Lock()

    def failed(self, what: str, error: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self._streak += 1
            first = self._streak == 1
        if self.strict:
            raise error
        if first:
            _logger.warning(
                "Gangplank could not record training metrics (%s): %s: %s; training goes on, "
                "further failures are logged at debug level",
                what,
                type(error).__name__,
                error,
                exc_info=error,
            )
        else:
            _logger.debug("Gangplank metrics failed again (%s)", what, exc_info=error)

    def succeeded(self) -> None:
        if self._streak:
            with self._lock:
                streak, self._streak = self._streak, 0
            if streak:
                _logger.info("Gangplank metrics recorded again after %d failures", streak)


class TrainingMetrics(keras.callbacks.Callback):
    """Record Keras ``fit`` and ``evaluate`` metrics on an OpenTelemetry MeterProvider.

    One callback serves ``fit`` (with or without validation) and stand-alone ``evaluate``:
    ``fit`` produces the ``gangplank_train_*`` series, ``evaluate`` the ``gangplank_test_*``
    series (``fit``'s own validation passes appear only as ``val_*`` keys of the train
    series). After every epoch, at the end of ``evaluate`` and at the end of ``fit`` it asks
    the provider's :class:`~gangplank.PushgatewayReader` readers to push, in the background;
    scrape and OTLP readers simply see the latest values. Instance reuse across ``fit`` calls
    is supported (per-run state is reset in ``on_train_begin``).

    A metrics failure never stops training unless ``strict=True``: it is logged once per
    failure streak through ``logging`` (logger ``gangplank.callback``) and counted in
    ``.errors``.

    Args:
        meter_provider: the OpenTelemetry MeterProvider to record on, e.g. from
            :func:`gangplank.configure`. Defaults to the global provider.
        metrics: the ``logs`` keys to export, e.g. ``["loss", "val_loss"]``. Defaults to
            every numeric key.
        update_freq: ``"epoch"``, ``"batch"`` or an integer N: also record the batch-level
            ``logs`` as ``gangplank_train_batch_<key>`` every N training batches (``"batch"``
            means 1). Defaults to ``"epoch"`` (no per-batch series).
        weight_buckets: bucket bounds for the weight histograms
            (``gangplank_train_model_weights`` at the end of ``fit``,
            ``gangplank_test_model_weights`` at the end of ``evaluate``), e.g.
            :data:`gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0`. Defaults to None (no weight
            histograms).
        per_layer: also export ``gangplank_train_layer_weights{layer=…}``, one histogram per
            top-level layer with trainable weights, using ``weight_buckets`` (or
            :data:`gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0` if none were given). Defaults to
            False.
        attributes: attributes added to every series, e.g. ``{"model": "resnet50"}``. Names
            ``job``, ``instance``, ``le``, ``quantile``, ``layer`` and ``__*`` are refused, as
            are non-scalar values (ValueError). Defaults to None.
        strict: raise metric and push errors into ``fit``/``evaluate`` (stopping the run);
            pushes are then waited for, up to the reader's timeout. Defaults to False.

    Example:
    ```python
    reader = gangplank.PushgatewayReader("http://localhost:9091", job="train-mnist")
    provider = gangplank.configure(reader, set_global=False)
    callback = gangplank.TrainingMetrics(
        provider, weight_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0
    )
    model.fit(x, y, epochs=5, validation_split=0.1, callbacks=[callback])
    model.evaluate(x_test, y_test, callbacks=[callback])
    provider.shutdown()  # the last push, retried within the reader's timeout
    ```
    """

    # OpenTelemetry instruments are thread-safe and the batch hooks take a lock for the
    # little state they keep, so Keras may run them on its callback thread pool.
    async_safe = True

    # Per-run state, reset by ``on_train_begin``.
    _run_begin: float
    _epoch_begin: float
    _epochs_done: int
    _epoch_batches: int
    _steps_before_epoch: int
    _last_batch_step: int
    _in_epoch: bool
    _samples_read: bool
    _has_eval_iterator: bool

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        metrics: Iterable[str] | None = None,
        update_freq: str | int = "epoch",
        weight_buckets: Sequence[float] | None = None,
        per_layer: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(metrics, str):
            metrics = [metrics]
        if metrics is not None:
            metrics = list(metrics)
            if not all(isinstance(m, str) for m in metrics):
                raise ValueError(f"metrics must be logs key names (strings), got {metrics!r}")
        self.metrics: list[str] | None = metrics
        self.update_freq = update_freq
        self._batch_interval = _parse_update_freq(update_freq)
        self.weight_buckets = weight_buckets
        self.per_layer = bool(per_layer)
        self.attributes = validate_attributes(attributes)
        self.strict = bool(strict)
        self._follow_global = meter_provider is None
        self.meter_provider = resolve(meter_provider)
        self._meter = get_meter(self.meter_provider)
        self._guard = _Guard(self.strict)
        self._lock = threading.Lock()

        c = catalogue
        self._epochs = c.TRAIN_EPOCHS.create(self._meter)
        self._elapsed = c.TRAIN_ELAPSED.create(self._meter)
        self._parameters = c.TRAIN_PARAMETERS.create(self._meter)
        self._trainable = c.TRAIN_TRAINABLE.create(self._meter)
        self._non_trainable = c.TRAIN_NON_TRAINABLE.create(self._meter)
        self._epoch_duration = c.TRAIN_EPOCH_DURATION.create(self._meter)
        self._steps = c.TRAIN_STEPS.create(self._meter)
        self._samples = c.TRAIN_SAMPLES.create(self._meter)
        self._nonfinite = c.TRAIN_NONFINITE_LOSS.create(self._meter)
        self._start = c.TRAIN_START.create(self._meter)
        self._last_success = c.TRAIN_LAST_SUCCESS.create(self._meter)
        self._test_elapsed = c.TEST_ELAPSED.create(self._meter)
        self._test_parameters = c.TEST_PARAMETERS.create(self._meter)
        self._test_steps = c.TEST_STEPS.create(self._meter)
        # Gauges for logs keys by Prometheus name, as (logs key or None for a catalogue
        # instrument, OpenTelemetry name, gauge); collisions are decided on that name.
        self._gauges: dict[str, tuple[str | None, str, Any]] = {
            c.TRAIN_LEARNING_RATE.prometheus_name: (
                None,
                c.TRAIN_LEARNING_RATE.name,
                c.TRAIN_LEARNING_RATE.create(self._meter),
            )
        }
        self._key_gauges: dict[tuple[str, str], Any] = {}

        # Pre-aggregated weight histograms; the producer registry holds them weakly.
        self._families: list[HistogramFamily] = []
        self._train_weights: HistogramFamily | None = None
        self._test_weights: HistogramFamily | None = None
        self._layer_weights: HistogramFamily | None = None
        if weight_buckets is not None:
            self._train_weights = HistogramFamily(c.TRAIN_WEIGHTS, weight_buckets)
            self._test_weights = HistogramFamily(c.TEST_WEIGHTS, weight_buckets)
            self._families += [self._train_weights, self._test_weights]
        if self.per_layer:
            self._layer_weights = HistogramFamily(
                c.TRAIN_LAYER_WEIGHTS,
                weight_buckets if weight_buckets is not None else c.WEIGHT_BUCKETS_1_0,
            )
            self._families.append(self._layer_weights)
        self._attach()

        self._reset_run()
        self._test_begin = 0.0
        self._test_standalone = False
        self._test_batches = 0

    # --- public helpers -------------------------------------------------------------------

    @property
    def errors(self) -> int:
        """How many times recording metrics failed (errors are logged, not raised)."""
        return self._guard.errors

    # --- Keras hooks ----------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Reset per-run state; record the start time and the model size."""
        self._reset_run()
        self._refresh_provider()
        with self._hook("on_train_begin"):
            self._start.set(time.time(), self.attributes)
            self._epochs.set(0, self.attributes)
            self._nonfinite.add(0, self.attributes)
            self._record_parameters(train=True)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Note the epoch's start."""
        with self._lock:
            self._in_epoch = True
            self._epoch_begin = time.perf_counter()
            self._epoch_batches = 0
            self._samples_read = False

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Count the step; record the batch-level ``logs`` every ``update_freq`` batches."""
        with self._lock:
            if batch + 1 > self._epoch_batches:
                self._epoch_batches = batch + 1
            step = self._steps_before_epoch + batch + 1
            due = self._batch_interval and step % self._batch_interval == 0
            if due:
                if step <= self._last_batch_step:
                    due = False  # an older batch finishing late on Keras's thread pool
                else:
                    self._last_batch_step = step
        if due and logs:
            with self._hook("on_train_batch_end"):
                self._record_logs("train.batch", logs)

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Tell ``evaluate`` from ``fit``'s validation; time a stand-alone evaluation."""
        validation = self._in_epoch and (
            not self._has_eval_iterator
            or getattr(self.model, "_eval_epoch_iterator", None) is not None
        )
        self._test_standalone = not validation
        if not validation:
            self._refresh_provider()
        self._test_begin = time.perf_counter()
        self._test_batches = 0
        if validation and not self._samples_read:
            # The loss tracker still holds the training epoch; evaluate resets it next.
            with self._hook("on_test_begin"):
                self._record_samples()

    def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Count evaluation steps."""
        if self._test_standalone and batch + 1 > self._test_batches:
            with self._lock:
                self._test_batches = max(self._test_batches, batch + 1)

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """After a stand-alone ``evaluate``: record the test series and push."""
        if not self._test_standalone:
            return
        self._test_standalone = False
        with self._hook("on_test_end"):
            self._test_elapsed.set(time.perf_counter() - self._test_begin, self.attributes)
            self._record_parameters(train=False)
            steps = self._test_batches or (self.params or {}).get("steps") or 0
            self._test_steps.add(int(steps), self.attributes)
            if logs:
                self._record_logs("test", logs)
            if self._test_weights is not None:
                self._snapshot(
                    self._test_weights.series(self.attributes), model_weights(self.model)
                )
        self._push(final=False)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Record the epoch's series and ask the push readers to push."""
        with self._lock:
            self._in_epoch = False
            self._epochs_done += 1
            steps = self._epoch_batches or (self.params or {}).get("steps") or 0
            self._steps_before_epoch += int(self._epoch_batches or steps)
        with self._hook("on_epoch_end"):
            now = time.perf_counter()
            self._epoch_duration.record(now - self._epoch_begin, self.attributes)
            self._epochs.set(self._epochs_done, self.attributes)
            self._elapsed.set(now - self._run_begin, self.attributes)
            self._steps.add(int(steps), self.attributes)
            if not self._samples_read:
                self._record_samples()
            self._record_learning_rate()
            if logs:
                loss = _numeric(logs.get("loss"))
                if loss is not None and not math.isfinite(loss):
                    self._nonfinite.add(1, self.attributes)
                self._record_logs("train", logs)
        self._push(final=False)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Record the final series (weights, success timestamp) and push once more."""
        with self._hook("on_train_end"):
            self._elapsed.set(time.perf_counter() - self._run_begin, self.attributes)
            self._record_parameters(train=True)
            if self._train_weights is not None:
                self._snapshot(
                    self._train_weights.series(self.attributes), model_weights(self.model)
                )
            if self._layer_weights is not None:
                for name, arrays in layer_weights(self.model):
                    series = self._layer_weights.series({**self.attributes, "layer": name})
                    self._snapshot(series, arrays)
            self._last_success.set(time.time(), self.attributes)
        self._push(final=True)

    # --- internals ------------------------------------------------------------------------

    def _attach(self) -> None:
        for family in self._families:
            attach(self.meter_provider, family)

    def _refresh_provider(self) -> None:
        """Follow the global provider when none was given (it may be set after construction)."""
        if not self._follow_global:
            return
        current = resolve(None)
        if current is not self.meter_provider:
            self.meter_provider = current
            self._attach()

    def _reset_run(self) -> None:
        with self._lock:
            self._run_begin = time.perf_counter()
            self._epoch_begin = self._run_begin
            self._epochs_done = 0
            self._epoch_batches = 0
            self._steps_before_epoch = 0
            self._last_batch_step = 0
            self._in_epoch = False
            self._samples_read = False
            model = getattr(self, "_model", None)
            # Keras's trainers set this at the start of fit and fill it for validation.
            self._has_eval_iterator = model is not None and hasattr(model, "_eval_epoch_iterator")

    @contextlib.contextmanager
    def _hook(self, what: str) -> Iterator[None]:
        """Run a hook's body: failures are logged once per streak, or raised when strict."""
        try:
            yield
        except Exception as error:  # KeyboardInterrupt and friends pass through untouched
            self._guard.failed(what, error)
        else:
            self._guard.succeeded()

    def _record_parameters(self, *, train: bool) -> None:
        model = self.model
        if model is None or not getattr(model, "built", False):
            return
        trainable = _count(model.trainable_weights)
        non_trainable = _count(model.non_trainable_weights)
        if train:
            self._parameters.set(trainable + non_trainable, self.attributes)
            self._trainable.set(trainable, self.attributes)
            self._non_trainable.set(non_trainable, self.attributes)
        else:
            self._test_parameters.set(trainable + non_trainable, self.attributes)

    def _record_samples(self) -> None:
        """Training samples of the epoch, from Keras's loss tracker (weighted by batch size)."""
        self._samples_read = True
        tracker = getattr(self.model, "_loss_tracker", None)
        count = getattr(tracker, "count", None)
        if count is None:
            return
        value = _numeric(count)
        if value is not None and math.isfinite(value) and value >= 0:
            self._samples.add(round(value), self.attributes)

    def _record_learning_rate(self) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return
        try:
            rate = _numeric(optimizer.learning_rate)
        except Exception as error:  # e.g. a schedule that cannot be evaluated eagerly
            _logger.debug("Could not read the learning rate: %s", error)
            return
        if rate is not None and math.isfinite(rate):
            gauge = self._gauges[catalogue.TRAIN_LEARNING_RATE.prometheus_name][2]
            gauge.set(rate, self.attributes)

    def _record_logs(self, phase: str, logs: Mapping[str, Any]) -> None:
        wanted = self.metrics
        for key, raw in _flatten(logs):
            if wanted is not None and key not in wanted:
                continue
            gauge = self._gauge_for(phase, key)
            if gauge is None:
                continue
            value = _numeric(raw)
            if value is None:
                _logger.debug("logs[%r] = %r is not a number; not exported", key, raw)
                continue
            if not math.isfinite(value):
                _logger.debug("logs[%r] is %s; not exported as a gauge value", key, value)
                continue
            gauge.set(value, self.attributes)

    def _gauge_for(self, phase: str, key: str) -> Any:
        known = self._key_gauges.get((phase, key), False)
        if known is not False:
            return known
        with self._lock:
            known = self._key_gauges.get((phase, key), False)
            if known is not False:
                return known
            gauge = self._new_gauge(phase, key)
            self._key_gauges[(phase, key)] = gauge
            return gauge

    def _new_gauge(self, phase: str, key: str) -> Any:
        name = log_key_name(phase, key)
        if name is None:
            _logger.debug("logs key %r has no usable metric name; not exported", key)
            return None
        prom = prometheus_name(name, "", Kind.GAUGE)
        claimed = self._gauges.get(prom)
        if claimed is not None:
            if claimed[0] is None and claimed[1] == name:
                return claimed[2]  # learning_rate: the catalogue's own gauge
            _logger.debug(
                "logs key %r collides with another key as %s; the first one is exported",
                key,
                prom,
            )
            return None
        if prom in _RESERVED_NAMES:
            _logger.debug("logs key %r would shadow Gangplank's %s; not exported", key, prom)
            return None
        where = (
            "at the end of each epoch"
            if phase == "train"
            else (
                "every update_freq batches" if phase == "train.batch" else "at the end of evaluate"
            )
        )
        gauge = Instrument(name, Kind.GAUGE, "", f"Keras logs value {key!r} {where}.").create(
            self._meter
        )
        self._gauges[prom] = (key, name, gauge)
        return gauge

    def _snapshot(self, series: Series, arrays: list[np.ndarray]) -> None:
        summary: WeightSummary = summarize(arrays, series.bounds)
        series.assign(summary.bucket_counts, summary.count, summary.sum, summary.min, summary.max)

    def _push(self, *, final: bool) -> None:
        """Ask every push reader of the provider to push; never wait unless strict."""
        try:
            readers = [
                r for r in readers_of(self.meter_provider) or () if isinstance(r, PushgatewayReader)
            ]
            tickets = [(r, r.request_push(retry_for=r.timeout if final else 0.0)) for r in readers]
        except Exception as error:
            self._guard.failed("push request", error)
            return
        if not self.strict:
            return
        for reader, ticket in tickets:
            if not reader.wait(ticket, reader.timeout if not final else 2 * reader.timeout):
                failure = RuntimeError(
                    f"push to the Pushgateway for job {reader.job!r} failed or timed out "
                    "(strict mode stops the run)"
                )
                self._guard.failed("push", failure)  # raises: strict


def _count(variables: Iterable[Any]) -> int:
    return int(sum(math.prod(int(d) for d in v.shape) for v in variables))


class TrainTestExporter(TrainingMetrics):
    """Gangplank 0.5's callback: push ``fit`` and ``evaluate`` metrics to a Pushgateway.

    A :class:`TrainingMetrics` on a private MeterProvider with one
    :class:`~gangplank.PushgatewayReader` (PUT, whole group replaced). It pushes at every
    epoch end of ``fit``, at the end of ``evaluate`` and at the end of ``fit`` — in the
    background, so a slow or absent Pushgateway never stalls training. Unlike 0.5 it can be
    reused for any number of runs. The last push is retried for the reader's timeout; call
    :meth:`close` (or let the interpreter exit) to wait for it.

    Args:
        pgw_addr: the Pushgateway address, e.g. ``"localhost:9091"`` or
            ``"https://pushgateway:9091"``.
        job: the ``job`` grouping label.
        metrics: the ``logs`` keys to export. Defaults to every numeric key.
        histogram_buckets: bucket bounds for the weight histograms, e.g.
            :data:`gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0`. Defaults to None (no
            histograms).
        handler: a ``prometheus_client`` push handler (e.g. basic auth). Defaults to plain
            HTTP(S).
        ignore_exceptions: log metric and push errors and carry on; False stops the run on
            any of them (pushes are then waited for). Defaults to True.

    Example:
    ```python
    exporter = gangplank.TrainTestExporter("localhost:9091", "mnist")
    model.fit(x, y, epochs=3, callbacks=[exporter])
    model.evaluate(x_test, y_test, callbacks=[exporter])
    exporter.close()  # optional: wait for the last push
    ```
    """

    def __init__(
        self,
        pgw_addr: str,
        job: str,
        metrics: Iterable[str] | None = None,
        histogram_buckets: Sequence[float] | None = None,
        handler: Handler | None = None,
        ignore_exceptions: bool = True,
    ) -> None:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

        self.pgw_addr = pgw_addr
        self.job = job
        self.histogram_buckets = histogram_buckets
        self.handler = handler
        self.ignore_exceptions = bool(ignore_exceptions)
        self.reader = PushgatewayReader(pgw_addr, job, handler=handler)
        provider = SdkMeterProvider(metric_readers=[self.reader])
        super().__init__(
            provider,
            metrics=metrics,
            weight_buckets=histogram_buckets,
            strict=not ignore_exceptions,
        )

    def push(self, timeout: float | None = None) -> bool:
        """Push now; wait up to ``timeout`` seconds (default: the reader's); True if it worked."""
        return self.reader.push(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Make the last push (retried within ``timeout``) and stop the exporter's provider."""
        budget = self.reader.timeout if timeout is None else timeout
        self.meter_provider.shutdown(timeout_millis=budget * 1000)  # type: ignore[attr-defined]
