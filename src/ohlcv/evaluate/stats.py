"""Significance of forecast differences and cross-sectional skill.

- :func:`diebold_mariano`: is the mean loss difference of two forecasters zero?
  The Diebold–Mariano statistic with the Harvey–Leybourne–Newbold small-sample
  correction and Student-t reference distribution (references in docs/evaluate.md).
- :func:`information_coefficient`: Pearson and Spearman correlation across
  assets of forecast and realised moves at each origin, summarised over origins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DMResult:
    statistic: float  # HLN-corrected; negative: the first forecaster has the lower loss
    p_value: float  # two-sided, Student-t with n - 1 degrees of freedom
    n: int  # loss differences used (origins)
    mean_difference: float  # mean of loss(first) - loss(second)

    def to_dict(self) -> dict:
        return asdict(self)


def diebold_mariano(differences: np.ndarray, horizon: int = 1) -> DMResult:
    """DM test of mean zero for a series of loss differences ``d_t = L1_t - L2_t`` in time order.

    ``horizon`` is how many consecutive differences may be correlated by
    overlapping forecast windows (1 when windows do not overlap): the variance
    of the mean uses the autocovariances up to lag ``horizon - 1`` (rectangular
    kernel, as Diebold and Mariano propose), falling back to lag 0 if that
    estimate is not positive. The statistic is scaled by Harvey, Leybourne and
    Newbold's factor ``sqrt((n + 1 - 2h + h(h - 1)/n) / n)`` and compared with a
    t distribution with n - 1 degrees of freedom.
    """
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < 3:
        return DMResult(float("nan"), float("nan"), n, float(d.mean()) if n else float("nan"))
    mean = float(d.mean())
    h = max(1, min(int(horizon), n - 1))
    centred = d - mean
    gamma = [float(centred[k:] @ centred[: n - k]) / n for k in range(h)]
    variance = (gamma[0] + 2 * sum(gamma[1:])) / n
    if variance <= 0:
        variance = gamma[0] / n
    if variance <= 0:  # identical losses at every origin
        return DMResult(0.0 if mean == 0 else math.copysign(math.inf, mean), 1.0 if mean == 0 else 0.0, n, mean)
    dm = mean / math.sqrt(variance)
    correction = math.sqrt(max((n + 1 - 2 * h + h * (h - 1) / n) / n, 0.0))
    statistic = dm * correction
    return DMResult(statistic, float(2 * student_t.sf(abs(statistic), n - 1)), n, mean)


def by_origin(keys: list, values: list[np.ndarray]) -> tuple[list, np.ndarray]:
    """The origins in time order, and the mean of ``values`` over the series sharing each
    (``keys``: per series, its origins' numbers from the common test start — series on other calendars
    share them —; ``values``: per series, one value per origin)."""
    sums: dict = {}
    for origin_keys, origin_values in zip(keys, values):
        for key, value in zip(origin_keys, origin_values):
            if np.isfinite(value):
                total, count = sums.get(key, (0.0, 0))
                sums[key] = (total + float(value), count + 1)
    ordered = sorted(sums)
    return ordered, np.array([sums[k][0] / sums[k][1] for k in ordered])


MIN_ASSETS_FOR_IC = 5


def information_coefficient(keys: list, forecast: list[np.ndarray], realised: list[np.ndarray],
                            min_assets: int = MIN_ASSETS_FOR_IC) -> dict | None:
    """IC (Pearson) and rank IC (Spearman) across assets at every origin shared by ``min_assets`` or more.

    Returns mean, standard deviation and t-statistic (mean / (sd / sqrt(origins)))
    of each over those origins, or None when no origin has enough assets.
    """
    from scipy.stats import pearsonr, spearmanr

    groups: dict = {}
    for origin_keys, f, r in zip(keys, forecast, realised):
        for key, fv, rv in zip(origin_keys, f, r):
            if np.isfinite(fv) and np.isfinite(rv):
                groups.setdefault(key, []).append((fv, rv))
    ics, rank_ics = [], []
    for key in sorted(groups):
        pairs = np.array(groups[key])
        if len(pairs) < min_assets or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
            continue
        ics.append(float(pearsonr(pairs[:, 0], pairs[:, 1])[0]))
        rank_ics.append(float(spearmanr(pairs[:, 0], pairs[:, 1])[0]))
    if not ics:
        return None

    def summary(values):
        values = np.asarray(values)
        sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        t = float(values.mean() / (sd / math.sqrt(len(values)))) if len(values) > 1 and sd > 0 else float("nan")
        return {"mean": float(values.mean()), "sd": sd, "t": t}

    return {"origins": len(ics), "ic": summary(ics), "rank_ic": summary(rank_ics)}
