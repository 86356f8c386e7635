"""The ``gangplank`` command: the demo runs on embedded data with no external service."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gangplank import cli, demo
from gangplank.catalogue import reference_table
from gangplank.data import SPECIES, load_iris
from servers import http_get

README = Path(__file__).resolve().parent.parent / "README.md"


def test_embedded_iris_data() -> None:
    features, labels = load_iris()
    assert features.shape == (150, 4)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    assert len(SPECIES) == 3
    assert 5.8 < features[:, 0].mean() < 5.9  # sepal length, cm


def test_demo_exports_the_seed_series_and_shows_them(capsys) -> None:
    out = io.StringIO()
    options = demo.DemoOptions(port=0, epochs=3, requests=30)
    provider = demo.run(options, out)
    try:
        endpoint = provider._metric_readers[0]
        page = http_get(endpoint.url)
    finally:
        provider.shutdown()
    text = out.getvalue()
    for name in (
        "gangplank_train_loss",
        "gangplank_train_epochs_count",
        "gangplank_test_accuracy",
        "gangplank_predict_total",
        "gangplank_predict_drift_p_value",
    ):
        assert name in text, name
        assert name in page, name
    assert re.search(r"gangplank_train_epochs_count\s+3\b", text)
    assert "curl -s http://127.0.0.1:" in text


def test_version_and_metrics_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gangplank.cli", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert re.fullmatch(r"gangplank \d+\.\d+\.\d+\s*", out.stdout)
    out = subprocess.run(
        [sys.executable, "-m", "gangplank.cli", "metrics"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == reference_table()


def test_readme_metrics_reference_is_generated_from_the_catalogue() -> None:
    text = README.read_text()
    start = text.index("<!-- metrics:start -->\n") + len("<!-- metrics:start -->\n")
    end = text.index("<!-- metrics:end -->")
    assert text[start:end] == reference_table(), "run: gangplank metrics, and paste into README"


def test_bad_demo_arguments_exit_with_a_message(capsys) -> None:
    assert cli.main(["demo", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])
