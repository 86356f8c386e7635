"""Push latency and collection time for 1,000 series, per route."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prometheus_client import generate_latest

import gangplank
from benchmarks.common import best_of, median_of, row
from gangplank import catalogue
from gangplank.provider import get_meter

SERIES = 1000


def _provider(reader):  # type: ignore[no-untyped-def]
    provider = gangplank.configure(reader, set_global=False)
    gauge = catalogue.TRAIN_LEARNING_RATE.create(get_meter(provider))
    for i in range(SERIES):
        gauge.set(i * 0.001, {"series": str(i)})
    return provider


def main() -> None:
    from servers import Pushgateway

    registry_reader = gangplank.RegistryReader()
    provider = _provider(registry_reader)
    collect = best_of(lambda: generate_latest(registry_reader.registry), repeat=20)
    row(f"collect + render {SERIES} series (text format)", f"{collect * 1000:.1f} ms")
    provider.shutdown()

    with tempfile.TemporaryDirectory() as tmp:
        gateway = Pushgateway(Path(tmp))
        gateway.start()
        try:
            reader = gangplank.PushgatewayReader(gateway.url, "bench", timeout=10)
            provider = _provider(reader)
            reader.push()
            push = median_of(reader.push, repeat=20)
            row(f"push {SERIES} series to a real Pushgateway (median)", f"{push * 1000:.1f} ms")
            ticket = best_of(lambda: reader.request_push(), repeat=20)
            row("request_push() on the caller's thread", f"{ticket * 1e6:.1f} µs",
                "the network I/O runs on the push thread")  # fmt: skip
            provider.shutdown()
        finally:
            gateway.stop()
