"""An HTTP prediction service: ``POST /predict`` answers, ``GET /metrics`` is for Prometheus.

    python examples/serve.py --port 8080
    curl -s -XPOST localhost:8080/predict -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    curl -s localhost:8080/metrics

``--short`` starts the service on a free port, sends itself a few requests and exits.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import keras
import numpy as np
from _common import classifier, iris_split
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import gangplank
from gangplank.data import SPECIES, load_iris


def build_service(port: int) -> tuple[ThreadingHTTPServer, gangplank.InstrumentedModel]:
    x_train, y_train, _, _ = iris_split(standardize=False)  # centimetres, as clients send
    normalize = keras.layers.Normalization()
    normalize.adapt(x_train)
    model = keras.Sequential([keras.Input(shape=(4,)), normalize, classifier()])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(0.02))
    model.fit(x_train, y_train, epochs=30, verbose=0)

    reader = gangplank.RegistryReader()
    provider = gangplank.configure(reader, service_name="iris-server", set_global=False)
    served = gangplank.InstrumentedModel(
        model,
        provider,
        name="iris",
        version="1",
        drift=gangplank.drift.KS(x_train, window=50, on="inputs"),
        serialize=True,  # the handler threads share one Keras model
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self._reply(404, b"not found", "text/plain")
                return
            self._reply(200, generate_latest(reader.registry), CONTENT_TYPE_LATEST)

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._reply(404, b"not found", "text/plain")
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                x = np.asarray(body["instances"], dtype=np.float32)
                if x.ndim != 2 or x.shape[1] != 4:
                    # Checked here: Keras on JAX stays broken after a wrongly shaped call.
                    raise ValueError(f"instances must be rows of 4 numbers, got shape {x.shape}")
            except (KeyError, TypeError, ValueError) as error:
                self._reply(400, json.dumps({"error": str(error)}).encode(), "application/json")
                return
            probabilities = served.predict(x, verbose=0)
            answer = {
                "predictions": [SPECIES[i] for i in np.argmax(probabilities, axis=1)],
                "probabilities": np.round(probabilities, 4).tolist(),
            }
            self._reply(200, json.dumps(answer).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler), served


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve Iris predictions with metrics.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--short", action="store_true", help="self-test on a free port, exit")
    args = parser.parse_args()

    server, _ = build_service(0 if args.short else args.port)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    if not args.short:
        print(f"serving on {url}/predict and {url}/metrics")
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    raw, _ = load_iris()
    for i in range(20):
        request = urllib.request.Request(
            url + "/predict",
            data=json.dumps({"instances": raw[i * 7 : i * 7 + 3].tolist()}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    print(f"last answer: {answer['predictions']}")
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(
                ("gangplank_predict_total", "gangplank_predict_duration_seconds_count")
            ):
                print(line)
    server.shutdown()


if __name__ == "__main__":
    main()
