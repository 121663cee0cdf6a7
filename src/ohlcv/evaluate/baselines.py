"""Probabilistic baselines, chosen by what a variate is (its :class:`~ohlcv.features.Kind`).

Every baseline maps contexts ``(windows, context)`` to samples
``(windows, samples, horizon)`` and sees nothing after the origin. Their
definitions and references are in docs/evaluate.md.

Changes are taken on the bar grid, only between two observed bars, so no
change spans a gap. Paths move by differences (over a context of a few hundred
bars, a price's differences and its returns times the last price barely
differ, and differences stay defined for series that cross zero).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ohlcv.features import Kind

Baseline = Callable[..., np.ndarray]


def _changes(history: np.ndarray, lag: int) -> np.ndarray:
    diffs = history[lag:] - history[:-lag] if len(history) > lag else np.empty(0)
    diffs = diffs[np.isfinite(diffs)]
    return diffs if len(diffs) else np.zeros(1)


def _finite(history: np.ndarray) -> np.ndarray:
    return history[np.isfinite(history)]


def _last(history: np.ndarray) -> float:
    finite = _finite(history)
    return float(finite[-1]) if len(finite) else float("nan")


def random_walk(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """The last value, moved by the context's one-bar changes resampled *without their mean*: a
    martingale (its expected path is the last value), with the context's spread of changes.
    Keeping the mean would make it a drift forecast (``drift``), not the random walk."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        changes = _changes(history, 1)
        steps = rng.choice(changes - changes.mean(), size=(samples, horizon))
        out[i] = _last(history) + np.cumsum(steps, axis=1)
    return out


def drift(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """Random walk with drift: the context's mean change per bar, plus its resampled de-meaned changes."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        steps = _changes(history, 1)
        slope = float(steps.mean())
        path = slope * np.arange(1, horizon + 1) + np.cumsum(rng.choice(steps - slope, size=(samples, horizon)), axis=1)
        out[i] = _last(history) + path
    return out


def seasonal_naive(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, *, season: int,
                   **_) -> np.ndarray:
    """Seasonal random walk: the value one season earlier, plus a resampled seasonal change."""
    if context.shape[1] <= season:
        return random_walk(context, horizon, samples, rng)
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        filled = history.copy()
        for t in range(1, len(filled)):  # carry forward missing bars for the seasonal lookup
            if not np.isfinite(filled[t]):
                filled[t] = filled[t - 1]
        steps = _changes(history, season)
        steps = steps - steps.mean()  # the value one season back is the forecast: no drift on top of it
        path = np.tile(filled, (samples, 1))
        for _h in range(horizon):
            step = rng.choice(steps, size=samples)
            path = np.concatenate([path, (path[:, -season] + step)[:, None]], axis=1)
        out[i] = path[:, -horizon:]
    return out


def zero_normal(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """A zero return with the context's volatility: N(0, σ²), σ the root mean square of the context."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        sigma = float(np.sqrt(np.mean(_finite(history) ** 2))) if len(_finite(history)) else 0.0
        out[i] = sigma * rng.standard_normal((samples, horizon))
    return out


def zero_student_t(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """A zero return with fat tails: Student-t with location 0, degrees of freedom and scale fitted to the context
    by maximum likelihood (degrees of freedom at least 2.5, so the variance exists)."""
    from scipy.stats import t as student_t

    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        finite = _finite(history)
        if len(finite) < 5 or not np.any(finite):
            sigma = float(np.sqrt(np.mean(finite ** 2))) if len(finite) else 0.0
            out[i] = sigma * rng.standard_normal((samples, horizon))
            continue
        df, _, scale = student_t.fit(finite, floc=0.0)
        df = max(float(df), 2.5)
        out[i] = scale * rng.standard_t(df, size=(samples, horizon))
    return out


def historical_mean(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """The context's mean, with its standard deviation: N(mean, sd²) at every step."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        finite = _finite(history)
        mean = float(finite.mean()) if len(finite) else float("nan")
        sd = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
        out[i] = mean + sd * rng.standard_normal((samples, horizon))
    return out


EWMA_LAMBDA = 0.94  # RiskMetrics' decay for daily data; a smoothing constant, not a fitted parameter


def ewma(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """An exponentially weighted moving average of the context (decay 0.94) as a flat forecast, with its
    one-step errors on the context resampled at every step."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        finite = _finite(history)
        if not len(finite):
            out[i] = np.nan
            continue
        level, errors = float(finite[0]), []
        for value in finite[1:]:
            errors.append(value - level)
            level = EWMA_LAMBDA * level + (1 - EWMA_LAMBDA) * value
        errors = np.asarray(errors) if errors else np.zeros(1)
        out[i] = level + rng.choice(errors, size=(samples, horizon))
    return out


def statsforecast_available() -> bool:
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        return False
    return True


def autoets(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, *, season: int, **_) -> np.ndarray:
    """statsforecast's AutoETS per window; samples drawn from a normal matched to its 80% interval.

    Needs ``statsforecast``; missing bars in the context are carried forward,
    since ETS cannot skip them. A window ETS cannot fit gets the random walk.
    """
    from statsforecast.models import AutoETS

    z80 = 1.2815515655446004  # the 0.9 quantile of a standard normal
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        filled = history.astype(np.float64).copy()
        for t in range(1, len(filled)):
            if not np.isfinite(filled[t]):
                filled[t] = filled[t - 1]
        filled = filled[np.isfinite(filled)]
        m = season if len(filled) >= 2 * season else 1
        try:
            forecast = AutoETS(season_length=m).forecast(y=filled, h=horizon, level=[80])
            mean = np.asarray(forecast["mean"], dtype=np.float64)
            sigma = (np.asarray(forecast["hi-80"]) - np.asarray(forecast["lo-80"])) / (2 * z80)
        except Exception:  # noqa: BLE001 - a window ETS cannot fit falls back to the random walk
            out[i] = random_walk(history[None, :], horizon, samples, rng)[0]
            continue
        out[i] = mean + np.maximum(sigma, 0.0) * rng.standard_normal((samples, horizon))
    return out


BASELINES: dict[str, Baseline] = {
    "random_walk": random_walk,
    "persistence": random_walk,  # the random walk of a level that is not a price (volatility, volume, ...)
    "drift": drift,
    "seasonal_naive": seasonal_naive,
    "autoets": autoets,
    "zero_normal": zero_normal,
    "zero_student_t": zero_student_t,
    "historical_mean": historical_mean,
    "ewma": ewma,
}

# Per kind: the baselines scored, the first being "the one to beat" (the yardstick of every ratio and
# of the verdict). A profile replaces a kind's list with evaluate.baselines.<kind>.
DEFAULT_BASELINES: dict[str, list[str]] = {
    Kind.price.value: ["random_walk", "drift", "seasonal_naive", "autoets"],
    Kind.return_.value: ["zero_student_t", "zero_normal", "historical_mean"],
    Kind.volatility.value: ["persistence", "ewma"],
    Kind.volume.value: ["persistence", "seasonal_naive"],
    Kind.oscillator.value: ["persistence", "historical_mean"],
    Kind.indicator.value: ["persistence", "drift", "seasonal_naive"],
}

DESCRIPTIONS = {
    "random_walk": "random walk (last value + resampled de-meaned context changes)",
    "persistence": "persistence (last value + resampled de-meaned context changes)",
    "drift": "random walk with drift",
    "seasonal_naive": "seasonal naive",
    "autoets": "AutoETS (statsforecast)",
    "zero_normal": "zero return, Gaussian with trailing volatility",
    "zero_student_t": "zero return, Student-t fitted on the trailing context",
    "historical_mean": "historical mean and standard deviation",
    "ewma": "EWMA level (decay 0.94) + resampled one-step errors",
}

SHORT_NAMES = {
    "random_walk": "random walk", "persistence": "persistence", "drift": "drift", "seasonal_naive": "seasonal naive",
    "autoets": "AutoETS", "zero_normal": "zero return (Gaussian)", "zero_student_t": "zero return (Student-t)",
    "historical_mean": "historical mean", "ewma": "EWMA",
}


def check_baselines(cfg) -> None:
    """Refuse, before any model is loaded, a profile naming a baseline that does not exist."""
    from ohlcv.errors import ConfigError

    for kind, names in cfg.evaluate.baselines.items():
        unknown = sorted(set(names) - set(BASELINES))
        if unknown or not names:
            raise ConfigError(f"unknown baselines {unknown or '(empty list)'}; choose from {sorted(BASELINES)}",
                              key=f"evaluate.baselines.{kind}")
