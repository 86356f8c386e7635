"""The collector route end to end: Gangplank → OTLP → the Collector built here → Prometheus.

Everything is real: the OpenTelemetry Collector built from ``otel-collector/`` (see
``tests/collector.py``), Prometheus and the Pushgateway from Debian's packages. Prometheus
gets the data both ways at once: it scrapes the Collector's ``prometheus`` exporter (with
``honor_labels: true``, so ``job``/``instance`` are the exporting process's ``service.name``
and ``service.instance.id``; those series carry ``via="scrape"``) and the Collector
remote-writes into it (those series have no ``via`` label).

Without Go the collector tests skip (with how to enable them); with ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_worker import loss_after, serving_plan, training_plan
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID
from prometheus_client.parser import text_string_to_metric_families

import gangplank
from collector import Collector, collector_binary
from gangplank import catalogue
from gangplank.catalogue import Instrument, Kind
from gangplank.histogram import HistogramFamily
from gangplank.producer import attach
from gangplank.provider import get_meter
from servers import Prometheus, Pushgateway, http_get, poll, silent_server

TESTS_DIR = Path(__file__).resolve().parent
FLEET_WORKER = TESTS_DIR / "fleet_worker.py"

#: Short enough that a test never waits long for a periodic export; tests still
#: force_flush instead of waiting for one where they can.
INTERVAL = 0.5

HOW_TO_ENABLE = (
    "install Go >= 1.26 (`go` on PATH or /usr/local/go/bin/go) with access to the Go module "
    "proxy, then run `bash otel-collector/build.sh` (the binary is cached outside the repo); "
    "with CI=true these tests fail instead of skipping"
)

# Every series of Gangplank 0.5 (../shared/seed/seed-behaviour.md), by Prometheus name.
SEED_SERIES = frozenset(
    {
        "gangplank_train_loss",
        "gangplank_train_accuracy",
        "gangplank_train_val_loss",
        "gangplank_train_val_accuracy",
        "gangplank_train_learning_rate",
        "gangplank_train_epochs_count",
        "gangplank_train_elapsed_time_seconds",
        "gangplank_train_model_parameters_count",
        "gangplank_train_model_weights_bucket",
        "gangplank_train_model_weights_sum",
        "gangplank_train_model_weights_count",
        "gangplank_test_loss",
        "gangplank_test_accuracy",
        "gangplank_test_elapsed_time_seconds",
        "gangplank_test_model_parameters_count",
        "gangplank_test_model_weights_bucket",
        "gangplank_test_model_weights_sum",
        "gangplank_test_model_weights_count",
        "gangplank_predict_total",
        "gangplank_predict_time_seconds_total",
        "gangplank_predict_call_total",
        "gangplank_predict_call_time_seconds_total",
        "gangplank_predict_drift_detected_total",
        "gangplank_predict_drift_p_value",
        "gangplank_predict_drift_test_statistic",
    }
)

#: ``logs`` keys a Keras fit/evaluate typically reports, by phase.
LOG_KEYS = {
    "train": ("loss", "accuracy", "val_loss", "val_accuracy"),
    "test": ("loss", "accuracy"),
}

#: Series about a route's own health, which only routes that can fail have (the push reader
#: counts its failed pushes; a scrape endpoint cannot fail to push).
ROUTE_HEALTH_SERIES = frozenset({"gangplank_export_failures_total"})

#: Seconds any wait for data in Prometheus may take (remote write and scrapes run every ~1s).
ARRIVAL = 30.0


# --------------------------------------------------------------------------- enabling


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require_collector(
    find: Callable[[], str | None] = collector_binary, ci: bool | None = None
) -> str:
    """The collector binary's path; else skip (a developer machine) or fail (``CI=true``)."""
    ci = _in_ci() if ci is None else ci
    try:
        path = find()
    except RuntimeError as error:
        reason = f"the OpenTelemetry Collector could not be built: {error}"
    else:
        if path is not None:
            return path
        reason = "the OpenTelemetry Collector cannot be built: Go is not installed"
    if ci:
        pytest.fail(f"{reason}. CI=true requires the collector tests to run", pytrace=False)
    pytest.skip(f"{reason}. To enable these tests, {HOW_TO_ENABLE}")


def test_without_go_skips_with_instructions_but_fails_in_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="To enable these tests, install Go"):
        require_collector(lambda: None, ci=False)
    with pytest.raises(pytest.fail.Exception, match="CI=true requires"):
        require_collector(lambda: None, ci=True)


def test_a_failed_build_skips_locally_but_fails_in_ci() -> None:
    def broken() -> str | None:
        raise RuntimeError("collector build failed (exit 1): go: module lookup disabled")

    with pytest.raises(pytest.skip.Exception, match="module lookup disabled"):
        require_collector(broken, ci=False)
    with pytest.raises(pytest.fail.Exception, match="module lookup disabled"):
        require_collector(broken, ci=True)
    assert require_collector(lambda: "/bin/otelcol", ci=True) == "/bin/otelcol"


# --------------------------------------------------------------------------- fixtures


class CollectorPrometheus(Prometheus):
    """Prometheus as a user would run it next to Collectors.

    Besides the harness's jobs it has an ``otel-collector`` job with ``honor_labels: true``
    (targets added at run time with :meth:`scrape_collector`), so that scraped series keep the
    ``job``/``instance`` labels the Collector derives from ``service.name`` and
    ``service.instance.id``. It also receives remote writes and scrapes the Pushgateway.
    """

    def __init__(self, workdir: Path, pushgateway_url: str) -> None:
        self.collectors_dir = workdir / "collectors"
        self.collectors_dir.mkdir(parents=True, exist_ok=True)
        job = {
            "job_name": "otel-collector",
            "honor_labels": True,
            "scrape_interval": "1s",
            "file_sd_configs": [
                {"files": [str(self.collectors_dir / "*.json")], "refresh_interval": "1s"}
            ],
        }
        super().__init__(workdir, pushgateway_url, extra_scrape_configs=[job])

    def scrape_collector(self, address: str, **labels: str) -> None:
        """Scrape a Collector's ``prometheus`` exporter with ``honor_labels: true``."""
        path = self.collectors_dir / f"{uuid.uuid4().hex}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels}]))
        tmp.rename(path)


@pytest.fixture(scope="module")
def collector_bin() -> str:
    """The built Collector (skip without Go; fail under CI=true)."""
    return require_collector()


@pytest.fixture(scope="module")
def prom(
    collector_bin: str, tmp_path_factory: pytest.TempPathFactory, pushgateway: Pushgateway
) -> Iterator[CollectorPrometheus]:
    server = CollectorPrometheus(tmp_path_factory.mktemp("prometheus-otel"), pushgateway.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def collector(
    collector_bin: str, prom: CollectorPrometheus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Collector]:
    """One Collector for the module: scraped by ``prom`` (``via="scrape"``) and remote-writing
    into it. Tests keep apart by their own ``service.name``."""
    with Collector(
        collector_bin, tmp_path_factory.mktemp("otelcol"), remote_write_url=prom.remote_write_url
    ) as running:
        prom.scrape_collector(running.prometheus_exporter_address, via="scrape")
        yield running


@pytest.fixture
def make_collector(
    collector_bin: str, prom: CollectorPrometheus, tmp_path: Path
) -> Iterator[Callable[[], Collector]]:
    """Private Collectors for tests that stop or restart them (remote-writing into ``prom``)."""
    made: list[Collector] = []

    def make() -> Collector:
        col = Collector(
            collector_bin, tmp_path / f"otelcol-{len(made)}", remote_write_url=prom.remote_write_url
        )
        made.append(col)
        return col

    yield make
    for col in made:
        col.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def otlp_provider(
    endpoint: str,
    service: str,
    instance: str = "i-0",
    *,
    timeout: float = 5.0,
    interval: float = INTERVAL,
    **readers: Any,
) -> MeterProvider:
    """A provider exporting to ``endpoint`` every ``interval`` seconds (plus other readers)."""
    reader = gangplank.otlp_reader(endpoint, interval=interval, timeout=timeout)
    return gangplank.configure(
        reader,
        *readers.values(),
        service_name=service,
        resource_attributes={SERVICE_INSTANCE_ID: instance},
        set_global=False,
    )


def exposed(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with ``labels`` (a subset) in an exposition page."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    if len(found) > 1:
        raise AssertionError(f"{name}{labels} matches {len(found)} samples")
    return found[0] if found else None


def exposed_types(text: str, **labels: str) -> dict[str, str]:
    """``{family name as Prometheus stores it: type}`` of ``gangplank_`` families with
    ``labels`` in an exposition page (counters keep their ``_total``)."""
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        if not any(labels.items() <= s.labels.items() for s in family.samples):
            continue
        name = family.name
        if family.type == "counter" and not name.endswith("_total"):
            name += "_total"
        if name.startswith("gangplank_"):
            types[name] = family.type
    return types


# --------------------------------------------------------------------------- the catalogue


def log_gauges() -> list[Instrument]:
    """Gauges for the usual ``logs`` keys, named the way the training callback names them."""
    gauges = []
    for phase, keys in LOG_KEYS.items():
        for key in keys:
            name = catalogue.log_key_name(phase, key)
            assert name is not None
            gauges.append(Instrument(name, Kind.GAUGE, "", f"{phase} {key}"))
    return gauges


def every_instrument() -> list[Instrument]:
    return [*catalogue.CATALOGUE, *log_gauges()]


def series_of(instrument: Instrument) -> set[str]:
    """The Prometheus series names an instrument becomes."""
    name = instrument.prometheus_name
    if instrument.prometheus_type == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def expected_series() -> set[str]:
    return set().union(*(series_of(i) for i in every_instrument()))


def record_everything(provider: MeterProvider) -> list[Any]:
    """Create every instrument on ``provider`` and record a value in each.

    Returns what must stay alive for the recordings to keep being exported (pre-aggregated
    histogram families are attached weakly).
    """
    meter = get_meter(provider)
    keep: list[Any] = []
    for number, spec in enumerate(every_instrument(), start=1):
        attributes = {"detector": "chi2"} if "drift" in spec.name else {}
        if spec.kind is Kind.PREAGGREGATED_HISTOGRAM:
            family = HistogramFamily(spec, spec.buckets or catalogue.WEIGHT_BUCKETS_1_0)
            family.series(attributes).observe_array([-0.2, 0.0, 0.1, 0.3])
            attach(provider, family)
            keep.append(family)
        elif spec.kind is Kind.HISTOGRAM:
            histogram = spec.create(meter)
            histogram.record(0.5, attributes)
            keep.append(histogram)
        elif spec.kind is Kind.COUNTER:
            counter = spec.create(meter)
            counter.add(number, attributes)
            keep.append(counter)
        elif spec.kind is Kind.GAUGE:
            gauge = spec.create(meter)
            gauge.set(number / 8, attributes)
            keep.append(gauge)
        else:  # observable: report a constant at every collection

            def callback(
                options: CallbackOptions, value: float = number, attrs: Any = attributes
            ) -> list[Observation]:
                return [Observation(value, attrs)]

            keep.append(spec.create(meter, [callback]))
    return keep


def test_the_catalogue_covers_every_seed_series() -> None:
    assert expected_series() >= SEED_SERIES, SEED_SERIES - expected_series()


# --------------------------------------------------------------------------- 1. both ways


@pytest.mark.collector
def test_exact_values_arrive_by_scrape_and_by_remote_write(
    collector: Collector, prom: CollectorPrometheus
) -> None:
    service = unique("exact")
    provider = otlp_provider(collector.otlp_http_endpoint, service, "replica-7")
    try:
        meter = get_meter(provider)
        steps = catalogue.TRAIN_STEPS.create(meter)
        for _ in range(37):
            steps.add(1)
        elapsed = catalogue.TRAIN_ELAPSED.create(meter)
        elapsed.set(12.375)
        latency = HistogramFamily(catalogue.PREDICT_DURATION)
        attach(provider, latency)
        series = latency.series({"method": "predict"})
        for value in (0.0002, 0.003, 0.003, 0.04, 2.0):
            series.observe(value)
        provider.force_flush(10_000)

        text = collector.wait_for_metric(lambda t: f'job="{service}"' in t, timeout=ARRIVAL)
        assert text  # the Collector's exporter shows the process as job/instance
        for via in ("scrape", ""):
            select = f'job="{service}",instance="replica-7",via="{via}"'
            prom.wait_for_value(f"gangplank_train_steps_total{{{select}}}", 37, ARRIVAL)
            prom.wait_for_value(
                f"gangplank_train_elapsed_time_seconds{{{select}}}", 12.375, ARRIVAL
            )
            prom.wait_for_value(
                f'gangplank_predict_duration_seconds_count{{{select},method="predict"}}',
                5,
                ARRIVAL,
            )
            prom.wait_for_value(
                f'gangplank_predict_duration_seconds_bucket{{{select},le="0.005"}}', 3, ARRIVAL
            )
            prom.wait_for_value(
                f"gangplank_predict_duration_seconds_sum{{{select}}}", 2.0462, ARRIVAL
            )

        # More data: cumulative totals, not the latest delta.
        for _ in range(5):
            steps.add(1)
        series.observe(0.5)
        provider.force_flush(10_000)
        for via in ("scrape", ""):
            select = f'job="{service}",via="{via}"'
            prom.wait_for_value(f"gangplank_train_steps_total{{{select}}}", 42, ARRIVAL)
            prom.wait_for_value(f"gangplank_predict_duration_seconds_count{{{select}}}", 6, ARRIVAL)
    finally:
        provider.shutdown()


@pytest.mark.collector
def test_without_honor_labels_the_process_moves_to_exported_job(
    collector: Collector, prom: CollectorPrometheus
) -> None:
    """What a plain scrape job (no ``honor_labels``) makes of the Collector's labels.

    Documents why the README asks for ``honor_labels: true``: otherwise ``job`` and
    ``instance`` name the Collector, and the process's own move to ``exported_job`` and
    ``exported_instance``.
    """
    prom.scrape(collector.prometheus_exporter_address, via="plain")
    service = unique("labels")
    provider = otlp_provider(collector.otlp_http_endpoint, service, "pod-3")
    try:
        catalogue.TRAIN_STEPS.create(get_meter(provider)).add(3)
        provider.force_flush(10_000)
        result = prom.wait_for(
            f'gangplank_train_steps_total{{exported_job="{service}",via="plain"}}', ARRIVAL
        )
        (labels,) = [series["metric"] for series in result]
        assert labels["exported_instance"] == "pod-3"
        assert labels["job"] == "targets"  # the harness's job name, not the process's
        assert labels["instance"] == collector.prometheus_exporter_address
        honoured = prom.wait_for(f'gangplank_train_steps_total{{job="{service}"}}', ARRIVAL)
        assert {s["metric"]["instance"] for s in honoured} == {"pod-3"}
    finally:
        provider.shutdown()


# --------------------------------------------------------------------------- 2. route parity


@pytest.mark.collector
def test_every_route_gives_the_same_series_names_and_types(
    collector: Collector, prom: CollectorPrometheus, pushgateway: Pushgateway
) -> None:
    """The same recordings, through push, scrape and collector at once, give the same series."""
    run = unique("parity")
    push = gangplank.PushgatewayReader(pushgateway.url, job=f"{run}-push", timeout=5.0)
    endpoint = gangplank.ScrapeEndpoint(port=0)
    provider = otlp_provider(
        collector.otlp_http_endpoint, f"{run}-otlp", push=push, scrape=endpoint
    )
    try:
        keep = record_everything(provider)
        provider.force_flush(10_000)  # pushes and exports
        prom.scrape(f"127.0.0.1:{endpoint.port}", parity=run)

        expected = expected_series()
        selectors = {
            "push": f'{{job="{run}-push"}}',
            "scrape": f'{{job="targets",parity="{run}"}}',
            "collector (scraped)": f'{{job="{run}-otlp",via="scrape"}}',
            "collector (remote write)": f'{{job="{run}-otlp",via=""}}',
        }
        names: dict[str, set[str]] = {}
        for route, selector in selectors.items():

            def arrived(selector: str = selector) -> set[str] | None:
                got = {n for n in prom.series_names(selector) if n.startswith("gangplank_")}
                return got if got >= expected else None

            try:
                names[route] = poll(arrived, timeout=ARRIVAL, what=f"{route} series")
            except AssertionError:
                got = {n for n in prom.series_names(selector) if n.startswith("gangplank_")}
                raise AssertionError(
                    f"{route}: missing {sorted(expected - got)}; unexpected "
                    f"{sorted(got - expected)}"
                ) from None
        for route, got in names.items():
            assert got == expected, f"{route}: extra {sorted(got - expected)}"
            assert got >= SEED_SERIES

        # Same type family on every route, and as the catalogue says.
        want = {i.prometheus_name: i.prometheus_type for i in every_instrument()}
        pages = {
            "push": (pushgateway.metrics(), {"job": f"{run}-push"}),
            "scrape": (http_get(endpoint.url), {}),
            "collector": (collector.scrape(), {"job": f"{run}-otlp"}),
        }
        for route, (text, labels) in pages.items():
            assert exposed_types(text, **labels) == want, route
        del keep
    finally:
        provider.shutdown()


def _fit_and_predict(provider: MeterProvider) -> None:
    """A tiny real fit, evaluate and predictions, recorded by Gangplank's Keras layer."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = gangplank.TrainingMetrics(meter_provider=provider)
    model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, callbacks=[callback], verbose=0)
    model.evaluate(x, y, callbacks=[callback], verbose=0)
    served = gangplank.InstrumentedModel(model, meter_provider=provider)
    served.predict(x[:10], verbose=0)
    served(x[:3])


@pytest.mark.collector
def test_a_real_fit_and_predictions_give_the_same_series_on_every_route(
    collector: Collector, prom: CollectorPrometheus, pushgateway: Pushgateway
) -> None:
    """Route parity with the Keras layer: a fit, an evaluate and predictions recorded by
    TrainingMetrics and InstrumentedModel give the same series names (and values) on every
    route. Series about a route's own health are left out (ROUTE_HEALTH_SERIES)."""
    missing = [n for n in ("TrainingMetrics", "InstrumentedModel") if not hasattr(gangplank, n)]
    if missing:
        pytest.skip(f"gangplank has no {', '.join(missing)} yet")
    run = unique("fit")
    push = gangplank.PushgatewayReader(pushgateway.url, job=f"{run}-push", timeout=5.0)
    endpoint = gangplank.ScrapeEndpoint(port=0)
    provider = otlp_provider(
        collector.otlp_http_endpoint, f"{run}-otlp", push=push, scrape=endpoint
    )
    try:
        _fit_and_predict(provider)
        provider.force_flush(10_000)
        prom.scrape(f"127.0.0.1:{endpoint.port}", parity=run)
        # Present after this run whatever the callback's options (no weights histogram asked).
        must = {
            "gangplank_train_loss",
            "gangplank_train_accuracy",
            "gangplank_train_val_loss",
            "gangplank_train_val_accuracy",
            "gangplank_train_epochs_count",
            "gangplank_train_elapsed_time_seconds",
            "gangplank_train_model_parameters_count",
            "gangplank_test_loss",
            "gangplank_test_accuracy",
            "gangplank_test_elapsed_time_seconds",
            "gangplank_test_model_parameters_count",
            "gangplank_predict_total",
            "gangplank_predict_time_seconds_total",
            "gangplank_predict_call_total",
            "gangplank_predict_call_time_seconds_total",
        }
        selectors = {
            "push": f'{{job="{run}-push"}}',
            "scrape": f'{{job="targets",parity="{run}"}}',
            "collector (scraped)": f'{{job="{run}-otlp",via="scrape"}}',
            "collector (remote write)": f'{{job="{run}-otlp",via=""}}',
        }

        def names_now() -> dict[str, set[str]]:
            return {
                route: {
                    n
                    for n in prom.series_names(selector)
                    if n.startswith("gangplank_") and n not in ROUTE_HEALTH_SERIES
                }
                for route, selector in selectors.items()
            }

        def same_everywhere() -> bool:
            names = names_now()
            return all(got >= must for got in names.values()) and (
                len({frozenset(got) for got in names.values()}) == 1
            )

        try:
            poll(same_everywhere, timeout=ARRIVAL, what="the same series on every route")
        except AssertionError:
            names = names_now()
            report = {route: sorted(got ^ names["push"]) for route, got in names.items()}
            missing = {route: sorted(must - got) for route, got in names.items()}
            raise AssertionError(f"differences from push: {report}; missing: {missing}") from None
        # The same values too.
        for selector in selectors.values():
            assert prom.value(f"gangplank_train_epochs_count{selector}") == 2
            assert prom.value(f"gangplank_predict_total{selector}") == 10
            assert prom.value(f"gangplank_predict_call_total{selector}") == 3
    finally:
        provider.shutdown()


# --------------------------------------------------------------------------- 3. the fleet


def _start_worker(role: str, index: int, *route: str, service: str, instance: str, **extra: Any):
    argv = [sys.executable, str(FLEET_WORKER), role, *route]
    argv += ["--service", service, "--instance", instance, "--index", str(index)]
    for key, value in extra.items():
        argv += [f"--{key}", str(value)]
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS_DIR,
    )


def _run_together(workers: list[subprocess.Popen[str]], timeout: float = 120.0) -> list[dict]:
    """Wait until every worker is ready, start them at once, return their summaries."""
    deadline = time.monotonic() + timeout
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdin is not None
            readable, _, _ = select.select([worker.stdout], [], [], deadline - time.monotonic())
            assert readable, f"worker {worker.args} not ready after {timeout}s"
            line = worker.stdout.readline()
            assert line.strip() == "ready", f"worker not ready: {line!r} {worker.stderr.read()}"
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        summaries = []
        for worker in workers:
            out, err = worker.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert worker.returncode == 0, f"worker failed ({worker.returncode}):\n{err}"
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        return summaries
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _by_instance(result: list[dict[str, Any]]) -> dict[str, float]:
    return {s["metric"]["instance"]: float(s["value"][1]) for s in result}


@pytest.mark.collector
def test_a_fleet_of_processes_through_one_collector_loses_nothing(
    collector: Collector, prom: CollectorPrometheus
) -> None:
    """4 serving and 2 training processes export at once; they exit right after recording.

    Serving processes export every 0.2 s while they record; training workers only at
    shutdown (interval of an hour). Either way Prometheus ends with exactly what was sent,
    per process and in total.
    """
    run = unique("fleet")
    serving, training = f"{run}-serving", f"{run}-training"
    otlp = ("--otlp", collector.otlp_http_endpoint)
    workers = [
        _start_worker(
            "serving", i, *otlp, service=serving, instance=f"s{i}", interval=0.2, pace=0.01
        )
        for i in range(4)
    ] + [
        _start_worker("training", i, *otlp, service=training, instance=f"t{i}", pace=0.01)
        for i in range(2)
    ]
    summaries = _run_together(workers)

    rows = {f"s{i}": serving_plan(i)["rows"] for i in range(4)}
    requests = {f"s{i}": serving_plan(i)["requests"] for i in range(4)}
    steps = {f"t{i}": training_plan(i)["steps"] for i in range(2)}
    samples = {f"t{i}": training_plan(i)["samples"] for i in range(2)}
    assert [s["rows"] for s in summaries[:4]] == list(rows.values())
    assert [s["samples"] for s in summaries[4:]] == list(samples.values())

    for via in ("scrape", ""):
        s_sel = f'job="{serving}",via="{via}"'
        t_sel = f'job="{training}",via="{via}"'
        # Totals over the fleet (the sum by name).
        prom.wait_for_value(f"sum(gangplank_predict_total{{{s_sel}}})", sum(rows.values()))
        prom.wait_for_value(
            f"sum(gangplank_predict_duration_seconds_count{{{s_sel}}})", sum(requests.values())
        )
        prom.wait_for_value(f"sum(gangplank_predict_batch_size_sum{{{s_sel}}})", sum(rows.values()))
        prom.wait_for_value(
            f"sum(gangplank_predict_time_seconds_total{{{s_sel}}})",
            0.001 * sum(rows.values()),
            tolerance=1e-9,
        )
        prom.wait_for_value(f"sum(gangplank_train_steps_total{{{t_sel}}})", sum(steps.values()))
        prom.wait_for_value(f"sum(gangplank_train_samples_total{{{t_sel}}})", sum(samples.values()))
        prom.wait_for_value(f"sum(gangplank_train_epoch_duration_seconds_count{{{t_sel}}})", 3 * 2)
        # Each process told apart by instance (service.instance.id), each exact.
        assert _by_instance(prom.query(f"gangplank_predict_total{{{s_sel}}}")) == rows
        assert (
            _by_instance(prom.query(f"gangplank_predict_duration_seconds_count{{{s_sel}}}"))
            == requests
        )
        assert _by_instance(prom.query(f"gangplank_train_steps_total{{{t_sel}}}")) == steps
        assert _by_instance(prom.query(f"gangplank_train_epochs_count{{{t_sel}}}")) == {
            "t0": 3.0,
            "t1": 3.0,
        }
        assert _by_instance(prom.query(f"gangplank_train_loss{{{t_sel}}}")) == {
            f"t{i}": loss_after(3, i) for i in range(2)
        }


@pytest.mark.collector
def test_data_parallel_workers_push_under_their_own_grouping_key(
    prom: CollectorPrometheus, pushgateway: Pushgateway
) -> None:
    """Without a Collector: each worker pushes its group ``{job, instance}``; PromQL sums them.

    The PromQL below is what the README documents for data-parallel training.
    """
    job = unique("dp-train")
    workers = [
        _start_worker(
            "training", i, "--pushgateway", pushgateway.url, service=job, instance=f"worker-{i}"
        )
        for i in range(2)
    ]
    _run_together(workers)

    groups = [g["labels"] for g in pushgateway.groups() if g["labels"].get("job") == job]
    assert sorted(g["instance"] for g in groups) == ["worker-0", "worker-1"]

    plans = [training_plan(i) for i in range(2)]
    sel = f'job="{job}"'
    # The whole job: samples and steps of all workers.
    prom.wait_for_value(
        f"sum by (job) (gangplank_train_samples_total{{{sel}}})",
        sum(p["samples"] for p in plans),
    )
    prom.wait_for_value(
        f"sum by (job) (gangplank_train_steps_total{{{sel}}})", sum(p["steps"] for p in plans)
    )
    # Mean loss over the workers; progress of the slowest worker.
    prom.wait_for_value(
        f"avg by (job) (gangplank_train_loss{{{sel}}})", sum(p["loss"] for p in plans) / 2
    )
    prom.wait_for_value(f"min by (job) (gangplank_train_epochs_count{{{sel}}})", 3)
    # How many workers reported.
    prom.wait_for_value(f"count by (job) (gangplank_train_epochs_count{{{sel}}})", 2)
    # Each worker on its own.
    result = prom.query(f"gangplank_train_samples_total{{{sel}}}")
    assert _by_instance(result) == {f"worker-{i}": p["samples"] for i, p in enumerate(plans)}


# --------------------------------------------------------------------------- 4. faults


@pytest.mark.collector
def test_collector_down_when_the_app_starts(
    make_collector: Callable[[], Collector],
    prom: CollectorPrometheus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Exports fail, recording is unaffected, and everything arrives once the Collector runs.

    The failures are logged once for the streak, counted, and the count itself reaches
    Prometheus (``gangplank_export_failures_total{route="otlp"}``) once exports get through.
    """
    col = make_collector()
    col.start()
    col.stop()  # its ports are known, nothing listens on them
    service = unique("late")
    reader = gangplank.otlp_reader(col.otlp_http_endpoint, interval=INTERVAL, timeout=1.0)
    provider = gangplank.configure(reader, service_name=service, set_global=False)
    try:
        steps = catalogue.TRAIN_STEPS.create(get_meter(provider))
        with caplog.at_level(logging.INFO, logger="gangplank"):
            for _ in range(25):
                steps.add(1)  # never raises, whatever the network does
            assert not reader.force_flush(5_000)
            assert not reader.force_flush(5_000)
            assert reader.failures >= 2
            assert prom.value(f'gangplank_train_steps_total{{job="{service}"}}') is None

            col.restart()  # same ports; no flush: the periodic export delivers
            for _ in range(15):
                steps.add(1)
            prom.wait_for_value(f'gangplank_train_steps_total{{job="{service}"}}', 40, ARRIVAL)
            assert exposed(col.scrape(), "gangplank_train_steps_total", job=service) == 40
            assert reader.force_flush(5_000)
            failures = prom.wait_for(
                f'gangplank_export_failures_total{{job="{service}",route="otlp",via=""}} >= 2',
                ARRIVAL,
            )
            assert float(failures[0]["value"][1]) <= reader.failures
        ours = [r for r in caplog.records if r.name == "gangplank.otlp"]
        assert [r.levelname for r in ours] == ["WARNING", "INFO"], [r.getMessage() for r in ours]
        assert "succeeded again after" in ours[1].getMessage()
    finally:
        provider.shutdown()


@pytest.mark.collector
def test_collector_restarted_mid_run(
    make_collector: Callable[[], Collector], prom: CollectorPrometheus
) -> None:
    """A recording thread runs on while the Collector restarts; the totals stay exact."""
    col = make_collector()
    col.start()
    service = unique("restart")
    provider = otlp_provider(col.otlp_http_endpoint, service, timeout=2.0)
    steps = catalogue.TRAIN_STEPS.create(get_meter(provider))
    recorded = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def record() -> None:
        nonlocal recorded
        try:
            while not stop.is_set():
                steps.add(1)
                recorded += 1
                stop.wait(0.002)
        except BaseException as error:  # pragma: no cover - the assertion below reports it
            errors.append(error)

    thread = threading.Thread(target=record, daemon=True)
    try:
        thread.start()
        poll(
            lambda: (exposed(col.scrape(), "gangplank_train_steps_total", job=service) or 0) > 0,
            timeout=ARRIVAL,
            what="data before the restart",
        )
        before = prom.wait_for(f'gangplank_train_steps_total{{job="{service}"}}', ARRIVAL)
        col.restart()  # the exporter forgets everything; the app's next export restores it
        poll(
            lambda: (
                (exposed(col.scrape(), "gangplank_train_steps_total", job=service) or 0)
                > float(before[0]["value"][1])
            ),
            timeout=ARRIVAL,
            what="data after the restart",
        )
        stop.set()
        thread.join(5)
        assert not errors and not thread.is_alive()
        provider.force_flush(10_000)
        assert recorded > 0
        prom.wait_for_value(f'gangplank_train_steps_total{{job="{service}"}}', recorded, ARRIVAL)
        col.wait_for_metric(
            lambda t: exposed(t, "gangplank_train_steps_total", job=service) == recorded,
            timeout=ARRIVAL,
        )
    finally:
        stop.set()
        provider.shutdown()


@pytest.mark.collector
@pytest.mark.parametrize(
    ("fault", "interval"), [("stopped", INTERVAL), ("silent", INTERVAL), ("silent", 3600.0)]
)
def test_shutdown_is_bounded_when_the_collector_is_unreachable(
    make_collector: Callable[[], Collector], fault: str, interval: float
) -> None:
    """``provider.shutdown()`` returns within the reader's timeout (plus slack), not hangs.

    ``stopped``: the Collector ran, then went away (connections refused). ``silent``: the
    endpoint accepts connections and never answers. A long interval matters because the
    SDK's last export at shutdown is given the *interval* as its timeout.
    """
    timeout = 2.0
    with silent_server() as silent:
        if fault == "stopped":
            col = make_collector()
            col.start()
            endpoint = col.otlp_http_endpoint
        else:
            endpoint = silent
        provider = otlp_provider(endpoint, unique("bounded"), timeout=timeout, interval=interval)
        catalogue.TRAIN_STEPS.create(get_meter(provider)).add(1)
        if fault == "stopped":
            provider.force_flush(10_000)
            col.stop()
        started = time.monotonic()
        provider.shutdown()
        took = time.monotonic() - started
    assert took < timeout + 5, f"shutdown took {took:.1f}s with a {timeout}s timeout"
