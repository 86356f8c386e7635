"""One process of a simulated fleet, run as a subprocess by ``test_collector.py``.

A *serving* process answers inference requests (predictions, latency and batch-size
histograms); a *training* process runs epochs of steps (steps and samples counters, epoch and
loss gauges, an epoch-duration histogram). What each records is fixed by its ``--index``
(:func:`serving_plan`, :func:`training_plan`), so the test knows the exact totals to expect.

The route is either the collector (``--otlp URL``: ``otlp_reader``, with ``service.name`` and
``service.instance.id`` on the resource) or, for data-parallel training without a collector,
the Pushgateway (``--pushgateway URL``: ``PushgatewayReader`` grouped by ``instance``).

Protocol on stdio: the worker prints ``ready`` once its provider exists, waits for a line on
stdin (so that every process of the fleet records at the same time), records, calls
``provider.shutdown()`` (the only flush it gets) and prints one JSON line with what it recorded.

    python tests/fleet_worker.py serving --otlp http://127.0.0.1:4318 \
        --service fleet-serving --instance serving-0 --index 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

EPOCHS = 3


def serving_plan(index: int) -> dict[str, Any]:
    """Requests of serving process ``index``: batch sizes 1..4 in turn, 40 + 10*index of them."""
    requests = 40 + 10 * index
    batches = [1 + (i % 4) for i in range(requests)]
    return {"requests": requests, "rows": sum(batches), "batches": batches}


def training_plan(index: int) -> dict[str, Any]:
    """Epochs of training worker ``index``: ``5 + index`` steps of 8 samples per epoch."""
    steps_per_epoch = 5 + index
    return {
        "epochs": EPOCHS,
        "steps": EPOCHS * steps_per_epoch,
        "samples": EPOCHS * steps_per_epoch * 8,
        "steps_per_epoch": steps_per_epoch,
        "batch": 8,
        "loss": loss_after(EPOCHS, index),
    }


def loss_after(epoch: int, index: int) -> float:
    """The loss a worker reports after ``epoch`` epochs (exactly representable)."""
    return 1.0 / (2**epoch) + index / 16


def _serve(provider: Any, index: int, pace: float) -> dict[str, Any]:
    from opentelemetry.metrics import CallbackOptions, Observation

    from gangplank import catalogue
    from gangplank.histogram import HistogramFamily
    from gangplank.producer import attach
    from gangplank.provider import get_meter

    plan = serving_plan(index)
    rows = 0
    seconds = 0.0

    def observe_rows(options: CallbackOptions) -> list[Observation]:
        return [Observation(rows)]

    def observe_seconds(options: CallbackOptions) -> list[Observation]:
        return [Observation(seconds)]

    meter = get_meter(provider)
    catalogue.PREDICT_COUNT.create(meter, [observe_rows])
    catalogue.PREDICT_TIME.create(meter, [observe_seconds])
    latency = HistogramFamily(catalogue.PREDICT_DURATION)
    sizes = HistogramFamily(catalogue.PREDICT_BATCH_SIZE)
    attach(provider, latency)
    attach(provider, sizes)
    latency_series = latency.series({"method": "predict"})
    size_series = sizes.series({"method": "predict"})
    for batch in plan["batches"]:
        took = 0.001 * batch
        latency_series.observe(took)
        size_series.observe(batch)
        rows += batch
        seconds += took
        time.sleep(pace)  # spread the requests over several export intervals
    provider.shutdown()
    return {"requests": len(plan["batches"]), "rows": rows}


def _train(provider: Any, index: int, pace: float) -> dict[str, Any]:
    from gangplank import catalogue
    from gangplank.provider import get_meter

    plan = training_plan(index)
    meter = get_meter(provider)
    steps = catalogue.TRAIN_STEPS.create(meter)
    samples = catalogue.TRAIN_SAMPLES.create(meter)
    epochs = catalogue.TRAIN_EPOCHS.create(meter)
    duration = catalogue.TRAIN_EPOCH_DURATION.create(meter)
    loss_name = catalogue.log_key_name("train", "loss")
    assert loss_name is not None
    loss = catalogue.Instrument(loss_name, catalogue.Kind.GAUGE, "", "Training loss.").create(meter)
    done_steps = done_samples = 0
    for epoch in range(1, plan["epochs"] + 1):
        for _ in range(plan["steps_per_epoch"]):
            steps.add(1)
            samples.add(plan["batch"])
            done_steps += 1
            done_samples += plan["batch"]
            time.sleep(pace)
        duration.record(0.25 * epoch)
        epochs.set(epoch)
        loss.set(loss_after(epoch, index))
    provider.shutdown()
    return {"epochs": plan["epochs"], "steps": done_steps, "samples": done_samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("serving", "training"))
    route = parser.add_mutually_exclusive_group(required=True)
    route.add_argument("--otlp", help="OTLP/HTTP endpoint of the collector")
    route.add_argument("--pushgateway", help="Pushgateway URL (data-parallel training)")
    parser.add_argument("--service", required=True, help="service.name, or the push job")
    parser.add_argument("--instance", required=True, help="service.instance.id")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument(
        "--interval",
        type=float,
        default=3600.0,
        help="OTLP export interval; the default leaves shutdown as the only export",
    )
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between records")
    args = parser.parse_args(argv)

    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID

    import gangplank

    if args.otlp:
        reader = gangplank.otlp_reader(args.otlp, interval=args.interval, timeout=5.0)
    else:
        reader = gangplank.PushgatewayReader(
            args.pushgateway,
            job=args.service,
            grouping_key={"instance": args.instance},
            timeout=5.0,
        )
    provider = gangplank.configure(
        reader,
        service_name=args.service,
        resource_attributes={SERVICE_INSTANCE_ID: args.instance},
        set_global=False,
    )
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 2  # the test went away
    run = _serve if args.role == "serving" else _train
    summary = run(provider, args.index, args.pace)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
