"""Split conformal recalibration of a forecaster's intervals, per horizon step.

Fitted on windows of the validation span, applied to the test windows; the
recalibrated forecaster is reported next to the raw one, never instead of it.

For each central interval (50/80/95%) and horizon step, the conformity score of
a validation window is how far the realised value falls outside the model's
interval, in units of the window's seasonal error (so assets of different
scales pool): ``max(lower - y, y - upper) / scale`` — negative when inside.
The interval is widened (or narrowed, if the score is negative) by the
``ceil((n + 1)(1 - a)) / n`` empirical quantile of the scores, the
conformalized quantile regression of Romano, Patterson and Candès (2019)
in its split form (references in docs/evaluate.md). To keep a full predictive
distribution, every sample is shifted by an amount interpolated linearly in its
rank between the three intervals' shifts (0 at the median), then the samples of
each step are sorted again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ohlcv.evaluate.metrics import INTERVALS


@dataclass(frozen=True)
class Conformal:
    shifts: dict[int, np.ndarray]  # interval width -> (horizon,) widening in seasonal-error units
    windows: int  # validation windows the shifts were fitted on

    def to_dict(self) -> dict:
        return {"windows": self.windows, "shift_by_step": {str(w): s.tolist() for w, s in self.shifts.items()}}


def fit_conformal(label: np.ndarray, samples: np.ndarray, scale: np.ndarray) -> Conformal:
    """Shifts from validation windows: ``label`` (windows, horizon), ``samples`` (windows, samples, horizon)."""
    label = np.asarray(label, dtype=np.float64)
    n = len(label)
    if n == 0:
        raise ValueError("no validation window to calibrate on")
    shifts = {}
    for width, (lo, hi) in INTERVALS.items():
        lower, upper = np.quantile(samples, [lo, hi], axis=1)
        scores = np.maximum(lower - label, label - upper) / np.asarray(scale)[:, None]
        rank = math.ceil((n + 1) * width / 100)
        ordered = np.sort(scores, axis=0)
        shifts[width] = ordered[min(rank, n) - 1]
    return Conformal(shifts=shifts, windows=n)


def apply_conformal(samples: np.ndarray, scale: np.ndarray, conformal: Conformal) -> np.ndarray:
    """``samples`` (windows, samples, horizon) with each step's quantiles moved by the fitted shifts."""
    samples = np.sort(np.asarray(samples, dtype=np.float64), axis=1)
    count = samples.shape[1]
    rank = (np.arange(count) + 0.5) / count  # the quantile level of each sorted sample
    points = sorted([(0.5, None)] + [(lo, (w, -1)) for w, (lo, hi) in INTERVALS.items()]
                    + [(hi, (w, 1)) for w, (lo, hi) in INTERVALS.items()])
    levels = np.array([p for p, _ in points])
    out = np.empty_like(samples)
    for step in range(samples.shape[2]):
        values = np.array([0.0 if ref is None else ref[1] * conformal.shifts[ref[0]][step] for _, ref in points])
        shift = np.interp(rank, levels, values)  # constant beyond the outermost levels
        moved = samples[:, :, step] + shift[None, :] * np.asarray(scale)[:, None]
        # narrowing may carry a lower sample past the median (or an upper one below it): clip at the median,
        # so the recalibrated forecast keeps the raw median (and its point metrics and direction)
        median = np.median(samples[:, :, step], axis=1, keepdims=True)
        below = rank[None, :] < 0.5
        out[:, :, step] = np.where(below, np.minimum(moved, median), np.maximum(moved, median))
    return np.sort(out, axis=1)
