"""Technical indicators: TA-Lib for the classics, Polars expressions for the rest.

TA-Lib takes float64 numpy arrays only. Missing bars (long gaps left as NaN
by the builder) would poison TA-Lib's recursive indicators for the rest of
the series, so inputs are forward-filled (causal) before the call and the
outputs are set back to missing on the bars whose input was missing.
Values inside an indicator's warm-up are missing, never zeros.

Where an indicator also has a Polars form (``sma``, ``ema``, ``rsi``,
``atr``; ``engine: polars``), the two agree after the warm-up; TA-Lib seeds
its Wilder/EMA smoothing with a simple average, Polars' ``ewm_mean`` with the
first value, so they differ only at the start.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ohlcv.features import Feature, min_observations
from ohlcv.hookspecs import hookimpl

Params = Mapping[str, Any]


# -- TA-Lib plumbing -----------------------------------------------------------------------------
def _talib_inputs(frame, columns: tuple[str, ...]):
    """float64, forward-filled inputs and the mask of bars whose input was missing (None: none was)."""
    import polars as pl

    series = [frame[c].cast(pl.Float64) for c in columns]
    if not any(s.null_count() for s in series):
        # the common case (the builder turns every NaN into a missing value): straight to TA-Lib
        return {c: s.to_numpy() for c, s in zip(columns, series)}, None
    arrays = {c: s.to_numpy() for c, s in zip(columns, series)}
    missing = np.zeros(frame.height, dtype=bool)
    for values in arrays.values():
        missing |= ~np.isfinite(values)
    data = frame.select([pl.col(c).cast(pl.Float64).fill_nan(None).forward_fill() for c in columns])
    return {c: data[c].to_numpy() for c in columns}, missing


def _talib_frame(columns: tuple[str, ...], compute: Callable[[dict, Params], dict], names: Callable[[Params], list[str]]):
    """A ``frame=`` function: run ``compute`` (TA-Lib calls) and return null-masked float columns."""

    def frame_fn(frame, params):
        import polars as pl

        arrays, missing = _talib_inputs(frame, columns)
        outputs = compute(arrays, params)
        result = {}
        for name in names(params):
            values = np.asarray(outputs[name], dtype=np.float64)
            if missing is not None:
                values = np.where(missing, np.nan, values)
            result[name] = values  # NaN, not zeros: the builder turns NaN into missing
        return pl.DataFrame(result)

    return frame_fn


def _lookback(function: str, **parameters) -> int:
    from talib import abstract

    fn = abstract.Function(function)
    if parameters:
        fn.parameters = parameters
    return int(fn.lookback)


def _windows(params) -> list[int]:
    windows = [int(w) for w in params["windows"]]
    if not windows or any(w < 2 for w in windows):
        raise ValueError(f"windows must be integers >= 2, got {windows}")
    return windows


# -- moving averages, with both engines ---------------------------------------------------------------
def _ma_feature(kind: str) -> Feature:
    def names(p):
        return [f"{kind}_{w}" for w in _windows(p)]

    def compute(arrays, p):
        import talib

        fn = talib.SMA if kind == "sma" else talib.EMA
        return {f"{kind}_{w}": fn(arrays["close"], timeperiod=w) for w in _windows(p)}

    talib_frame = _talib_frame(("close",), compute, names)

    def frame(frame, p):
        if p["engine"] == "talib":
            return talib_frame(frame, p)
        import polars as pl

        close = pl.col("close").cast(pl.Float64).fill_nan(None)
        exprs = []
        for w in _windows(p):
            if kind == "sma":
                value = close.forward_fill().rolling_mean(window_size=w)
            else:
                value = close.forward_fill().ewm_mean(span=w, adjust=False, min_samples=w)
            exprs.append(pl.when(close.is_null()).then(None).otherwise(value).alias(f"{kind}_{w}"))
        return frame.select(exprs)

    return Feature(
        name=kind,
        family="indicator",
        inputs=("close",),
        outputs=names,
        warmup=lambda p: max(_windows(p)) - 1,
        frame=frame,
        params={"windows": [10, 20, 50], "engine": "talib"},
        description=f"{'simple' if kind == 'sma' else 'exponential'} moving average of close, per window",
        kinds="price",
    )


def _rsi_frame(frame, p):
    import polars as pl

    period = int(p["period"])
    if p["engine"] == "talib":
        import talib

        return _talib_frame(("close",), lambda a, q: {"rsi": talib.RSI(a["close"], timeperiod=period)}, lambda q: ["rsi"])(frame, p)
    close = pl.col("close").cast(pl.Float64).fill_nan(None)
    change = close.forward_fill().diff()
    gain = change.clip(lower_bound=0).ewm_mean(alpha=1 / period, adjust=False, min_samples=period)
    loss = (-change).clip(lower_bound=0).ewm_mean(alpha=1 / period, adjust=False, min_samples=period)
    rsi = 100 - 100 / (1 + gain / loss)
    return frame.select(pl.when(close.is_null()).then(None).otherwise(rsi).alias("rsi"))


def _atr_frame(frame, p):
    import polars as pl

    period = int(p["period"])
    if p["engine"] == "talib":
        import talib

        def compute(a, q):
            atr = talib.ATR(a["high"], a["low"], a["close"], timeperiod=period)
            natr = talib.NATR(a["high"], a["low"], a["close"], timeperiod=period)
            return {"atr": atr, "natr": natr}

        return _talib_frame(("high", "low", "close"), compute, lambda q: ["atr", "natr"])(frame, p)
    high, low, close = (pl.col(c).cast(pl.Float64).fill_nan(None).forward_fill() for c in ("high", "low", "close"))
    prev = close.shift(1)
    true_range = pl.max_horizontal(high - low, (high - prev).abs(), (low - prev).abs())
    true_range = pl.when(prev.is_null()).then(None).otherwise(true_range)
    atr = true_range.ewm_mean(alpha=1 / period, adjust=False, min_samples=period)
    observed = pl.col("close").cast(pl.Float64).fill_nan(None).is_not_null()
    return frame.select(
        pl.when(observed).then(atr).otherwise(None).alias("atr"),
        pl.when(observed).then(atr / close * 100).otherwise(None).alias("natr"),
    )


# -- the other TA-Lib indicators ---------------------------------------------------------------------
def _talib_feature(name, columns, outputs, compute, warmup, params, description, kinds="indicator") -> Feature:
    names = outputs if callable(outputs) else (lambda p, _o=tuple(outputs): list(_o))
    return Feature(
        name=name,
        family="indicator",
        inputs=columns,
        outputs=names,
        warmup=warmup,
        frame=_talib_frame(columns, compute, names),
        params=params,
        description=description,
        kinds=kinds,
    )


def _macd(a, p):
    import talib

    line, signal, hist = talib.MACD(a["close"], fastperiod=p["fast"], slowperiod=p["slow"], signalperiod=p["signal"])
    return {"macd": line, "macd_signal": signal, "macd_hist": hist}


def _bbands(a, p):
    import talib

    upper, middle, lower = talib.BBANDS(a["close"], timeperiod=p["period"], nbdevup=p["k"], nbdevdn=p["k"])
    with np.errstate(invalid="ignore", divide="ignore"):
        width = (upper - lower) / middle
        percent_b = (a["close"] - lower) / (upper - lower)
    return {"bb_width": width, "bb_percent_b": percent_b}


def _stoch(a, p):
    import talib

    k, d = talib.STOCH(a["high"], a["low"], a["close"], fastk_period=p["k"], slowk_period=p["smooth"], slowd_period=p["d"])
    return {"stoch_k": k, "stoch_d": d}


def _single(function: str, columns: tuple[str, ...], name: str, period_key: str | None = "period"):
    def compute(a, p):
        import talib

        fn = getattr(talib, function)
        args = [a[c] for c in columns]
        return {name: fn(*args, timeperiod=int(p[period_key])) if period_key else fn(*args)}

    return compute


HLC = ("high", "low", "close")
HLCV = ("high", "low", "close", "volume")

TALIB_FEATURES = [
    _ma_feature("sma"),
    _ma_feature("ema"),
    Feature(name="rsi", family="indicator", inputs=("close",), outputs=["rsi"],
            warmup=lambda p: int(p["period"]), frame=_rsi_frame, params={"period": 14, "engine": "talib"},
            description="relative strength index (Wilder), 0-100", kinds="oscillator"),
    Feature(name="atr", family="indicator", inputs=HLC, outputs=["atr", "natr"],
            warmup=lambda p: int(p["period"]), frame=_atr_frame, params={"period": 14, "engine": "talib"},
            description="average true range and normalized ATR (% of close)", kinds="volatility"),
    _talib_feature("macd", ("close",), ["macd", "macd_signal", "macd_hist"], _macd,
                   lambda p: _lookback("MACD", fastperiod=p["fast"], slowperiod=p["slow"], signalperiod=p["signal"]),
                   {"fast": 12, "slow": 26, "signal": 9}, "MACD line, signal line and histogram"),
    _talib_feature("bollinger", ("close",), ["bb_width", "bb_percent_b"], _bbands,
                   lambda p: int(p["period"]) - 1, {"period": 20, "k": 2.0}, "Bollinger band width and %B",
                   kinds=["volatility", "oscillator"]),
    _talib_feature("adx", HLC, ["adx"], _single("ADX", HLC, "adx"),
                   lambda p: _lookback("ADX", timeperiod=int(p["period"])), {"period": 14}, "average directional index", kinds="oscillator"),
    _talib_feature("stoch", HLC, ["stoch_k", "stoch_d"], _stoch,
                   lambda p: _lookback("STOCH", fastk_period=p["k"], slowk_period=p["smooth"], slowd_period=p["d"]),
                   {"k": 14, "smooth": 3, "d": 3}, "stochastic oscillator %K and %D", kinds="oscillator"),
    _talib_feature("obv", ("close", "volume"), ["obv"], _single("OBV", ("close", "volume"), "obv", None),
                   0, {}, "on-balance volume"),
    _talib_feature("mfi", HLCV, ["mfi"], _single("MFI", HLCV, "mfi"),
                   lambda p: int(p["period"]), {"period": 14}, "money flow index", kinds="oscillator"),
    _talib_feature("cci", HLC, ["cci"], _single("CCI", HLC, "cci"),
                   lambda p: int(p["period"]) - 1, {"period": 20}, "commodity channel index"),
    _talib_feature("roc", ("close",), ["roc"], _single("ROC", ("close",), "roc"),
                   lambda p: int(p["period"]), {"period": 10}, "rate of change, %", kinds="return"),
]


# -- Polars-expression features ---------------------------------------------------------------------------
# The point-wise ones (hl_range, close_location) are ``bounded``: the builder evaluates them over a whole
# batch at once. The rolling ones are not: Polars' rolling sums run over the whole column, so rounding from
# the previous series would carry into the next one and a symbol's values would depend on its batch
# (they are evaluated per series). A value used more than once is an intermediate column, so Polars
# computes it once.
def _realized_vol_stages(p):
    import polars as pl

    close = pl.col("close")
    return [[(close / close.shift(1)).log().alias("_realized_vol_r")]]


def _realized_vol(p):
    import polars as pl

    r = pl.col("_realized_vol_r")
    return [r.rolling_std(window_size=w, min_samples=min_observations(w)).alias(f"rv_{w}") for w in _windows(p)]


def _parkinson_stages(p):
    import polars as pl

    return [[((pl.col("high") / pl.col("low")).log() ** 2).alias("_parkinson_vol_hl2")]]


def _parkinson(p):
    import polars as pl

    hl2 = pl.col("_parkinson_vol_hl2")
    return [(hl2.rolling_mean(window_size=w, min_samples=min_observations(w)) / (4 * np.log(2))).sqrt().alias(f"parkinson_{w}") for w in _windows(p)]


def _garman_klass_stages(p):
    import polars as pl

    hl = (pl.col("high") / pl.col("low")).log() ** 2
    co = (pl.col("close") / pl.col("open")).log() ** 2
    return [[(0.5 * hl - (2 * np.log(2) - 1) * co).alias("_garman_klass_vol_term")]]


def _garman_klass(p):
    import polars as pl

    term = pl.col("_garman_klass_vol_term")
    return [term.rolling_mean(window_size=w, min_samples=min_observations(w)).clip(lower_bound=0).sqrt().alias(f"garman_klass_{w}") for w in _windows(p)]


def _range(p):
    import polars as pl

    return [((pl.col("high") - pl.col("low")) / pl.col("close")).alias("hl_range")]


def _close_location(p):
    import polars as pl

    span = pl.col("high") - pl.col("low")
    return [pl.when(span > 0).then((pl.col("close") - pl.col("low")) / span).otherwise(0.5).alias("close_location")]


def _volume_z_stages(p):
    import polars as pl

    w = int(p["window"])
    lv = pl.col("_volume_z_lv")
    return [
        [pl.col("volume").log1p().alias("_volume_z_lv")],
        [lv.rolling_mean(window_size=w, min_samples=min_observations(w)).alias("_volume_z_mean"),
         lv.rolling_std(window_size=w, min_samples=min_observations(w)).alias("_volume_z_std")],
    ]


def _volume_z(p):
    import polars as pl

    lv, mean, std = pl.col("_volume_z_lv"), pl.col("_volume_z_mean"), pl.col("_volume_z_std")
    return [pl.when(std > 0).then((lv - mean) / std).when(std == 0).then(0.0).otherwise(None).alias("volume_z")]


def _vwap_stages(p):
    import polars as pl

    w = int(p["window"])
    typical = (pl.col("high") + pl.col("low") + pl.col("close")) / 3
    volume = pl.col("volume").fill_null(0)
    vwap = (typical * volume).rolling_sum(window_size=w, min_samples=min_observations(w)) / volume.rolling_sum(
        window_size=w, min_samples=min_observations(w))
    return [[vwap.alias("_vwap_distance_vwap")]]


def _vwap_distance(p):
    import polars as pl

    vwap = pl.col("_vwap_distance_vwap")
    return [pl.when(vwap > 0).then(pl.col("close") / vwap - 1).otherwise(None).alias("vwap_distance")]


POLARS_FEATURES = [
    Feature(name="realized_vol", family="indicator", inputs=("close",), outputs=lambda p: [f"rv_{w}" for w in _windows(p)],
            warmup=lambda p: {f"rv_{w}": w for w in _windows(p)}, exprs=_realized_vol, intermediates=_realized_vol_stages,
            params={"windows": [24, 168]}, description="rolling standard deviation of one-bar log returns", kinds="volatility"),
    Feature(name="parkinson_vol", family="indicator", inputs=("high", "low"),
            outputs=lambda p: [f"parkinson_{w}" for w in _windows(p)],
            warmup=lambda p: {f"parkinson_{w}": w - 1 for w in _windows(p)},
            exprs=_parkinson, intermediates=_parkinson_stages,
            params={"windows": [24]}, description="Parkinson high-low volatility estimator", kinds="volatility"),
    Feature(name="garman_klass_vol", family="indicator", inputs=("open", "high", "low", "close"),
            outputs=lambda p: [f"garman_klass_{w}" for w in _windows(p)],
            warmup=lambda p: {f"garman_klass_{w}": w - 1 for w in _windows(p)},
            exprs=_garman_klass, intermediates=_garman_klass_stages,
            params={"windows": [24]}, description="Garman-Klass OHLC volatility estimator", kinds="volatility"),
    Feature(name="hl_range", family="indicator", inputs=("high", "low", "close"), outputs=["hl_range"], warmup=0,
            exprs=_range, bounded=True, description="(high - low) / close", kinds="volatility"),
    Feature(name="close_location", family="indicator", inputs=("high", "low", "close"), outputs=["close_location"],
            warmup=0, exprs=_close_location, bounded=True,
            description="where the close sits in the bar's range, 0 (low) to 1 (high)", kinds="oscillator"),
    Feature(name="volume_z", family="indicator", inputs=("volume",), outputs=["volume_z"],
            warmup=lambda p: int(p["window"]) - 1, exprs=_volume_z, intermediates=_volume_z_stages,
            params={"window": 168}, description="z-score of log(1 + volume) against its trailing window"),
    Feature(name="vwap_distance", family="indicator", inputs=("high", "low", "close", "volume"), outputs=["vwap_distance"],
            warmup=lambda p: int(p["window"]) - 1, exprs=_vwap_distance, intermediates=_vwap_stages,
            params={"window": 24}, description="close / trailing VWAP - 1"),
]


@hookimpl
def ohlcv_register_features(register):
    register(*TALIB_FEATURES, *POLARS_FEATURES)
