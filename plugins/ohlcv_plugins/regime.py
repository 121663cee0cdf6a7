"""Market-regime features: volatility and trend regimes, drawdown, and a learned regime.

Every output is numeric: one-hot columns or probabilities. All are causal:
quantiles and maxima are taken over past bars only, and the learned regime
(a Gaussian mixture on volatility and trend) is fitted on the training span
only and then applied bar by bar.
"""

from __future__ import annotations

import numpy as np

from ohlcv.features import Feature, min_observations
from ohlcv.hookspecs import hookimpl


def _r1():
    import polars as pl

    close = pl.col("close")
    return (close / close.shift(1)).log()


def _vol(window: int):
    return _r1().rolling_std(window_size=window, min_samples=min_observations(window))


def _vol_regime_stages(params):
    """Volatility, then its trailing terciles: each computed once, though the three outputs read them.

    The terciles are taken over the volatility sampled every ``step`` bars
    across the last ``history`` bars (an exact rolling quantile over every bar
    costs O(bars x history)); at bar t they use samples at or before t only.
    """
    import polars as pl

    history, step = int(params["history"]), int(params["step"])
    samples = max(history // step, 3)
    position = pl.int_range(pl.len()) // step
    sampled = pl.col("_vol_regime_vol").gather_every(step)
    terciles = [
        sampled.rolling_quantile(quantile=q, window_size=samples, min_samples=max(samples // 4, 2)).gather(position).alias(name)
        for q, name in ((1 / 3, "_vol_regime_low_q"), (2 / 3, "_vol_regime_high_q"))
    ]
    return [[_vol(int(params["window"])).alias("_vol_regime_vol")], terciles]


def _vol_regime(params):
    """One-hot low / mid / high volatility against the volatility's own trailing terciles."""
    import polars as pl

    vol, low_q, high_q = pl.col("_vol_regime_vol"), pl.col("_vol_regime_low_q"), pl.col("_vol_regime_high_q")
    known = vol.is_not_null() & low_q.is_not_null()
    low = vol <= low_q
    high = vol > high_q
    return [
        pl.when(known).then(low.cast(pl.Float64)).otherwise(None).alias("vol_regime_low"),
        pl.when(known).then((~low & ~high).cast(pl.Float64)).otherwise(None).alias("vol_regime_mid"),
        pl.when(known).then(high.cast(pl.Float64)).otherwise(None).alias("vol_regime_high"),
    ]


def _trend_stages(params):
    import polars as pl

    window, lag = int(params["window"]), int(params["lag"])
    average = pl.col("close").rolling_mean(window_size=window, min_samples=min_observations(window))
    return [[(average / average.shift(lag)).log().alias("_trend_regime_slope")]]


def _trend(params):
    """Slope of the long moving average (log change over ``lag`` bars) and its sign."""
    import polars as pl

    slope = pl.col("_trend_regime_slope")
    return [
        slope.alias("trend_slope"),
        pl.when(slope.is_null()).then(None).otherwise((slope > 0).cast(pl.Float64)).alias("trend_up"),
    ]


def _drawdown(params):
    import polars as pl

    close = pl.col("close")
    return [(close / close.cum_max() - 1).alias("drawdown")]


# -- the learned regime --------------------------------------------------------------------------------
def _gmm_stages(params):
    """The mixture's two inputs, log volatility and the long average's slope, as columns: the builder
    computes them over a whole batch at once instead of twice per symbol (fit and apply)."""
    import polars as pl

    window, lag = int(params["vol_window"]), int(params["trend_lag"])
    trend_window = int(params["trend_window"])
    average = pl.col("close").rolling_mean(window_size=trend_window, min_samples=min_observations(trend_window))
    return [[_vol(window).log().alias("_gmm_regime_log_vol"),
             (average / average.shift(lag)).log().alias("_gmm_regime_slope")]]


def _gmm_inputs(frame, params):
    """(bars, 2) inputs of the mixture: read from the columns the builder computed, or computed here
    (``fit`` called on bare bars)."""
    names = ["_gmm_regime_log_vol", "_gmm_regime_slope"]
    if not set(names) <= set(frame.columns):
        frame = frame.with_columns(_gmm_stages(params)[0])
    return frame.select(names).to_numpy()


_LOG_2PI = float(np.log(2 * np.pi))


def _diag_log_resp(z, weights, means, precisions_chol, zz):
    """E-step of a diagonal Gaussian mixture: (mean log-likelihood, log responsibilities laid out
    (components, points)). ``zz``: ``z * z``.

    A mixture has a handful of components: reducing over them along the first axis is element-wise
    across a few long rows, ~5x faster than reducing short rows of a (points, components) array."""
    precisions = precisions_chol**2
    quadratic = ((means**2 * precisions).sum(axis=1)[:, None] - 2.0 * ((means * precisions) @ z.T)
                 + precisions @ zz.T)
    constant = np.log(precisions_chol).sum(axis=1) + np.log(weights) - 0.5 * z.shape[1] * _LOG_2PI
    weighted = constant[:, None] - 0.5 * quadratic
    top = weighted.max(axis=0)
    norm = np.log(np.exp(weighted - top).sum(axis=0)) + top
    return norm.mean(), weighted - norm


def diag_gmm_em(z, weights, means, precisions, *, tol=1e-3, reg_covar=1e-6, max_iter=100):
    """EM for a Gaussian mixture with diagonal covariances, from a given start: (weights, means, precision
    Cholesky factors, iterations).

    The same steps, stopping rule (change of the mean log-likelihood below ``tol``) and covariance
    floor (``reg_covar``) as scikit-learn's ``GaussianMixture(covariance_type="diag")`` given
    ``weights_init``/``means_init``/``precisions_init``, in a few numpy operations per step instead of
    its per-call validation. Deterministic: no random draw anywhere.
    """
    weights, means = np.asarray(weights, float), np.asarray(means, float)
    precisions_chol = np.sqrt(np.asarray(precisions, float))
    eps, zz = 10 * np.finfo(float).eps, z * z
    bound, steps = -np.inf, 0
    for steps in range(1, max_iter + 1):
        previous = bound
        bound, log_resp = _diag_log_resp(z, weights, means, precisions_chol, zz)
        resp = np.exp(log_resp)  # (components, points)
        nk = resp.sum(axis=1) + eps
        means = (resp @ z) / nk[:, None]
        covariances = (resp @ zz) / nk[:, None] - means**2 + reg_covar
        weights = nk / nk.sum()
        precisions_chol = 1.0 / np.sqrt(covariances)
        if abs(bound - previous) < tol:
            break
    return weights, means, precisions_chol, steps


def _gmm_fit(train, params):
    """Fit a Gaussian mixture on the training span; components ordered from calm to turbulent.

    The start is fixed instead of drawn by k-means (scikit-learn's default): the components' means
    spread over the volatility's quantiles, a flat trend, unit variances, equal weights. EM then
    converges in about ten steps. With diagonal covariances (the default) EM runs in numpy
    (:func:`diag_gmm_em`, the steps of scikit-learn's ``GaussianMixture``); a full covariance is
    fitted by scikit-learn. The fit depends on the symbol's own training bars only, so a dataset
    does not depend on batch size or worker count.
    """
    x = _gmm_inputs(train, params)
    x = x[np.all(np.isfinite(x), axis=1)]
    limit = int(params["max_fit_points"])
    if len(x) > limit:  # evenly spaced, deterministic: EM on every bar of a long history buys nothing
        x = x[np.linspace(0, len(x) - 1, limit).astype(int)]
    k = int(params["components"])
    if len(x) < 10 * k:
        return None
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-12
    z = (x - mean) / std
    covariance = _covariance(params)
    means = np.zeros((k, z.shape[1]))
    means[:, 0] = np.quantile(z[:, 0], (np.arange(k) + 0.5) / k)
    if covariance == "diag":
        weights, means, precisions_chol, _ = diag_gmm_em(z, np.full(k, 1 / k), means, np.ones((k, z.shape[1])))
        model = {"weights": weights, "means": means, "precisions_chol": precisions_chol}
        order = np.argsort(means[:, 0])  # by volatility
    else:
        from sklearn.mixture import GaussianMixture

        model = GaussianMixture(n_components=k, covariance_type=covariance, random_state=int(params["seed"]), n_init=1,
                                init_params="random_from_data", weights_init=np.full(k, 1 / k), means_init=means,
                                precisions_init=np.tile(np.eye(z.shape[1]), (k, 1, 1)))
        model.fit(z)
        order = np.argsort(model.means_[:, 0])
    return {"model": model, "mean": mean, "std": std, "order": order}


def _covariance(params) -> str:
    """``params["covariance"]``, or a PluginError naming the profile key."""
    from ohlcv.errors import PluginError

    covariance = params["covariance"]
    if covariance not in ("diag", "full"):
        raise PluginError(f"feature 'gmm_regime': covariance {covariance!r} is not 'diag' or 'full'; "
                          f"fix features.params.gmm_regime.covariance")
    return covariance


def _gmm_outputs(params) -> list[str]:
    _covariance(params)  # checked with the outputs, before a build starts, not per symbol in the fit
    return [f"regime_p{i}" for i in range(int(params["components"]))]


def _gmm_proba(model, z):
    """(components, points) probabilities."""
    if isinstance(model, dict):  # the numpy diagonal mixture
        return np.exp(_diag_log_resp(z, model["weights"], model["means"], model["precisions_chol"], z * z)[1])
    return model.predict_proba(z).T


def _gmm_frame(frame, params):
    import polars as pl

    k = int(params["components"])
    names = [f"regime_p{i}" for i in range(k)]
    state = params.get("fitted")
    x = _gmm_inputs(frame, params) if state is not None else None
    ok = np.isfinite(x).all(axis=1) if x is not None else None
    if ok is None or not ok.any():  # not fitted (too few training bars), or no bar with both inputs
        return pl.DataFrame({name: pl.Series(name, [None] * frame.height, dtype=pl.Float64) for name in names})
    proba = _gmm_proba(state["model"], (x[ok] - state["mean"]) / state["std"])[state["order"]]
    columns = {}
    for name, values in zip(names, proba):
        column = np.full(frame.height, np.nan)
        column[ok] = values
        columns[name] = pl.Series(name, column, nan_to_null=True)
    return pl.DataFrame(columns)


FEATURES = [
    Feature(name="vol_regime", family="regime", inputs=("close",),
            outputs=["vol_regime_low", "vol_regime_mid", "vol_regime_high"],
            warmup=lambda p: int(p["window"]) + int(p["history"]) // 4 + int(p["step"]) - 1, exprs=_vol_regime,
            intermediates=_vol_regime_stages,
            params={"window": 24, "history": 720, "step": 24},
            description="one-hot low/mid/high realized volatility against its trailing terciles", kinds="oscillator"),
    Feature(name="trend_regime", family="regime", inputs=("close",), outputs=["trend_slope", "trend_up"],
            warmup=lambda p: int(p["window"]) + int(p["lag"]) - 1, exprs=_trend, intermediates=_trend_stages,
            params={"window": 168, "lag": 24},
            description="log slope of the long moving average over `lag` bars, and whether it is rising",
            kinds=["indicator", "oscillator"]),
    Feature(name="drawdown", family="regime", inputs=("close",), outputs=["drawdown"], warmup=0, exprs=_drawdown,
            description="close / running maximum - 1", kinds="oscillator"),
    Feature(name="gmm_regime", family="regime", inputs=("close",),
            outputs=_gmm_outputs,
            warmup=lambda p: max(int(p["vol_window"]), int(p["trend_window"]) + int(p["trend_lag"]) - 1),
            frame=_gmm_frame, fit=_gmm_fit, intermediates=_gmm_stages,
            params={"components": 3, "vol_window": 24, "trend_window": 168, "trend_lag": 24, "seed": 0,
                    "max_fit_points": 2_000, "covariance": "diag"},
            description="regime probabilities of a Gaussian mixture on volatility and trend, fitted on the "
                        "training span, components ordered calm to turbulent", kinds="oscillator"),
]


@hookimpl
def ohlcv_register_features(register):
    register(*FEATURES)
