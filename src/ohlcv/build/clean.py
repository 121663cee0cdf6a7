"""Cleaning one symbol: every rule has a defined outcome and is counted.

Outcomes: a *file* is skipped (unreadable, missing columns), a *bar* is
dropped, a value is *repaired*, a gap is *left missing* (so uni2ts's observed
mask sees it), or the whole *symbol is quarantined* with a reason. Nothing is
dropped silently: :data:`RULES` lists every counter that can appear in the
build report, with its outcome.

All rules are causal: the outlier filter compares a bar with a rolling
median and MAD of *earlier* bars only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ohlcv.freq import Frequency
from ohlcv.lake.layout import REQUIRED_COLUMNS

if TYPE_CHECKING:
    import polars as pl

PRICES = ("open", "high", "low", "close")

RULES: dict[str, tuple[str, str]] = {
    "files_unreadable": ("file skipped", "the file could not be read as Parquet"),
    "files_missing_columns": ("file skipped", "a required column (ts, open, high, low, close, volume) is absent"),
    "files_dtype_repaired": ("repaired", "columns of the wrong type were cast (prices and volume to float64, timestamps parsed)"),
    "files_tz_naive": ("repaired", "timestamps without a time zone were taken as UTC"),
    "files_tz_converted": ("repaired", "timestamps in another time zone were converted to UTC"),
    "bad_timestamp": ("bar dropped", "the timestamp could not be parsed"),
    "out_of_range": ("bar dropped", "outside data.start / data.end"),
    "rows_unsorted": ("repaired", "rows out of time order were sorted"),
    "off_grid": ("repaired", "timestamps between grid points were aligned down to the bar grid"),
    "duplicate_ts": ("bar dropped", "a repeated timestamp; the last bar is kept"),
    "non_finite": ("bar dropped", "a price is NaN, infinite or missing"),
    "non_finite_volume": ("repaired", "a NaN or infinite volume was set missing"),
    "non_positive_price": ("bar dropped", "a price is zero or negative"),
    "high_below_low": ("repaired", "high below low: the two were swapped"),
    "open_close_outside": ("repaired", "open or close outside [low, high]: the range was widened to contain them"),
    "negative_volume": ("repaired", "negative volume was set missing"),
    "outliers": ("bar dropped", "close too far from the median of earlier bars (causal rolling median/MAD)"),
    "gap_bars_filled": ("repaired", "a short gap: price carried forward, volume 0"),
    "gap_bars_missing": ("left missing", "a long gap: bars left missing so the observed mask sees them"),
}


@dataclass
class SymbolReport:
    item_id: str
    files: int = 0
    rows_read: int = 0
    bars: int = 0  # length of the cleaned series on the grid
    observed: int = 0  # bars with a price
    counts: dict[str, int] = field(default_factory=dict)
    file_problems: list[str] = field(default_factory=list)
    quarantined: str | None = None

    def add(self, rule: str, count: int = 1) -> None:
        if count:
            self.counts[rule] = self.counts.get(rule, 0) + int(count)

    def to_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "files": self.files,
            "rows_read": self.rows_read,
            "bars": self.bars,
            "observed": self.observed,
            "counts": dict(sorted(self.counts.items())),
            "file_problems": self.file_problems,
            "quarantined": self.quarantined,
        }


@dataclass(frozen=True)
class CleaningSettings:
    max_ffill_gap: int
    outlier_window: int
    outlier_threshold: float
    min_length: int


def polars_every(freq: Frequency) -> str:
    """The Polars duration string of a bar frequency."""
    unit = {"s": "s", "min": "m", "h": "h", "D": "d", "B": "d", "W": "w", "M": "mo"}[freq.unit]
    return f"{freq.n}{unit}"


def to_utc_timestamps(frame: "pl.DataFrame", report: SymbolReport) -> tuple["pl.DataFrame", bool]:
    """Return the frame with ``ts`` as Datetime(us, UTC), and whether a dtype repair happened."""
    import polars as pl

    dtype = frame.schema["ts"]
    repaired = False
    if dtype == pl.Utf8 or dtype == pl.String:
        parsed = frame["ts"].str.to_datetime(strict=False, time_unit="us")
        frame = frame.with_columns(parsed.alias("ts"))
        repaired = True
    elif dtype.is_integer() or dtype.is_float():
        # epoch numbers: the unit (s, ms, us, ns) follows from the magnitude
        values = frame["ts"].cast(pl.Float64)
        magnitude = values.abs().median() or 0.0
        to_micros = 1e6 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1.0 if magnitude < 1e17 else 1e-3
        micros = (values * to_micros).round(0).cast(pl.Int64)
        frame = frame.with_columns(pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC").alias("ts"))
        repaired = True
    elif dtype == pl.Date:
        frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("us")))
        repaired = True
    dtype = frame.schema["ts"]
    tz = getattr(dtype, "time_zone", None)
    if tz is None:
        frame = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        report.add("files_tz_naive")
    elif tz != "UTC":
        frame = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        report.add("files_tz_converted")
    frame = frame.with_columns(pl.col("ts").dt.cast_time_unit("us"))
    return frame, repaired


def read_symbol_files(files: list[Path] | tuple[Path, ...], report: SymbolReport) -> "pl.DataFrame | None":
    """Read and normalise every file of one symbol; skip (and count) the bad ones."""
    import polars as pl

    frames = []
    for path in files:
        report.files += 1
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            report.add("files_unreadable")
            report.file_problems.append(f"{path}: unreadable ({type(exc).__name__})")
            continue
        rename = {c: c.lower() for c in frame.columns if c.lower() in REQUIRED_COLUMNS and c != c.lower()}
        frame = frame.rename(rename) if rename else frame
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            report.add("files_missing_columns")
            report.file_problems.append(f"{path}: missing column(s) {', '.join(missing)}")
            continue
        frame = frame.select(REQUIRED_COLUMNS)
        report.rows_read += frame.height
        wrong = [c for c in REQUIRED_COLUMNS[1:] if frame.schema[c] != pl.Float64]
        if wrong:
            frame = frame.with_columns(
                [
                    (pl.col(c).cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False) if frame.schema[c] == pl.Utf8 else pl.col(c).cast(pl.Float64, strict=False))
                    for c in wrong
                ]
            )
        frame, ts_repaired = to_utc_timestamps(frame, report)
        if wrong or ts_repaired:
            report.add("files_dtype_repaired")
        frames.append(frame)
    if not frames:
        return None
    return pl.concat(frames, how="vertical")


def clean_symbol(
    frame: "pl.DataFrame",
    freq: Frequency,
    settings: CleaningSettings,
    report: SymbolReport,
    *,
    start=None,
    end=None,
) -> "pl.DataFrame | None":
    """Clean one symbol's bars onto the regular grid of ``freq``; None if quarantined."""
    import polars as pl

    bad_ts = frame["ts"].null_count()
    report.add("bad_timestamp", bad_ts)
    frame = frame.filter(pl.col("ts").is_not_null())
    if start is not None or end is not None:
        keep = pl.lit(True)
        if start is not None:
            keep = keep & (pl.col("ts") >= start)
        if end is not None:
            keep = keep & (pl.col("ts") <= end)
        before = frame.height
        frame = frame.filter(keep)
        report.add("out_of_range", before - frame.height)

    # order: count the steps that go back in time, then sort (stable: later rows stay later)
    backwards = frame.select((pl.col("ts").diff().dt.total_microseconds() < 0).sum()).item()
    report.add("rows_unsorted", int(backwards or 0))
    frame = frame.sort("ts", maintain_order=True)

    every = polars_every(freq)
    aligned = frame["ts"].dt.truncate(every)
    report.add("off_grid", int((aligned != frame["ts"]).sum()))
    frame = frame.with_columns(aligned.alias("ts"))
    if freq.unit == "B":
        frame = frame.filter(pl.col("ts").dt.weekday() <= 5)

    before = frame.height
    frame = frame.unique(subset="ts", keep="last", maintain_order=True)
    report.add("duplicate_ts", before - frame.height)

    finite_prices = pl.all_horizontal([pl.col(c).is_finite().fill_null(False) for c in PRICES])
    before = frame.height
    frame = frame.filter(finite_prices)
    report.add("non_finite", before - frame.height)

    bad_volume = ~pl.col("volume").is_finite().fill_null(True)
    report.add("non_finite_volume", int(frame.select(bad_volume.sum()).item()))
    frame = frame.with_columns(pl.when(bad_volume).then(None).otherwise(pl.col("volume")).alias("volume"))

    positive = pl.all_horizontal([pl.col(c) > 0 for c in PRICES])
    before = frame.height
    frame = frame.filter(positive)
    report.add("non_positive_price", before - frame.height)

    swapped = pl.col("high") < pl.col("low")
    report.add("high_below_low", int(frame.select(swapped.sum()).item()))
    frame = frame.with_columns(
        pl.when(swapped).then(pl.col("low")).otherwise(pl.col("high")).alias("high"),
        pl.when(swapped).then(pl.col("high")).otherwise(pl.col("low")).alias("low"),
    )
    outside = (pl.max_horizontal("open", "close") > pl.col("high")) | (pl.min_horizontal("open", "close") < pl.col("low"))
    report.add("open_close_outside", int(frame.select(outside.sum()).item()))
    frame = frame.with_columns(
        pl.max_horizontal("open", "high", "close").alias("high"),
        pl.min_horizontal("open", "low", "close").alias("low"),
    )
    negative = pl.col("volume") < 0
    report.add("negative_volume", int(frame.select(negative.sum().fill_null(0)).item()))
    frame = frame.with_columns(pl.when(negative).then(None).otherwise(pl.col("volume")).alias("volume"))

    flagged = outlier_mask(frame["close"], settings.outlier_window, settings.outlier_threshold)
    report.add("outliers", int(flagged.sum()))
    frame = frame.filter(~flagged)

    if frame.height == 0:
        report.quarantined = "no valid bars left after cleaning"
        return None
    frame = to_grid(frame, freq, settings.max_ffill_gap, report)
    report.bars = frame.height
    report.observed = frame.height - frame["close"].null_count()
    if report.observed < settings.min_length:
        report.quarantined = (
            f"only {report.observed} clean bars (< data.cleaning.min_length={settings.min_length})"
        )
        return None
    return frame


def outlier_mask(close: "pl.Series", window: int, threshold: float) -> "pl.Series":
    """True where log(close) is more than ``threshold`` robust deviations from its past median.

    Causal: the median and the scale use the ``window`` bars *before* each
    bar. The scale is the median absolute one-bar log return of those bars
    (x 1.4826, a normal-consistent MAD), grown by the square root of the
    median's typical lag so that ordinary drift is not flagged.
    """
    import polars as pl

    min_samples = max(10, window // 4)
    frame = pl.DataFrame({"lc": close.log()})
    past = pl.col("lc").shift(1)
    level = past.rolling_median(window_size=window, min_samples=min_samples)
    step = (pl.col("lc") - pl.col("lc").shift(1)).abs().shift(1)
    scale = step.rolling_median(window_size=window, min_samples=min_samples) * 1.4826 * ((window / 2) ** 0.5)
    z = ((pl.col("lc") - level).abs() / (scale + 1e-12)).fill_null(0.0)
    return frame.select((z > threshold).alias("outlier")).to_series()


def to_grid(frame: "pl.DataFrame", freq: Frequency, max_ffill_gap: int, report: SymbolReport) -> "pl.DataFrame":
    """Reindex onto the full bar grid: short gaps carried forward (volume 0), long gaps left missing."""
    import polars as pl

    first, last = frame["ts"][0], frame["ts"][-1]
    grid = pl.datetime_range(first, last, interval=polars_every(freq), time_unit="us", time_zone="UTC", eager=True)
    grid_frame = pl.DataFrame({"ts": grid})
    if freq.unit == "B":
        grid_frame = grid_frame.filter(pl.col("ts").dt.weekday() <= 5)
    full = grid_frame.join(frame, on="ts", how="left", maintain_order="left")
    missing = pl.col("close").is_null()
    run_id = (missing != missing.shift(1)).fill_null(True).cum_sum()
    full = full.with_columns(run_id.alias("_run"))
    full = full.with_columns(pl.len().over("_run").alias("_run_len"))
    fill = missing & (pl.col("_run_len") <= max_ffill_gap)
    filled = int(full.select(fill.sum()).item())
    report.add("gap_bars_filled", filled)
    report.add("gap_bars_missing", int(full.select(missing.sum()).item()) - filled)
    carried = pl.col("close").forward_fill()
    full = full.with_columns(
        [pl.when(fill).then(carried).otherwise(pl.col(c)).alias(c) for c in PRICES]
        + [pl.when(fill).then(0.0).otherwise(pl.col("volume")).alias("volume")]
    )
    return full.drop("_run", "_run_len")
