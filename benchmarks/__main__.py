"""Run benchmarks: ``python -m benchmarks [routes|import|training|serving|all]``."""

from __future__ import annotations

import importlib
import sys
import time

SUITES = {
    "routes": "benchmarks.bench_routes",
    "import": "benchmarks.bench_import",
    "training": "benchmarks.bench_training",
    "serving": "benchmarks.bench_serving",
}


def main(argv: list[str]) -> int:
    names = argv or ["all"]
    if names == ["all"]:
        names = list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}; choose from {', '.join(SUITES)} or all")
        return 2
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        importlib.import_module(SUITES[name]).main()
        print(f"({name}: {time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
