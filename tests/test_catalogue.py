"""The catalogue gives exactly the seed's Prometheus names, and every entry is well formed."""

from __future__ import annotations

import re

import pytest

from gangplank import catalogue
from gangplank.catalogue import CATALOGUE, Kind, log_key_name, prometheus_name

# From shared/seed/seed-behaviour.md: (Prometheus name, type).
SEED_SERIES = {
    "gangplank_train_epochs_count": "gauge",
    "gangplank_train_elapsed_time_seconds": "gauge",
    "gangplank_train_model_parameters_count": "gauge",
    "gangplank_train_model_weights": "histogram",
    "gangplank_test_elapsed_time_seconds": "gauge",
    "gangplank_test_model_parameters_count": "gauge",
    "gangplank_test_model_weights": "histogram",
    "gangplank_predict_total": "counter",
    "gangplank_predict_time_seconds_total": "counter",
    "gangplank_predict_call_total": "counter",
    "gangplank_predict_call_time_seconds_total": "counter",
    "gangplank_predict_drift_detected_total": "counter",
    "gangplank_predict_drift_p_value": "gauge",
    "gangplank_predict_drift_test_statistic": "gauge",
    "gangplank_train_learning_rate": "gauge",
}


def test_every_seed_series_is_in_the_catalogue_with_its_type() -> None:
    found = {i.prometheus_name: i.prometheus_type for i in CATALOGUE}
    for name, kind in SEED_SERIES.items():
        assert found.get(name) == kind, name


def test_names_are_unique_and_follow_opentelemetry_rules() -> None:
    otel = [i.name for i in CATALOGUE]
    prom = [i.prometheus_name for i in CATALOGUE]
    assert len(set(otel)) == len(otel)
    assert len(set(prom)) == len(prom)
    for instrument in CATALOGUE:
        assert re.fullmatch(r"[a-z][a-z0-9_.]{0,254}", instrument.name), instrument.name
        assert instrument.description.endswith("."), instrument.name
        # Gauges must not use unit "1": the Collector would append "_ratio".
        assert instrument.unit != "1", instrument.name


def test_every_histogram_has_bucket_advice_suited_to_its_unit() -> None:
    for instrument in CATALOGUE:
        if instrument.kind is Kind.HISTOGRAM:
            assert instrument.buckets, instrument.name
        if instrument.unit == "s" and instrument.buckets:
            assert instrument.buckets[0] < 1, instrument.name  # not OTel's 0, 5, 10 …


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("loss", "gangplank.train.loss"),
        ("val_accuracy", "gangplank.train.val_accuracy"),
        ("val loss", "gangplank.train.val_loss"),
        ("top-5", "gangplank.train.top_5"),
        ("précision", "gangplank.train.pr_cision"),
        ("1st", "gangplank.train.1st"),
        ("  ", None),
        ("", None),
    ],
)
def test_log_key_names_are_sanitised(key: str, expected: str | None) -> None:
    assert log_key_name("train", key) == expected


def test_prometheus_name_matches_the_exporter_rules() -> None:
    assert prometheus_name("gangplank.predict.time", "s", Kind.OBSERVABLE_COUNTER) == (
        "gangplank_predict_time_seconds_total"
    )
    assert prometheus_name("gangplank.predict", "{prediction}", Kind.COUNTER) == (
        "gangplank_predict_total"
    )
    assert prometheus_name("gangplank.train.loss", "", Kind.GAUGE) == "gangplank_train_loss"


def test_seed_weight_buckets() -> None:
    assert len(catalogue.WEIGHT_BUCKETS_1_0) == 21
    assert catalogue.WEIGHT_BUCKETS_1_0[0] == -1.0
    assert catalogue.WEIGHT_BUCKETS_1_0[10] == 0.0
    assert catalogue.WEIGHT_BUCKETS_1_0[-1] == 1.0
    assert len(catalogue.WEIGHT_BUCKETS_0_3) == 13
    assert catalogue.WEIGHT_BUCKETS_0_3[0] == -0.3
    assert catalogue.WEIGHT_BUCKETS_0_3[-1] == 0.3


def test_preaggregated_histograms_cannot_be_created_on_a_meter(meter_provider) -> None:
    meter = meter_provider.get_meter("t")
    with pytest.raises(TypeError, match="pre-aggregated"):
        catalogue.PREDICT_DURATION.create(meter)
