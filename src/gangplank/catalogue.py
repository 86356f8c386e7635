"""The catalogue: every instrument Gangplank records, in one place.

Each entry gives the OpenTelemetry name, kind, unit, description and (for histograms) the
bucket boundaries. Exporters derive the Prometheus name from the OpenTelemetry name and unit
(dots become underscores, the unit is appended, counters gain ``_total``); the names below are
chosen so that the result is exactly the series of Gangplank 0.5. Nothing outside this module
invents a metric name.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackT, Meter

__all__ = (
    "CATALOGUE",
    "Instrument",
    "Kind",
    "log_key_name",
    "prometheus_name",
    "reference_table",
)


class Kind(enum.Enum):
    """How an instrument is recorded."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"
    OBSERVABLE_COUNTER = "observable_counter"
    OBSERVABLE_GAUGE = "observable_gauge"
    OBSERVABLE_UP_DOWN_COUNTER = "observable_up_down_counter"
    # Aggregated inside Gangplank (NumPy or a hot-path accumulator) and merged into every
    # reader's collection as a genuine histogram (see ``producer.py``).
    PREAGGREGATED_HISTOGRAM = "preaggregated_histogram"


_UNIT_SUFFIXES = {"s": "seconds", "By": "bytes"}
_HISTOGRAMS = (Kind.HISTOGRAM, Kind.PREAGGREGATED_HISTOGRAM)
_COUNTERS = (Kind.COUNTER, Kind.OBSERVABLE_COUNTER)


@dataclass(frozen=True)
class Instrument:
    """One catalogue entry."""

    name: str
    kind: Kind
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The family name Prometheus shows (without ``_bucket``/``_sum``/``_count``)."""
        return prometheus_name(self.name, self.unit, self.kind)

    @property
    def prometheus_type(self) -> str:
        """``counter``, ``gauge`` or ``histogram``."""
        if self.kind in _HISTOGRAMS:
            return "histogram"
        if self.kind in _COUNTERS:
            return "counter"
        return "gauge"

    def create(self, meter: Meter, callbacks: Sequence[CallbackT] | None = None) -> Any:
        """Create this instrument on ``meter``."""
        kw: dict[str, Any] = {"unit": self.unit, "description": self.description}
        if self.kind is Kind.COUNTER:
            return meter.create_counter(self.name, **kw)
        if self.kind is Kind.HISTOGRAM:
            return meter.create_histogram(
                self.name, explicit_bucket_boundaries_advisory=self.buckets, **kw
            )
        if self.kind is Kind.GAUGE:
            return meter.create_gauge(self.name, **kw)
        if self.kind is Kind.OBSERVABLE_COUNTER:
            return meter.create_observable_counter(self.name, callbacks, **kw)
        if self.kind is Kind.OBSERVABLE_GAUGE:
            return meter.create_observable_gauge(self.name, callbacks, **kw)
        if self.kind is Kind.OBSERVABLE_UP_DOWN_COUNTER:
            return meter.create_observable_up_down_counter(self.name, callbacks, **kw)
        raise TypeError(f"{self.name} is pre-aggregated; build it with gangplank.histogram")


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """The Prometheus name the OpenTelemetry exporters give an instrument."""
    base = re.sub(r"[^a-zA-Z0-9:]+", "_", name)
    suffix = _UNIT_SUFFIXES.get(re.sub(r"\{.*\}", "", unit), "")
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind in _COUNTERS and not base.endswith("_total"):
        base += "_total"
    return base


_KEY_SANITISER = re.compile(r"[^A-Za-z0-9_]+")


def log_key_name(phase: str, key: str) -> str | None:
    """The OpenTelemetry name of the gauge for a Keras ``logs`` key, or None if unusable.

    ``phase`` is ``train``, ``test`` or ``train.batch``. The key is reduced to
    ``[A-Za-z0-9_]`` (spaces, dashes and non-ASCII letters become ``_``), so
    ``"val loss"`` gives ``gangplank.train.val_loss`` (Prometheus:
    ``gangplank_train_val_loss``).
    """
    cleaned = _KEY_SANITISER.sub("_", str(key)).strip("_")
    if not cleaned:
        return None
    name = f"gangplank.{phase}.{cleaned}"
    return name if len(name) <= 255 else None


def _log_gauge(name: str, description: str) -> Instrument:
    return Instrument(name, Kind.GAUGE, "", description)


# Bucket boundaries.
WEIGHT_BUCKETS_1_0 = tuple(round(-1.0 + 0.1 * i, 10) for i in range(21))
WEIGHT_BUCKETS_0_3 = tuple(round(-0.30 + 0.05 * i, 10) for i in range(13))
EPOCH_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENCY_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(17))  # 1 … 65536
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

# --- Training (fit) -------------------------------------------------------------------------
TRAIN_EPOCHS = Instrument(
    "gangplank.train.epochs.count", Kind.GAUGE, "{epoch}", "Completed training epochs."
)
TRAIN_ELAPSED = Instrument(
    "gangplank.train.elapsed_time", Kind.GAUGE, "s", "Seconds since training began."
)
TRAIN_PARAMETERS = Instrument(
    "gangplank.train.model.parameters.count",
    Kind.GAUGE,
    "{parameter}",
    "Model weights, trainable and non-trainable.",
)
TRAIN_TRAINABLE = Instrument(
    "gangplank.train.model.trainable_parameters",
    Kind.GAUGE,
    "{parameter}",
    "Trainable model weights.",
)
TRAIN_NON_TRAINABLE = Instrument(
    "gangplank.train.model.non_trainable_parameters",
    Kind.GAUGE,
    "{parameter}",
    "Non-trainable model weights.",
)
TRAIN_WEIGHTS = Instrument(
    "gangplank.train.model.weights",
    Kind.PREAGGREGATED_HISTOGRAM,
    "",
    "Distribution of the trainable weights at the end of training.",
)
TRAIN_LAYER_WEIGHTS = Instrument(
    "gangplank.train.layer.weights",
    Kind.PREAGGREGATED_HISTOGRAM,
    "",
    "Distribution of each layer's trainable weights at the end of training.",
)
TRAIN_LEARNING_RATE = _log_gauge(
    "gangplank.train.learning_rate", "The optimizer's learning rate at the end of the epoch."
)
TRAIN_EPOCH_DURATION = Instrument(
    "gangplank.train.epoch.duration",
    Kind.HISTOGRAM,
    "s",
    "Wall-clock duration of each training epoch.",
    EPOCH_SECONDS_BUCKETS,
)
TRAIN_STEPS = Instrument(
    "gangplank.train.steps", Kind.COUNTER, "{step}", "Training steps (batches) completed."
)
TRAIN_SAMPLES = Instrument(
    "gangplank.train.samples", Kind.COUNTER, "{sample}", "Training samples processed."
)
TRAIN_NONFINITE_LOSS = Instrument(
    "gangplank.train.nonfinite_loss",
    Kind.COUNTER,
    "{event}",
    "Epochs or batches whose loss was NaN or infinite.",
)
TRAIN_START = Instrument(
    "gangplank.train.start.timestamp", Kind.GAUGE, "s", "Unix time the training run started."
)
TRAIN_LAST_SUCCESS = Instrument(
    "gangplank.train.last_success.timestamp",
    Kind.GAUGE,
    "s",
    "Unix time a training run last finished without error.",
)

# --- Evaluation (evaluate) ------------------------------------------------------------------
TEST_ELAPSED = Instrument(
    "gangplank.test.elapsed_time", Kind.GAUGE, "s", "Seconds spent in the last evaluation."
)
TEST_PARAMETERS = Instrument(
    "gangplank.test.model.parameters.count",
    Kind.GAUGE,
    "{parameter}",
    "Model weights, trainable and non-trainable, at evaluation.",
)
TEST_WEIGHTS = Instrument(
    "gangplank.test.model.weights",
    Kind.PREAGGREGATED_HISTOGRAM,
    "",
    "Distribution of the trainable weights at evaluation.",
)
TEST_STEPS = Instrument(
    "gangplank.test.steps", Kind.COUNTER, "{step}", "Evaluation steps (batches) completed."
)

# --- Inference (the model proxy) ------------------------------------------------------------
PREDICT_COUNT = Instrument(
    "gangplank.predict", Kind.OBSERVABLE_COUNTER, "{prediction}", "Rows predicted by predict()."
)
PREDICT_TIME = Instrument(
    "gangplank.predict.time", Kind.OBSERVABLE_COUNTER, "s", "Seconds spent in predict()."
)
PREDICT_CALL_COUNT = Instrument(
    "gangplank.predict.call",
    Kind.OBSERVABLE_COUNTER,
    "{prediction}",
    "Rows predicted by calling the model.",
)
PREDICT_CALL_TIME = Instrument(
    "gangplank.predict.call.time",
    Kind.OBSERVABLE_COUNTER,
    "s",
    "Seconds spent calling the model.",
)
PREDICT_DURATION = Instrument(
    "gangplank.predict.duration",
    Kind.PREAGGREGATED_HISTOGRAM,
    "s",
    "Latency of each predict, __call__ or predict_on_batch, by method.",
    LATENCY_SECONDS_BUCKETS,
)
PREDICT_BATCH_SIZE = Instrument(
    "gangplank.predict.batch_size",
    Kind.PREAGGREGATED_HISTOGRAM,
    "{sample}",
    "Rows per inference request, by method.",
    BATCH_SIZE_BUCKETS,
)
PREDICT_ERRORS = Instrument(
    "gangplank.predict.errors",
    Kind.OBSERVABLE_COUNTER,
    "{error}",
    "Inference requests that raised, by method and exception type.",
)
PREDICT_IN_FLIGHT = Instrument(
    "gangplank.predict.in_flight",
    Kind.OBSERVABLE_UP_DOWN_COUNTER,
    "{request}",
    "Inference requests in progress.",
)
PREDICT_LOCK_WAIT = Instrument(
    "gangplank.predict.lock_wait",
    Kind.OBSERVABLE_COUNTER,
    "s",
    "Seconds spent waiting for the model lock (serialize=True).",
)
PREDICT_CLASS = Instrument(
    "gangplank.predict.class",
    Kind.OBSERVABLE_COUNTER,
    "{prediction}",
    "Predictions by predicted class (classifiers; bounded cardinality).",
)
PREDICT_CONFIDENCE = Instrument(
    "gangplank.predict.confidence",
    Kind.PREAGGREGATED_HISTOGRAM,
    "",
    "Top-class probability of each prediction (classifiers).",
    CONFIDENCE_BUCKETS,
)

# --- Drift ------------------------------------------------------------------------------------
DRIFT_P_VALUE = Instrument(
    "gangplank.predict.drift.p_value",
    Kind.OBSERVABLE_GAUGE,
    "",
    "p-value of the latest drift test, by detector.",
)
DRIFT_STATISTIC = Instrument(
    "gangplank.predict.drift.test_statistic",
    Kind.OBSERVABLE_GAUGE,
    "",
    "Statistic of the latest drift test, by detector.",
)
DRIFT_DETECTED = Instrument(
    "gangplank.predict.drift.detected",
    Kind.OBSERVABLE_COUNTER,
    "{window}",
    "Windows in which drift was detected, by detector.",
)
DRIFT_WINDOWS = Instrument(
    "gangplank.predict.drift.windows",
    Kind.OBSERVABLE_COUNTER,
    "{window}",
    "Windows evaluated for drift, by detector.",
)
DRIFT_DROPPED = Instrument(
    "gangplank.predict.drift.dropped",
    Kind.OBSERVABLE_COUNTER,
    "{batch}",
    "Batches dropped because the drift buffer was full.",
)
DRIFT_ERRORS = Instrument(
    "gangplank.predict.drift.errors",
    Kind.OBSERVABLE_COUNTER,
    "{error}",
    "Drift evaluations that raised or returned an invalid result, by detector.",
)

# --- Gangplank itself -------------------------------------------------------------------------
EXPORT_FAILURES = Instrument(
    "gangplank.export.failures",
    Kind.OBSERVABLE_COUNTER,
    "{failure}",
    "Pushes or exports that failed, by route.",
)

CATALOGUE: tuple[Instrument, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Instrument)
)
"""Every fixed-name instrument. Gauges for ``logs`` keys are named by :func:`log_key_name`."""


def reference_table() -> str:
    """The catalogue as a Markdown table (README's metrics reference is generated from it)."""
    lines = [
        "| Prometheus series | type | OpenTelemetry instrument | unit | description |",
        "|---|---|---|---|---|",
        "| `gangplank_train_<key>`, `gangplank_test_<key>` | gauge | `gangplank.train.<key>` "
        "| | each numeric Keras `logs` value (loss, metrics, `val_*`, keys from other callbacks) |",
        "| `gangplank_train_batch_<key>` | gauge | `gangplank.train.batch.<key>` "
        "| | the same per batch, with `update_freq` |",
    ]
    for instrument in CATALOGUE:
        unit = f"`{instrument.unit}`" if instrument.unit else ""
        lines.append(
            f"| `{instrument.prometheus_name}` | {instrument.prometheus_type} "
            f"| `{instrument.name}` | {unit} | {instrument.description} |"
        )
    return "\n".join(lines) + "\n"
