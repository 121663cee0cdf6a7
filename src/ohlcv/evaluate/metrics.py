"""Forecast metrics over a set of windows of one variate.

CRPS (as GluonTS's mean weighted sum quantile loss), MASE, MSIS, MAE and MSE
come from ``gluonts.ev``. Two things GluonTS does not provide are computed
here: the coverage of a central interval (the share of realised values inside
the closed interval between the lower and upper quantile; GluonTS's
``Coverage`` is one-sided) and directional accuracy (does the median forecast
move the same way as the realised path, relative to the last observed value).

Shapes: ``label`` (windows, horizon); ``samples`` (windows, samples, horizon);
``context`` (windows, context) for the seasonal error and the last value.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

QUANTILES = (0.025, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.975)
CRPS_QUANTILES = tuple(round(q, 1) for q in np.arange(0.1, 1.0, 0.1))  # GluonTS's usual 0.1 ... 0.9
INTERVALS: Mapping[int, tuple[float, float]] = {50: (0.25, 0.75), 80: (0.1, 0.9), 95: (0.025, 0.975)}
METRICS = ("crps", "mase", "msis", "mae", "mse", "coverage_50", "coverage_80", "coverage_95", "directional_accuracy")


def seasonal_errors(context: np.ndarray, season: int) -> np.ndarray:
    """Per window: the in-sample mean absolute seasonal difference (GluonTS's ``seasonal_error``)."""
    from gluonts.ev.ts_stats import seasonal_error

    out = np.empty(len(context))
    for i, history in enumerate(context):
        history = history[np.isfinite(history)]
        m = season if len(history) > season else 1
        out[i] = float(np.asarray(seasonal_error(history, seasonality=m, time_axis=0)).reshape(-1)[0]) if len(history) > 1 else np.nan
    return out


def _evaluate(metric, data) -> float:
    evaluator = metric(axis=None)
    evaluator.update(data)
    return float(np.asarray(evaluator.get()).reshape(-1)[0])


def score(label: np.ndarray, samples: np.ndarray, context: np.ndarray, season: int) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one variate over a set of windows."""
    from gluonts.ev.metrics import MAE, MASE, MSE, MSIS, MeanWeightedSumQuantileLoss

    label = np.asarray(label, dtype=np.float64)
    samples = np.asarray(samples, dtype=np.float64)
    context = np.asarray(context, dtype=np.float64)
    keep = np.isfinite(label).all(axis=1) & np.isfinite(samples).all(axis=(1, 2))
    if not keep.any():
        return {name: float("nan") for name in METRICS}
    label, samples, context = label[keep], samples[keep], context[keep]
    levels = sorted(set(QUANTILES) | set(CRPS_QUANTILES))
    quantiles = np.quantile(samples, levels, axis=1)  # (levels, windows, horizon)
    data: dict[str, np.ndarray] = {
        "label": label,
        "mean": samples.mean(axis=1),
        "seasonal_error": seasonal_errors(context, season)[:, None],
    }
    for level, values in zip(levels, quantiles):
        data[str(level)] = values
    result = {
        "crps": _evaluate(MeanWeightedSumQuantileLoss(quantile_levels=list(CRPS_QUANTILES)), data),
        "mase": _evaluate(MASE(), data),
        "msis": _evaluate(MSIS(), data),
        "mae": _evaluate(MAE(), data),
        "mse": _evaluate(MSE(), data),
    }
    for width, (low, high) in INTERVALS.items():
        inside = (label >= data[str(low)]) & (label <= data[str(high)])
        result[f"coverage_{width}"] = float(inside.mean())
    last = context[:, -1][:, None]
    moved = np.sign(label - last)
    predicted = np.sign(data["0.5"] - last)
    counted = moved != 0
    result["directional_accuracy"] = float((moved == predicted)[counted].mean()) if counted.any() else float("nan")
    return result
