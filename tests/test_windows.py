"""Rolling-origin windows never let a forecast window's values into its context; baselines behave."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ohlcv.evaluate.baselines import BASELINES
from ohlcv.evaluate.windows import cut_windows, rolling_origins


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(50, 600), test_share=st.floats(0.05, 0.5), context=st.integers(5, 120),
    horizon=st.integers(1, 48), windows=st.integers(1, 30), stride=st.integers(1, 60),
)
def test_no_forecast_window_value_reaches_its_context(length, test_share, context, horizon, windows, stride):
    test_start = int(length * (1 - test_share))
    origins = rolling_origins(length, test_start, context, horizon, windows, stride)
    series = np.arange(length, dtype=float)[None, :]  # a value is its own bar index
    cut = cut_windows(series, origins, context, horizon)
    assert len(origins) <= windows
    for origin, ctx, lab in zip(origins, cut.context, cut.label):
        assert origin >= test_start  # forecasts are made on the test span only
        assert ctx.max() < origin <= lab.min()  # the context ends before the forecast window starts
        assert ctx.shape[-1] == context and lab.shape[-1] == horizon and lab.max() < length


def test_baselines_on_a_trending_series():
    rng = np.random.default_rng(0)
    context = (np.arange(200, dtype=float) * 0.5 + rng.normal(0, 0.1, 200))[None, :]
    naive = BASELINES["random_walk"](context, 10, 200, rng)
    drift = BASELINES["drift"](context, 10, 200, rng)
    seasonal = BASELINES["seasonal_naive"](context, 10, 200, rng, season=24)
    assert naive.shape == drift.shape == seasonal.shape == (1, 200, 10)
    truth = 0.5 * np.arange(200, 210)
    assert np.abs(np.median(drift[0], axis=0) - truth).mean() < 0.5  # drift follows the trend
    # the random walk is a martingale: it stays at the last value, trend or not (drift is the one that follows)
    assert np.median(naive[0], axis=0)[-1] == pytest.approx(context[0, -1], abs=1.0)
    # seasonal naive: the value one season back
    assert np.median(seasonal[0], axis=0)[0] == pytest.approx(context[0, -24], abs=1.0)


def test_autoets_baseline_where_statsforecast_is_installed():
    pytest.importorskip("statsforecast", reason="statsforecast is installed beside the modern stack only")
    rng = np.random.default_rng(1)
    t = np.arange(24 * 12, dtype=float)
    context = (100 + 0.05 * t + 2 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.2, t.size))[None, :]
    samples = BASELINES["autoets"](context, 24, 300, rng, season=24)
    assert samples.shape == (1, 300, 24)
    future = 100 + 0.05 * np.arange(t.size, t.size + 24) + 2 * np.sin(2 * np.pi * np.arange(t.size, t.size + 24) / 24)
    assert np.abs(np.median(samples[0], axis=0) - future).mean() < 1.0  # it follows trend and season
    low, high = np.quantile(samples[0], [0.1, 0.9], axis=0)
    assert (high > low).all()


def test_return_and_volatility_baselines():
    rng = np.random.default_rng(4)
    returns = (0.02 * rng.standard_t(4, size=(50, 200)))
    zero_t = BASELINES["zero_student_t"](returns, 6, 2000, rng)
    zero_n = BASELINES["zero_normal"](returns, 6, 2000, rng)
    assert np.abs(np.median(zero_t, axis=1)).max() < 0.003 and np.abs(np.median(zero_n, axis=1)).max() < 0.003
    # the Student-t has fatter tails than the normal of the same data
    def kurtosis(x):
        return ((x - x.mean()) ** 4).mean() / x.var() ** 2
    assert kurtosis(zero_t.ravel()) > kurtosis(zero_n.ravel()) + 1
    assert np.std(zero_n) == pytest.approx(np.sqrt(np.mean(returns ** 2)), rel=0.05)
    hist = BASELINES["historical_mean"](returns + 0.5, 3, 4000, rng)
    assert hist.mean() == pytest.approx(0.5 + returns.mean(), abs=0.002)
    vol = 0.01 + 0.002 * np.sin(np.arange(300) / 20)[None, :]
    vol[0, -1] = 0.02  # a jump at the end: the EWMA level barely moves, persistence follows it
    ewma = BASELINES["ewma"](vol, 4, 500, rng)
    persistence = BASELINES["persistence"](vol, 4, 500, rng)
    assert np.median(ewma[0]) < 0.0125 and np.median(persistence[0, :, 0]) == pytest.approx(0.02, abs=0.001)
