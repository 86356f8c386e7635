"""The Grafana dashboard: every panel query parses and returns data from real Gangplank series.

A tiny Keras model is trained (``fit`` with validation, then a stand-alone ``evaluate``) with
:class:`~gangplank.TrainingMetrics` pushing to a real Pushgateway, then served through
:class:`~gangplank.InstrumentedModel` with a chi-square drift detector behind a
:class:`~gangplank.ScrapeEndpoint`, with errors and induced drift. A real Prometheus scrapes
both every second. Each target of ``examples/grafana/dashboard.json`` then runs as Grafana
would run it (a range query, template variables substituted) and must return finite data;
queries built on ``rate``/``increase``/``histogram_quantile`` over rates must show a
positive value, so a panel whose counter never moves fails too.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import gangplank
from servers import Prometheus, Pushgateway, http_get

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana" / "dashboard.json"
TRAIN_JOB = "dashboard-train"
SERVE_JOB = "dashboard-serve"
MODEL = "dashboard-model"
ROUNDS = 3  # serving rounds, each seen by at least one scrape
EPOCHS = 3

# Grafana's values for the dashboard's variables: several selected jobs become a regex
# alternation; the built-in intervals get fixed values.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1s",
    "$__range": "5m",
    "$job": f"({TRAIN_JOB}|{SERVE_JOB})",
    "$model_name": f"({MODEL})",
}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def targets() -> list[tuple[str, str]]:
    """(panel title + refId, expression) of every panel target."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return found


def substitute(expr: str) -> str:
    # Longest names first, so that $__rate_interval is not read as $__range + "te_interval".
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name]).replace("${" + name[1:] + "}", VARIABLES[name])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


# --- static checks -----------------------------------------------------------------------


def test_dashboard_structure() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "model_name"):
        assert variables[name]["type"] == "query"
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["allValue"] == ".*"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            # Every query follows the job variable; serving ones the model variable too.
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
            if "gangplank_predict" in target["expr"]:
                assert 'model_name=~"$model_name"' in target["expr"], panel["title"]


def test_dashboard_covers_the_issue() -> None:
    exprs = " ".join(expr for _, expr in targets())
    for needed in (
        "gangplank_train_loss",
        "gangplank_train_val_loss",
        "rate(gangplank_train_samples_total",
        "rate(gangplank_train_steps_total",
        "gangplank_train_epoch_duration_seconds",
        "gangplank_train_learning_rate",
        "rate(gangplank_predict_duration_seconds_count",
        "histogram_quantile(0.5, sum by (job, model_name, le) "
        "(rate(gangplank_predict_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (job, model_name, le) "
        "(rate(gangplank_predict_duration_seconds_bucket",
        "gangplank_predict_errors_total",
        "gangplank_predict_batch_size_bucket",
        "gangplank_predict_drift_p_value",
        "gangplank_predict_drift_detected_total",
    ):
        assert needed in exprs, needed


# --- live: real series, every query --------------------------------------------------------


def make_data(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, 4)).astype("float32")
    x[:, 0] += shift
    return x


def train(prometheus: Prometheus, pushgateway: Pushgateway) -> keras.Model:
    """fit + evaluate with TrainingMetrics on the push route; every epoch seen by a scrape."""
    rng = np.random.default_rng(0)
    x = make_data(rng, 512)
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    reader = gangplank.PushgatewayReader(pushgateway.url, job=TRAIN_JOB)
    provider = gangplank.configure(reader, set_global=False)
    metrics = gangplank.TrainingMetrics(
        provider, weight_buckets=gangplank.HISTOGRAM_WEIGHT_BUCKETS_1_0
    )

    class SeenByPrometheus(keras.callbacks.Callback):
        """Waits (polling) until Prometheus scraped this epoch's push, so rates have data."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            prometheus.wait_for_value(
                f'gangplank_train_epochs_count{{job="{TRAIN_JOB}"}}', epoch + 1
            )

    try:
        model.fit(
            x,
            y,
            epochs=EPOCHS,
            batch_size=64,
            validation_split=0.2,
            callbacks=[metrics, SeenByPrometheus()],
            verbose=0,
        )
        model.evaluate(x, y, callbacks=[metrics], verbose=0)
    finally:
        provider.shutdown()  # the final push
    prometheus.wait_for(f'gangplank_test_loss{{job="{TRAIN_JOB}"}}')
    prometheus.wait_for(f'gangplank_train_last_success_timestamp_seconds{{job="{TRAIN_JOB}"}}')
    return model


class Instant:
    """An instant model: one zero row per input row."""

    def predict(self, x: Any, **kwargs: Any) -> Any:
        return np.zeros((len(x), 1))

    __call__ = predict


class Malformed:
    """A model that rejects every request."""

    def predict(self, x: Any, **kwargs: Any) -> Any:
        raise ValueError(f"malformed input of shape {np.shape(x)}")

    __call__ = predict


def serve(prometheus: Prometheus, model: keras.Model) -> None:
    """Predictions, model(x) calls, errors and (from round 2) drifted inputs, round by round."""
    rng = np.random.default_rng(1)
    endpoint = gangplank.ScrapeEndpoint(port=0)
    provider = gangplank.configure(endpoint, set_global=False)
    try:
        reference = model.predict(make_data(rng, 500), verbose=0)
        detector = gangplank.drift.ChiSquare(reference, window=100)
        served = gangplank.InstrumentedModel(
            model, provider, name=MODEL, version="1", drift=detector
        )
        # Errors come from a second proxy with the same name (their series add up): a Keras
        # model on JAX is left unusable after a call with a wrong input shape raised.
        failing = gangplank.InstrumentedModel(Malformed(), provider, name=MODEL, version="1")
        # Dropped drift batches: a detector that blocks its worker, and a buffer of 1.
        release = threading.Event()
        stuck = gangplank.InstrumentedModel(
            Instant(),
            provider,
            name=MODEL,
            version="1",
            drift=gangplank.drift.FunctionDetector(
                lambda x, y: release.wait(60) and None, name="stuck"
            ),
            drift_capacity=1,
        )
        prometheus.scrape(f"127.0.0.1:{endpoint.port}", job=SERVE_JOB)
        selector = f'job="{SERVE_JOB}", model_name="{MODEL}"'
        for round_ in range(1, ROUNDS + 1):
            shift = 0.0 if round_ == 1 else 3.0  # all inputs become class 1: drift
            served.predict(make_data(rng, 200, shift), verbose=0)
            served(make_data(rng, 8, shift))
            with pytest.raises(ValueError, match="malformed"):
                failing.predict(np.ones((3, 7), dtype="float32"))
            for _ in range(3):  # the worker holds at most one, the buffer one more
                stuck.predict(np.ones((2, 4)))
            # 6 calls per round; (200 + 8) rows per round make 2 drift windows of 100.
            prometheus.wait_for_value(
                f"sum(gangplank_predict_duration_seconds_count{{{selector}}})", 6 * round_
            )
            prometheus.wait_for(
                f"sum(gangplank_predict_drift_windows_total{{{selector}}}) >= {2 * round_}"
            )
            prometheus.wait_for(
                f"sum(gangplank_predict_drift_dropped_total{{{selector}}}) >= {2 * round_ - 1}"
            )
        prometheus.wait_for(f"gangplank_predict_drift_detected_total{{{selector}}} > 0")
    finally:
        release.set()
        provider.shutdown()


def query_range(prometheus: Prometheus, expr: str, start: float, end: float) -> dict[str, Any]:
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
    url = prometheus.url + "/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        return dict(json.loads(http_get(url)))
    except Exception as error:  # HTTP 400 for a query that does not parse
        body = getattr(error, "read", lambda: b"")()
        return {"status": "error", "error": f"{error} {body.decode(errors='replace')}"}


def label_values(prometheus: Prometheus, definition: str) -> set[str]:
    """Run a Grafana ``label_values(selector, label)`` variable query."""
    match = re.fullmatch(r"label_values\((.*), *(\w+)\)", substitute(definition))
    assert match, definition
    selector, label = match.groups()
    url = f"{prometheus.url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
        {"match[]": selector}
    )
    body = json.loads(http_get(url))
    assert body["status"] == "success", body
    return set(body["data"])


def test_every_panel_query_returns_data(prometheus: Prometheus, pushgateway: Pushgateway) -> None:
    start = time.time()
    model = train(prometheus, pushgateway)
    serve(prometheus, model)

    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert {TRAIN_JOB, SERVE_JOB} <= label_values(prometheus, variables["job"]["definition"])
    assert label_values(prometheus, variables["model_name"]["definition"]) == {MODEL}

    end = time.time() + 1
    problems = []
    checked = 0
    for where, expr in targets():
        query = substitute(expr)
        body = query_range(prometheus, query, start - 5, end)
        if body.get("status") != "success":
            problems.append(f"{where}: does not run: {body.get('error')}\n    {query}")
            continue
        values = [
            float(value) for series in body["data"]["result"] for _, value in series["values"]
        ]
        finite = [v for v in values if math.isfinite(v)]
        moving = re.search(r"\b(rate|increase)\(", expr) is not None
        if not finite:
            problems.append(f"{where}: no data\n    {query}")
        elif moving and not any(v > 0 for v in finite):
            problems.append(f"{where}: never above 0\n    {query}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked == len(targets()) >= 25
