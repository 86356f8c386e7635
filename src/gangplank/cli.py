"""The ``gangplank`` command: ``demo``, ``metrics`` (the catalogue) and ``--version``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .version import __version__

__all__ = ("main",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gangplank",
        description="Keras training, evaluation and inference metrics in Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"gangplank {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train, evaluate and serve a small model on embedded data, exporting every series",
    )
    demo.add_argument("--port", type=int, default=9464, help="scrape endpoint port (0: any)")
    demo.add_argument("--pushgateway", metavar="URL", help="also push to this Pushgateway")
    demo.add_argument("--otlp", metavar="URL", help="also export to this OTLP/HTTP collector")
    demo.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    demo.add_argument(
        "--requests", type=int, default=120, help="inference requests to serve (default 120)"
    )
    demo.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")

    commands.add_parser("metrics", help="print the metric catalogue as a Markdown table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "metrics":
        from .catalogue import reference_table

        sys.stdout.write(reference_table())
        return 0
    if args.epochs < 1 or args.requests < 2:
        sys.stderr.write("--epochs must be >= 1 and --requests >= 2\n")
        return 2
    from .demo import DemoOptions, run

    options = DemoOptions(
        port=args.port,
        pushgateway=args.pushgateway,
        otlp=args.otlp,
        epochs=args.epochs,
        requests=args.requests,
        serve=args.serve,
    )
    try:
        provider = run(options, sys.stdout)
    except OSError as error:
        sys.stderr.write(f"gangplank demo: {error}\n")
        return 1
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
