"""The look-ahead check: does a feature's value at bar t depend on anything after t?

For one feature: compute it (through the same pipeline the builder uses) on a
small synthetic asset class (weekday sessions, a missing stretch); then, for
several cut points t (inside the gap, right after a weekend's reopening, and
spread over the series), replace every
bar after t — of the asset and of the other assets of its class — with
random values, and make the series shorter or longer; recompute; every value
at bars <= t must be identical. Fitted features are cut after their training
span, since their fit legitimately uses the whole training span.

``ohlcv plugins check`` runs this on every installed feature, and the test
suite runs it on every registered one. :func:`check_pipeline` does the same
for a whole build: cleaning, gap filling, every feature, the cross-asset
reference, normalization and fitted regimes together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ohlcv.builder.pipeline import FeaturePipeline
from ohlcv.features import Feature


@dataclass
class LookaheadResult:
    feature: str
    ok: bool
    first_bad_bar: int | None = None
    column: str | None = None
    cut: int | None = None
    detail: str = ""


REOPEN_BAR = 120  # synthetic_class: the first bar after the first weekend
GAP_BARS = (200, 212)  # synthetic_class: the first asset's missing stretch


def synthetic_class(n_assets: int = 4, bars: int = 900, seed: int = 0):
    """A small asset class (item_id, ts, OHLCV) on a weekdays calendar (hourly bars Monday to Friday,
    so the time stamps jump over every weekend), with a missing stretch in the first asset."""
    import polars as pl

    from ohlcv.lake.sample import ohlc_bars, simulate_class

    rng = np.random.default_rng(seed)
    returns = simulate_class(rng, n_assets, bars, 0.01)
    clock = np.datetime64("2024-01-01T00:00:00", "us") + np.arange(bars * 2) * np.timedelta64(3600, "s")
    ts = clock[(clock.astype("datetime64[D]").view("int64") - 4) % 7 < 5][:bars]  # 2024-01-01 is a Monday
    hours = np.arange(bars) % 24
    frames = []
    for i in range(n_assets):
        o, h, l, c, v = ohlc_bars(rng, returns[i], 100.0 * (i + 1), 1000.0, hours)
        frame = pl.DataFrame({"item_id": f"test/A{i}", "ts": ts, "open": o, "high": h, "low": l, "close": c, "volume": v})
        frames.append(frame)
    data = pl.concat(frames).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    gap = (pl.col("item_id") == "test/A0") & pl.col("ts").is_in(pl.Series(ts[slice(*GAP_BARS)]).dt.replace_time_zone("UTC"))
    return data.with_columns([pl.when(gap).then(None).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "volume")])


def _compute_many(pipeline: FeaturePipeline, frame, train_end: int, targets):
    """``{target: its rows}`` of one pipeline run over the whole ``frame``."""
    import polars as pl

    reference = pipeline.contributions(frame) if pipeline.needs_reference else None
    ends = {item: train_end for item in frame["item_id"].unique().to_list()}
    out = pipeline.apply(frame, reference=reference, train_end=ends)
    return {target: out.filter(pl.col("item_id") == target) for target in targets}


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
        # the first and the last series of the batch: whatever a batch-wide evaluation carries from one
        # series into the next shows in the last one
        items = frame["item_id"].unique(maintain_order=True).to_list()
        targets = (items[0], items[-1])
        train_end = int(bars * train_fraction)
        base = _compute_many(pipeline, frame, train_end, targets)
        if feature.fit is not None:
            cuts = [train_end, train_end + (bars - train_end) // 2, bars - 40]
        else:
            # inside the gap, right after a weekend's reopening, and spread over the series
            warmups = {w + 3 for w in feature.output_warmups(resolved).values()}  # just after each output's warm-up
            cuts = sorted(warmups | {REOPEN_BAR, (GAP_BARS[0] + GAP_BARS[1]) // 2, bars // 4, bars // 2,
                                     train_end + 7, bars - 40})
        rng = np.random.default_rng(seed + 1)
    except Exception as exc:  # noqa: BLE001 - report, don't crash the checker
        return LookaheadResult(feature.name, False, detail=f"could not compute: {type(exc).__name__}: {exc}")
    for cut in cuts:
        if not 0 < cut < bars - 1:
            continue
        for extra in (-25, 150):
            try:
                perturbed = _perturb(frame, cut, extra, rng)
                other = _compute_many(pipeline, perturbed, train_end, targets)
            except Exception as exc:  # noqa: BLE001
                return LookaheadResult(feature.name, False, cut=cut,
                                       detail=f"failed on perturbed data: {type(exc).__name__}: {exc}")
            for target, column in ((t, c) for t in targets for c in columns):
                a = base[target][column].cast(pl.Float64).fill_null(float("nan")).to_numpy()[: cut + 1]
                b = other[target][column].cast(pl.Float64).fill_null(float("nan")).to_numpy()[: cut + 1]
                same = _same(a, b)
                if not same.all():
                    bad = int(np.argmin(same))
                    return LookaheadResult(
                        feature.name, False, first_bad_bar=bad, column=column, cut=cut,
                        detail=f"'{column}' of {target} at bar {bad} changed when bars after {cut} changed "
                               f"({float(a[bad])!r} -> {float(b[bad])!r})",
                    )
    return LookaheadResult(feature.name, True, detail=f"{len(cuts)} cuts x 2 perturbations")


def check_warmup(feature: Feature, params: Mapping[str, Any] | None = None, *, bars: int = 900, seed: int = 0) -> str | None:
    """None if each output's declared warm-up is long enough; else what is wrong.

    The builder blanks every output inside its declared warm-up, so what matters is that the warm-up is
    not declared shorter than the output needs: computed without that mask, on a series without gaps,
    an output must have a value at the bar its warm-up ends (else the bars after it would be missing, or,
    for a recursive indicator, unsettled values would reach the dataset), and a value somewhere."""
    import polars as pl

    resolved = feature.resolve_params(params)
    pipeline = FeaturePipeline([(feature, resolved)])
    frame = synthetic_class(bars=bars, seed=seed)
    ends = {item: int(bars * 0.6) for item in frame["item_id"].unique().to_list()}
    reference = pipeline.contributions(frame) if pipeline.needs_reference else None
    out = pipeline.apply(frame, reference=reference, train_end=ends, warmup_mask=False)
    out = out.filter(pl.col("item_id") == "test/A1")  # the asset without gaps
    for column, warmup in feature.output_warmups(resolved).items():
        series = out[column]
        if series.null_count() == series.len():
            return f"'{column}' is missing everywhere"
        first = int(np.argmax(series.is_not_null().to_numpy()))
        if first > warmup:
            return (f"'{column}' has its first value at bar {first}, after its declared warm-up of {warmup} bars: "
                    f"declare a warm-up of at least {first}")
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
    # a cross-asset feature reads the reference series of the whole class, alone as in the batch
    reference = pipeline.contributions(pl.concat(parts)) if pipeline.needs_reference else None
    batch = pipeline.apply(pl.concat(parts), reference=reference)
    for part in parts:
        item_id = part["item_id"][0]
        alone = pipeline.apply(part, reference=reference)
        together = batch.filter(pl.col("item_id") == item_id)
        for column in feature.output_names(resolved):
            a = alone[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            b = together[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            same = _same(a, b)  # exactly: a dataset must not depend on how its symbols were batched
            if not same.all():
                bad = int(np.argmin(same))
                return (f"declared bounded, but '{column}' of {item_id} at bar {bad} differs when computed in a batch "
                        f"({a[bad]!r} alone, {b[bad]!r} in the batch): a window reaches past its warm-up, or a rolling sum "
                        f"carries rounding across series (declare bounded for point-wise and shift-only features)")
    return None


# -- the whole pipeline --------------------------------------------------------------------------------
@dataclass
class PipelineResult:
    ok: bool
    cut: str  # the instant t
    compared: int  # values at or before t compared
    detail: str = ""


TAIL_KEPT = 5  # bars at the end of each lake file that the perturbation never removes


def _perturbed_lake(lake, target, cut_us: int, rng: np.random.Generator, *, hole: int = 20) -> None:
    """Copy ``lake`` to ``target`` with every bar after ``cut_us`` changed (all symbols): prices moved by a
    random walk, volumes redrawn, and the ``hole`` bars right after the cut removed (a gap that starts
    before t turns longer). The last ``TAIL_KEPT`` bars of every file are kept, so each symbol goes on
    after the gap and the lake's span is unchanged: with one file per symbol and year, a single kept bar
    after the jump could be dropped as an outlier, ending the series before t (which the series' end,
    not a feature, decides)."""
    import shutil

    import polars as pl

    shutil.copytree(lake, target)
    for path in _lake_files(target):
        frame = pl.read_parquet(path)
        stamps = frame["ts"].dt.epoch("us").to_numpy()
        after = stamps > cut_us
        if not after.any():
            continue
        n = int(after.sum())
        factor = np.ones(frame.height)
        factor[after] = np.exp(np.cumsum(rng.normal(0.0, 0.02, n))) * rng.uniform(0.8, 1.25)
        columns = {c: frame[c].to_numpy() * factor for c in ("open", "high", "low", "close")}
        if "volume" in frame.columns:  # (instruments without volume have none to change)
            volume = frame["volume"].to_numpy().copy()
            volume[after] = rng.lognormal(8, 2, n)
            columns["volume"] = volume
        keep = np.ones(frame.height, dtype=bool)
        first_after = np.flatnonzero(after)[:hole]
        keep[first_after[first_after < frame.height - TAIL_KEPT]] = False
        changed = frame.with_columns(*[pl.Series(c, v) for c, v in columns.items()])
        changed.filter(pl.Series(keep)).write_parquet(path)


def check_pipeline(cfg, work, *, seed: int = 0) -> list[PipelineResult]:
    """Build ``cfg``'s lake, then the same lake with every bar after t changed, and compare every value at
    or before t of the two datasets: cleaning, gap filling, features, the cross-asset reference,
    normalization and fitted regimes together.

    The instants t: the common training cut (everything fitted is fitted before it; an earlier t would
    change legitimately fitted statistics) and a point in the test span. Both lakes have a two-bar hole
    ending at each t (so t is inside a gap, and the changed lake makes that gap longer): a fill rule that
    looks at a gap's length fails here.
    """
    from pathlib import Path

    from omegaconf import OmegaConf

    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.dataset.read import load_hf, read_manifest, read_timestamps

    work = Path(work)
    lake = Path(str(cfg.data.lake)).expanduser()
    builder = IterativeFinancialDatasetBuilder(cfg)
    train_cut, validation_cut = builder.common_cuts(builder.discover()[0])
    if train_cut is None:
        raise ValueError("the pipeline check needs data.split.method=date with cuts derived from the lake")
    cuts = [np.datetime64(train_cut.replace(tzinfo=None), "us"),
            np.datetime64((validation_cut + (validation_cut - train_cut) / 2).replace(tzinfo=None), "us")]
    cut_us = [int(c.astype(np.int64)) for c in cuts]

    def build(lake_root: Path, out: Path):
        variant = OmegaConf.merge(cfg, {"data": {"lake": str(lake_root), "dataset": str(out)}})
        IterativeFinancialDatasetBuilder(variant).run(force=True)
        manifest = read_manifest(out)
        hf = load_hf(out, manifest).with_format("numpy")
        # every variate, in the manifest's order: targets, then past covariates (data.layout: covariates)
        order = [manifest["variates"].index(v) for v in manifest["targets"] + manifest["covariates"]]
        values = {}
        for row in hf:
            parts = [np.stack(row["target"])] + ([np.stack(row["past_feat_dynamic_real"])] if manifest["covariates"] else [])
            stacked = np.concatenate(parts).astype(np.float64)
            values[str(row["item_id"])] = stacked[np.argsort(order)]
        return manifest, values, read_timestamps(out, manifest)

    holed = work / "lake"
    _holed_lake(lake, holed, cut_us)
    manifest, base, stamps = build(holed, work / "base")
    rng = np.random.default_rng(seed)
    results = []
    for k, (cut, at) in enumerate(zip(cuts, cut_us)):
        _perturbed_lake(holed, work / f"lake-{k}", at, rng)
        _, other, other_stamps = build(work / f"lake-{k}", work / f"perturbed-{k}")
        compared, problem = 0, ""
        for item_id, values in base.items():
            if item_id not in other:
                problem = f"{item_id} disappeared when bars after {cut} changed"
                break
            head = int(np.searchsorted(stamps[item_id], cut, side="right"))
            if not np.array_equal(stamps[item_id][:head], other_stamps[item_id][:head]):
                problem = f"{item_id}: the bar time stamps at or before {cut} changed"
                break
            a, b = values[:, :head], other[item_id][:, :head]
            same = (np.isnan(a) & np.isnan(b)) | (a == b)
            compared += same.size
            if not same.all():
                variate, bar = (int(i) for i in np.argwhere(~same)[0])
                problem = (f"{item_id}: '{manifest['variates'][variate]}' at {stamps[item_id][bar]} changed when bars "
                           f"after {cut} changed ({a[variate, bar]!r} -> {b[variate, bar]!r})")
                break
        results.append(PipelineResult(not problem, str(cut), compared, problem))
    return results


def _lake_files(root: Path) -> list[Path]:
    """The Parquet files of a lake copy that discovery reads (none under a hidden or ``_`` name)."""
    from ohlcv.lake.layout import is_hidden

    return [path for path in sorted(root.rglob("*.parquet"))
            if not any(is_hidden(part) for part in path.relative_to(root).parts)]


def _holed_lake(lake, target, cuts_us: list[int]) -> None:
    """Copy ``lake`` to ``target`` without the last two bars at or before each cut (in the file holding it)."""
    import shutil

    import polars as pl

    shutil.copytree(lake, target)
    for path in _lake_files(target):
        frame = pl.read_parquet(path)
        stamps = frame["ts"].dt.epoch("us").to_numpy()
        keep = np.ones(frame.height, dtype=bool)
        for cut in cuts_us:
            before = np.flatnonzero(stamps <= cut)
            if len(before) and (stamps > cut).any():
                keep[before[-2:]] = False
        if not keep.all():
            frame.filter(pl.Series(keep)).write_parquet(path)


@dataclass
class PluginCheck:
    """One registered feature through every check of ``ohlcv plugins check``."""

    feature: Feature
    plugin: str
    ok: bool
    first_bad_bar: int | None
    detail: str

    def to_dict(self) -> dict:
        return {"feature": self.feature.name, "family": self.feature.family.value, "plugin": self.plugin,
                "ok": self.ok, "first_bad_bar": self.first_bad_bar, "detail": self.detail}


def check_plugins(names=None, progress=None) -> list[PluginCheck]:
    """The look-ahead, warm-up and bounded checks of every registered feature (or of ``names``).

    ``progress`` (see ``ohlcv.render.count_progress``) hears of each feature as its checks start."""
    from ohlcv.errors import ConfigError
    from ohlcv.plugins import load_plugins

    entries = list(load_plugins().features)
    if names:
        unknown = sorted(set(names) - {e.feature.name for e in entries})
        if unknown:
            raise ConfigError(f"no registered feature named {unknown}; see `ohlcv plugins list`", key="NAME")
        by_name = {e.feature.name: e for e in entries}
        entries = [by_name[name] for name in dict.fromkeys(names)]  # in the order named, each once
    checks = []
    if progress is not None:
        progress.on_start("checking", len(entries), "features")
    for entry in entries:
        if progress is not None:
            progress.on_next(entry.feature.name)
        result = check_feature(entry.feature)
        problem = check_warmup(entry.feature) if result.ok else None
        if result.ok and problem is None:
            problem = check_bounded(entry.feature)
        detail = problem or result.detail + ("; bounded: a batch = each series alone" if entry.feature.bounded else "")
        checks.append(PluginCheck(entry.feature, entry.plugin.name, result.ok and problem is None,
                                  result.first_bad_bar, detail))
    return checks
