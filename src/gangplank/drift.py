"""Drift detection off the inference hot path.

Detectors need only NumPy and SciPy and are configured in milliseconds from reference data
(nothing is bootstrapped or trained). They consume the model's inputs or predictions in
non-overlapping windows and report a :class:`Drift` per window:

- :class:`ChiSquare`: predicted classes (or a categorical input) against reference classes.
- :class:`KS`: two-sample Kolmogorov-Smirnov per numeric feature, with a multiple-testing
  correction (Bonferroni or Benjamini-Hochberg).
- :class:`PSI`: the population stability index (a statistic, no p-value).
- :class:`CUSUM`: a sequential two-sided CUSUM on standardised values; resets after an alarm.

A :class:`DriftMonitor` runs them: the model proxy only hands ``(x, y)`` to its bounded buffer
(a full buffer drops the batch and counts it, never blocks) and a daemon worker thread, started
on first use, evaluates. The results are exposed as the seed's series
``gangplank_predict_drift_p_value`` and ``gangplank_predict_drift_test_statistic`` (gauges)
and ``gangplank_predict_drift_detected_total``, plus windows, dropped batches and errors, each
labelled with the ``detector``.

Any function ``(X, Y) -> Drift`` (the seed's ``get_drift_metrics_func``) works as a detector
too: it is called once per submitted batch, on the worker thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import numbers
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from . import catalogue
from .provider import get_meter, resolve

__all__ = (
    "CUSUM",
    "KS",
    "PSI",
    "ChiSquare",
    "Detector",
    "Drift",
    "DriftMonitor",
    "FunctionDetector",
)

_logger = logging.getLogger(__name__)


class Drift(NamedTuple):
    """The result of one drift test (the seed's ``gangplank.Drift``); every field is optional.

    Args:
        drift_detected: how many drift incidents to add to
            ``gangplank_predict_drift_detected_total`` (usually 0 or 1). Defaults to None.
        p_value: the test's p-value (sets ``gangplank_predict_drift_p_value``).
            Defaults to None.
        test_statistic: the test statistic (sets
            ``gangplank_predict_drift_test_statistic``). Defaults to None.

    Example:
    ```python
    def detect(x, y):
        p = scipy.stats.ks_2samp(reference, x.ravel()).pvalue
        return gangplank.Drift(drift_detected=int(p < 0.01), p_value=p)
    ```
    """

    drift_detected: int | None = None
    p_value: float | None = None
    test_statistic: float | None = None


# --- Data helpers -------------------------------------------------------------------------


def to_numpy(value: Any) -> np.ndarray:
    """``value`` as a NumPy array (backend tensors through Keras, lazily imported)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__") and not hasattr(value, "numpy"):
        return np.asarray(value)
    try:
        from keras import ops

        return np.asarray(ops.convert_to_numpy(value))
    except Exception:
        return np.asarray(value)


def as_matrix(data: Any) -> np.ndarray:
    """Rows by features: leaves of a list/tuple/dict are flattened and joined column-wise."""
    if isinstance(data, Mapping):
        leaves = [data[key] for key in sorted(data, key=str)]
    elif isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        leaves = list(data)
    else:
        leaves = [data]
    arrays = []
    for leaf in leaves:
        array = to_numpy(leaf)
        if array.ndim == 0:
            array = array.reshape(1, 1)
        arrays.append(array.reshape(array.shape[0], -1))
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)


def as_labels(data: Any) -> np.ndarray:
    """Class labels per row: arg-max of probability rows, 0.5-threshold of binary scores."""
    array = to_numpy(data) if not isinstance(data, (list, tuple)) else np.asarray(data)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim >= 2:
        array = array.reshape(array.shape[0], -1)
        if array.shape[1] > 1:
            return np.argmax(array, axis=1)
        array = array[:, 0]
    if array.dtype.kind == "f":
        integral = np.all(np.isfinite(array)) and np.all(np.floor(array) == array)
        if integral:
            return array.astype(np.int64)
        return (array > 0.5).astype(np.int64)
    return array


# --- Detectors ----------------------------------------------------------------------------

_ON = ("inputs", "predictions")


class Detector:
    """Base class: consumes ``(x, y)`` batches and returns the :class:`Drift` of each window.

    Subclasses implement :meth:`update`. ``name`` is the ``detector`` label of the series.
    """

    name: str = "detector"
    batchable: bool = False
    """True if consecutive batches may be joined into one before :meth:`update`."""

    def update(self, x: Any, y: Any) -> list[Drift]:
        """Consume one batch and return the results of the windows it completed."""
        raise NotImplementedError


def _check_on(on: str) -> str:
    if on == "outputs":
        on = "predictions"
    if on not in _ON:
        raise ValueError(f"on must be 'inputs' or 'predictions', got {on!r}")
    return on


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    return int(window)


def _check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    return float(alpha)


class _Windowed(Detector):
    """Collects rows into non-overlapping windows of ``window`` rows and tests each."""

    batchable = True

    def __init__(self, window: int, on: str, name: str | None) -> None:
        self.window = _check_window(window)
        self.on = _check_on(on)
        if name is not None:
            self.name = str(name)
        self._parts: list[np.ndarray] = []
        self._pending = 0

    def _select(self, x: Any, y: Any) -> Any:
        return x if self.on == "inputs" else y

    def _prepare(self, data: Any) -> np.ndarray:
        return as_matrix(data)

    def update(self, x: Any, y: Any) -> list[Drift]:
        """Consume one batch and return the results of the windows it completed."""
        data = self._select(x, y)
        if data is None:
            return []
        rows = self._prepare(data)
        if len(rows) == 0:
            return []
        self._parts.append(rows)
        self._pending += len(rows)
        if self._pending < self.window:
            return []
        joined = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        results = []
        full = len(joined) // self.window
        for i in range(full):
            results.append(self.evaluate(joined[i * self.window : (i + 1) * self.window]))
        rest = joined[full * self.window :]
        self._parts = [rest] if len(rest) else []
        self._pending = len(rest)
        return results

    def evaluate(self, window: np.ndarray) -> Drift:
        """Test one full window."""
        raise NotImplementedError


class ChiSquare(_Windowed):
    """Pearson's chi-square test of predicted classes (or a categorical input) per window.

    Reference class frequencies come from ``reference``: reference predictions
    (probability rows are arg-maxed, binary scores thresholded at 0.5) or class labels.
    Classes expected fewer than 5 times in a window, and classes never seen in the reference,
    are pooled into one bin; if that bin is still too small it joins the smallest class.

    Args:
        reference: reference predictions or class labels (ints or strings).
        window: rows per test. Defaults to 500.
        alpha: significance level; a window is flagged when ``p < alpha``. Defaults to 0.05.
        on: ``"predictions"`` or ``"inputs"`` (a categorical input). Defaults to
            ``"predictions"``.
        name: the ``detector`` label. Defaults to ``"chi_square"``.

    Example:
    ```python
    detector = gangplank.drift.ChiSquare(model.predict(x_reference), window=500)
    served = gangplank.InstrumentedModel(model, drift=detector)
    ```
    """

    name = "chi_square"

    def __init__(
        self,
        reference: Any,
        *,
        window: int = 500,
        alpha: float = 0.05,
        on: str = "predictions",
        name: str | None = None,
    ) -> None:
        super().__init__(window, on, name)
        self.alpha = _check_alpha(alpha)
        labels = as_labels(reference)
        if labels.size == 0:
            raise ValueError("ChiSquare needs a non-empty reference")
        categories, counts = np.unique(labels, return_counts=True)
        probabilities = counts / counts.sum()
        expected = probabilities * self.window
        common = expected >= 5.0
        if common.sum() < 1:
            raise ValueError(
                f"window={self.window} is too small for a chi-square test on these classes "
                "(no class is expected 5 times); use a larger window"
            )
        # Bin layout: one bin per common class, then the pooled "other" bin.
        kept = np.flatnonzero(common)
        pooled_p = float(probabilities[~common].sum()) + 0.5 / labels.size
        bin_p = np.append(probabilities[kept], pooled_p)
        self.categories = categories
        mapping = np.full(len(categories) + 1, len(kept), dtype=np.int64)  # last: unseen
        mapping[kept] = np.arange(len(kept))
        if pooled_p * self.window < 5.0:
            smallest = int(np.argmin(bin_p[:-1]))
            bin_p[smallest] += bin_p[-1]
            bin_p = bin_p[:-1]
            mapping[mapping == len(kept)] = smallest
        if len(bin_p) < 2:
            raise ValueError(
                f"window={self.window} is too small for a chi-square test on these classes "
                "(fewer than two bins with 5 expected); use a larger window"
            )
        self._mapping = mapping
        self._probabilities = bin_p / bin_p.sum()

    def _prepare(self, data: Any) -> np.ndarray:
        labels = as_labels(data)
        index = np.searchsorted(self.categories, labels)
        index = np.clip(index, 0, len(self.categories) - 1)
        known = self.categories[index] == labels
        return np.where(known, index, len(self.categories))

    def evaluate(self, window: np.ndarray) -> Drift:
        """Test one window of category indices."""
        from scipy import stats

        bins = self._mapping[window]
        observed = np.bincount(bins, minlength=len(self._probabilities))
        expected = self._probabilities * len(window)
        statistic = float(np.sum((observed - expected) ** 2 / expected))
        p_value = float(stats.chi2.sf(statistic, len(expected) - 1))
        return Drift(int(p_value < self.alpha), p_value, statistic)


class KS(_Windowed):
    """Two-sample Kolmogorov-Smirnov tests of every numeric feature per window.

    Each feature (inputs or outputs flattened beyond the batch axis; list and dict inputs
    joined column-wise) is compared with its reference distribution. The reported p-value is
    the smallest corrected p-value, the statistic the largest KS distance.

    Args:
        reference: reference rows (inputs or predictions, like the live data).
        window: rows per test. Defaults to 500.
        alpha: family-wise (Bonferroni) or false-discovery (FDR) level. Defaults to 0.05.
        on: ``"inputs"`` or ``"predictions"``. Defaults to ``"inputs"``.
        correction: ``"bonferroni"`` or ``"fdr"`` (Benjamini-Hochberg). Defaults to
            ``"bonferroni"``.
        name: the ``detector`` label. Defaults to ``"ks"``.

    Example:
    ```python
    detector = gangplank.drift.KS(x_train, window=500, correction="fdr")
    ```
    """

    name = "ks"

    def __init__(
        self,
        reference: Any,
        *,
        window: int = 500,
        alpha: float = 0.05,
        on: str = "inputs",
        correction: str = "bonferroni",
        name: str | None = None,
    ) -> None:
        super().__init__(window, on, name)
        self.alpha = _check_alpha(alpha)
        if correction in ("bh", "benjamini-hochberg"):
            correction = "fdr"
        if correction not in ("bonferroni", "fdr"):
            raise ValueError(f"correction must be 'bonferroni' or 'fdr', got {correction!r}")
        self.correction = correction
        matrix = as_matrix(reference).astype(np.float64)
        if len(matrix) < 2:
            raise ValueError("KS needs at least two reference rows")
        self._reference = np.ascontiguousarray(np.sort(matrix, axis=0).T)
        self.features = self._reference.shape[0]

    def _prepare(self, data: Any) -> np.ndarray:
        matrix = as_matrix(data).astype(np.float64)
        if matrix.shape[1] != self.features:
            raise ValueError(f"expected {self.features} features, got {matrix.shape[1]}")
        return matrix

    def evaluate(self, window: np.ndarray) -> Drift:
        """Test one window of rows."""
        from scipy import stats

        n, m = self._reference.shape[1], len(window)
        live = np.sort(window, axis=0).T
        distances = np.empty(self.features)
        for j in range(self.features):
            ref, cur = self._reference[j], live[j]
            points = np.concatenate((ref, cur))
            gap = (
                np.searchsorted(ref, points, "right") / n
                - np.searchsorted(cur, points, "right") / m
            )
            distances[j] = np.max(np.abs(gap))
        p_values = np.clip(stats.kstwo.sf(distances, round(n * m / (n + m))), 0.0, 1.0)
        k = len(p_values)
        if self.correction == "bonferroni":
            adjusted = np.minimum(p_values * k, 1.0)
        else:
            order = np.argsort(p_values)
            scaled = p_values[order] * k / np.arange(1, k + 1)
            adjusted = np.empty(k)
            adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        p_value = float(adjusted.min())
        return Drift(int(p_value < self.alpha), p_value, float(distances.max()))


class PSI(_Windowed):
    """The population stability index per feature per window (a statistic, no p-value).

    Bin edges are the reference's quantiles; the statistic is the largest PSI over the
    features and a window is flagged when it exceeds ``threshold`` (0.1 is usually read as a
    moderate shift, 0.25 as a large one).

    Args:
        reference: reference rows (inputs or predictions, like the live data).
        window: rows per window. Defaults to 1000.
        bins: quantile bins per feature. Defaults to 10.
        threshold: flag a window whose PSI exceeds this. Defaults to 0.25.
        on: ``"inputs"`` or ``"predictions"``. Defaults to ``"inputs"``.
        name: the ``detector`` label. Defaults to ``"psi"``.

    Example:
    ```python
    detector = gangplank.drift.PSI(x_train, bins=10, threshold=0.25)
    ```
    """

    name = "psi"
    _EPSILON = 1e-4

    def __init__(
        self,
        reference: Any,
        *,
        window: int = 1000,
        bins: int = 10,
        threshold: float = 0.25,
        on: str = "inputs",
        name: str | None = None,
    ) -> None:
        super().__init__(window, on, name)
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        self.bins = int(bins)
        self.threshold: float = float(threshold)
        matrix = as_matrix(reference).astype(np.float64)
        if len(matrix) < 2:
            raise ValueError("PSI needs at least two reference rows")
        self.features: int = matrix.shape[1]
        quantiles = np.linspace(0.0, 1.0, self.bins + 1)[1:-1]
        self._edges: list[np.ndarray] = [
            np.unique(np.quantile(matrix[:, j], quantiles)) for j in range(self.features)
        ]
        self._expected: list[np.ndarray] = [
            self._proportions(matrix[:, j], j) for j in range(self.features)
        ]

    def _proportions(self, column: np.ndarray, j: int) -> np.ndarray:
        edges = self._edges[j]
        counts = np.bincount(np.searchsorted(edges, column, "right"), minlength=len(edges) + 1)
        return np.maximum(counts / len(column), self._EPSILON)

    def _prepare(self, data: Any) -> np.ndarray:
        matrix = as_matrix(data).astype(np.float64)
        if matrix.shape[1] != self.features:
            raise ValueError(f"expected {self.features} features, got {matrix.shape[1]}")
        return matrix

    def evaluate(self, window: np.ndarray) -> Drift:
        """Compute the PSI of one window of rows."""
        worst = 0.0
        for j in range(self.features):
            actual = self._proportions(window[:, j], j)
            expected = self._expected[j]
            worst = max(worst, float(np.sum((actual - expected) * np.log(actual / expected))))
        return Drift(int(worst > self.threshold), None, worst)


class CUSUM(Detector):
    """A two-sided CUSUM on standardised values, per column; resets after an alarm.

    Each column of the monitored data (predictions by default; one column per output unit) is
    standardised with the reference mean and standard deviation ``z``; the upper and lower
    sums ``S+ = max(0, S+ + z - k)`` and ``S- = max(0, S- - z - k)`` raise an alarm when one
    exceeds ``h``, after which every sum restarts from zero. A report is made every ``window``
    rows: ``drift_detected`` is the number of alarms raised in it (so
    ``gangplank_predict_drift_detected_total`` counts alarms), the statistic the largest sum
    reached. In control, alarms are rare but not impossible: with ``k=0.5, h=5`` about one
    per 500-1000 rows per column; after a shift of one standard deviation, about one per 10.

    Args:
        reference: reference rows (predictions or inputs, like the live data).
        k: allowance, in standard deviations (half the shift to detect). Defaults to 0.5.
        h: decision threshold, in standard deviations. Defaults to 5.0.
        on: ``"predictions"`` or ``"inputs"``. Defaults to ``"predictions"``.
        window: rows per report. Defaults to 500.
        name: the ``detector`` label. Defaults to ``"cusum"``.

    Example:
    ```python
    detector = gangplank.drift.CUSUM(model.predict(x_reference), k=0.5, h=5.0)
    ```
    """

    name = "cusum"
    batchable = True

    def __init__(
        self,
        reference: Any,
        *,
        k: float = 0.5,
        h: float = 5.0,
        on: str = "predictions",
        window: int = 500,
        name: str | None = None,
    ) -> None:
        self.k = float(k)
        self.h = float(h)
        if self.k < 0 or self.h <= 0:
            raise ValueError(f"need k >= 0 and h > 0, got k={k!r}, h={h!r}")
        self.on = _check_on(on)
        self.window = _check_window(window)
        if name is not None:
            self.name = str(name)
        matrix = as_matrix(reference).astype(np.float64)
        if len(matrix) < 2:
            raise ValueError("CUSUM needs at least two reference rows")
        self.mean = matrix.mean(axis=0)
        std = matrix.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        self.features = matrix.shape[1]
        self.reset()

    def reset(self) -> None:
        """Restart the sums and the report window."""
        self.upper = np.zeros(self.features)
        self.lower = np.zeros(self.features)
        self._seen = 0
        self._alarms = 0
        self._peak = 0.0
        self.alarms = 0

    def update(self, x: Any, y: Any) -> list[Drift]:
        """Consume one batch and return the reports of the windows it completed."""
        data = x if self.on == "inputs" else y
        if data is None:
            return []
        matrix = as_matrix(data).astype(np.float64)
        if matrix.shape[1] != self.features:
            raise ValueError(f"expected {self.features} features, got {matrix.shape[1]}")
        z = (matrix - self.mean) / self.std
        results: list[Drift] = []
        start = 0
        while start < len(z):
            stop = min(len(z), start + self.window - self._seen)
            self._scan(z[start:stop])
            self._seen += stop - start
            start = stop
            if self._seen == self.window:
                results.append(Drift(self._alarms, None, self._peak))
                self._seen, self._alarms, self._peak = 0, 0, 0.0
        return results

    def _scan(self, z: np.ndarray) -> None:
        # Lindley's recursion S_t = max(0, S_{t-1} + d_t) in closed form:
        # S_t = D_t - min(-S_0, min_{s<=t} D_s), D the cumulative sum of d.
        while len(z):
            up = np.cumsum(z - self.k, axis=0)
            up = up - np.minimum(np.minimum.accumulate(up, axis=0), -self.upper)
            down = np.cumsum(-z - self.k, axis=0)
            down = down - np.minimum(np.minimum.accumulate(down, axis=0), -self.lower)
            worst = np.maximum(up, down).max(axis=1)
            over = np.flatnonzero(worst > self.h)
            if len(over) == 0:
                self._peak = max(self._peak, float(worst.max()))
                self.upper, self.lower = up[-1], down[-1]
                return
            alarm = int(over[0])
            self._peak = max(self._peak, float(worst[: alarm + 1].max()))
            self._alarms += 1
            self.alarms += 1
            self.upper = np.zeros(self.features)
            self.lower = np.zeros(self.features)
            z = z[alarm + 1 :]


class FunctionDetector(Detector):
    """Adapts a seed-style function ``(X, Y) -> Drift``, called once per batch.

    Args:
        function: called with the batch's inputs and predictions (NumPy); returns a
            :class:`Drift` (or None to report nothing).
        name: the ``detector`` label. Defaults to the function's name.

    Example:
    ```python
    detector = gangplank.drift.FunctionDetector(lambda x, y: gangplank.Drift(p_value=0.5))
    ```
    """

    def __init__(self, function: Callable[[Any, Any], Any], name: str | None = None) -> None:
        if not callable(function):
            raise TypeError(f"{function!r} is not callable")
        self.function = function
        self.name = name or getattr(function, "__name__", None) or type(function).__name__

    def update(self, x: Any, y: Any) -> list[Drift]:
        """Call the function on the batch."""
        result = self.function(x, y)
        return [] if result is None else [result]


def as_detectors(drift: Any) -> list[Detector]:
    """``drift=`` as a list of detectors: a detector, a function, or a list of either."""
    if drift is None:
        return []
    items = list(drift) if isinstance(drift, (list, tuple)) else [drift]
    detectors: list[Detector] = []
    for item in items:
        if isinstance(item, Detector) or (hasattr(item, "update") and hasattr(item, "name")):
            detectors.append(item)
        elif callable(item):
            detectors.append(FunctionDetector(item))
        else:
            raise TypeError(f"drift must be a detector or a function (X, Y) -> Drift, got {item!r}")
    return detectors


# --- Metrics ------------------------------------------------------------------------------

_LABEL = re.compile(r"[^A-Za-z0-9_.:-]+")


class _Cell:
    """The latest results and counts of one detector (one attribute set)."""

    __slots__ = ("attributes", "detected", "errors", "failing", "p_value", "statistic", "windows")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.p_value: float | None = None
        self.statistic: float | None = None
        self.detected = 0
        self.windows = 0
        self.errors = 0
        self.failing = False


class _DriftState:
    """The drift instruments of one MeterProvider, reading every monitor's cells."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        self.lock = threading.Lock()
        self.cells: dict[tuple[Any, ...], _Cell] = {}
        self.dropped: dict[tuple[Any, ...], list[Any]] = {}
        meter = get_meter(meter_provider)
        self.instruments = [
            catalogue.DRIFT_P_VALUE.create(meter, [self._gauge("p_value")]),
            catalogue.DRIFT_STATISTIC.create(meter, [self._gauge("statistic")]),
            catalogue.DRIFT_DETECTED.create(meter, [self._count("detected")]),
            catalogue.DRIFT_WINDOWS.create(meter, [self._count("windows")]),
            catalogue.DRIFT_ERRORS.create(meter, [self._count("errors")]),
            catalogue.DRIFT_DROPPED.create(meter, [self._dropped]),
        ]

    def cell(self, attributes: dict[str, Any]) -> _Cell:
        key = tuple(sorted(attributes.items()))
        with self.lock:
            return self.cells.setdefault(key, _Cell(attributes))

    def drop_counter(self, attributes: dict[str, Any]) -> list[Any]:
        key = tuple(sorted(attributes.items()))
        with self.lock:
            return self.dropped.setdefault(key, [attributes, 0])

    def _gauge(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with self.lock:
                cells = list(self.cells.values())
            observed = []
            for cell in cells:
                value = getattr(cell, field)
                if value is not None:
                    observed.append(Observation(value, cell.attributes))
            return observed

        return callback

    def _count(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with self.lock:
                cells = list(self.cells.values())
            return [Observation(getattr(cell, field), cell.attributes) for cell in cells]

        return callback

    def _dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            entries = list(self.dropped.values())
        return [Observation(count, attributes) for attributes, count in entries]


_STATES: weakref.WeakKeyDictionary[Any, _DriftState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _state(meter_provider: MeterProvider | None) -> _DriftState:
    provider = resolve(meter_provider)
    with _STATES_LOCK:
        state = _STATES.get(provider)
        if state is None:
            state = _STATES[provider] = _DriftState(provider)
        return state


def _valid(result: Any) -> Drift | None:
    """``result`` as a Drift, or None when it is not a usable drift result."""
    try:
        detected, p_value, statistic = (
            result.drift_detected,
            result.p_value,
            result.test_statistic,
        )
    except AttributeError:
        return None
    if detected is not None:
        if isinstance(detected, (bool, np.bool_)):
            detected = int(detected)
        if (
            not isinstance(detected, numbers.Real)
            or not float(detected).is_integer()
            or detected < 0
        ):
            return None
        detected = int(float(detected))
    if p_value is not None:
        if not isinstance(p_value, numbers.Real) or not 0.0 <= float(p_value) <= 1.0:
            return None
        p_value = float(p_value)
    if statistic is not None:
        if not isinstance(statistic, numbers.Real) or math.isnan(float(statistic)):
            return None
        statistic = float(statistic)
    return Drift(detected, p_value, statistic)


_YIELD_EVERY = 16  # batches converted between voluntary GIL releases


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to request threads (Linux: nice +10)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class DriftMonitor:
    """Runs drift detectors on a worker thread, fed through a bounded buffer.

    :meth:`submit` is the only call on the inference path: it appends ``(x, y)`` to a buffer
    of ``capacity`` batches, or drops the batch and counts it when the buffer is full. The
    worker (a daemon thread started on the first submit) converts the data to NumPy and feeds
    every detector; results go to the drift series on ``meter_provider``. A detector that
    raises or returns something that is not a valid :class:`Drift` is counted in
    ``gangplank_predict_drift_errors_total`` and logged once per streak of failures.

    Args:
        detectors: a detector, a function ``(X, Y) -> Drift``, or a list of them.
        meter_provider: the provider to record on. Defaults to the global provider.
        attributes: extra attributes of every series (e.g. ``model_name``). Defaults to none.
        capacity: batches the buffer holds before dropping. Defaults to 1024.

    Example:
    ```python
    monitor = gangplank.drift.DriftMonitor(gangplank.drift.KS(x_train), provider)
    monitor.submit(x, model.predict(x))
    monitor.join(timeout=5)  # wait until evaluated (tests)
    ```
    """

    def __init__(
        self,
        detectors: Any,
        meter_provider: MeterProvider | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
        capacity: int = 1024,
    ) -> None:
        self.detectors = as_detectors(detectors)
        if not self.detectors:
            raise ValueError("DriftMonitor needs at least one detector")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        base = dict(attributes or {})
        self._state = _state(meter_provider)
        names: set[str] = set()
        self._cells: list[_Cell] = []
        for detector in self.detectors:
            label = _LABEL.sub("_", str(getattr(detector, "name", "detector"))) or "detector"
            unique, n = label, 1
            while unique in names:
                n += 1
                unique = f"{label}_{n}"
            names.add(unique)
            self._cells.append(self._state.cell({**base, "detector": unique}))
        self._dropped = self._state.drop_counter(base)
        self._buffer: collections.deque[tuple[Any, Any]] = collections.deque()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._idle = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._pending = 0
        if all(getattr(d, "batchable", False) for d in self.detectors):
            self._wake_rows = min(int(getattr(d, "window", 1)) for d in self.detectors)
        else:
            self._wake_rows = 1  # functions see every batch as soon as possible
        self._wake_batches = max(1, capacity // 2)

    @property
    def dropped(self) -> int:
        """Batches dropped because the buffer was full."""
        return int(self._dropped[1])

    def submit(self, x: Any, y: Any, rows: int | None = None) -> bool:
        """Queue a batch for evaluation; returns False (and counts it) if the buffer is full.

        ``rows`` (the batch size, if known) lets the worker sleep until a window's worth of
        rows has arrived, so that it evaluates in bulk rather than waking on every call.
        """
        if self._thread is None:
            self._start()
        buffer = self._buffer
        if len(buffer) >= self.capacity or self._stopping:
            with self._drop_lock:
                self._dropped[1] += 1
            return False
        buffer.append((x, y))
        # Unsynchronised on purpose: it only decides when to wake the worker.
        self._pending += rows or 1
        if (self._pending >= self._wake_rows or len(buffer) >= self._wake_batches) and not (
            self._wake.is_set()
        ):
            self._pending = 0
            self._wake.set()
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued batch has been evaluated; False if ``timeout`` passed."""
        if self._thread is not None:
            self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: not self._buffer and self._idle, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker after it has evaluated what is queued (it restarts on submit)."""
        thread = self._thread
        if thread is None:
            return
        self.join(timeout)
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        with self._start_lock:
            self._thread = None
            self._stopping = False

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="gangplank-drift", daemon=True)
                self._thread = thread
                thread.start()

    def _run(self) -> None:
        _lower_priority()
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._done:
                self._idle = False
            try:
                while self._buffer:
                    items = []
                    while self._buffer:
                        items.append(self._buffer.popleft())
                    self._evaluate_all(items)
            finally:
                with self._done:
                    self._idle = True
                    self._done.notify_all()
            if self._stopping:
                return

    def _evaluate_all(self, items: list[tuple[Any, Any]]) -> None:
        joined: list[tuple[Any, Any]] | None = None  # for detectors that take any batch size
        converted: list[tuple[Any, Any]] | None = None  # batch by batch, as NumPy
        for detector, cell in zip(self.detectors, self._cells, strict=True):
            if getattr(detector, "batchable", False):
                if joined is None:
                    joined = _join(items)
                if joined is None:
                    converted = converted or self._convert(items)
                    joined = _merge(converted)
                batches = joined
            else:
                converted = converted or self._convert(items)
                batches = converted
            for x, y in batches:
                self._evaluate(detector, cell, x, y)

    def _convert(self, items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        converted = []
        for index, (x, y) in enumerate(items):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Hand the GIL back now and then: a request thread waiting for it would
                # otherwise wait for the interpreter's 5 ms switch interval.
                time.sleep(0)
            try:
                y_array = None if y is None else _structure_to_numpy(y)
            except Exception:
                _logger.debug("drift: predictions could not be converted to NumPy", exc_info=True)
                y_array = None
            converted.append((x, y_array))
        return converted

    def _evaluate(self, detector: Detector, cell: _Cell, x: Any, y: Any) -> None:
        started = time.perf_counter()
        try:
            results = detector.update(x, y)
            drifts = [_valid(result) for result in results]
        except Exception:
            self._failed(cell, "raised", exc_info=True)
            return
        for original, drift in zip(results, drifts, strict=True):
            if drift is None:
                self._failed(cell, f"returned {original!r}, not a Drift")
                continue
            cell.windows += 1
            if drift.drift_detected:
                cell.detected += drift.drift_detected
            if drift.p_value is not None:
                cell.p_value = drift.p_value
            if drift.test_statistic is not None:
                cell.statistic = drift.test_statistic
            if cell.failing:
                cell.failing = False
                _logger.info("drift detector %s works again", cell.attributes["detector"])
        _logger.debug(
            "drift detector %s took %.3f ms",
            cell.attributes["detector"],
            (time.perf_counter() - started) * 1000,
        )

    @staticmethod
    def _failed(cell: _Cell, what: str, exc_info: bool = False) -> None:
        cell.errors += 1
        if not cell.failing:
            cell.failing = True
            _logger.warning(
                "drift detector %s %s; predictions are unaffected (logged once until it recovers)",
                cell.attributes["detector"],
                what,
                exc_info=exc_info,
            )


def _signature(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        return (value.shape[1:], value.dtype)
    return False  # not joinable


def _join(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]] | None:
    """All batches as one, when inputs and outputs are arrays alike (the common case).

    One ``np.concatenate`` per side keeps the worker's time holding the GIL short; None
    when the batches are not alike (dicts, lists, mixed shapes or missing parts).
    """
    try:
        xs = [x for x, _ in items]
        ys = [y for _, y in items]
        x = None if all(v is None for v in xs) else np.concatenate(xs)
        y = None if all(v is None for v in ys) else np.concatenate(ys)
    except (TypeError, ValueError):
        return None
    if (x is not None and x.dtype == object) or (y is not None and y.dtype == object):
        return None
    return [(x, y)]


def _merge(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Join runs of consecutive batches whose inputs and outputs are alike into one batch."""
    merged: list[tuple[Any, Any]] = []
    run: list[tuple[Any, Any]] = []
    key: Any = False

    def flush() -> None:
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            xs = None if run[0][0] is None else np.concatenate([x for x, _ in run])
            ys = None if run[0][1] is None else np.concatenate([y for _, y in run])
            merged.append((xs, ys))
        run.clear()

    for x, y in items:
        if x is not None and not isinstance(x, np.ndarray) and hasattr(x, "shape"):
            try:
                x = to_numpy(x)
            except Exception:
                x = None
        signature = (_signature(x), _signature(y))
        if False in signature or signature != key:
            flush()
            key = signature if False not in signature else False
        run.append((x, y))
        if key is False:
            flush()
    flush()
    return merged


def _structure_to_numpy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _structure_to_numpy(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_structure_to_numpy(item) for item in value)
    return to_numpy(value)
