"""Forecast metrics of one variate over a set of windows, per window and aggregated.

Definitions (docs/evaluate.md gives each with its reference):

- ``crps``: the mean weighted quantile loss over the levels 0.1 … 0.9 — the
  quantity GluonTS calls ``mean_wQuantileLoss`` and most papers report as
  "CRPS": for each level q, 2 Σ pinball_q(y, Q_q) / Σ |y|, averaged over the
  levels. It is scale-free (divided by the size of the target), not the
  integral CRPS in the target's units. A test checks it against ``gluonts.ev``.
- ``mase``, ``msis``: the absolute error of the median and the 95% interval
  score, divided by the window's seasonal error (see :func:`seasonal_errors`).
- ``mae`` (of the median) and ``mse`` (of the mean): in the variate's units,
  so only meaningful per asset or as a ratio.
- ``coverage_50/80/95``: the share of realised values inside the closed
  central interval.
- direction: see :func:`direction`.
- PIT: the forecast's CDF at the realised value (randomised on ties).

Shapes: ``label`` (windows, horizon); ``samples`` (windows, samples, horizon);
``context`` (windows, context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

QUANTILES = (0.025, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.975)
CRPS_QUANTILES = tuple(round(q, 1) for q in np.arange(0.1, 1.0, 0.1))  # GluonTS's usual 0.1 ... 0.9
INTERVALS: Mapping[int, tuple[float, float]] = {50: (0.25, 0.75), 80: (0.1, 0.9), 95: (0.025, 0.975)}
RELIABILITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # nominal central-interval coverages
METRICS = ("crps", "mase", "msis", "mae", "mse", "coverage_50", "coverage_80", "coverage_95", "directional_accuracy")
MSIS_ALPHA = 0.05


def seasonal_errors(context: np.ndarray, season: int) -> np.ndarray:
    """Per window: the mean absolute seasonal difference ``|y_t - y_{t-m}|`` of the context.

    Differences are taken on the bar grid and only where both bars are
    observed, so a lag-``m`` difference never spans a gap (dropping missing
    bars first would). Falls back to lag 1 when no lag-``m`` pair is observed
    (or the context is shorter than a season), and to NaN when none is.
    """
    context = np.asarray(context, dtype=np.float64)
    out = np.full(len(context), np.nan)
    for lag in (season, 1):
        if lag < 1 or context.shape[1] <= lag:
            continue
        diffs = np.abs(context[:, lag:] - context[:, :-lag])
        observed = np.isfinite(diffs)
        counts = observed.sum(axis=1)
        sums = np.where(observed, diffs, 0.0).sum(axis=1)
        fill = np.isnan(out) & (counts > 0)
        out[fill] = sums[fill] / counts[fill]
    return out


def last_observed(context: np.ndarray) -> np.ndarray:
    """Per window: the last finite value of the context (NaN if none)."""
    context = np.asarray(context, dtype=np.float64)
    observed = np.isfinite(context)
    index = context.shape[1] - 1 - np.argmax(observed[:, ::-1], axis=1)
    last = context[np.arange(len(context)), index]
    return np.where(observed.any(axis=1), last, np.nan)


def usable(label: np.ndarray, samples: np.ndarray, context: np.ndarray, season: int) -> np.ndarray:
    """Per window: can this forecaster be scored here (every value finite, a seasonal error > 0)?"""
    scale = seasonal_errors(context, season)
    return (np.isfinite(label).all(axis=1) & np.isfinite(samples).all(axis=(1, 2))
            & np.isfinite(scale) & (scale > 0) & np.isfinite(last_observed(context)))


@dataclass
class WindowScores:
    """What one forecaster scored on each window of one series and variate."""

    qloss: np.ndarray  # (windows, levels, horizon): 2 x pinball loss at CRPS_QUANTILES, in units
    abs_label: np.ndarray  # (windows,): sum |y| over the window
    abs_error: np.ndarray  # (windows, horizon): |y - median|
    sq_error: np.ndarray  # (windows, horizon): (y - mean)^2
    interval_score: np.ndarray  # (windows, horizon): 95% interval score, in units
    inside: dict[int, np.ndarray]  # width -> (windows, horizon) booleans
    reliability: np.ndarray  # (windows, len(RELIABILITY_LEVELS)): share of the window inside each central interval
    pit: np.ndarray  # (windows, horizon)
    scale: np.ndarray  # (windows,): the seasonal error
    hits: np.ndarray  # (windows, horizon): 1 right direction, 0 wrong, 0.5 forecast flat; NaN realised flat
    window_hits: np.ndarray  # (windows,): the same for the move over the whole horizon
    forecast_move: np.ndarray  # (windows,): the median's move over the horizon (for IC)
    realised_move: np.ndarray  # (windows,)

    @property
    def crps_scaled(self) -> np.ndarray:
        """Per window: the mean quantile loss divided by the seasonal error (the DM loss)."""
        return self.qloss.mean(axis=(1, 2)) / self.scale

    @property
    def ae_scaled(self) -> np.ndarray:
        """Per window: the absolute error of the median divided by the seasonal error (the window's MASE)."""
        return self.abs_error.mean(axis=1) / self.scale

    def crps_by_step(self) -> np.ndarray:
        """(windows, horizon): the scaled quantile loss at each forecast step."""
        return self.qloss.mean(axis=1) / self.scale[:, None]

    def take(self, keep: np.ndarray) -> "WindowScores":
        return WindowScores(**{k: ({w: v[keep] for w, v in val.items()} if isinstance(val, dict) else val[keep])
                               for k, val in self.__dict__.items()})


def window_scores(label, samples, context, season: int, *, from_zero: bool, rng: np.random.Generator) -> WindowScores:
    """Score one forecaster on windows where everything is finite (see :func:`usable`)."""
    label = np.asarray(label, dtype=np.float64)
    samples = np.asarray(samples, dtype=np.float64)
    context = np.asarray(context, dtype=np.float64)
    levels = sorted(set(QUANTILES) | set(CRPS_QUANTILES) | {0.5 - r / 2 for r in RELIABILITY_LEVELS}
                    | {0.5 + r / 2 for r in RELIABILITY_LEVELS})
    q = dict(zip(levels, np.quantile(samples, levels, axis=1)))  # level -> (windows, horizon)
    qloss = np.stack([2 * np.abs((label - q[level]) * ((label <= q[level]).astype(float) - level))
                      for level in CRPS_QUANTILES], axis=1)
    median, mean = q[0.5], samples.mean(axis=1)
    low, high = q[MSIS_ALPHA / 2], q[1 - MSIS_ALPHA / 2]
    interval = (high - low + (2 / MSIS_ALPHA) * np.maximum(low - label, 0)
                + (2 / MSIS_ALPHA) * np.maximum(label - high, 0))
    inside = {w: (label >= q[lo]) & (label <= q[hi]) for w, (lo, hi) in INTERVALS.items()}
    reliability = np.stack([((label >= q[0.5 - r / 2]) & (label <= q[0.5 + r / 2])).mean(axis=1)
                            for r in RELIABILITY_LEVELS], axis=1)
    below = (samples < label[:, None, :]).sum(axis=1)
    ties = (samples == label[:, None, :]).sum(axis=1)
    pit = (below + rng.uniform(size=below.shape) * ties) / samples.shape[1]
    hits, forecast_move, realised_move = direction(label, median, context, from_zero=from_zero)
    return WindowScores(window_hits=_hits(forecast_move, realised_move),
        qloss=qloss, abs_label=np.abs(label).sum(axis=1), abs_error=np.abs(label - median),
        sq_error=(label - mean) ** 2, interval_score=interval, inside=inside, reliability=reliability, pit=pit,
        scale=seasonal_errors(context, season), hits=hits, forecast_move=forecast_move, realised_move=realised_move,
    )


def direction(label: np.ndarray, median: np.ndarray, context: np.ndarray, *, from_zero: bool):
    """Per window and step: did the median forecast call the sign of the realised change?

    For a level (a price, a volatility…) the change is measured from the last
    observed value of the context; for a return the return itself is the change,
    so it is measured from zero (measuring a return from the previous return
    would reward forecasting zero: it is right whenever returns mean-revert,
    which independent returns do three times in four). A flat realised change is
    not counted; a flat forecast counts as half right (a coin flip), so an
    always-zero forecast scores 0.5, not 0 or 1.

    Also returns the median's and the realised move over the whole horizon
    (relative to the last value for a level; the sum of returns for a return),
    for the information coefficient.
    """
    if from_zero:
        realised, forecast = label, median
        forecast_move, realised_move = median.sum(axis=1), label.sum(axis=1)
    else:
        last = last_observed(context)[:, None]
        realised, forecast = label - last, median - last
        with np.errstate(divide="ignore", invalid="ignore"):  # relative moves, comparable across assets
            forecast_move, realised_move = forecast[:, -1] / np.abs(last[:, 0]), realised[:, -1] / np.abs(last[:, 0])
    return _hits(forecast, realised), forecast_move, realised_move


def _hits(forecast: np.ndarray, realised: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        hits = np.where(np.sign(forecast) == 0, 0.5, (np.sign(forecast) == np.sign(realised)).astype(float))
        return np.where((np.sign(realised) == 0) | ~np.isfinite(realised), np.nan, hits)


def summarize(scores: WindowScores) -> dict[str, float]:
    """The aggregate metrics of one forecaster on one series and variate (every window pooled)."""
    if not len(scores.scale):
        return empty_summary()
    total = scores.abs_label.sum()
    per_level = scores.qloss.sum(axis=(0, 2)) / total if total > 0 else np.full(len(CRPS_QUANTILES), np.nan)
    result = {
        "crps": float(per_level.mean()),
        "mase": float((scores.abs_error / scores.scale[:, None]).mean()),
        "msis": float((scores.interval_score / scores.scale[:, None]).mean()),
        "mae": float(scores.abs_error.mean()),
        "mse": float(scores.sq_error.mean()),
    }
    for width, inside in scores.inside.items():
        result[f"coverage_{width}"] = float(inside.mean())
    result.update(direction_counts(scores.hits, scores.window_hits))
    return result


def empty_summary() -> dict[str, float]:
    return {name: float("nan") for name in METRICS} | {"direction_n": 0, "direction_ties": 0, "direction_windows": 0,
                                                       "direction_window_accuracy": float("nan"), "direction_p": 1.0}


def direction_counts(hits: np.ndarray, window_hits: np.ndarray) -> dict[str, float]:
    """Hit rate over every forecast step (flat forecasts count one half) and its count; a two-sided
    binomial p-value against 50% on the calls of the move over each window's whole horizon.

    The test counts one call per window, not per step: the steps of one window share
    their origin and are far from independent, so a per-step count would overstate
    the evidence (windows a stride >= horizon apart do not overlap). Flat calls
    are left out of the test.
    """
    from scipy.stats import binomtest

    counted = hits[np.isfinite(hits)]
    calls = window_hits[np.isfinite(window_hits)]
    decided = calls[calls != 0.5]
    return {
        "directional_accuracy": float(counted.mean()) if counted.size else float("nan"),
        "direction_n": int(counted.size),
        "direction_ties": int((counted == 0.5).sum()),
        "direction_windows": int(calls.size),
        "direction_window_accuracy": float(calls.mean()) if calls.size else float("nan"),
        "direction_p": float(binomtest(int((decided == 1.0).sum()), int(decided.size), 0.5).pvalue) if decided.size else 1.0,
    }


def score(label: np.ndarray, samples: np.ndarray, context: np.ndarray, season: int, *, from_zero: bool = False,
          seed: int = 0) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one variate over a set of windows (unusable windows left out)."""
    keep = usable(label, samples, context, season)
    rng = np.random.default_rng(seed)
    if not keep.any():
        return empty_summary()
    return summarize(window_scores(np.asarray(label)[keep], np.asarray(samples)[keep], np.asarray(context)[keep],
                                   season, from_zero=from_zero, rng=rng))
