"""Drift detection on a served model: no shift, then a shift, watched by three detectors.

python examples/drift.py [--short]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import classifier, iris_split
from prometheus_client import generate_latest

import gangplank
from gangplank import drift


def main() -> None:
    parser = argparse.ArgumentParser(description="Drift detection on Iris predictions.")
    parser.add_argument("--short", action="store_true", help="fewer requests")
    args = parser.parse_args()

    x_train, y_train, x_test, _ = iris_split()
    model = classifier()
    model.fit(x_train, y_train, epochs=30, verbose=0)

    reader = gangplank.RegistryReader()
    provider = gangplank.configure(reader, set_global=False)
    served = gangplank.InstrumentedModel(
        model,
        provider,
        name="iris",
        drift=[
            drift.ChiSquare(model.predict(x_train, verbose=0), window=100),  # predicted classes
            drift.KS(x_train, window=100, on="inputs"),  # each feature
            drift.PSI(x_train, window=100, bins=5),  # population stability, per feature
        ],
    )
    rng = np.random.default_rng(1)
    requests = 40 if args.short else 200
    for phase, shift in (("no shift", 0.0), ("petals 1.5 sd longer", 1.5)):
        for _ in range(requests):
            batch = x_test[rng.integers(0, len(x_test), 5)].copy()
            batch[:, 2:] += shift
            served.predict(batch, verbose=0)
        served.drift_monitor.join(timeout=30)
        print(f"after {phase}:")
        for line in generate_latest(reader.registry).decode().splitlines():
            if line.startswith(
                ("gangplank_predict_drift_test_statistic", "gangplank_predict_drift_detected")
            ):
                print("  " + line.split("{")[0], _detector(line), line.rsplit(" ", 1)[1])
    provider.shutdown()


def _detector(line: str) -> str:
    return line.split('detector="')[1].split('"')[0] if 'detector="' in line else ""


if __name__ == "__main__":
    main()
