"""Training metrics against a real Pushgateway and Prometheus: exact values, the seed's series,
and faults (Pushgateway down, silent, failing) that must never break ``fit``."""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import gangplank
from servers import free_port, poll, silent_server, status_server

pytestmark = pytest.mark.servers

BACKEND = keras.backend.backend()

SEED_TRAIN_SERIES = {
    "gangplank_train_loss",
    "gangplank_train_accuracy",
    "gangplank_train_val_loss",
    "gangplank_train_val_accuracy",
    "gangplank_train_epochs_count",
    "gangplank_train_elapsed_time_seconds",
    "gangplank_train_model_parameters_count",
    "gangplank_train_model_weights",
}
SEED_TEST_SERIES = {
    "gangplank_test_loss",
    "gangplank_test_accuracy",
    "gangplank_test_elapsed_time_seconds",
    "gangplank_test_model_parameters_count",
    "gangplank_test_model_weights",
}
NEW_TRAIN_SERIES = {
    "gangplank_train_learning_rate",
    "gangplank_train_model_trainable_parameters",
    "gangplank_train_model_non_trainable_parameters",
    "gangplank_train_epoch_duration_seconds",
    "gangplank_train_steps",  # the parser drops _total from counter family names
    "gangplank_train_samples",
    "gangplank_train_nonfinite_loss",
    "gangplank_train_start_timestamp_seconds",
    "gangplank_train_last_success_timestamp_seconds",
    "gangplank_test_steps",
}


def data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("float32")


def small_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def families(text: str, job: str) -> set[str]:
    """The metric family names pushed for ``job`` on the Pushgateway's page."""
    names = set()
    for family in text_string_to_metric_families(text):
        if any(s.labels.get("job") == job for s in family.samples):
            names.add(family.name)
    return names


@pytest.mark.crossbackend
def test_exact_values_reach_prometheus(pushgateway: Any, prometheus: Any) -> None:
    job = f"train-exact-{BACKEND}"
    reader = gangplank.PushgatewayReader(pushgateway.url, job)
    provider = gangplank.configure(reader, set_global=False)
    cb = gangplank.TrainingMetrics(
        provider, weight_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0, attributes={"run": "r7"}
    )
    x, y = data(80)
    model = small_model()
    history = model.fit(
        x, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0, callbacks=[cb]
    )
    result = model.evaluate(x, y, batch_size=40, verbose=0, callbacks=[cb], return_dict=True)
    provider.shutdown()  # the last push, retried
    assert reader.failures == 0

    sel = f'{{job="{job}",run="r7"}}'
    prometheus.wait_for_value(f"gangplank_train_epochs_count{sel}", 3)
    prometheus.wait_for_value(f"gangplank_train_model_parameters_count{sel}", model.count_params())
    prometheus.wait_for_value(f"gangplank_train_model_weights_count{sel}", trainable(model))
    prometheus.wait_for_value(f"gangplank_train_loss{sel}", history.history["loss"][-1])
    prometheus.wait_for_value(f"gangplank_train_val_loss{sel}", history.history["val_loss"][-1])
    prometheus.wait_for_value(f"gangplank_train_steps_total{sel}", 3 * 4)
    prometheus.wait_for_value(f"gangplank_train_samples_total{sel}", 3 * 64)
    prometheus.wait_for_value(f"gangplank_train_learning_rate{sel}", 0.001, tolerance=1e-6)
    prometheus.wait_for_value(f"gangplank_train_epoch_duration_seconds_count{sel}", 3)
    prometheus.wait_for_value(f"gangplank_test_loss{sel}", result["loss"])
    prometheus.wait_for_value(f"gangplank_test_model_weights_count{sel}", trainable(model))
    prometheus.wait_for_value(f"gangplank_test_steps_total{sel}", 2)
    prometheus.wait_for_value(
        f'gangplank_train_model_weights_bucket{{job="{job}",le="+Inf"}}', trainable(model)
    )
    # A success timestamp after the start timestamp: the batch-job convention.
    prometheus.wait_for(
        f"gangplank_train_last_success_timestamp_seconds{sel}"
        f" - gangplank_train_start_timestamp_seconds{sel} >= 0"
    )
    names = families(pushgateway.metrics(), job)
    assert names >= SEED_TRAIN_SERIES | SEED_TEST_SERIES | NEW_TRAIN_SERIES


def test_train_test_exporter_produces_the_seed_series(pushgateway: Any, prometheus: Any) -> None:
    job = "seed-exporter"
    address = pushgateway.url.removeprefix("http://")  # the seed took host:port
    exporter = gangplank.TrainTestExporter(
        address, job, histogram_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_0_3
    )
    x, y = data()
    model = small_model()
    history = model.fit(x, y, epochs=2, validation_data=(x, y), verbose=0, callbacks=[exporter])
    loss, accuracy = model.evaluate(x, y, verbose=0, callbacks=[exporter])
    sel = f'{{job="{job}"}}'
    prometheus.wait_for_value(f"gangplank_train_epochs_count{sel}", 2)
    prometheus.wait_for_value(f"gangplank_train_loss{sel}", history.history["loss"][-1])
    prometheus.wait_for_value(f"gangplank_test_loss{sel}", loss)
    prometheus.wait_for_value(f"gangplank_test_accuracy{sel}", accuracy)
    prometheus.wait_for_value(f"gangplank_test_model_parameters_count{sel}", model.count_params())
    names = poll(
        lambda: (
            (n := families(pushgateway.metrics(), job)) >= SEED_TRAIN_SERIES | SEED_TEST_SERIES
            and n
        ),
        timeout=10,
        what="the seed's series on the Pushgateway",
    )
    assert not [n for n in names if n.startswith("gangplank_test_val")]

    # Reusable: a second run replaces the values (the seed refused this).
    model.fit(x, y, epochs=1, verbose=0, callbacks=[exporter])
    prometheus.wait_for_value(f"gangplank_train_epochs_count{sel}", 1)
    exporter.close()
    assert exporter.reader.failures == 0


def test_pushes_after_every_epoch(pushgateway: Any) -> None:
    job = "train-every-epoch"
    reader = gangplank.PushgatewayReader(pushgateway.url, job)
    provider = gangplank.configure(reader, set_global=False)
    seen: list[int] = []

    class WaitForPush(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            def pushed() -> bool:
                for family in text_string_to_metric_families(pushgateway.metrics()):
                    for s in family.samples:
                        if s.name == "gangplank_train_epochs_count" and s.labels["job"] == job:
                            return s.value == epoch + 1
                return False

            poll(pushed, timeout=10, what=f"the push after epoch {epoch}")
            seen.append(epoch)

    x, y = data(32)
    small_model().fit(
        x, y, epochs=3, verbose=0, callbacks=[gangplank.TrainingMetrics(provider), WaitForPush()]
    )
    assert seen == [0, 1, 2]
    provider.shutdown()


def test_scrape_route_sees_the_same_series(prometheus: Any) -> None:
    endpoint = gangplank.ScrapeEndpoint(port=0)
    provider = gangplank.configure(endpoint, set_global=False)
    try:
        cb = gangplank.TrainingMetrics(provider, weight_buckets=(0.0,))
        x, y = data(32)
        model = small_model()
        model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
        instance = f"127.0.0.1:{endpoint.port}"
        prometheus.scrape(instance)
        sel = f'{{instance="{instance}"}}'
        prometheus.wait_for_value(f"gangplank_train_epochs_count{sel}", 2)
        prometheus.wait_for_value(f"gangplank_train_model_weights_count{sel}", trainable(model))
        prometheus.wait_for_value(f'up{{instance="{instance}"}}', 1)
    finally:
        provider.shutdown()


# --- faults ----------------------------------------------------------------------------------


def fit_against(url: str, timeout: float, **options: Any) -> tuple[Any, float, Any]:
    reader = gangplank.PushgatewayReader(url, "faulty", timeout=timeout)
    provider = gangplank.configure(reader, set_global=False)
    cb = gangplank.TrainingMetrics(provider, weight_buckets=(0.0,), **options)
    x, y = data(32)
    model = small_model()
    model.predict(x[:1], verbose=0)  # compile outside the timed part
    started = time.perf_counter()
    try:
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
        model.evaluate(x, y, verbose=0, callbacks=[cb])
    finally:
        elapsed = time.perf_counter() - started
    return history, elapsed, (reader, provider)


def test_pushgateway_down_never_breaks_fit() -> None:
    history, _, (reader, provider) = fit_against(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert len(history.history["loss"]) == 3
    poll(lambda: reader.failures >= 1, timeout=10, what="a failed push")
    provider.shutdown(timeout_millis=200)


def test_silent_pushgateway_never_blocks_an_epoch() -> None:
    with silent_server() as url:
        history, elapsed, (_reader, provider) = fit_against(url, timeout=30)
        assert len(history.history["loss"]) == 3
        # Four pushes to a server that never answers, 30 s each: fit would take minutes.
        assert elapsed < 15
        provider.shutdown(timeout_millis=200)


def test_failing_pushgateway_never_breaks_fit() -> None:
    with status_server(500) as url:
        history, _, (reader, provider) = fit_against(url, timeout=2)
        assert len(history.history["loss"]) == 3
        poll(lambda: reader.failures >= 1, timeout=10, what="a failed push")
        provider.shutdown(timeout_millis=200)


def test_strict_mode_stops_the_run_when_a_push_fails() -> None:
    with status_server(500) as url, pytest.raises(RuntimeError, match="strict"):
        fit_against(url, timeout=2, strict=True)


def test_train_test_exporter_ignore_exceptions_false_stops_the_run() -> None:
    exporter = gangplank.TrainTestExporter(
        f"127.0.0.1:{free_port()}", "strict-seed", ignore_exceptions=False
    )
    x, y = data(32)
    model = small_model()
    with pytest.raises(RuntimeError, match="push"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[exporter])
    assert exporter.reader.failures >= 1
    exporter.close(timeout=0.2)


def test_train_test_exporter_default_carries_on_when_down() -> None:
    exporter = gangplank.TrainTestExporter(f"127.0.0.1:{free_port()}", "lenient-seed")
    x, y = data(32)
    model = small_model()
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[exporter])
    result = model.evaluate(x, y, verbose=0, callbacks=[exporter], return_dict=True)
    assert len(history.history["loss"]) == 2 and "loss" in result
    assert not exporter.push(timeout=1)
    exporter.close(timeout=0.2)
