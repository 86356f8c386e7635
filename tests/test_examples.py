"""Every example runs in its short mode, on embedded data, and shows the series it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("train.py", ["gangplank_train_loss", "gangplank_train_model_weights_count",
                      "gangplank_train_layer_weights_count", "gangplank_train_learning_rate"]),
        ("evaluate.py", ["gangplank_test_loss", "gangplank_test_accuracy"]),
        ("serve.py", ["gangplank_predict_total", "gangplank_predict_duration_seconds_count"]),
        ("drift.py", ["gangplank_predict_drift_detected_total chi_square 2.0",
                      "gangplank_predict_drift_test_statistic psi"]),
        ("custom_metrics.py", ["gangplank_train_top_2_accuracy", "gangplank_train_weight_norm",
                               "gangplank_train_batch_loss"]),
    ],
)  # fmt: skip
def test_example_short_mode(script: str, expected: list[str]) -> None:
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--short"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout, (text, result.stdout[-3000:])
