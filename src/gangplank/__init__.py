"""Gangplank: Keras 3 training, evaluation and inference metrics in Prometheus via OpenTelemetry.

Record with the Keras callback (:class:`TrainingMetrics`) and the model proxy
(:class:`InstrumentedModel`) on an OpenTelemetry MeterProvider, and choose a route to
Prometheus: :class:`PushgatewayReader` (batch jobs), :class:`ScrapeEndpoint` (serving) or
:func:`otlp_reader` (an OpenTelemetry Collector). :func:`configure` wires them up. Importing
the package starts nothing.
"""

from . import drift
from .callback import TrainingMetrics, TrainTestExporter
from .catalogue import CATALOGUE, Instrument
from .drift import Drift
from .exposition import RegistryReader
from .otlp import otlp_reader
from .provider import configure
from .proxy import InstrumentedModel, PrometheusModel
from .pushgateway import PushgatewayReader
from .scrape import ScrapeEndpoint
from .version import __version__
from .weights import HISTOGRAM_WEIGHT_BUCKETS_0_3, HISTOGRAM_WEIGHT_BUCKETS_1_0

__all__ = (
    "CATALOGUE",
    "HISTOGRAM_WEIGHT_BUCKETS_0_3",
    "HISTOGRAM_WEIGHT_BUCKETS_1_0",
    "Drift",
    "Instrument",
    "InstrumentedModel",
    "PrometheusModel",
    "PushgatewayReader",
    "RegistryReader",
    "ScrapeEndpoint",
    "TrainTestExporter",
    "TrainingMetrics",
    "__version__",
    "configure",
    "drift",
    "otlp_reader",
)
