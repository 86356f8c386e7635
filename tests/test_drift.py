"""Drift detectors (calibration with fixed seeds) and the off-hot-path monitor."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from test_proxy import Instant, collect, value

import gangplank
from gangplank import catalogue
from gangplank.drift import CUSUM, KS, PSI, ChiSquare, DriftMonitor

PROBABILITIES = np.array([0.5, 0.3, 0.15, 0.05])
SHIFTED = np.array([0.35, 0.35, 0.2, 0.1])


def flagged(results: list[gangplank.Drift]) -> float:
    """Fraction of windows flagged."""
    assert results
    return float(np.mean([bool(r.drift_detected) for r in results]))


# --- detectors --------------------------------------------------------------------------------


def test_chi_square_is_calibrated_and_detects_a_shift() -> None:
    rng = np.random.default_rng(42)
    detector = ChiSquare(rng.choice(4, size=50_000, p=PROBABILITIES), window=500, alpha=0.05)
    # Live data arrive as probability rows, in batches that do not align with windows.
    same = np.eye(4)[rng.choice(4, size=200 * 500, p=PROBABILITIES)]
    results = [r for batch in np.array_split(same, 333) for r in detector.update(None, batch)]
    assert len(results) == 200
    assert 0.01 <= flagged(results) <= 0.10
    assert all(0.0 <= r.p_value <= 1.0 and r.test_statistic >= 0 for r in results)

    shifted = np.eye(4)[rng.choice(4, size=50 * 500, p=SHIFTED)]
    assert flagged(detector.update(None, shifted)) >= 0.95


def test_chi_square_pools_rare_and_unseen_classes() -> None:
    rng = np.random.default_rng(1)
    reference = np.concatenate([rng.choice(3, size=10_000, p=[0.6, 0.3, 0.1]), [7, 8]])
    detector = ChiSquare(reference, window=200)
    # Rare reference classes (7, 8) and a class never seen (9) share the pooled bin.
    assert len(detector._probabilities) == 3
    novel = np.full(200, 9)
    (result,) = detector.update(None, novel)
    assert result.drift_detected == 1 and result.p_value < 1e-6
    # Binary scores are thresholded at 0.5; labels may be strings.
    scores = ChiSquare(rng.uniform(size=(1000, 1)), window=100)
    assert list(scores.categories) == [0, 1]
    words = ChiSquare(np.array(["a", "b"] * 500), window=100, on="inputs")
    (same,) = words.update(np.array(["a", "b"] * 50), None)
    assert same.drift_detected == 0 and same.p_value > 0.9


def test_chi_square_refuses_a_window_too_small_for_the_test() -> None:
    with pytest.raises(ValueError, match="too small"):
        ChiSquare(np.arange(100) % 50, window=20)
    with pytest.raises(ValueError, match="window"):
        ChiSquare([0, 1], window=1)


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_ks_is_calibrated_and_detects_a_shift_in_one_feature(correction: str) -> None:
    rng = np.random.default_rng(7)
    detector = KS(rng.normal(size=(20_000, 4)), window=300, correction=correction)
    results = detector.update(rng.normal(size=(300 * 150, 4)), None)
    assert len(results) == 150
    assert flagged(results) <= 0.10
    moved = rng.normal(size=(300 * 30, 4))
    moved[:, 2] += 0.5
    results = detector.update(moved, None)
    assert flagged(results) >= 0.95
    assert min(r.test_statistic for r in results) > 0.1


def test_ks_on_predictions_and_dict_inputs() -> None:
    rng = np.random.default_rng(3)
    reference = {"a": rng.normal(size=(2000, 2)), "b": rng.normal(size=(2000, 1))}
    detector = KS(reference, window=100)
    assert detector.features == 3
    live = {"a": rng.normal(size=(100, 2)), "b": rng.normal(3.0, 1.0, size=(100, 1))}
    assert detector.update(live, None)[0].drift_detected == 1
    on_outputs = KS(rng.normal(size=1000), window=100, on="predictions")
    assert on_outputs.update(None, rng.normal(size=100))[0].drift_detected in (0, 1)
    assert on_outputs.update("ignored", None) == []
    with pytest.raises(ValueError, match="correction"):
        KS(reference, correction="holm")


def test_psi_is_small_without_a_shift_and_large_with_one() -> None:
    rng = np.random.default_rng(5)
    detector = PSI(rng.normal(size=(10_000, 2)), window=1000, bins=10, threshold=0.25)
    steady = detector.update(rng.normal(size=(10_000, 2)), None)
    assert len(steady) == 10
    assert max(r.test_statistic for r in steady) < 0.05
    assert all(r.p_value is None and r.drift_detected == 0 for r in steady)
    moved = detector.update(rng.normal(1.0, 1.0, size=(5000, 2)), None)
    assert all(r.drift_detected == 1 and r.test_statistic > 0.25 for r in moved)


def test_cusum_alarms_rarely_in_control_and_often_after_a_shift() -> None:
    rng = np.random.default_rng(11)
    detector = CUSUM(rng.normal(size=(10_000, 1)), k=0.5, h=5.0, window=1000)
    steady = detector.update(None, rng.normal(size=(20_000, 1)))
    assert len(steady) == 20
    quiet = detector.alarms
    assert quiet <= 60  # about one per 500-1000 rows
    detector.reset()
    moved = detector.update(None, rng.normal(1.5, 1.0, size=(20_000, 1)))
    assert detector.alarms > 20 * max(quiet, 1)
    assert sum(r.drift_detected for r in moved) == detector.alarms
    assert all(r.p_value is None and r.test_statistic > 5.0 for r in moved)


def test_cusum_matches_the_textbook_recursion() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(5000, 1))
    detector = CUSUM(reference, k=0.5, h=4.0, window=100)
    data = rng.normal(0.4, 1.0, size=(3000, 1))
    results = [r for batch in np.array_split(data, 17) for r in detector.update(None, batch)]
    z = ((data - reference.mean()) / reference.std())[:, 0]
    high = low = 0.0
    alarms = 0
    for v in z:
        high, low = max(0.0, high + v - 0.5), max(0.0, low - v - 0.5)
        if max(high, low) > 4.0:
            alarms, high, low = alarms + 1, 0.0, 0.0
    assert detector.alarms == alarms == sum(r.drift_detected for r in results)
    assert len(results) == 30


# --- the monitor ------------------------------------------------------------------------------


def test_monitor_records_detector_series(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    rng = np.random.default_rng(0)
    reference = rng.choice(4, size=20_000, p=PROBABILITIES)
    monitor = DriftMonitor(
        [ChiSquare(reference, window=100), PSI(rng.normal(size=(1000, 2)), window=100)],
        meter_provider,
        attributes={"model_name": "m"},
    )
    assert monitor._thread is None  # nothing runs before the first submit
    for _ in range(5):
        x = rng.normal(size=(60, 2))
        y = np.eye(4)[rng.choice(4, size=60, p=SHIFTED * 0 + [0, 0, 0, 1])]
        assert monitor.submit(x, y)
    assert monitor.join(10)
    metrics = collect(reader)
    chi = {"detector": "chi_square", "model_name": "m"}
    assert value(metrics, "gangplank.predict.drift.windows", **chi) == 3
    assert value(metrics, "gangplank.predict.drift.detected", **chi) == 3
    assert value(metrics, "gangplank.predict.drift.p_value", **chi) < 1e-6
    assert value(metrics, "gangplank.predict.drift.test_statistic", **chi) > 100
    psi = {"detector": "psi", "model_name": "m"}
    assert value(metrics, "gangplank.predict.drift.windows", **psi) == 3
    assert value(metrics, "gangplank.predict.drift.detected", **psi) == 0
    assert all(
        p.attributes["detector"] != "psi"
        for p in metrics["gangplank.predict.drift.p_value"].data.data_points
    )
    for instrument in (
        catalogue.DRIFT_P_VALUE,
        catalogue.DRIFT_STATISTIC,
        catalogue.DRIFT_DETECTED,
    ):
        assert metrics[instrument.name].description == instrument.description
    assert catalogue.DRIFT_P_VALUE.prometheus_name == "gangplank_predict_drift_p_value"
    assert catalogue.DRIFT_STATISTIC.prometheus_name == "gangplank_predict_drift_test_statistic"
    assert catalogue.DRIFT_DETECTED.prometheus_name == "gangplank_predict_drift_detected_total"
    monitor.close()
    assert monitor._thread is None


def test_bad_detectors_are_counted_logged_once_and_harmless(
    meter_provider: MeterProvider, reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"n": 0}

    def explodes(x: Any, y: Any) -> gangplank.Drift:
        raise RuntimeError("detector bug")

    def garbage(x: Any, y: Any) -> Any:
        calls["n"] += 1
        return [
            "not a drift",
            gangplank.Drift(p_value=2.0),
            gangplank.Drift(test_statistic=float("nan")),
            gangplank.Drift(drift_detected=-1),
            gangplank.Drift(drift_detected=1, p_value=0.2),  # valid: recovers
        ][(calls["n"] - 1) % 5]

    served = gangplank.InstrumentedModel(
        Instant(), meter_provider, name="bad", drift=[explodes, garbage]
    )
    x = np.ones((2, 2))
    with caplog.at_level(logging.WARNING, logger="gangplank.drift"):
        for _ in range(5):
            assert served.predict(x) is x
        assert served.drift_monitor is not None and served.drift_monitor.join(10)
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict.drift.errors", detector="explodes") == 5
    assert value(metrics, "gangplank.predict.drift.errors", detector="garbage") == 4
    assert value(metrics, "gangplank.predict.drift.windows", detector="garbage") == 1
    assert value(metrics, "gangplank.predict.drift.detected", detector="garbage") == 1
    assert value(metrics, "gangplank.predict", model_name="bad") == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("explodes" in r.getMessage() for r in warnings) == 1  # once per streak
    assert sum("garbage" in r.getMessage() for r in warnings) == 1
    served.unwrap()


def test_a_full_buffer_drops_and_counts_without_blocking(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(x: Any, y: Any) -> gangplank.Drift:
        entered.set()
        release.wait(10)
        return gangplank.Drift(drift_detected=0, p_value=0.5)

    monitor = DriftMonitor(slow, meter_provider, attributes={"model_name": "full"}, capacity=2)
    assert monitor.submit(1, 1)
    assert entered.wait(10)  # the worker holds the first batch
    accepted = [monitor.submit(i, i) for i in range(9)]
    assert accepted == [True, True] + [False] * 7
    release.set()
    assert monitor.join(10)
    assert monitor.dropped == 7
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict.drift.dropped", model_name="full") == 7
    assert value(metrics, "gangplank.predict.drift.windows", detector="slow") == 3
    monitor.close()


def test_seed_function_gets_inputs_and_numpy_predictions(
    meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    import keras

    received: list[tuple[Any, Any]] = []

    def seed_style(x: Any, y: Any) -> gangplank.Drift:
        received.append((x, y))
        return gangplank.Drift(p_value=0.5, test_statistic=1.0)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    served = gangplank.InstrumentedModel(model, meter_provider, drift=seed_style)
    x = np.ones((4, 3), "float32")
    served(x)
    served.predict(x, verbose=0)
    served.predict(((row,) for row in [x]), verbose=0)  # a generator: no inputs for drift
    assert served.drift_monitor is not None and served.drift_monitor.join(10)
    assert len(received) == 3
    assert received[0][0] is x and isinstance(received[0][1], np.ndarray)
    assert received[0][1].shape == (4, 2)
    assert received[2][0] is None
    metrics = collect(reader)
    assert value(metrics, "gangplank.predict.drift.p_value", detector="seed_style") == 0.5
    served.unwrap()


def test_drift_argument_validation(meter_provider: MeterProvider) -> None:
    with pytest.raises(TypeError, match="detector"):
        gangplank.InstrumentedModel(Instant(), meter_provider, drift=42)
    with pytest.raises(ValueError, match="capacity"):
        DriftMonitor(lambda x, y: None, meter_provider, capacity=0)
    with pytest.raises(ValueError, match="on must be"):
        KS(np.zeros((10, 1)), on="labels")


def test_alike_batches_are_joined_in_one_step_and_others_are_not() -> None:
    import numpy as np

    from gangplank.drift import _join

    a = np.ones((2, 3), dtype="float32")
    b = np.zeros((5, 3), dtype="float32")
    ((x, y),) = _join([(a, b), (b, a)])
    assert x.shape == (7, 3) and y.shape == (7, 3)
    ((x, y),) = _join([(None, a), (None, b)])
    assert x is None and y.shape == (7, 3)
    assert _join([(a, b), (None, b)]) is None  # an input missing from one batch
    assert _join([(a, {"out": b}), (a, {"out": b})]) is None  # dict outputs
    assert _join([(a, np.ones((2, 4))), (a, b)]) is None  # different widths
