"""Significance, calibration and cross-sectional skill, on synthetic data where the truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from ohlcv.evaluate.baselines import BASELINES, DEFAULT_BASELINES
from ohlcv.evaluate.calibrate import apply_conformal, fit_conformal
from ohlcv.evaluate.metrics import seasonal_errors, usable, window_scores
from ohlcv.evaluate.run import seed_for, summarize_scores
from ohlcv.evaluate.stats import diebold_mariano, information_coefficient

CONTEXT, HORIZON, SAMPLES = 96, 12, 200


def test_dm_rejects_at_its_nominal_rate_under_the_null_and_finds_a_real_difference():
    rng = np.random.default_rng(0)
    null = [diebold_mariano(rng.normal(size=30)).p_value < 0.05 for _ in range(1000)]
    assert 0.03 <= np.mean(null) <= 0.07
    # overlapping windows: MA(2) differences, tested with horizon 3
    overlapping = []
    for _ in range(1000):
        e = rng.normal(size=42)
        overlapping.append(diebold_mariano(e[2:] + e[1:-1] + e[:-2], horizon=3).p_value < 0.05)
    assert np.mean(overlapping) <= 0.10
    assert np.mean([diebold_mariano(rng.normal(-0.8, 1, size=30)).p_value < 0.05 for _ in range(200)]) > 0.9
    better = diebold_mariano(rng.normal(-0.8, 1, size=30))
    assert better.statistic < 0 and better.mean_difference < 0  # negative: the first forecaster's loss is lower
    assert diebold_mariano(np.zeros(10)).p_value == 1.0


def _random_walk_markets(assets: int, origins: int, seed: int):
    """Log-price random walks with i.i.d. Student-t returns: (item_id, origin times, price windows, return windows)."""
    rng = np.random.default_rng(seed)
    length = CONTEXT + 1 + origins * HORIZON
    markets = []
    for a in range(assets):
        returns = 0.01 * rng.standard_t(5, size=length)
        prices = 100 * np.exp(np.cumsum(returns))
        starts = CONTEXT + 1 + np.arange(origins) * HORIZON
        cut = lambda x, lo, hi: np.stack([x[s + lo : s + hi] for s in starts])  # noqa: E731
        markets.append((f"a{a}", [f"t{i:03d}" for i in range(origins)],
                        (cut(prices, -CONTEXT, 0), cut(prices, 0, HORIZON)), (cut(returns, -CONTEXT, 0), cut(returns, 0, HORIZON))))
    return markets


def _store(markets, variate: str, kind: str, forecasters: dict, which: int):
    store = {}
    for item, times, *series in markets:
        ctx, label = series[which]
        candidates = {name: fn(ctx, HORIZON, SAMPLES, np.random.default_rng(seed_for(0, name, item, variate)), season=24)
                      for name, fn in forecasters.items()}
        keep = np.logical_and.reduce([usable(label, s, ctx, 24) for s in candidates.values()])
        for name, samples in candidates.items():
            scores = window_scores(label[keep], samples[keep], ctx[keep], 24, from_zero=kind == "return",
                                   rng=np.random.default_rng(1))
            store.setdefault(name, {}).setdefault(variate, []).append((item, [t for t, k in zip(times, keep) if k], scores))
    return store


def test_on_random_walk_prices_nothing_that_ignores_the_future_beats_the_random_walk():
    markets = _random_walk_markets(assets=8, origins=30, seed=11)
    names = ["random_walk", "drift", "seasonal_naive"]
    store = _store(markets, "close", "price", {n: BASELINES[n] for n in names}, 0)
    info = {"close": {"kind": "price", "baselines": names, "yardstick": "random_walk"}}
    result = summarize_scores(store, info, learned=[], horizon=HORIZON, stride=HORIZON)
    for name in ("drift", "seasonal_naive"):
        for loss in ("crps", "abs_error"):
            test = result["significance"][name]["close"]["random_walk"][loss]
            assert test["n"] == 30
            assert not (test["p_value"] < 0.05 and test["statistic"] < 0), (name, loss, test)
    assert result["relative"]["random_walk"]["close"]["crps"] == pytest.approx(1.0)


def test_for_returns_the_zero_return_is_the_one_to_beat_and_a_random_walk_of_the_return_loses_to_it():
    assert DEFAULT_BASELINES["return"][0] == "zero_student_t"
    markets = _random_walk_markets(assets=8, origins=30, seed=12)
    forecasters = {"zero_student_t": BASELINES["zero_student_t"], "zero_normal": BASELINES["zero_normal"],
                   "historical_mean": BASELINES["historical_mean"],
                   "random_walk_of_the_return": BASELINES["random_walk"]}  # what the old `naive` did to returns
    store = _store(markets, "log_return_1", "return", forecasters, 1)
    info = {"log_return_1": {"kind": "return", "baselines": list(forecasters), "yardstick": "zero_student_t"}}
    result = summarize_scores(store, info, learned=["random_walk_of_the_return"], horizon=HORIZON, stride=HORIZON)
    test = result["significance"]["random_walk_of_the_return"]["log_return_1"]["zero_student_t"]["crps"]
    assert test["statistic"] > 0 and test["p_value"] < 0.01  # significantly worse than the zero return
    for name in ("zero_normal", "historical_mean"):
        test = result["significance"][name]["log_return_1"]["zero_student_t"]["crps"]
        assert not (test["p_value"] < 0.05 and test["statistic"] < 0)
    # the zero-return baselines' medians are flat or random in sign: a coin flip on direction
    assert result["aggregate"]["zero_normal"]["log_return_1"]["directional_accuracy"] == pytest.approx(0.5, abs=0.03)


def _gaussian_windows(rng, windows: int):
    level = rng.normal(100, 5, size=(windows, 1))
    context = level + np.cumsum(rng.normal(0, 1, size=(windows, CONTEXT)), axis=1)
    label = context[:, -1:] + rng.normal(0, 2, size=(windows, HORIZON))
    return context, label


def _overconfident(context, rng):
    """Knows the true distribution, N(last, 2²), but says N(last, 1²): intervals half as wide."""
    return context[:, -1:, None].transpose(0, 2, 1) + rng.normal(0, 1, size=(len(context), SAMPLES, HORIZON))


def test_an_overconfident_model_is_flagged_and_conformal_recalibration_fixes_its_coverage():
    rng = np.random.default_rng(5)
    val_ctx, val_label = _gaussian_windows(rng, 300)
    test_ctx, test_label = _gaussian_windows(rng, 300)
    raw = _overconfident(test_ctx, rng)
    conformal = fit_conformal(val_label, _overconfident(val_ctx, rng), seasonal_errors(val_ctx, 1))
    fixed = apply_conformal(raw, seasonal_errors(test_ctx, 1), conformal)
    store = {}
    for name, samples in (("model", raw), ("model+conformal", fixed)):
        scores = window_scores(test_label, samples, test_ctx, 1, from_zero=False, rng=np.random.default_rng(0))
        store[name] = {"close": [("a", [f"t{i}" for i in range(300)], scores)]}
    info = {"close": {"kind": "price", "baselines": ["model"], "yardstick": "model"}}
    result = summarize_scores(store, info, learned=["model", "model+conformal"], horizon=HORIZON, stride=HORIZON)
    raw_cal, fixed_cal = result["calibration"]["model"]["close"], result["calibration"]["model+conformal"]["close"]
    assert result["aggregate"]["model"]["close"]["coverage_80"] < 0.6
    assert any(f.startswith("coverage") and "too narrow" in f for f in raw_cal["flags"])
    assert any(f.startswith("PIT U-shaped") for f in raw_cal["flags"])
    assert result["aggregate"]["model+conformal"]["close"]["coverage_80"] == pytest.approx(0.8, abs=0.05)
    assert fixed_cal["flags"] == []


def test_information_coefficient_needs_five_assets_and_finds_a_real_signal():
    rng = np.random.default_rng(2)
    keys = [[f"t{i}" for i in range(40)] for _ in range(6)]
    realised = [rng.normal(size=40) for _ in range(6)]
    forecast = [r + rng.normal(0, 1, size=40) for r in realised]  # correlated ~0.7 with the outcome
    summary = information_coefficient(keys, forecast, realised)
    assert summary["origins"] == 40 and summary["ic"]["mean"] > 0.4 and summary["ic"]["t"] > 5
    assert summary["rank_ic"]["mean"] > 0.3
    noise = information_coefficient(keys, [rng.normal(size=40) for _ in range(6)], realised)
    assert abs(noise["ic"]["t"]) < 3
    assert information_coefficient(keys[:4], forecast[:4], realised[:4]) is None


def test_the_random_walk_is_a_martingale_and_drift_is_not_the_same_forecast():
    """On a trending context the random walk stays at the last value; drift follows the trend."""
    from ohlcv.evaluate.baselines import drift, random_walk

    rng = np.random.default_rng(3)
    context = (100 + 0.5 * np.arange(200) + rng.normal(0, 1, 200))[None, :]  # +0.5 per bar
    walk = random_walk(context, 24, 2000, np.random.default_rng(1))[0]
    trend = drift(context, 24, 2000, np.random.default_rng(1))[0]
    last = context[0, -1]
    assert abs(np.median(walk[:, -1]) - last) < 1.0  # no drift: centred on the last value
    assert abs(np.median(trend[:, -1]) - (last + 0.5 * 24)) < 1.5  # the context's slope, 24 bars on
    assert not np.allclose(walk, trend)
