"""Normalization fitted on the training span only, with scikit-learn scalers.

Per symbol, a scaler is fitted on the symbol's training bars. Per asset
class, the per-symbol sufficient statistics are merged (counts, means and
variances combine exactly; minima and maxima too), so that the builder can
still process one symbol at a time. A median/IQR (robust) scaler cannot be
merged that way and is per symbol only. The statistics are saved with the
dataset; :func:`invert` maps normalized values back to prices.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np

from ohlcv.errors import ConfigError

SCALERS = ("none", "standard", "robust", "minmax")


def fit_stats(train: np.ndarray, scaler: str) -> dict[str, list[float]]:
    """Sufficient statistics of one symbol's training span, shape (time, variates); NaN = missing."""
    if scaler == "none":
        return {}
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    train = np.asarray(train, dtype=np.float64)
    counts = np.sum(np.isfinite(train), axis=0).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        if scaler == "standard":
            fitted = StandardScaler().fit(train)
            return {"n": counts.tolist(), "mean": _clean(fitted.mean_, 0.0), "var": _clean(fitted.var_, 0.0)}
        if scaler == "minmax":
            fitted = MinMaxScaler().fit(train)
            return {"n": counts.tolist(), "min": _clean(fitted.data_min_, 0.0), "max": _clean(fitted.data_max_, 1.0)}
        if scaler == "robust":
            fitted = RobustScaler().fit(train)
            return {"n": counts.tolist(), "center": _clean(fitted.center_, 0.0), "scale": _clean(fitted.scale_, 1.0)}
    raise ConfigError(f"unknown scaler '{scaler}'; choose one of {', '.join(SCALERS)}", key="data.normalization.scaler")


def _clean(values: np.ndarray, default: float) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, default).tolist()


def merge_stats(stats: Iterable[dict[str, list[float]]], scaler: str) -> dict[str, list[float]]:
    """Combine per-symbol statistics into one group's (exactly, for standard and minmax)."""
    stats = [s for s in stats if s]
    if scaler == "none" or not stats:
        return {}
    if scaler == "robust":
        raise ConfigError(
            "the robust scaler is fitted per symbol only; set data.normalization.scope=symbol",
            key="data.normalization.scope",
        )
    n = np.array([s["n"] for s in stats], dtype=np.float64)
    total = n.sum(axis=0)
    if scaler == "standard":
        mean = np.array([s["mean"] for s in stats])
        var = np.array([s["var"] for s in stats])
        with np.errstate(invalid="ignore", divide="ignore"):
            grand = np.where(total > 0, (n * mean).sum(axis=0) / total, 0.0)
            within = (n * var).sum(axis=0)
            between = (n * (mean - grand) ** 2).sum(axis=0)
            pooled = np.where(total > 0, (within + between) / total, 0.0)
        return {"n": total.tolist(), "mean": grand.tolist(), "var": pooled.tolist()}
    lo = np.array([s["min"] for s in stats])
    hi = np.array([s["max"] for s in stats])
    has = n > 0
    return {
        "n": total.tolist(),
        "min": np.where(has, lo, np.inf).min(axis=0).tolist(),
        "max": np.where(has, hi, -np.inf).max(axis=0).tolist(),
    }


def center_scale(stats: dict[str, list[float]], scaler: str, variates: int) -> tuple[np.ndarray, np.ndarray]:
    """``(center, scale)`` with ``normalized = (x - center) / scale``; identity for ``none``."""
    if scaler == "none" or not stats:
        return np.zeros(variates), np.ones(variates)
    if scaler == "standard":
        center, scale = np.array(stats["mean"]), np.sqrt(np.array(stats["var"]))
    elif scaler == "minmax":
        center, scale = np.array(stats["min"]), np.array(stats["max"]) - np.array(stats["min"])
    else:
        center, scale = np.array(stats["center"]), np.array(stats["scale"])
    center = np.where(np.isfinite(center), center, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)  # constant variates: as sklearn does
    return center, scale


def apply(values: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Normalize an array of shape (variates, time)."""
    return (values - center[:, None]) / scale[:, None]


def invert(values: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Back to original units, shape (variates, time)."""
    return values * scale[:, None] + center[:, None]
