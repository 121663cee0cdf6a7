"""Returns of the close price: log returns and simple returns at several horizons."""

from __future__ import annotations

from typing import Callable

from ohlcv.features import Feature
from ohlcv.hookspecs import hookimpl


def _horizons(params) -> list[int]:
    horizons = [int(h) for h in params["horizons"]]
    if not horizons or any(h <= 0 for h in horizons):
        raise ValueError(f"horizons must be positive integers, got {horizons}")
    return horizons


def _returns_feature(name: str, formula: Callable, description: str) -> Feature:
    """A feature with one output per horizon h: ``formula(close, close shifted by h)``."""

    def exprs(params):
        import polars as pl

        close = pl.col("close")
        return [formula(close, close.shift(h)).alias(f"{name}_{h}") for h in _horizons(params)]

    return Feature(
        name=name,
        family="indicator",
        inputs=("close",),
        outputs=lambda p: [f"{name}_{h}" for h in _horizons(p)],
        warmup=lambda p: {f"{name}_{h}": h for h in _horizons(p)},  # each horizon waits its own h bars
        exprs=exprs,
        params={"horizons": [1]},
        description=description,
        bounded=True,  # bar t and bar t - h only
        kinds="return",
    )


LOG_RETURN = _returns_feature(
    "log_return", lambda now, then: (now / then).log(), "log(close_t / close_{t-h}) for each horizon h"
)
SIMPLE_RETURN = _returns_feature(
    "simple_return", lambda now, then: now / then - 1.0, "close_t / close_{t-h} - 1 for each horizon h"
)


@hookimpl
def ohlcv_register_features(register):
    register(LOG_RETURN, SIMPLE_RETURN)
