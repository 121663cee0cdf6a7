"""Evaluation metrics, pinned against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ohlcv.evaluate.metrics import score

CONTEXT = np.array([[10.0, 11.0, 13.0, 12.0], [20.0, 20.0, 22.0, 21.0]])
LABEL = np.array([[12.0, 14.0, 13.0], [21.0, 19.0, 24.0]])


def _point(forecast: np.ndarray, samples: int = 50) -> np.ndarray:
    return np.repeat(forecast[:, None, :], samples, axis=1)


def test_a_perfect_forecast_scores_zero_and_covers_everything():
    result = score(LABEL, _point(LABEL), CONTEXT, season=1)
    assert result["crps"] == 0 and result["mase"] == 0 and result["mae"] == 0 and result["mse"] == 0
    assert result["coverage_50"] == result["coverage_80"] == result["coverage_95"] == 1.0
    assert result["directional_accuracy"] == 1.0


def test_a_constant_offset_gives_the_hand_computed_errors():
    result = score(LABEL, _point(LABEL + 2.0), CONTEXT, season=1)
    assert result["mae"] == pytest.approx(2.0)
    assert result["mse"] == pytest.approx(4.0)
    # seasonal errors (season 1): window 1 mean(|1|, |2|, |-1|) = 4/3; window 2 mean(0, 2, 1) = 1
    assert result["mase"] == pytest.approx(np.mean([2 / (4 / 3), 2 / 1]))
    # CRPS as GluonTS's mean weighted quantile loss: every quantile is off by 2 (over-forecast)
    levels = np.arange(1, 10) / 10
    per_level = [2 * np.sum((1 - q) * 2 * np.ones_like(LABEL)) / np.sum(np.abs(LABEL)) for q in levels]
    assert result["crps"] == pytest.approx(np.mean(per_level))
    assert result["coverage_95"] == 0.0
    # direction relative to the last context value (12 and 21): realised moves [0, +, +] and [0, -, +]
    # (flat steps are not counted); the forecast moves [+, +, +] and [+, 0, +]: 3 of 4 right
    assert result["directional_accuracy"] == pytest.approx(0.75)


def test_interval_coverage_counts_the_share_inside():
    rng = np.random.default_rng(0)
    label = rng.normal(size=(200, 5))
    samples = rng.normal(size=(200, 400, 5))  # a calibrated forecast of the same distribution
    result = score(label, samples, rng.normal(size=(200, 30)), season=1)
    assert result["coverage_50"] == pytest.approx(0.5, abs=0.05)
    assert result["coverage_80"] == pytest.approx(0.8, abs=0.05)
    assert result["coverage_95"] == pytest.approx(0.95, abs=0.03)


def test_windows_with_missing_values_are_left_out():
    label = LABEL.copy()
    label[1, 1] = np.nan
    result = score(label, _point(LABEL + 2.0), CONTEXT, season=1)
    assert result["mae"] == pytest.approx(2.0)
    assert result["mase"] == pytest.approx(2 / (4 / 3))
