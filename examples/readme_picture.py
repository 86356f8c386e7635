"""Draw README's picture: real series from a ``gangplank demo`` run, as Prometheus stored them.

    python examples/readme_picture.py        # writes examples/images/demo.png

It starts a real Prometheus (Debian's package) scraping the demo's endpoint five times a
second, runs the demo, then plots range queries from the Prometheus HTTP API.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gangplank import demo  # noqa: E402
from servers import Prometheus, free_port  # noqa: E402

P99 = (
    "histogram_quantile(0.99, sum by (le) "
    "(rate(gangplank_predict_duration_seconds_bucket{%s}[3s])))"
)
PANELS = [
    (
        "Training loss per epoch",
        [("loss", "gangplank_train_loss"), ("val_loss", "gangplank_train_val_loss")],
        False,
    ),
    (
        "Predictions per second",
        [
            ("predict", "sum(rate(gangplank_predict_total[3s]))"),
            ("model(x)", "sum(rate(gangplank_predict_call_total[3s]))"),
        ],
        False,
    ),
    (
        "p99 latency (s), by method",
        [("predict", P99 % 'method="predict"'), ("model(x)", P99 % 'method="__call__"')],
        True,
    ),
    (
        "Drift p-value (inputs shift halfway)",
        [
            ("chi_square", 'gangplank_predict_drift_p_value{detector="chi_square"}'),
            ("ks", 'gangplank_predict_drift_p_value{detector="ks"}'),
        ],
        True,
    ),
]


def query_range(prometheus: Prometheus, expr: str, start: float, end: float) -> list:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 0.1})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query_range?{params}") as response:
        return json.loads(response.read())["data"]["result"]


def main(output: Path = HERE / "images" / "demo.png") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prometheus = Prometheus(Path(tmp), scrape_interval="100ms")
        prometheus.start()
        try:
            port = free_port()
            prometheus.scrape(f"127.0.0.1:{port}", job="gangplank-demo")
            start = time.time()
            provider = demo.run(
                demo.DemoOptions(port=port, epochs=60, requests=600, batch_size=4), io.StringIO()
            )
            time.sleep(1.0)  # let the last samples be scraped: a picture, not a test
            end = time.time()
            provider.shutdown()
            results = [
                [(label, query_range(prometheus, expr, start, end)) for label, expr in queries]
                for _, queries, _ in PANELS
            ]
            origin = min(
                float(series["values"][0][0])
                for panel in results
                for _, found in panel
                for series in found
            )
            figure, axes = plt.subplots(2, 2, figsize=(11, 6.5))
            for axis, (title, _, log), panel in zip(axes.flat, PANELS, results, strict=True):
                for label, found in panel:
                    for series in found:
                        xs = [float(t) - origin for t, _ in series["values"]]
                        ys = [float(v) for _, v in series["values"]]
                        axis.plot(xs, ys, label=label)
                axis.set_title(title, fontsize=10)
                axis.set_xlabel("seconds", fontsize=8)
                if log:
                    axis.set_yscale("log")
                axis.legend(fontsize=8)
                axis.grid(alpha=0.3)
            figure.suptitle("gangplank demo, as stored by Prometheus", fontsize=12)
            figure.tight_layout()
            output.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(output, dpi=90)
            print(f"wrote {output}")
        finally:
            prometheus.stop()


if __name__ == "__main__":
    main()
