"""Evaluate a model and push the test series (``gangplank_test_*``) once, at the end.

python examples/evaluate.py --pushgateway http://localhost:9091
python examples/evaluate.py --short
"""

from __future__ import annotations

import argparse

from _common import classifier, iris_split
from prometheus_client import generate_latest

import gangplank


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate on Iris, pushing metrics.")
    parser.add_argument("--pushgateway", help="Pushgateway URL; without it nothing is pushed")
    parser.add_argument("--job", default="iris-evaluate")
    parser.add_argument("--short", action="store_true", help="print the series")
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = iris_split()
    model = classifier()
    model.fit(x_train, y_train, epochs=5 if args.short else 30, verbose=0)

    reader = (
        gangplank.PushgatewayReader(args.pushgateway, job=args.job)
        if args.pushgateway
        else gangplank.RegistryReader()
    )
    provider = gangplank.configure(reader, service_name=args.job, set_global=False)
    results = model.evaluate(
        x_test,
        y_test,
        verbose=0,
        return_dict=True,
        callbacks=[gangplank.TrainingMetrics(provider)],
    )
    print(f"evaluate: {results}")
    for line in generate_latest(reader.registry).decode().splitlines():
        if line.startswith("gangplank_test_"):
            print(line)
    provider.shutdown()


if __name__ == "__main__":
    main()
