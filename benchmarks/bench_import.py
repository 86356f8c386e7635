"""``import gangplank`` against ``import keras``, each in a fresh interpreter."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import row


def _time_import(module: str, repeat: int = 5) -> float:
    times = []
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    baseline = _time_import("sys")
    keras = _time_import("keras") - baseline
    gangplank = _time_import("gangplank") - baseline
    row("import keras (median of 5, interpreter start removed)", f"{keras:.2f} s")
    row("import gangplank (includes keras)", f"{gangplank:.2f} s")
    row("ratio gangplank / keras", f"{gangplank / keras:.2f}x", "bar: <= 1.2x")
