"""Benchmark the feature plugins on 1,000,000 bars, against baselines measured in the same run.

1. The full default (hourly profile) feature set on one asset: bars/s.
2. Every TA-Lib-backed feature through the plugin machinery against a bare
   TA-Lib call on the same numpy arrays. Target: ratio <= 1.3.
3. The Polars-expression features (composed into one query, as the builder
   does) against straightforward pandas equivalents, on one asset and on
   10 / 100 / 1,000 assets sharing the 1,000,000 bars (a builder batch holds
   several assets; pandas then needs a groupby, and the faster of its two
   idioms is the baseline). Target: >= 5x faster. Also prints the largest
   relative difference between the two engines' values.

Prints ratios; asserts nothing. Usage: python benchmarks/features.py [--bars 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def series(bars: int):
    import polars as pl

    from ohlcv.lake.sample import ohlc_bars, simulate_class

    rng = np.random.default_rng(0)
    returns = simulate_class(rng, 1, bars, 0.01)[0]
    o, h, l, c, v = ohlc_bars(rng, returns, 100.0, 1000.0, np.arange(bars) % 24)
    ts = np.datetime64("2000-01-01T00:00:00", "us") + np.arange(bars) * np.timedelta64(3600, "s")
    return pl.DataFrame({"item_id": "bench/A", "ts": ts, "open": o, "high": h, "low": l, "close": c, "volume": v})


def _bollinger_outputs(a):
    """BBANDS plus the same two derived outputs the feature returns (width, %B)."""
    import talib

    upper, middle, lower = talib.BBANDS(a["close"], 20, 2.0, 2.0)
    return (upper - lower) / middle, (a["close"] - lower) / (upper - lower)


BARE_TALIB = {
    "sma": lambda a: [__import__("talib").SMA(a["close"], w) for w in (10, 20, 50)],
    "ema": lambda a: [__import__("talib").EMA(a["close"], w) for w in (10, 20, 50)],
    "rsi": lambda a: __import__("talib").RSI(a["close"], 14),
    "atr": lambda a: (__import__("talib").ATR(a["high"], a["low"], a["close"], 14),
                      __import__("talib").NATR(a["high"], a["low"], a["close"], 14)),
    "macd": lambda a: __import__("talib").MACD(a["close"], 12, 26, 9),
    "bollinger": lambda a: _bollinger_outputs(a),
    "adx": lambda a: __import__("talib").ADX(a["high"], a["low"], a["close"], 14),
    "stoch": lambda a: __import__("talib").STOCH(a["high"], a["low"], a["close"], 14, 3, 0, 3, 0),
    "obv": lambda a: __import__("talib").OBV(a["close"], a["volume"]),
    "mfi": lambda a: __import__("talib").MFI(a["high"], a["low"], a["close"], a["volume"], 14),
    "cci": lambda a: __import__("talib").CCI(a["high"], a["low"], a["close"], 20),
    "roc": lambda a: __import__("talib").ROC(a["close"], 10),
}


def pandas_equivalents(df):
    """The Polars-expression features written the usual pandas way."""
    r = np.log(df["close"]).diff()
    out = {
        "log_return_1": r,
        "simple_return_1": df["close"].pct_change(),
        "rv_24": r.rolling(24).std(),
        "rv_168": r.rolling(168).std(),
        "parkinson_24": np.sqrt((np.log(df["high"] / df["low"]) ** 2).rolling(24).mean() / (4 * np.log(2))),
        "garman_klass_24": np.sqrt((0.5 * np.log(df["high"] / df["low"]) ** 2
                                    - (2 * np.log(2) - 1) * np.log(df["close"] / df["open"]) ** 2).rolling(24).mean().clip(lower=0)),
        "hl_range": (df["high"] - df["low"]) / df["close"],
        "close_location": ((df["close"] - df["low"]) / (df["high"] - df["low"])).fillna(0.5),
    }
    lv = np.log1p(df["volume"])
    out["volume_z"] = (lv - lv.rolling(168).mean()) / lv.rolling(168).std()
    typical = (df["high"] + df["low"] + df["close"]) / 3
    out["vwap_distance"] = df["close"] / ((typical * df["volume"]).rolling(24).sum() / df["volume"].rolling(24).sum()) - 1
    return out


def pandas_grouped(df):
    """The same features for a frame of many assets, the usual pandas way (groupby + rolling)."""
    g = df.groupby("item_id", sort=False)
    r = g["close"].transform(lambda c: np.log(c).diff())
    df = df.assign(_r=r, _hl=np.log(df["high"] / df["low"]) ** 2, _co=np.log(df["close"] / df["open"]) ** 2,
                   _lv=np.log1p(df["volume"]), _tv=(df["high"] + df["low"] + df["close"]) / 3 * df["volume"])
    g = df.groupby("item_id", sort=False)
    out = {
        "log_return_1": df["_r"],
        "simple_return_1": g["close"].pct_change(),
        "rv_24": g["_r"].transform(lambda x: x.rolling(24).std()),
        "rv_168": g["_r"].transform(lambda x: x.rolling(168).std()),
        "parkinson_24": np.sqrt(g["_hl"].transform(lambda x: x.rolling(24).mean()) / (4 * np.log(2))),
        "garman_klass_24": np.sqrt((0.5 * g["_hl"].transform(lambda x: x.rolling(24).mean())
                                    - (2 * np.log(2) - 1) * g["_co"].transform(lambda x: x.rolling(24).mean())).clip(lower=0)),
        "hl_range": (df["high"] - df["low"]) / df["close"],
        "close_location": ((df["close"] - df["low"]) / (df["high"] - df["low"])).fillna(0.5),
        "volume_z": (df["_lv"] - g["_lv"].transform(lambda x: x.rolling(168).mean()))
        / g["_lv"].transform(lambda x: x.rolling(168).std()),
        "vwap_distance": df["close"] / (g["_tv"].transform(lambda x: x.rolling(24).sum())
                                        / g["volume"].transform(lambda x: x.rolling(24).sum())) - 1,
    }
    return out


def pandas_grouped_rolling(df):
    """The same features with pandas' other idiom, ``groupby(...).rolling(...)`` (faster with many groups)."""
    df = df.assign(_lc=np.log(df["close"]))
    g = df.groupby("item_id", sort=False)
    df = df.assign(_r=g["_lc"].diff(), _hl=np.log(df["high"] / df["low"]) ** 2, _co=np.log(df["close"] / df["open"]) ** 2,
                   _lv=np.log1p(df["volume"]), _tv=(df["high"] + df["low"] + df["close"]) / 3 * df["volume"])
    g = df.groupby("item_id", sort=False)

    def rolling(column, window, how):
        return getattr(g[column].rolling(window), how)().reset_index(level=0, drop=True)

    out = {
        "log_return_1": df["_r"],
        "simple_return_1": g["close"].pct_change(),
        "rv_24": rolling("_r", 24, "std"),
        "rv_168": rolling("_r", 168, "std"),
        "parkinson_24": np.sqrt(rolling("_hl", 24, "mean") / (4 * np.log(2))),
        "garman_klass_24": np.sqrt((0.5 * rolling("_hl", 24, "mean") - (2 * np.log(2) - 1) * rolling("_co", 24, "mean")).clip(lower=0)),
        "hl_range": (df["high"] - df["low"]) / df["close"],
        "close_location": ((df["close"] - df["low"]) / (df["high"] - df["low"])).fillna(0.5),
        "volume_z": (df["_lv"] - rolling("_lv", 168, "mean")) / rolling("_lv", 168, "std"),
        "vwap_distance": df["close"] / (rolling("_tv", 24, "sum") / rolling("volume", 24, "sum")) - 1,
    }
    return out


def worst_disagreement(polars_frame, pandas_out, warmup: int) -> float:
    """Largest relative difference between the two engines' values, after the warm-up of each series."""
    import polars as pl

    position = polars_frame.select(pl.int_range(pl.len()).over("item_id")).to_series().to_numpy()
    worst = 0.0
    for name, values in pandas_out.items():
        a = polars_frame[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        b = np.asarray(values, dtype=np.float64)
        both = (position >= warmup) & np.isfinite(a) & np.isfinite(b)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-9))))
    return worst


def many_assets(bars: int, assets: int):
    import polars as pl

    per = bars // assets
    frames = []
    for i in range(assets):
        one = series(per).with_columns(pl.lit(f"bench/A{i}").alias("item_id"))
        frames.append(one)
    return pl.concat(frames)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import polars as pl

    from ohlcv.builder.pipeline import FeaturePipeline
    from ohlcv.config import load_profile
    from ohlcv.plugins import enabled_features, load_plugins

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"polars {pl.__version__}, {args.bars:,} bars")
    frame = series(args.bars)
    registry = load_plugins().features

    cfg = load_profile("hourly").cfg
    specs = [(feature, params) for feature, params, _ in enabled_features(cfg, registry)]
    pipeline = FeaturePipeline(specs)
    train_end = {"bench/A": int(args.bars * 0.8)}
    reference = pipeline.contributions(frame)
    full = best_of(lambda: pipeline.apply(frame, reference=reference, train_end=train_end), max(1, args.repeat // 2))
    outputs = sum(len(f.output_names(p)) for f, p in specs)
    print(f"hourly default feature set ({len(specs)} features, {outputs} variates): {full:.2f} s "
          f"({args.bars / full:,.0f} bars/s)")

    inputs = frame.drop("item_id")
    arrays = {c: inputs[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}
    print("TA-Lib-backed features through the plugin vs a bare TA-Lib call (target <= 1.3):")
    worst = 0.0
    for name, bare_call in BARE_TALIB.items():
        feature = registry.get(name)
        bare = best_of(lambda: bare_call(arrays), args.repeat)
        plugin = best_of(lambda: feature.compute(inputs), args.repeat)
        worst = max(worst, plugin / bare)
        print(f"  {name:10s} bare {bare * 1000:7.1f} ms  plugin {plugin * 1000:7.1f} ms  ratio {plugin / bare:5.2f}")
    print(f"  worst ratio {worst:.2f}")

    polars_names = ["log_return", "simple_return", "realized_vol", "parkinson_vol", "garman_klass_vol", "hl_range",
                    "close_location", "volume_z", "vwap_distance"]
    overrides = {"realized_vol": {"windows": [24, 168]}}
    polars_specs = [(registry.get(n), registry.get(n).resolve_params(overrides.get(n))) for n in polars_names]
    polars_pipeline = FeaturePipeline(polars_specs)
    warmup = max(f.warmup_bars(p) for f, p in polars_specs)
    print("Polars-expression features (10 outputs, one query through the builder's pipeline, warm-up masks "
          "included) vs pandas (target >= 5x):")
    for assets in (1, 10, 100, 1000):
        batch = series(args.bars) if assets == 1 else many_assets(args.bars, assets)
        repeat = args.repeat if assets < 100 else max(1, args.repeat // 2)
        polars_time = best_of(lambda: polars_pipeline.apply(batch), repeat)
        pdf = batch.to_pandas()
        if assets == 1:
            pdf = pdf.drop(columns="item_id")
            pandas_time = best_of(lambda: pandas_equivalents(pdf), repeat)
            idiom, pandas_out = "plain", pandas_equivalents(pdf)
        else:  # the faster of pandas' two groupby idioms at this shape
            transform = best_of(lambda: pandas_grouped(pdf), max(1, repeat // 2))
            rolling = best_of(lambda: pandas_grouped_rolling(pdf), max(1, repeat // 2))
            pandas_time = min(transform, rolling)
            idiom = "groupby+transform" if transform <= rolling else "groupby().rolling()"
            pandas_out = (pandas_grouped if transform <= rolling else pandas_grouped_rolling)(pdf)
        disagreement = worst_disagreement(polars_pipeline.apply(batch), pandas_out, warmup)
        print(f"  {assets:>4} asset(s) x {args.bars // assets:>9,} bars: Polars {polars_time * 1000:6.0f} ms, "
              f"pandas ({idiom}) {pandas_time * 1000:6.0f} ms -> {pandas_time / polars_time:5.1f}x faster; "
              f"largest relative difference {disagreement:.1e}")


if __name__ == "__main__":
    main()
