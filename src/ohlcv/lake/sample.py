"""A realistic synthetic lake, in exactly the lake layout.

Prices follow a geometric random walk with stochastic volatility (a log-AR(1)
variance), regime switches (a two-state Markov chain between calm and
turbulent markets with different drift and volatility), and a common factor
per asset class, so that symbols of one class are correlated. Volume is
log-normal with an intraday U-shape and rises with the size of the move.

Each asset class trades on its real calendar (:data:`SAMPLE_CALENDARS`, the
shipped profiles' defaults): crypto around the clock, FX on weekdays (closed
Friday 17:00 to Sunday 17:00 New York), equities in NYSE sessions with their
holidays and early closes, with volume spikes at the open and the close.
Every class covers the same period: ``bars`` bars of the lake's sparsest
calendar, so a venue that trades more hours has more bars.

``dirt`` injects each kind of defect the builder must handle, one kind per
symbol, and :func:`generate_sample_lake` returns exactly what it injected so
that tests can check the build report rule by rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from ohlcv.errors import ConfigError
from ohlcv.freq import parse_freq
from ohlcv.lake.layout import part_path, resolve_partition, stored_layout
from ohlcv.lake.store import local_target

DIRT_KINDS = (
    "duplicates",
    "unsorted",
    "non_finite",
    "non_positive",
    "high_below_low",
    "open_close_outside",
    "negative_volume",
    "outliers",
    "short_gaps",
    "long_gaps",
    "timezones",
    "dtypes",
    "missing_columns",
    "unreadable",
    "too_short",
)

# (start price, annual-ish volatility scale, typical volume) per asset class
_CLASS_STYLE = {
    "crypto": (30_000.0, 0.012, 500.0),
    "equity": (150.0, 0.006, 200_000.0),
    "fx": (1.1, 0.0015, 1_000_000.0),
    "commodity": (80.0, 0.008, 50_000.0),
}
DEFAULT_CLASSES = ("crypto", "equity", "fx")
# asset class -> calendar, as in profiles/hourly.yaml (a class not listed trades continuously)
SAMPLE_CALENDARS = {"crypto": "continuous", "fx": "weekdays", "equity": "XNYS", "commodity": "CMES"}


@dataclass
class SampleLake:
    root: Path
    symbols: list[str]  # item ids
    bars: int
    injected: dict[str, dict[str, int]] = field(default_factory=dict)  # item id -> {kind: count}


def simulate_class(rng: np.random.Generator, n_symbols: int, bars: int, vol: float) -> np.ndarray:
    """Log returns, shape (n_symbols, bars): common factor + idiosyncratic, stochastic vol, regimes."""
    from scipy.signal import lfilter

    # regime chain: 0 calm, 1 turbulent
    stay = np.array([0.995, 0.97])
    regime = np.zeros(bars, dtype=np.int8)
    draws = rng.random(bars)
    for t in range(1, bars):
        prev = regime[t - 1]
        regime[t] = prev if draws[t] < stay[prev] else 1 - prev
    regime_vol = np.where(regime == 1, 2.5, 1.0)
    regime_drift = np.where(regime == 1, -0.3, 0.05) * vol
    common = rng.standard_normal(bars)
    out = np.empty((n_symbols, bars))
    for i in range(n_symbols):
        rho = rng.uniform(0.3, 0.7)
        shocks = rng.standard_normal(bars) * 0.15
        shocks[0] = 0.0  # the log-variance starts at 0
        log_var = lfilter([1.0], [1.0, -0.97], shocks)  # log_var[t] = 0.97 log_var[t-1] + shock[t]
        sigma = vol * np.exp(log_var / 2) * regime_vol * rng.uniform(0.7, 1.4)
        z = rho * common + math.sqrt(1 - rho * rho) * rng.standard_normal(bars)
        out[i] = regime_drift + sigma * z
    return out


def ohlc_bars(rng, log_returns: np.ndarray, start_price: float, base_volume: float, hours: np.ndarray,
          seasonal: np.ndarray | None = None):
    close = start_price * np.exp(np.cumsum(log_returns))
    open_ = np.concatenate([[start_price], close[:-1]]) * np.exp(rng.normal(0, 1e-4, close.size))
    spread = np.abs(log_returns) + np.abs(rng.normal(0, 0.3, close.size)) * np.std(log_returns)
    high = np.maximum(open_, close) * np.exp(spread * rng.uniform(0.1, 0.6, close.size))
    low = np.minimum(open_, close) * np.exp(-spread * rng.uniform(0.1, 0.6, close.size))
    if seasonal is None:
        seasonal = 1.0 + 0.6 * np.cos(2 * np.pi * (hours - 14) / 24) ** 2
    move = 1.0 + 20 * np.abs(log_returns)
    volume = base_volume * seasonal * move * rng.lognormal(0, 0.4, close.size)
    return open_, high, low, close, volume


def _label_format(partition: str) -> str:
    """strftime of a file's label: ``YYYY-MM`` for month files, ``YYYY`` for year files."""
    return "%Y-%m" if partition == "month" else "%Y"


def _write_files(frame, symbol_dir: Path, partition: str, *, transform=None) -> None:
    """One ``part.parquet`` per month (``year=YYYY/month=MM/``) or per year (``year=YYYY/``);
    ``transform(part, label)`` may change a file (its label as :func:`_label_format` writes it)."""
    import polars as pl

    pieces = frame.with_columns(pl.col("ts").dt.strftime(_label_format(partition)).alias("_label"))
    for (label,), part in pieces.partition_by(["_label"], as_dict=True, maintain_order=True).items():
        year, _, month = label.partition("-")
        target = part_path(symbol_dir, int(year), int(month) if month else None)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = part.drop("_label")
        if transform is not None:
            part = transform(part, label)
        if isinstance(part, bytes):  # a deliberately corrupt file
            target.write_bytes(part)
        else:
            part.write_parquet(target)


def generate_sample_lake(
    root: Path,
    *,
    symbols_per_class: int = 4,
    asset_classes: Iterable[str] = DEFAULT_CLASSES,
    freq: str = "1h",
    bars: int = 2000,
    start: str = "2023-01-01",
    seed: int = 0,
    dirt: Iterable[str] = (),
    calendars: dict[str, str] | None = None,
    partition: str = "auto",
) -> SampleLake:
    """Write a synthetic lake under ``root`` and say exactly what was injected.

    ``partition``: "month" (``year=YYYY/month=MM/part.parquet``), "year" (``year=YYYY/part.parquet``)
    or "auto" (:func:`~ohlcv.lake.layout.default_partition`, as ``ohlcv lake ingest`` writes them)."""
    import polars as pl

    root = local_target(root, "sample")
    classes = list(asset_classes)
    unknown_dirt = sorted(set(dirt) - set(DIRT_KINDS))
    if unknown_dirt:
        raise ConfigError(f"unknown dirt kinds {unknown_dirt}; choose from {', '.join(DIRT_KINDS)}", key="--dirt")
    if symbols_per_class <= 0 or bars <= 10:
        raise ConfigError("need at least one symbol per class and more than 10 bars", key="--symbols/--bars")
    if dirt and bars < 400:
        raise ConfigError(f"injecting dirt needs at least 400 bars per symbol, got {bars}", key="--bars")
    frequency = parse_freq(freq)
    if frequency.seconds is None:
        raise ConfigError(f"sample lakes use fixed-length bars (s, min, h, D), not '{freq}'", key="--freq")
    partition = resolve_partition(partition, frequency)
    label = _label_format(partition)
    for asset_class in classes:  # written over an older sample lake: the same layout, or the bars would mix
        freq_dir = root / f"asset_class={asset_class}" / f"freq={frequency.canonical}"
        for i in range(symbols_per_class):
            symbol_dir = freq_dir / f"symbol={_symbol_name(asset_class, i)}"
            held = set().union(*stored_layout(symbol_dir).values()) - {partition}
            if held:
                kind = held.pop()
                raise ConfigError(f"{symbol_dir} is stored by {kind}: write the sample lake to another folder, or "
                                  f"pass --partition {kind}", key="--partition")
    rng = np.random.default_rng(seed)
    t0 = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    lake = SampleLake(root=root, symbols=[], bars=bars)
    dirt_queue = [kind for kind in DIRT_KINDS if kind in set(dirt)]
    venues = dict(SAMPLE_CALENDARS if calendars is None else calendars)
    if frequency.seconds > 86400:  # weekly bars: no venue lays out sessions that long
        if calendars:
            raise ConfigError(f"'{frequency.canonical}' sample bars are laid out on the continuous calendar; "
                              "pass no calendars", key="calendars")
        venues = {}

    # every class covers the same period: ``bars`` bars of the sparsest calendar of the lake (a venue
    # that trades more hours has more bars), so that a split at common dates fits every class
    layouts = {c: _session_bars(venues.get(c, "continuous"), t0, frequency, bars) for c in classes}
    if len(layouts) > 1:
        end = max(layout[0][-1] for layout in layouts.values())
        layouts = {c: _session_bars(venues.get(c, "continuous"), t0, frequency, bars, until=end) for c in classes}
    for asset_class in classes:
        price, vol, volume = _CLASS_STYLE.get(asset_class, (100.0, 0.008, 10_000.0))
        ts, hours, seasonal = layouts[asset_class]
        returns = simulate_class(rng, symbols_per_class, len(ts), vol)
        for i in range(symbols_per_class):
            symbol = _symbol_name(asset_class, i)
            item_id = f"{asset_class}/{symbol}"
            o, h, l, c, v = ohlc_bars(rng, returns[i], price * rng.uniform(0.5, 2.0), volume, hours, seasonal)
            frame = pl.DataFrame(
                {"ts": ts.astype("datetime64[us]"), "open": o, "high": h, "low": l, "close": c, "volume": v}
            ).with_columns(pl.col("ts").dt.cast_time_unit("us").dt.replace_time_zone("UTC"))
            symbol_dir = root / f"asset_class={asset_class}" / f"freq={frequency.canonical}" / f"symbol={symbol}"
            kind = dirt_queue.pop(0) if dirt_queue else None
            frame, counts, transform = _inject(kind, frame, rng, label) if kind else (frame, {}, None)
            _write_files(frame, symbol_dir, partition, transform=transform)
            lake.symbols.append(item_id)
            if counts:
                lake.injected[item_id] = counts
    if dirt_queue:
        raise ConfigError(
            f"{len(dirt_queue)} dirt kinds did not find a symbol: raise --symbols to at least "
            f"{math.ceil(len(set(dirt)) / len(classes))}",
            key="--symbols",
        )
    return lake


def _symbol_name(asset_class: str, index: int) -> str:
    return f"{asset_class[:3].upper()}{index:03d}"


def _session_bars(venue: str, t0: datetime, frequency, bars: int, until=None):
    """The first ``bars`` bar labels of ``venue``'s calendar from ``t0`` (datetime64[s]) — or every label
    up to ``until`` —, each bar's hour of day (UTC), and the volume's intraday shape (None: the default
    around-the-clock shape)."""
    from ohlcv.calendars import US_PER_DAY, resolve

    calendar = resolve({"sample": venue}, "sample")
    step = frequency.seconds * 1_000_000
    start = int(np.datetime64(t0.replace(tzinfo=None), "us").astype(np.int64))
    if until is not None:
        labels = calendar.labels(start, int(np.datetime64(until, "us").astype(np.int64)), frequency)
    elif calendar.continuous:
        labels = start + step * np.arange(bars, dtype=np.int64)
    else:
        span = bars * step * 2 + 10 * US_PER_DAY  # enough calendar time for most venues, grown if not
        while True:
            labels = calendar.labels(start, start + span, frequency)
            if len(labels) >= bars:
                break
            span *= 2
        labels = labels[:bars]
    ts = labels.astype("datetime64[us]").astype("datetime64[s]")
    hours = ((ts - ts.astype("datetime64[D]")).astype("timedelta64[h]").astype(int)) % 24
    if not calendar.exchange or frequency.seconds >= 86400:
        return ts, hours, None
    # equity-style sessions: heavy trading at the open and the close, quiet at midday
    day = labels // US_PER_DAY
    first = np.r_[True, day[1:] != day[:-1]]
    session = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, len(labels)])
    position = (np.arange(len(labels)) - starts[session]) / np.maximum(counts[session] - 1, 1)
    seasonal = 1.0 + 2.5 * (1 - position) ** 6 + 1.5 * position**6
    return ts, hours, seasonal


def _spaced_rows(rng, height: int, count: int, margin: int = 300) -> list[int]:
    """``count`` row indices well apart from each other and from the ends."""
    slots = np.linspace(margin, height - 50, count + 2)[1:-1]
    return sorted(int(s) + int(rng.integers(-5, 5)) for s in slots)


def _inject(kind: str, frame, rng, label: str = "%Y-%m"):
    """Apply one kind of dirt; return (frame, {report rule: expected count}, per-file transform).
    ``label``: the strftime of a file's label (:func:`_label_format`)."""
    import polars as pl

    n = frame.height
    rows = _spaced_rows(rng, n, 5)

    def set_rows(df, column, values):
        mask = pl.int_range(0, pl.len()).is_in(rows)
        return df.with_columns(pl.when(mask).then(values).otherwise(pl.col(column)).alias(column))

    if kind == "duplicates":
        extra = frame[rows]
        return pl.concat([frame, extra]).sort("ts"), {"duplicate_ts": len(rows)}, None
    if kind == "unsorted":
        # reverse every file: each reversed file has height-1 descending steps
        def reverse(part, _label):
            return part.reverse()

        files = frame.group_by(pl.col("ts").dt.strftime(label)).len()
        expected = int((files["len"] - 1).sum())
        return frame, {"rows_unsorted": expected}, reverse
    if kind == "non_finite":
        frame = set_rows(frame, "close", pl.lit(float("nan")))
        frame = frame.with_columns(
            pl.when(pl.int_range(0, pl.len()) == rows[0] + 40).then(float("inf")).otherwise(pl.col("high")).alias("high")
        )
        return frame, {"non_finite": len(rows) + 1}, None
    if kind == "non_positive":
        frame = set_rows(frame, "low", pl.lit(0.0))
        return frame, {"non_positive_price": len(rows)}, None
    if kind == "high_below_low":
        mask = pl.int_range(0, pl.len()).is_in(rows)
        frame = frame.with_columns(
            pl.when(mask).then(pl.col("low")).otherwise(pl.col("high")).alias("high"),
            pl.when(mask).then(pl.col("high")).otherwise(pl.col("low")).alias("low"),
        )
        return frame, {"high_below_low": len(rows)}, None
    if kind == "open_close_outside":
        frame = set_rows(frame, "open", pl.col("high") * 1.01)
        return frame, {"open_close_outside": len(rows)}, None
    if kind == "negative_volume":
        frame = set_rows(frame, "volume", -pl.col("volume"))
        return frame, {"negative_volume": len(rows)}, None
    if kind == "outliers":
        mask = pl.int_range(0, pl.len()).is_in(rows)
        frame = frame.with_columns(
            [pl.when(mask).then(pl.col(c) * 50).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
        )
        return frame, {"outliers": len(rows)}, None
    if kind == "short_gaps":
        drop = [r + k for r in rows for k in range(2)]
        frame = frame.filter(~pl.int_range(0, pl.len()).is_in(drop))
        return frame, {"gap_bars_filled": len(drop)}, None
    if kind == "long_gaps":
        # the first data.cleaning.max_ffill_gap (3) bars of each gap are filled, the rest stay missing
        drop = [r + k for r in rows[:2] for k in range(30)]
        frame = frame.filter(~pl.int_range(0, pl.len()).is_in(drop))
        return frame, {"gap_bars_filled": 2 * 3, "gap_bars_missing": len(drop) - 2 * 3}, None
    if kind == "timezones":
        # odd months (years): naive timestamps (meant as UTC); even ones: New York local time
        def odd(file_label: str) -> bool:
            return bool(int(file_label.rsplit("-", 1)[-1]) % 2)

        def retime(part, file_label):
            if odd(file_label):
                return part.with_columns(pl.col("ts").dt.replace_time_zone(None))
            return part.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))

        labels = frame.select(pl.col("ts").dt.strftime(label).unique()).to_series().to_list()
        naive = sum(1 for file_label in labels if odd(file_label))
        return frame, {"files_tz_naive": naive, "files_tz_converted": len(labels) - naive}, retime
    if kind == "dtypes":
        def stringly(part, _label):
            return part.with_columns(
                pl.col("close").cast(pl.Utf8), pl.col("volume").round(0).cast(pl.Int64), pl.col("open").cast(pl.Float32)
            )

        files = frame.select(pl.col("ts").dt.strftime(label).n_unique()).item()
        return frame, {"files_dtype_repaired": files}, stringly
    if kind == "missing_columns":
        first = frame["ts"].dt.strftime(label)[0]
        dropped_rows = frame.filter(pl.col("ts").dt.strftime(label) == first).height

        def drop_close(part, file_label):  # (a file without only its volume is kept: files_no_volume)
            return part.drop("close") if file_label == first else part

        return frame, {"files_missing_columns": 1, "_rows_lost": dropped_rows}, drop_close
    if kind == "unreadable":
        last = frame["ts"].dt.strftime(label)[-1]
        lost = frame.filter(pl.col("ts").dt.strftime(label) == last).height

        def corrupt(part, file_label):
            if file_label == last:
                return b"PAR1 this is not a parquet file \x00\x01\x02"
            return part

        return frame, {"files_unreadable": 1, "_rows_lost": lost}, corrupt
    if kind == "too_short":
        return frame.head(120), {"quarantined": 1}, None
    raise AssertionError(kind)
