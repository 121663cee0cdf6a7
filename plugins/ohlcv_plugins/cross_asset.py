"""Cross-asset features: an asset against the rest of its asset class.

All of them rest on one reference series per asset class, built by the
builder's first pass over the lake: at every bar, the count, sum and sum of
squares of the one-bar log returns of the class's symbols (``ref_r1__n``,
``ref_r1__sum``, ``ref_r1__sumsq``). Memory is bounded by that series — one
row per asset class and bar — not by the lake.

At bar t everything uses returns of bar t and earlier; other assets' bar t
is known at the close of bar t, as is the asset's own. The one-bar features
(class_return, relative_strength, class_dispersion) are ``bounded``: the builder
evaluates them over a whole batch at once. class_beta's rolling means are
evaluated per series, so that its values do not depend on the batch (a rolling
sum over the whole column carries rounding from one series into the next).
"""

from __future__ import annotations

from ohlcv.features import Feature, min_observations
from ohlcv.hookspecs import hookimpl


def _r1():
    import polars as pl

    close = pl.col("close")
    return (close / close.shift(1)).log().alias("r1")


def _reference(params):
    return [_r1()]


def _own_stage(name: str):
    """The asset's one-bar log return as column ``_<name>_r1``: computed once, read several times
    (within a per-series window Polars evaluates a repeated sub-expression once per use)."""
    return [_r1().alias(f"_{name}_r1")]


def _leave_one_out(own):
    """(class mean return without this asset, class count without it), from the asset's return ``own``."""
    import polars as pl

    has_own = own.is_not_null() & own.is_not_nan()
    n = pl.col("ref_r1__n") - has_own.cast(pl.Float64)
    total = pl.col("ref_r1__sum") - pl.when(has_own).then(own).otherwise(0.0)
    return pl.when(n > 0).then(total / n).otherwise(None), n


def _own_known(own, value):
    """Missing wherever the asset's own return is missing (its first bar, long gaps)."""
    import polars as pl

    return pl.when(own.is_null() | own.is_nan()).then(None).otherwise(value)


def _class_return_stages(params):
    import polars as pl

    own = pl.col("_class_return_r1")
    return [_own_stage("class_return"), [_leave_one_out(own)[0].alias("_class_return_mean")]]


def _class_return(params):
    import polars as pl

    return [_own_known(pl.col("_class_return_r1"), pl.col("_class_return_mean")).alias("class_return")]


def _beta_corr_stages(params):
    """The two return series, then their five rolling moments: each materialised once, though the
    beta and the correlation read them several times."""
    import polars as pl

    w = int(params["window"])
    own, market = pl.col("_class_beta_own"), pl.col("_class_beta_market")
    # one mask for every moment: a bar counts only where both returns are known
    both = own.is_not_null() & market.is_not_null()
    x, y = pl.when(both).then(own), pl.when(both).then(market)
    m = min_observations(w)
    moments = {"xy": x * y, "x": x, "y": y, "xx": x * x, "yy": y * y}
    return [
        [_r1().alias("_class_beta_own")],
        [_leave_one_out(pl.col("_class_beta_own"))[0].alias("_class_beta_market")],
        [value.rolling_mean(window_size=w, min_samples=m).alias(f"_class_beta_{name}")
         for name, value in moments.items()],
    ]


def _beta_corr(params):
    """Rolling beta and correlation of the asset's return to the leave-one-out class return."""
    import polars as pl

    w = int(params["window"])
    mean = {name: pl.col(f"_class_beta_{name}") for name in ("xy", "x", "y", "xx", "yy")}
    cov = mean["xy"] - mean["x"] * mean["y"]
    var_x = mean["xx"] - mean["x"] ** 2
    var_y = mean["yy"] - mean["y"] ** 2
    beta = pl.when(var_y > 1e-18).then(cov / var_y).otherwise(None)
    corr = pl.when((var_x > 1e-18) & (var_y > 1e-18)).then(cov / (var_x * var_y).sqrt()).otherwise(None)
    return [beta.alias(f"class_beta_{w}"), corr.clip(-1, 1).alias(f"class_corr_{w}")]


def _dispersion_expr():
    import polars as pl

    n = pl.col("ref_r1__n")
    mean = pl.col("ref_r1__sum") / n
    var = pl.col("ref_r1__sumsq") / n - mean**2
    return pl.when(n > 1).then(var.clip(lower_bound=0).sqrt()).otherwise(None)


def _dispersion_stages(params):
    return [_own_stage("class_dispersion")]


def _dispersion(params):
    import polars as pl

    return [_own_known(pl.col("_class_dispersion_r1"), _dispersion_expr()).alias("class_dispersion")]


def _relative_strength_stages(params):
    import polars as pl

    own = pl.col("_relative_strength_r1")
    mean, n = _leave_one_out(own)
    return [_own_stage("relative_strength"),
            [mean.alias("_relative_strength_mean"), n.alias("_relative_strength_n"),
             _dispersion_expr().alias("_relative_strength_spread")]]


def _relative_strength(params):
    """The asset's return standardised within its class at each bar, mapped to (0, 1).

    A streaming stand-in for the cross-sectional rank: (r - leave-one-out mean) /
    class dispersion, through a logistic approximation of the normal CDF.
    """
    import polars as pl

    own, mean = pl.col("_relative_strength_r1"), pl.col("_relative_strength_mean")
    n, spread = pl.col("_relative_strength_n"), pl.col("_relative_strength_spread")
    value = 1 / (1 + (-1.702 * (own - mean) / spread).exp())
    return [pl.when((n > 0) & (spread > 1e-12)).then(value).otherwise(None).alias("relative_strength")]


FEATURES = [
    Feature(name="class_return", family="cross_asset", inputs=("close",), outputs=["class_return"], warmup=1,
            exprs=_class_return, intermediates=_class_return_stages, reference=_reference, bounded=True,
            description="equal-weighted one-bar log return of the asset's class, leaving the asset out", kinds="return"),
    Feature(name="class_beta", family="cross_asset", inputs=("close",),
            outputs=lambda p: [f"class_beta_{int(p['window'])}", f"class_corr_{int(p['window'])}"],
            warmup=lambda p: int(p["window"]), exprs=_beta_corr, intermediates=_beta_corr_stages,
            reference=_reference, params={"window": 168},
            description="rolling beta and correlation of the asset's returns to its class (leave-one-out)"),
    Feature(name="relative_strength", family="cross_asset", inputs=("close",), outputs=["relative_strength"],
            warmup=1, exprs=_relative_strength, intermediates=_relative_strength_stages, reference=_reference,
            bounded=True,
            description="the asset's return standardised within its class, 0 (weakest) to 1 (strongest)",
            kinds="oscillator"),
    Feature(name="class_dispersion", family="cross_asset", inputs=("close",), outputs=["class_dispersion"],
            warmup=1, exprs=_dispersion, intermediates=_dispersion_stages, reference=_reference, bounded=True,
            description="cross-sectional standard deviation of one-bar log returns in the class", kinds="volatility"),
]


@hookimpl
def ohlcv_register_features(register):
    register(*FEATURES)
