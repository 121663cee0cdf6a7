"""What a feature is: the unit plugins register and the builder composes.

A :class:`Feature` declares its name, family, the columns it reads, the
columns it writes, how many bars it needs before its values mean anything
(its warm-up), and how to compute it: either Polars expressions (preferred —
the builder composes every feature's expressions into one query per asset) or
a function from a Polars frame to a frame of its output columns.

Contract, checked by the look-ahead test: the value at bar t may depend on
bars at or before t only. Values inside the warm-up are null, never zeros.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ohlcv.errors import PluginError

if TYPE_CHECKING:  # polars is imported by the code that computes, not by the registry
    import polars as pl

OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")


MIN_OBSERVED_SHARE = 0.8


def min_observations(window: int) -> int:
    """Observed bars a rolling window of ``window`` bars needs for a value: 80% of it (at least 2).

    The built-in rolling features follow this rule, so an occasional missing bar (a halt, a
    data hole) costs no more than itself instead of blanking every window that contains it.
    """
    import math

    return max(2, min(window, math.ceil(MIN_OBSERVED_SHARE * window)))


class Kind(str, Enum):
    """What an output variate is; evaluation picks its baselines and direction rule from it."""

    price = "price"  # a price level (close, a moving average): baselines are random walks
    return_ = "return"  # a return (log or simple): the random walk of a price is a zero return
    volatility = "volatility"  # a volatility or range estimate: persistence and EWMA
    volume = "volume"  # traded volume
    oscillator = "oscillator"  # bounded (RSI 0-100, probabilities, one-hots): persistence, historical mean
    indicator = "indicator"  # anything else (MACD, z-scores, betas): persistence


# The lake's own columns.
OHLCV_KINDS = {"open": Kind.price, "high": Kind.price, "low": Kind.price, "close": Kind.price, "volume": Kind.volume}


class Family(str, Enum):
    indicator = "indicator"
    cross_asset = "cross_asset"
    regime = "regime"


Params = Mapping[str, Any]
ExprsFn = Callable[[Params], "Sequence[pl.Expr]"]
FrameFn = Callable[["pl.DataFrame", Params], "pl.DataFrame"]


@dataclass(frozen=True)
class Feature:
    """A registered feature.

    ``outputs`` and ``warmup`` are either fixed or functions of the feature's
    parameters (the defaults in ``params``, updated from the profile's
    ``features.params.<name>``). Exactly one of ``exprs`` and ``frame`` is set.
    ``warmup`` is one number of bars for every output, or a mapping from each
    output to its own (``rv_24`` waits 24 bars, ``rv_168`` 168).
    """

    name: str
    family: Family | str
    inputs: Sequence[str]
    outputs: Sequence[str] | Callable[[Params], Sequence[str]]
    warmup: int | Mapping[str, int] | Callable[[Params], int | Mapping[str, int]]
    exprs: ExprsFn | None = None
    frame: FrameFn | None = None
    params: Params = field(default_factory=dict)
    description: str = ""
    # Cross-asset features: per-bar contributions (Polars expressions over the lake's columns, each
    # with an alias X). The builder streams the lake once and aggregates them per asset class and
    # timestamp, then joins ``ref_X__n``, ``ref_X__sum`` and ``ref_X__sumsq`` (the count, sum and sum
    # of squares over the symbol's asset class at that bar) onto the frame before computing.
    reference: Callable[[Params], "Sequence[pl.Expr]"] | None = None
    # Fitted features: ``fit(train_frame, params) -> state`` sees the training span only; the state
    # reaches ``frame``/``exprs`` as ``params["fitted"]``.
    fit: Callable[["pl.DataFrame", Params], Any] | None = None
    # Columns the feature reads more than once (a rolling mean *and* a rolling std of log volume, say),
    # computed once beforehand. ``intermediates(params)`` returns stages, each a list of expressions
    # aliased ``_<feature name>_...``; a stage may read the columns of the stages before it. For a
    # ``frame`` feature they are computed over the whole batch, series by series, and ``fit`` and
    # ``frame`` find them as columns (``fit`` on the training rows only); ``fit`` called directly on
    # bars without them must compute them itself. They never reach the dataset.
    intermediates: Callable[[Params], "Sequence[Sequence[pl.Expr]]"] | None = None
    # Expression features: True declares that the value at bar t is computed from bars t - warmup .. t
    # point-wise or by shifts only (no rolling window, EMA or running maximum). The builder then
    # evaluates the feature over a whole batch of series at once instead of series by series (faster),
    # relying on the warm-up mask to discard every value whose shift reaches into the previous series.
    # Not for rolling windows: Polars' rolling sums run over the whole column, so rounding from the
    # previous series carries into the next and the values would depend on the batch. The test suite
    # checks, exactly, that a batch gives each series' values alone for every registered feature.
    bounded: bool = False
    # What each output is (:class:`Kind`): one kind for every output, a list with one kind per output,
    # or a function of the parameters returning that list. Evaluation reads it to choose baselines
    # (a random walk for prices, a zero return for returns). Default: ``indicator``.
    kinds: "Kind | str | Sequence[Kind | str] | Callable[[Params], Sequence[Kind | str]]" = Kind.indicator

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise PluginError(f"feature name '{self.name}' must be letters, digits and underscores")
        try:
            object.__setattr__(self, "family", Family(self.family))
        except ValueError:
            families = ", ".join(f.value for f in Family)
            raise PluginError(f"feature '{self.name}': family '{self.family}' is not one of {families}") from None
        if (self.exprs is None) == (self.frame is None):
            raise PluginError(f"feature '{self.name}': set exactly one of exprs= and frame=")
        if self.exprs is None and self.bounded:
            raise PluginError(f"feature '{self.name}': bounded= applies to exprs= features only")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not callable(self.warmup) and not callable(self.outputs):  # fixed: checked now, not at the first build
            self.output_warmups()
        if not callable(self.kinds):
            object.__setattr__(self, "kinds", self._checked_kinds(self.kinds))

    def resolve_params(self, overrides: Params | None = None) -> dict[str, Any]:
        merged = dict(self.params)
        for key, value in (overrides or {}).items():
            if key == "fitted":
                merged[key] = value
                continue
            if key not in merged:
                known = ", ".join(sorted(merged)) or "none"
                raise PluginError(
                    f"feature '{self.name}' has no parameter '{key}' (parameters: {known}); "
                    f"fix features.params.{self.name}"
                )
            merged[key] = value
        return merged

    def output_names(self, overrides: Params | None = None) -> list[str]:
        params = self.resolve_params(overrides)
        names = self.outputs(params) if callable(self.outputs) else self.outputs
        return list(names)

    def _checked_kinds(self, kinds) -> "Kind | tuple[Kind, ...]":
        many = not isinstance(kinds, (str, Kind))
        try:
            return tuple(Kind(k) for k in kinds) if many else Kind(kinds)
        except ValueError:
            known = ", ".join(k.value for k in Kind)
            raise PluginError(f"feature '{self.name}': kinds {kinds!r} must be among {known}") from None

    def output_kinds(self, overrides: Params | None = None) -> dict[str, Kind]:
        """Each output name with its :class:`Kind`."""
        names = self.output_names(overrides)
        kinds = self._checked_kinds(self.kinds(self.resolve_params(overrides)) if callable(self.kinds) else self.kinds)
        if isinstance(kinds, Kind):
            return {name: kinds for name in names}
        if len(kinds) != len(names):
            raise PluginError(f"feature '{self.name}' declares {len(kinds)} kinds for {len(names)} outputs {names}")
        return dict(zip(names, kinds))

    def output_warmups(self, overrides: Params | None = None) -> dict[str, int]:
        """Each output with the bars it is missing at the start of a series (its warm-up)."""
        params = self.resolve_params(overrides)
        value = self.warmup(params) if callable(self.warmup) else self.warmup
        names = self.output_names(overrides)
        if not isinstance(value, Mapping):
            value = dict.fromkeys(names, value)
        elif set(value) != set(names):
            raise PluginError(f"feature '{self.name}': warm-up for {sorted(value)} but outputs {names}; "
                              f"give every output, and only them, a warm-up")
        bad = {name: bars for name, bars in value.items()
               if isinstance(bars, bool) or not isinstance(bars, numbers.Integral) or bars < 0}
        if bad:
            raise PluginError(f"feature '{self.name}': warm-up {bad} is not a whole number of bars (0 or more)")
        return {name: int(value[name]) for name in names}

    def warmup_bars(self, overrides: Params | None = None) -> int:
        """The longest warm-up of the feature's outputs."""
        return max(self.output_warmups(overrides).values(), default=0)

    def intermediate_stages(self, params: Params) -> list[list["pl.Expr"]]:
        """The feature's intermediate columns, stage by stage, with their names checked."""
        if self.intermediates is None:
            return []
        stages = [list(stage) for stage in self.intermediates(params)]
        prefix = f"_{self.name}_"
        for stage in stages:
            for expr in stage:
                name = expr.meta.output_name()
                if not name.startswith(prefix):
                    raise PluginError(f"feature '{self.name}': intermediate column '{name}' must be named {prefix}...")
        return stages

    def compute(self, frame: "pl.DataFrame", overrides: Params | None = None) -> "pl.DataFrame":
        """The feature's output columns for one series ``frame`` (same height, same row order).

        For a fitted feature, pass the state as ``overrides["fitted"]``; for a
        cross-asset feature, ``frame`` must carry the ``ref_…`` columns.
        """
        params = self.resolve_params(overrides)
        names = self.output_names(overrides)
        query = frame.lazy()
        for stage in self.intermediate_stages(params):
            if any(e.meta.output_name() not in frame.columns for e in stage):  # (the builder computed them)
                query = query.with_columns(stage)
        if self.exprs is not None:
            out = query.select(list(self.exprs(params))).collect()
        else:
            assert self.frame is not None
            out = self.frame(query.collect() if self.intermediates is not None else frame, params)
        if list(out.columns) != names:
            raise PluginError(
                f"feature '{self.name}' produced columns {list(out.columns)}, declared {names}"
            )
        if out.height != frame.height:
            raise PluginError(f"feature '{self.name}' changed the number of rows")
        return out
