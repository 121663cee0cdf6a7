"""pandas-ta indicators as ohlcv features.

Uses ``pandas_ta`` where it is installed (it needs Python >= 3.12 and
numpy >= 2.2.6) and the maintained ``pandas_ta_classic`` fork elsewhere.
Only causal indicators are exposed; each passes ``ohlcv plugins check``.
Inputs are forward-filled across missing bars (causal) and the outputs set
back to missing there, as ohlcv's TA-Lib features do.
"""

from __future__ import annotations

from ohlcv.features import Feature
from ohlcv.hookspecs import hookimpl

__version__ = "0.1.0"


def ta_module():
    try:
        import pandas_ta as ta  # type: ignore[import-not-found]
    except ImportError:
        import pandas_ta_classic as ta  # type: ignore[import-not-found]
    return ta


def _series(frame, column):
    import polars as pl

    return frame[column].cast(pl.Float64).fill_nan(None).forward_fill().to_pandas()


def _finish(frame, values: dict):
    """Polars columns from pandas results, missing where the input bar was missing."""
    import numpy as np
    import polars as pl

    missing = frame["close"].cast(pl.Float64).fill_nan(None).is_null().to_numpy()
    out = {}
    for name, series in values.items():
        array = np.asarray(series, dtype=np.float64)
        out[name] = np.where(missing | ~np.isfinite(array), np.nan, array)
    return pl.DataFrame(out).fill_nan(None)


def _kama(frame, params):
    ta = ta_module()
    n = int(params["length"])
    return _finish(frame, {f"pta_kama_{n}": ta.kama(_series(frame, "close"), length=n)})


def _hma(frame, params):
    ta = ta_module()
    n = int(params["length"])
    return _finish(frame, {f"pta_hma_{n}": ta.hma(_series(frame, "close"), length=n)})


def _supertrend(frame, params):
    ta = ta_module()
    n, m = int(params["length"]), float(params["multiplier"])
    result = ta.supertrend(_series(frame, "high"), _series(frame, "low"), _series(frame, "close"), length=n, multiplier=m)
    line, direction = result.iloc[:, 0], result.iloc[:, 1]
    close = _series(frame, "close")
    return _finish(frame, {"pta_supertrend_dist": close / line - 1, "pta_supertrend_dir": direction})


FEATURES = [
    Feature(name="pta_kama", family="indicator", inputs=("close",), outputs=lambda p: [f"pta_kama_{int(p['length'])}"],
            warmup=lambda p: int(p["length"]), frame=_kama, params={"length": 10},
            description="Kaufman adaptive moving average (pandas-ta)", kinds="price"),
    Feature(name="pta_hma", family="indicator", inputs=("close",), outputs=lambda p: [f"pta_hma_{int(p['length'])}"],
            warmup=lambda p: int(p["length"]) + int(int(p["length"]) ** 0.5) - 1, frame=_hma, params={"length": 9},
            description="Hull moving average (pandas-ta)", kinds="price"),
    Feature(name="pta_supertrend", family="indicator", inputs=("high", "low", "close"),
            outputs=["pta_supertrend_dist", "pta_supertrend_dir"], warmup=lambda p: int(p["length"]),
            frame=_supertrend, params={"length": 7, "multiplier": 3.0},
            description="close relative to the SuperTrend line, and its direction (+1 / -1) (pandas-ta)",
            kinds=["indicator", "oscillator"]),
]


@hookimpl
def ohlcv_register_features(register):
    register(*FEATURES)
