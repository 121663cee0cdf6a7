# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. A feature plugin that passes the look-ahead check
#
# A feature is a column computed from the bars — an indicator, a relation to
# other assets, a regime. Features come from plugins; ohlcv's own are plugins
# of the same kind. The one rule no feature may break: **its value at bar t may
# use only bars at or before t.** A feature that peeks at the future makes a
# backtest look better than any live trading will be.
#
# This notebook writes a feature, checks it with the same check
# `ohlcv plugins check` runs on every installed feature, then breaks the rule
# on purpose to see the check catch it.

# %%
import polars as pl

from ohlcv.features import Feature
from ohlcv.lookahead import check_bounded, check_feature, check_warmup

# %% [markdown]
# ## The feature
#
# How far the close sits from its trailing mean, in trailing standard
# deviations (a z-score over `window` bars). It is written as Polars
# expressions: the builder composes every feature's expressions into one query
# per batch of symbols.

# %%
def close_z(params):
    window = int(params["window"])
    mean = pl.col("close").rolling_mean(window_size=window)
    std = pl.col("close").rolling_std(window_size=window)
    return [((pl.col("close") - mean) / std).alias(f"close_z_{window}")]


CLOSE_Z = Feature(
    name="close_z",
    family="indicator",
    inputs=("close",),
    outputs=lambda params: [f"close_z_{int(params['window'])}"],
    warmup=lambda params: int(params["window"]) - 1,  # the first window - 1 bars have no value
    exprs=close_z,
    params={"window": 24},
    description="distance of the close from its trailing mean, in trailing standard deviations",
    kinds="oscillator",
)

# %% [markdown]
# ## The checks
#
# `check_feature` computes the feature on a synthetic asset class (with a
# weekend and a gap in it), then for several cut points t replaces every bar
# after t with random values, recomputes, and requires every value at or
# before t to be unchanged. `check_warmup` requires missing values, not zeros,
# inside the declared warm-up; `check_bounded` matters only for a feature
# declared `bounded` (point-wise or shift-only, evaluated over a whole batch
# at once); a rolling window like this one is evaluated per series, so it
# leaves `bounded` off and that check has nothing to do.

# %%
result = check_feature(CLOSE_Z)
print("look-ahead:", "pass" if result.ok else "FAIL", "-", result.detail)
print("warm-up:", check_warmup(CLOSE_Z) or "pass")
print("bounded:", check_bounded(CLOSE_Z) or "pass")
assert result.ok and check_warmup(CLOSE_Z) is None and check_bounded(CLOSE_Z) is None

# %% [markdown]
# ## The same feature, peeking
#
# A centred window is a common slip (it is the default of many smoothing
# functions): the mean at bar t then includes bars after t.

# %%
def close_z_centred(params):
    window = int(params["window"])
    mean = pl.col("close").rolling_mean(window_size=window, center=True)
    std = pl.col("close").rolling_std(window_size=window)
    return [((pl.col("close") - mean) / std).alias(f"close_z_{window}")]


PEEKING = Feature(name="close_z_centred", family="indicator", inputs=("close",),
                  outputs=lambda params: [f"close_z_{int(params['window'])}"],
                  warmup=lambda params: int(params["window"]) - 1, exprs=close_z_centred, params={"window": 24})
caught = check_feature(PEEKING)
print("look-ahead:", "pass" if caught.ok else "FAIL", f"- first offending bar {caught.first_bad_bar}:", caught.detail)
assert not caught.ok

# %% [markdown]
# ## Registering it
#
# A plugin module registers its features through one hook. Installed as a
# package with an entry point in the `ohlcv` group, it shows in
# `ohlcv plugins list`, is checked by `ohlcv plugins check close_z`, and a
# profile enables it with `features.enabled: [..., close_z]`:
#
# ```toml
# [project.entry-points.ohlcv]
# close_z = "my_features"
# ```
#
# Here the module is registered directly, the way tests do it:

# %%
import types

from ohlcv.hookspecs import hookimpl
from ohlcv.plugins import load_plugins

my_features = types.ModuleType("my_features")


@hookimpl
def ohlcv_register_features(register):
    register(CLOSE_Z)


my_features.ohlcv_register_features = ohlcv_register_features
plugins = load_plugins(extra=[("my_features", my_features)])
print([entry for entry in plugins.describe() if entry["plugin"] == "my_features"])

# %% [markdown]
# [docs/writing-plugins.md](../docs/writing-plugins.md) walks through the whole
# package (pyproject, install, a test in your own suite), and
# [docs/plugin-hooks.md](../docs/plugin-hooks.md) lists every field of `Feature`.
