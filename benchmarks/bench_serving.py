"""Serving: proxy overhead (vs raw and the seed), Keras MLP ratio, drift on/off, detectors.

Run with ``python -m benchmarks serving``. Every figure is measured in this run, side by side.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import gangplank
from benchmarks.common import ROOT, row, seed_path
from gangplank import catalogue
from gangplank.drift import CUSUM, KS, PSI, ChiSquare
from gangplank.provider import get_meter

CALLS = 200_000


class Instant:
    """A model that answers at once, so the proxy's own cost is all that is measured."""

    name = "instant"

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    def predict_on_batch(self, x: Any) -> Any:
        return x


class NaiveOtelProxy:
    """What a straightforward OpenTelemetry proxy does: one histogram record, one counter add."""

    def __init__(self, model: Any, provider: MeterProvider) -> None:
        meter = get_meter(provider)
        self.model = model
        self.histogram = meter.create_histogram("naive.duration", unit="s")
        self.counter = meter.create_counter("naive.rows")
        self.attributes = {"model_name": "instant", "method": "predict"}

    def predict(self, x: Any) -> Any:
        start = time.perf_counter()
        y = self.model.predict(x)
        self.histogram.record(time.perf_counter() - start, self.attributes)
        self.counter.add(len(y), self.attributes)
        return y


def per_call(function: Callable[[Any], Any], x: Any, calls: int = CALLS, repeat: int = 5) -> float:
    """Best-of-``repeat`` seconds per call of ``function(x)``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            function(x)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


SEED_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import prometheus_client
    from gangplank import PrometheusModel  # the seed release, 0.5.0

    class Instant:
        def predict(self, x, *args, **kwargs):
            return x
        def __call__(self, x, *args, **kwargs):
            return x

    def per_call(function, x, calls, repeat=5):
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(calls):
                function(x)
            best = min(best, (time.perf_counter() - start) / calls)
        return best

    calls = int(sys.argv[2])
    model = Instant()
    seed = PrometheusModel(model, registry=prometheus_client.CollectorRegistry())
    x = np.zeros((4, 3))
    raw_predict = per_call(model.predict, x, calls)
    raw_call = per_call(model, x, calls)
    print(json.dumps({
        "module": sys.modules["gangplank"].__file__,
        "predict": per_call(seed.predict, x, calls) - raw_predict,
        "call": per_call(seed, x, calls) - raw_call,
    }))
    """
)


def seed_overhead() -> dict[str, Any] | None:
    """The seed's proxy overhead per call (µs), measured in a subprocess on the seed release."""
    path = seed_path()
    if path is None:
        return None
    result = subprocess.run(
        [sys.executable, "-c", SEED_SCRIPT, str(path), str(CALLS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(ROOT / "benchmarks"),
    )
    if result.returncode != 0:
        print(f"  (seed benchmark failed: {result.stderr.strip()[-300:]})")
        return None
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def bench_overhead() -> None:
    print("Proxy overhead on an instant model (µs added per call, best of 5 x 200k calls)")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    model = Instant()
    served = gangplank.InstrumentedModel(model, provider, version="1")
    naive = NaiveOtelProxy(model, provider)
    x = np.zeros((4, 3))
    raw_predict = per_call(model.predict, x)
    raw_call = per_call(model, x)
    ours_predict = per_call(served.predict, x) - raw_predict
    ours_call = per_call(served, x) - raw_call
    naive_predict = per_call(naive.predict, x, calls=CALLS // 4) - raw_predict
    seed = seed_overhead()
    row("raw predict() / __call__()", f"{raw_predict * 1e6:.2f} / {raw_call * 1e6:.2f} µs")
    row(
        "Gangplank InstrumentedModel predict() (+latency, batch hist.)",
        f"{ours_predict * 1e6:.2f} µs",
        f"target <= 15 µs: {verdict(ours_predict <= 15e-6)}",
    )
    row("Gangplank InstrumentedModel __call__()", f"{ours_call * 1e6:.2f} µs")
    if seed is not None:
        row(
            "seed 0.5.0 PrometheusModel predict() (no histograms)",
            f"{seed['predict'] * 1e6:.2f} µs",
        )
        row("seed 0.5.0 PrometheusModel __call__()", f"{seed['call'] * 1e6:.2f} µs")
        row("ratio Gangplank / seed, predict()", f"{ours_predict / seed['predict']:.2f}x")
    row("naive OTel proxy (1 histogram.record + 1 counter.add)", f"{naive_predict * 1e6:.2f} µs")
    reader.collect()  # the accumulated data are exportable
    provider.shutdown()


def interleaved(
    raw: Callable[[], Any], proxied: Callable[[], Any], calls: int
) -> tuple[float, float]:
    """Median seconds per call of ``raw`` and ``proxied``, called alternately.

    Alternating call by call makes both see the same machine load (this machine is shared);
    the medians ignore the occasional slow call.
    """
    raw_times, proxied_times = [], []
    clock = time.perf_counter
    for i in range(calls):
        # Swap the order every call: the second of a pair can run warmer or colder.
        first, second = (raw, proxied) if i % 2 else (proxied, raw)
        start = clock()
        first()
        middle = clock()
        second()
        end = clock()
        a, b = middle - start, end - middle
        raw_times.append(b if first is proxied else a)
        proxied_times.append(a if first is proxied else b)
    return statistics.median(raw_times), statistics.median(proxied_times)


def small_mlp(classes: int = 10) -> Any:
    import keras

    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    return model


def bench_keras() -> None:
    print("Small Keras MLP (20-32-10), batch 1, medians of alternating calls")
    model = small_mlp()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    served = gangplank.InstrumentedModel(model, provider)
    x = np.random.default_rng(0).normal(size=(1, 20)).astype("float32")
    for _ in range(50):
        model(x)
        model.predict(x, verbose=0)
    same_a, same_b = interleaved(lambda: model(x), lambda: model(x), calls=3000)
    row("noise floor: raw/raw ratio, same protocol", f"{same_b / same_a:.4f}")
    raw, proxied = interleaved(lambda: model(x), lambda: served(x), calls=5000)
    ratio = proxied / raw
    row("raw model(x) per call", f"{raw * 1e6:.1f} µs")
    row(
        "proxied model(x): ratio proxied/raw",
        f"{ratio:.4f}",
        f"target <= 1.01: {verdict(ratio <= 1.01)}",
    )
    raw, proxied = interleaved(
        lambda: model.predict(x, verbose=0),
        lambda: served.predict(x, verbose=0),
        calls=2000,
    )
    ratio = proxied / raw
    row("raw model.predict(x) per call", f"{raw * 1e6:.1f} µs")
    row(
        "proxied predict(x): ratio proxied/raw",
        f"{ratio:.4f}",
        f"target <= 1.01: {verdict(ratio <= 1.01)}",
    )
    provider.shutdown()


def latencies(function: Callable[[], Any], calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def bench_drift_latency() -> None:
    print("predict() latency with drift on (chi-square on predictions) vs off, MLP batch 1")
    model = small_mlp()
    rng = np.random.default_rng(1)
    reference = model.predict(rng.normal(size=(5000, 20)).astype("float32"), verbose=0)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    off = gangplank.InstrumentedModel(model, provider, name="off")
    twin = gangplank.InstrumentedModel(model, provider, name="twin")
    on = gangplank.InstrumentedModel(
        model, provider, name="on", drift=ChiSquare(reference, window=500)
    )
    x = rng.normal(size=(1, 20)).astype("float32")
    for _ in range(100):
        off.predict(x, verbose=0)
        on.predict(x, verbose=0)
    arms = {"off": off, "on": on, "twin": twin}
    blocks: dict[str, list[list[float]]] = {name: [] for name in arms}
    # Alternating blocks of 500 calls, so that every arm sees the same machine load; 20
    # blocks an arm. The garbage collector's pauses land at random in any arm and are not
    # what is measured, so it is paused meanwhile.
    gc.collect()
    gc.disable()
    try:
        names = list(arms)
        for block in range(21):
            # Rotate the order, so that no arm always follows the same one.
            for name in names[block % 3 :] + names[: block % 3]:
                proxy = arms[name]
                blocks[name].append(latencies(lambda p=proxy: p.predict(x, verbose=0), 500))
    finally:
        gc.enable()
    assert on.drift_monitor is not None
    on.drift_monitor.join(30)

    def percentile(name: str, q: float) -> float:
        # The median over blocks of each block's percentile: one stray stall cannot move it.
        return float(np.median([np.percentile(block, q) for block in blocks[name]]))

    p50 = {name: percentile(name, 50) for name in arms}
    p99 = {name: percentile(name, 99) for name in arms}
    row(
        "noise floor: drift off vs off, p50 / p99 ratio",
        f"{p50['twin'] / p50['off']:.3f} / {p99['twin'] / p99['off']:.3f}",
    )
    row("p50 off / on", f"{p50['off'] * 1e3:.3f} / {p50['on'] * 1e3:.3f} ms")
    ratio50 = p50["on"] / p50["off"]
    row("p50 ratio on/off", f"{ratio50:.3f}", f"target <= 1.05: {verdict(ratio50 <= 1.05)}")
    row(
        "p99 off / on (median of 21 blocks of 500)",
        f"{p99['off'] * 1e3:.3f} / {p99['on'] * 1e3:.3f} ms",
    )
    ratio99 = p99["on"] / p99["off"]
    row("p99 ratio on/off", f"{ratio99:.3f}", f"target <= 1.05: {verdict(ratio99 <= 1.05)}")
    on.unwrap()
    provider.shutdown()


def throughput(detector: Any, batches: list[tuple[Any, Any]]) -> float:
    """Rows per second through ``detector.update``."""
    rows = sum(len(y if y is not None else x) for x, y in batches)
    start = time.perf_counter()
    for x, y in batches:
        detector.update(x, y)
    return rows / (time.perf_counter() - start)


def bench_detectors() -> None:
    print("Detector throughput (predictions per second, batches of 32)")
    rng = np.random.default_rng(2)
    classes = 10
    probabilities = rng.dirichlet(np.ones(classes), size=200_000)
    features = rng.normal(size=(200_000, 10))
    batch = 32
    proba_batches = [(None, probabilities[i : i + batch]) for i in range(0, 200_000, batch)]
    feature_batches = [(features[i : i + batch], None) for i in range(0, 200_000, batch)]
    reference_p = rng.dirichlet(np.ones(classes), size=20_000)
    chi = ChiSquare(reference_p, window=500)
    throughput(chi, proba_batches[:100])  # warm up (imports SciPy)
    rate = throughput(chi, proba_batches)
    row(
        "ChiSquare (10 classes, window 500)",
        f"{rate:,.0f}/s",
        f"target >= 100k: {verdict(rate >= 1e5)}",
    )
    ks = KS(rng.normal(size=(5000, 10)), window=500)
    row("KS (10 features, 5k reference, window 500)", f"{throughput(ks, feature_batches):,.0f}/s")
    psi = PSI(rng.normal(size=(5000, 10)), window=1000)
    row("PSI (10 features, window 1000)", f"{throughput(psi, feature_batches):,.0f}/s")
    cusum = CUSUM(reference_p, window=500)
    row("CUSUM (10 columns)", f"{throughput(cusum, proba_batches):,.0f}/s")

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    monitor = gangplank.drift.DriftMonitor(
        ChiSquare(reference_p, window=500), provider, capacity=len(proba_batches)
    )
    start = time.perf_counter()
    for x, y in proba_batches:
        monitor.submit(x, y)
    submitted = time.perf_counter() - start
    monitor.join(60)
    total = time.perf_counter() - start
    row("DriftMonitor end to end (submit + worker), ChiSquare", f"{200_000 / total:,.0f}/s")
    row(
        "DriftMonitor.submit() on the caller's thread",
        f"{submitted / len(proba_batches) * 1e6:.2f} µs",
    )
    monitor.close()
    provider.shutdown()
    assert catalogue.DRIFT_P_VALUE.prometheus_name == "gangplank_predict_drift_p_value"


def main() -> None:
    bench_overhead()
    bench_keras()
    bench_drift_latency()
    bench_detectors()


if __name__ == "__main__":
    main()
