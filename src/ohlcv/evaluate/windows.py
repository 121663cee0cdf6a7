"""Rolling-origin windows over the test span, and the baselines that forecast them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    origins: np.ndarray  # index of the first forecast bar of each window
    context: np.ndarray  # (windows, variates, context_length): bars origin-context .. origin-1
    label: np.ndarray  # (windows, variates, horizon): bars origin .. origin+horizon-1


def rolling_origins(length: int, test_start: int, context: int, horizon: int, windows: int, stride: int) -> np.ndarray:
    """Up to ``windows`` origins from the start of the test span, ``stride`` bars apart.

    Each window forecasts bars [origin, origin + horizon) from the ``context``
    bars before the origin: the context may reach back into the training and
    validation spans, never into the window it forecasts.
    """
    first = max(test_start, context)
    origins = np.arange(first, length - horizon + 1, max(1, stride))
    return origins[:windows]


def cut_windows(values: np.ndarray, origins: np.ndarray, context: int, horizon: int) -> Windows:
    """``values`` (variates, time) cut into context/label pairs at each origin."""
    ctx = np.stack([values[:, o - context : o] for o in origins]) if len(origins) else np.empty((0, values.shape[0], context))
    lab = np.stack([values[:, o : o + horizon] for o in origins]) if len(origins) else np.empty((0, values.shape[0], horizon))
    return Windows(origins=origins, context=ctx, label=lab)


def _steps(history: np.ndarray, lag: int) -> np.ndarray:
    diffs = history[lag:] - history[:-lag]
    diffs = diffs[np.isfinite(diffs)]
    return diffs if len(diffs) else np.zeros(1)


def _last(history: np.ndarray) -> float:
    finite = history[np.isfinite(history)]
    return float(finite[-1]) if len(finite) else float("nan")


def naive(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """Random walk: the last value, plus a path of one-bar changes resampled from the context."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        steps = rng.choice(_steps(history, 1), size=(samples, horizon))
        out[i] = _last(history) + np.cumsum(steps, axis=1)
    return out


def drift(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, **_) -> np.ndarray:
    """Random walk with drift: the context's mean change per bar, plus resampled de-meaned changes."""
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        steps = _steps(history, 1)
        slope = float(steps.mean())
        noise = rng.choice(steps - slope, size=(samples, horizon))
        out[i] = _last(history) + slope * np.arange(1, horizon + 1) + np.cumsum(noise, axis=1)
    return out


def seasonal_naive(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, *, season: int, **_) -> np.ndarray:
    """Seasonal random walk: the value one season earlier, plus a resampled seasonal change."""
    if context.shape[1] <= season:
        return naive(context, horizon, samples, rng)
    out = np.empty((len(context), samples, horizon))
    for i, history in enumerate(context):
        filled = history.copy()
        for t in range(1, len(filled)):  # carry forward missing bars for the seasonal lookup
            if not np.isfinite(filled[t]):
                filled[t] = filled[t - 1]
        steps = _steps(history, season)
        path = np.tile(filled, (samples, 1))
        for h in range(horizon):
            step = rng.choice(steps, size=samples)
            path = np.concatenate([path, (path[:, -season] + step)[:, None]], axis=1)
        out[i] = path[:, -horizon:]
    return out


BASELINES = {"naive": naive, "seasonal_naive": seasonal_naive, "drift": drift}


def statsforecast_available() -> bool:
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        return False
    return True


def autoets(context: np.ndarray, horizon: int, samples: int, rng: np.random.Generator, *, season: int, **_) -> np.ndarray:
    """statsforecast's AutoETS per window; samples drawn from a normal matched to its 80% interval.

    Needs ``statsforecast`` (installed beside the modern stack); missing bars in the
    context are carried forward, since ETS cannot skip them.
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
        except Exception:  # noqa: BLE001 - a window ETS cannot fit falls back to the naive forecast
            return_naive = naive(history[None, :], horizon, samples, rng)
            out[i] = return_naive[0]
            continue
        out[i] = mean + np.maximum(sigma, 0.0) * rng.standard_normal((samples, horizon))
    return out


BASELINES["autoets"] = autoets
