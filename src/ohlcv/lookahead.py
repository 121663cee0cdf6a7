"""The look-ahead check: does a feature's value at bar t depend on anything after t?

For one feature: compute it (through the same pipeline the builder uses) on a
small synthetic asset class; then, for several cut points t, replace every
bar after t — of the asset and of the other assets of its class — with
random values, and make the series shorter or longer; recompute; every value
at bars <= t must be identical. Fitted features are cut after their training
span, since their fit legitimately uses the whole training span.

``ohlcv plugins check`` runs this on every installed feature, and the test
suite runs it on every registered one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ohlcv.build.pipeline import FeaturePipeline
from ohlcv.features import Feature


@dataclass
class LookaheadResult:
    feature: str
    ok: bool
    first_bad_bar: int | None = None
    column: str | None = None
    cut: int | None = None
    detail: str = ""


def synthetic_class(n_assets: int = 4, bars: int = 900, seed: int = 0):
    """A small asset class (item_id, ts, OHLCV), with a missing stretch in the first asset."""
    import polars as pl

    from ohlcv.lake.sample import _bars, _simulate_class

    rng = np.random.default_rng(seed)
    returns = _simulate_class(rng, n_assets, bars, 0.01)
    ts = np.datetime64("2024-01-01T00:00:00", "us") + np.arange(bars) * np.timedelta64(3600, "s")
    hours = np.arange(bars) % 24
    frames = []
    for i in range(n_assets):
        o, h, l, c, v = _bars(rng, returns[i], 100.0 * (i + 1), 1000.0, hours)
        frame = pl.DataFrame({"item_id": f"test/A{i}", "ts": ts, "open": o, "high": h, "low": l, "close": c, "volume": v})
        frames.append(frame)
    data = pl.concat(frames).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    gap = (pl.col("item_id") == "test/A0") & pl.col("ts").is_in(pl.Series(ts[200:212]).dt.replace_time_zone("UTC"))
    return data.with_columns([pl.when(gap).then(None).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "volume")])


def _compute(pipeline: FeaturePipeline, frame, train_end: int, target: str):
    import polars as pl

    reference = pipeline.contributions(frame) if pipeline.needs_reference else None
    ends = {item: train_end for item in frame["item_id"].unique().to_list()}
    out = pipeline.apply(frame, reference=reference, train_end=ends)
    return out.filter(pl.col("item_id") == target)


def _perturb(frame, cut: int, extra: int, rng: np.random.Generator):
    """Keep bars 0..cut of every asset; replace the rest with random bars, ``extra`` more or fewer."""
    import polars as pl

    parts = []
    for _, part in frame.group_by("item_id", maintain_order=True):
        head = part.head(cut + 1)
        length = max(part.height - cut - 1 + extra, 1)
        step = part["ts"][1] - part["ts"][0]
        ts = pl.datetime_range(head["ts"][-1] + step, head["ts"][-1] + step * length, step, eager=True, time_zone="UTC",
                               time_unit="us")
        level = float(head["close"].drop_nulls()[-1]) * rng.uniform(0.2, 5.0)
        close = level * np.exp(np.cumsum(rng.normal(0, 0.05, length)))
        noise = rng.uniform(0.0, 0.05, (3, length))
        tail = pl.DataFrame({
            "item_id": part["item_id"][0],
            "ts": ts,
            "open": close * (1 + noise[0] - 0.025),
            "high": close * (1 + noise[1] + 0.03),
            "low": close * (1 - noise[2] - 0.03),
            "close": close,
            "volume": rng.lognormal(8, 2, length),
        })
        parts.append(pl.concat([head, tail.select(head.columns)], how="vertical_relaxed"))
    return pl.concat(parts)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both_missing = np.isnan(a) & np.isnan(b)
    return both_missing | (a == b)


def check_feature(
    feature: Feature,
    params: Mapping[str, Any] | None = None,
    *,
    bars: int = 900,
    seed: int = 0,
    train_fraction: float = 0.6,
) -> LookaheadResult:
    """Run the look-ahead check on one feature; never raises for a failing feature."""
    import polars as pl

    try:
        resolved = feature.resolve_params(params)
        pipeline = FeaturePipeline([(feature, resolved)])
        columns = feature.output_names(resolved)
        frame = synthetic_class(bars=bars, seed=seed)
        target = "test/A0"
        train_end = int(bars * train_fraction)
        base = _compute(pipeline, frame, train_end, target)
        if feature.fit is not None:
            cuts = [train_end, train_end + (bars - train_end) // 2, bars - 40]
        else:
            cuts = sorted({feature.warmup_bars(resolved) + 3, bars // 4, bars // 2, train_end + 7, bars - 40})
        rng = np.random.default_rng(seed + 1)
    except Exception as exc:  # noqa: BLE001 - report, don't crash the checker
        return LookaheadResult(feature.name, False, detail=f"could not compute: {type(exc).__name__}: {exc}")
    for cut in cuts:
        if not 0 < cut < bars - 1:
            continue
        for extra in (-25, 150):
            try:
                perturbed = _perturb(frame, cut, extra, rng)
                other = _compute(pipeline, perturbed, train_end, target)
            except Exception as exc:  # noqa: BLE001
                return LookaheadResult(feature.name, False, cut=cut,
                                       detail=f"failed on perturbed data: {type(exc).__name__}: {exc}")
            for column in columns:
                a = base[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()[: cut + 1]
                b = other[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()[: cut + 1]
                same = _same(a, b)
                if not same.all():
                    bad = int(np.argmin(same))
                    return LookaheadResult(
                        feature.name, False, first_bad_bar=bad, column=column, cut=cut,
                        detail=f"'{column}' at bar {bad} changed when bars after {cut} changed "
                               f"({a[bad]!r} -> {b[bad]!r})",
                    )
    return LookaheadResult(feature.name, True, detail=f"{len(cuts)} cuts x 2 perturbations")


def check_warmup(feature: Feature, params: Mapping[str, Any] | None = None, *, bars: int = 900, seed: int = 0) -> str | None:
    """None if every output is missing (not zero) inside the declared warm-up; else what is wrong."""
    resolved = feature.resolve_params(params)
    pipeline = FeaturePipeline([(feature, resolved)])
    frame = synthetic_class(bars=bars, seed=seed)
    out = _compute(pipeline, frame, int(bars * 0.6), "test/A1")  # the asset without gaps
    warmup = feature.warmup_bars(resolved)
    for column in feature.output_names(resolved):
        series = out[column]
        head = series.head(warmup)
        if head.null_count() != head.len():
            first = int(np.argmax(head.is_not_null().to_numpy()))
            return f"'{column}' has a value at bar {first}, inside its declared warm-up of {warmup} bars"
        if series.null_count() == series.len():
            return f"'{column}' is missing everywhere"
    return None


def check_bounded(feature: Feature, params: Mapping[str, Any] | None = None, *, bars: int = 900, seed: int = 0) -> str | None:
    """For a feature declared ``bounded``: None if computing it over a batch of series at once gives the
    values of computing each series alone; else what differs. (Not bounded: nothing to check.)

    A feature wrongly declared bounded (an EMA, a running maximum) carries the previous series into the
    next one past the warm-up, and fails here.
    """
    import polars as pl

    if not feature.bounded:
        return None
    resolved = feature.resolve_params(params)
    pipeline = FeaturePipeline([(feature, resolved)])
    full = synthetic_class(bars=bars, seed=seed)
    # series of different lengths, so that no two series line up bar for bar
    parts = [part.head(bars - 37 * k) for k, (_, part) in enumerate(full.group_by("item_id", maintain_order=True))]
    batch = pipeline.apply(pl.concat(parts))
    for part in parts:
        item_id = part["item_id"][0]
        alone = pipeline.apply(part)
        together = batch.filter(pl.col("item_id") == item_id)
        for column in feature.output_names(resolved):
            a = alone[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            b = together[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            close = (np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=1e-9, atol=1e-12)
            if not close.all():
                bad = int(np.argmin(close))
                return (f"declared bounded, but '{column}' of {item_id} at bar {bad} differs when computed in a batch "
                        f"({a[bad]!r} alone, {b[bad]!r} in the batch): its window reaches past its warm-up")
    return None
