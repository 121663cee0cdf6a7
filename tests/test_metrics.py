"""Evaluation metrics, pinned against values computed by hand and against GluonTS."""

from __future__ import annotations

import numpy as np
import pytest

from ohlcv.evaluate.metrics import direction, score, seasonal_errors

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
    # (flat steps are not counted); the forecast moves [+, +, +] and [+, 0, +]: 3 right, one flat forecast
    # (half right) of 4
    assert result["directional_accuracy"] == pytest.approx(3.5 / 4)
    assert result["direction_n"] == 4 and result["direction_ties"] == 1


def test_crps_mase_msis_agree_with_gluonts():
    from gluonts.ev.metrics import MASE, MSIS, MeanWeightedSumQuantileLoss

    rng = np.random.default_rng(3)
    context = np.cumsum(rng.normal(size=(6, 40)), axis=1) + 50
    label = context[:, -1:] + np.cumsum(rng.normal(size=(6, 8)), axis=1)
    samples = label[:, None, :] + rng.normal(0, 1.5, size=(6, 300, 8)) + 0.3
    ours = score(label, samples, context, season=1)
    levels = sorted({0.025, 0.975, 0.5, *np.round(np.arange(0.1, 1.0, 0.1), 1)})
    data = {"label": label, "seasonal_error": seasonal_errors(context, 1)[:, None]}
    data.update({str(q): v for q, v in zip(levels, np.quantile(samples, levels, axis=1))})

    def gluonts(metric):
        evaluator = metric(axis=None)
        evaluator.update(data)
        return float(np.asarray(evaluator.get()).reshape(-1)[0])

    assert ours["crps"] == pytest.approx(gluonts(MeanWeightedSumQuantileLoss(quantile_levels=list(np.round(np.arange(0.1, 1.0, 0.1), 1)))))
    assert ours["mase"] == pytest.approx(gluonts(MASE()))
    assert ours["msis"] == pytest.approx(gluonts(MSIS()))


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


def test_the_seasonal_error_never_differences_across_a_gap():
    # lag 2 on [1, 5, nan, 6, 2, 9]: pairs (1, nan) and (nan, 2) are skipped; (5, 6) and (6, 9) count:
    # mean(|6-5|, |9-6|) = 2. Dropping the gap first would pair 5 with 2 and 6 with 9 instead.
    context = np.array([[1.0, 5.0, np.nan, 6.0, 2.0, 9.0]])
    assert seasonal_errors(context, 2)[0] == pytest.approx(2.0)
    # no observed lag-4 pair: falls back to lag 1 on the observed neighbours, mean(|5-1|, |9-2|)
    gappy = np.array([[1.0, 5.0, np.nan, np.nan, np.nan, np.nan, 2.0, 9.0]])
    assert seasonal_errors(gappy, 4)[0] == pytest.approx(5.5)


def test_an_always_zero_return_forecast_is_a_coin_flip_not_three_in_four():
    rng = np.random.default_rng(7)
    returns = rng.normal(0, 0.01, size=(400, 24))
    zero = np.zeros_like(returns)
    context = rng.normal(0, 0.01, size=(400, 48))
    hits, _f, _r = direction(returns, zero, context, from_zero=True)
    assert np.nanmean(hits) == pytest.approx(0.5)
    # measured the old way, from the last context value, zero would look skilful: independent returns
    # move back towards zero from the last one three times in four
    hits_old, _f, _r = direction(returns, zero, context, from_zero=False)
    assert np.nanmean(hits_old) == pytest.approx(0.75, abs=0.02)
    result = score(returns, _point(zero, 20), context, season=1, from_zero=True)
    assert result["directional_accuracy"] == pytest.approx(0.5) and result["direction_p"] == 1.0
    # a forecast with the right sign every time
    assert score(returns, _point(returns, 20), context, season=1, from_zero=True)["direction_p"] < 1e-6
