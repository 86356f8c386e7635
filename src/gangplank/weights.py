"""Fast histograms of model weights: millions of weights bucketed with NumPy in one pass.

The seed observed one weight at a time through ``prometheus_client`` (about 0.35M weights/s);
:func:`summarize` counts cumulative ``le`` buckets with vectorised comparisons over
cache-sized chunks, spread over a few threads for large models (NumPy releases the GIL), and
returns a :class:`WeightSummary` that becomes one genuine Prometheus histogram series
(``_bucket{le}``, ``_sum``, ``_count``).

Semantics match a Prometheus histogram: a weight equal to a bound is counted in that bound's
bucket, and comparisons are exact for every float dtype (a ``float32`` weight is compared with
the ``float64`` bound, as ``Histogram.observe(float(w))`` would). Non-finite weights (NaN,
±Inf) are not counted, so ``_count`` is the number of finite trainable weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .catalogue import WEIGHT_BUCKETS_0_3, WEIGHT_BUCKETS_1_0
from .histogram import validate_bounds

__all__ = (
    "HISTOGRAM_WEIGHT_BUCKETS_0_3",
    "HISTOGRAM_WEIGHT_BUCKETS_1_0",
    "WeightSummary",
    "layer_weights",
    "model_weights",
    "summarize",
)

HISTOGRAM_WEIGHT_BUCKETS_1_0: tuple[float, ...] = WEIGHT_BUCKETS_1_0
"""-1.0 … 1.0 in steps of 0.1 (21 bounds), as in Gangplank 0.5."""

HISTOGRAM_WEIGHT_BUCKETS_0_3: tuple[float, ...] = WEIGHT_BUCKETS_0_3
"""-0.30 … 0.30 in steps of 0.05 (13 bounds), as in Gangplank 0.5."""

_CHUNK = 1 << 17  # values per chunk: 512 KiB of float32, comfortably inside L2
_PARALLEL_MIN = 1 << 20  # below this many values, threads cost more than they save
_MAX_THREADS = 4


@dataclass(frozen=True)
class WeightSummary:
    """A histogram of many values: what one Prometheus histogram series shows.

    Attributes:
        bounds: the bucket upper bounds (``le``), without ``+Inf``.
        bucket_counts: per-bucket (not cumulative) counts, ``len(bounds) + 1`` of them; the
            last is the ``+Inf`` overflow bucket.
        count: the number of finite values counted.
        sum: their sum (accumulated in ``float64``).
        min: the smallest, or 0.0 when ``count`` is 0.
        max: the largest, or 0.0 when ``count`` is 0.
    """

    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    count: int
    sum: float
    min: float
    max: float

    @property
    def cumulative_counts(self) -> tuple[int, ...]:
        """The ``_bucket{le=…}`` values, ``+Inf`` last."""
        return tuple(int(c) for c in np.cumsum(self.bucket_counts))


def summarize(arrays: Iterable[Any], bounds: Sequence[float]) -> WeightSummary:
    """Bucket every finite value of ``arrays`` into Prometheus ``le`` buckets.

    Args:
        arrays: NumPy arrays, or anything ``numpy.asarray`` accepts (convert backend
            tensors first, e.g. with :func:`model_weights`). Any shape and dtype.
        bounds: strictly increasing bucket upper bounds, e.g.
            :data:`HISTOGRAM_WEIGHT_BUCKETS_1_0`.

    Returns:
        A :class:`WeightSummary`.

    Example:
    ```python
    summary = gangplank.weights.summarize(
        gangplank.weights.model_weights(model), gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0
    )
    summary.count == sum(w.size for w in model.trainable_weights)  # if all are finite
    ```
    """
    edges64 = np.asarray(validate_bounds(bounds), dtype=np.float64)
    chunks: list[np.ndarray] = []
    for array in arrays:
        flat = np.asarray(array)
        if flat.dtype.kind not in "fiub":
            flat = flat.astype(np.float64)
        flat = flat.reshape(-1)
        chunks.extend(flat[i : i + _CHUNK] for i in range(0, flat.size, _CHUNK))
    total = sum(c.size for c in chunks)
    if total >= _PARALLEL_MIN and len(chunks) > 1:
        workers = min(_MAX_THREADS, os.cpu_count() or 1, len(chunks))
    else:
        workers = 1
    cache: dict[Any, np.ndarray] = {}

    def run(chunk: np.ndarray) -> tuple[np.ndarray, int, float, float, float]:
        return _chunk_stats(chunk, _edges_for(chunk.dtype, edges64, cache))

    # Build the per-dtype edges up front so that worker threads only read the cache.
    for chunk in chunks:
        _edges_for(chunk.dtype, edges64, cache)
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="gangplank-weights") as pool:
            results = list(pool.map(run, chunks))
    else:
        results = [run(chunk) for chunk in chunks]

    cumulative = np.zeros(len(edges64), dtype=np.int64)
    count = 0
    acc = 0.0
    low, high = math.inf, -math.inf
    for cum, n, s, lo, hi in results:
        if n == 0:
            continue
        cumulative += cum
        count += n
        acc += s
        low = min(low, lo)
        high = max(high, hi)
    per_bucket = [*np.diff(cumulative, prepend=0).tolist(), count - int(cumulative[-1])]
    return WeightSummary(
        bounds=tuple(float(b) for b in edges64),
        bucket_counts=tuple(int(c) for c in per_bucket),
        count=count,
        sum=float(acc),
        min=float(low) if count else 0.0,
        max=float(high) if count else 0.0,
    )


def _edges_for(dtype: np.dtype, edges64: np.ndarray, cache: dict[Any, np.ndarray]) -> np.ndarray:
    """Bounds in ``dtype`` such that ``value <= edge`` iff ``float64(value) <= bound``."""
    found = cache.get(dtype)
    if found is not None:
        return found
    if dtype.kind == "f" and dtype.itemsize < 8 and dtype != np.float16:
        # Round each bound down to the largest representable value not above it.
        edges = edges64.astype(dtype)
        over = edges.astype(np.float64) > edges64
        edges[over] = np.nextafter(edges[over], dtype.type(-np.inf))
    else:
        edges = edges64
    cache[dtype] = edges
    return edges


def _chunk_stats(
    chunk: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, int, float, float, float]:
    """Cumulative ``le`` counts, count, float64 sum, min and max of one chunk's finite values."""
    if chunk.dtype.kind != "f" or chunk.dtype == np.float16 or edges.dtype != chunk.dtype:
        chunk = chunk.astype(np.float64)
    if chunk.size == 0:
        return np.zeros(len(edges), np.int64), 0, 0.0, 0.0, 0.0
    total = float(np.add.reduce(chunk, dtype=np.float64))
    if not math.isfinite(total):
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size == 0:
            return np.zeros(len(edges), np.int64), 0, 0.0, 0.0, 0.0
        total = float(np.add.reduce(chunk, dtype=np.float64))
    mask = np.empty(chunk.shape, dtype=bool)
    cumulative = np.empty(len(edges), dtype=np.int64)
    for i, edge in enumerate(edges):
        np.less_equal(chunk, edge, out=mask)
        cumulative[i] = np.count_nonzero(mask)
    return cumulative, int(chunk.size), total, float(chunk.min()), float(chunk.max())


def model_weights(model: Any, *, trainable: bool = True) -> list[np.ndarray]:
    """The weights of a Keras model or layer as NumPy arrays (no copy where the backend allows).

    Args:
        model: a Keras model or layer.
        trainable: only the trainable weights (what the seed's histogram showed); False
            gives every weight. Defaults to True.

    Returns:
        One array per weight variable; empty for an un-built model.

    Example:
    ```python
    arrays = gangplank.weights.model_weights(model)
    ```
    """
    variables = model.trainable_weights if trainable else model.weights
    return [_to_numpy(v) for v in variables]


def layer_weights(model: Any) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, trainable weights)`` for each top-level layer that has trainable weights.

    A nested model or layer counts all of its sublayers' weights under its own name.

    Args:
        model: a Keras model.

    Returns:
        A list of ``(name, arrays)`` in layer order.

    Example:
    ```python
    for name, arrays in gangplank.weights.layer_weights(model):
        print(name, sum(a.size for a in arrays))
    ```
    """
    result = []
    for layer in getattr(model, "layers", ()):
        variables = layer.trainable_weights
        if variables:
            result.append((str(layer.name), [_to_numpy(v) for v in variables]))
    return result


def _to_numpy(variable: Any) -> np.ndarray:
    import keras  # deferred: importing gangplank must not import a backend

    value = getattr(variable, "value", variable)
    return np.asarray(keras.ops.convert_to_numpy(value))
