"""Cleaning: every rule has a defined outcome and is counted per symbol.

Outcomes: a *file* is skipped (unreadable, missing columns), a *bar* is
dropped, a value is *repaired*, a gap is *left missing* (so uni2ts's observed
mask sees it), or the whole *symbol is quarantined* with a reason. Nothing is
dropped silently: :data:`RULES` lists every counter that can appear in the
build report, with its outcome.

All rules are causal: the outlier filter compares a bar with a rolling
median and MAD of *earlier* bars only, and whether a missing bar is filled
depends only on how many bars of its gap came before it (the first
``max_ffill_gap`` bars of any gap are filled, whatever the gap's length).

The grid is the venue's (:mod:`ohlcv.calendars`): a bar is expected only
while the venue trades, so nights, weekends and holidays are not gaps, and
a bar outside the sessions is counted and dropped (``off_session``).

The work is columnar: a batch of symbols is one Polars frame with an
``item_id`` column (and, inside :func:`clean_batch`, the symbol's integer
position in the batch as the grouping key), and every rule is a masked
expression evaluated per symbol, so the cost per batch is a handful of
queries, not a handful per symbol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ohlcv.calendars import Calendar, step_us
from ohlcv.freq import Frequency
from ohlcv.lake.layout import REQUIRED_COLUMNS
from ohlcv.lake.store import read_failure

if TYPE_CHECKING:
    import polars as pl

PRICES = ("open", "high", "low", "close")

RULES: dict[str, tuple[str, str]] = {
    "files_unreadable": ("file skipped", "the file could not be read as Parquet"),
    "files_missing_columns": ("file skipped", "a required column (ts, open, high, low, close) is absent"),
    "files_dtype_repaired": ("repaired", "columns of the wrong type were cast (prices and volume to float64, timestamps parsed)"),
    "files_tz_naive": ("repaired", "timestamps without a time zone were taken as UTC"),
    "files_tz_converted": ("repaired", "timestamps in another time zone were converted to UTC"),
    "bad_timestamp": ("bar dropped", "the timestamp could not be parsed"),
    "out_of_range": ("bar dropped", "outside data.start / data.end"),
    "future_timestamp": ("bar dropped", "stamped after the build started: a clock, time-zone or parsing error"),
    "non_trading_day": ("bar dropped", "a weekend bar on a business-day (B) grid"),
    "off_session": ("bar dropped", "outside the venue's sessions (data.calendars): the market was closed"),
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
    "gap_bars_filled": ("repaired", "the first data.cleaning.max_ffill_gap bars of a gap: price carried forward, volume 0"),
    "gap_bars_missing": ("left missing", "the rest of a gap: bars left missing so the observed mask sees them"),
    "closed_market_bars": ("not a gap", "clock bars while the venue was closed (nights, weekends, holidays): not on the grid"),
    "files_no_volume": ("repaired", "the file has no volume column: its bars are kept with volume missing"),
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
    missing_variates: list[str] = field(default_factory=list)  # variates without a single value in the series

    def add(self, rule: str, count: int = 1) -> None:
        if count:
            self.counts[rule] = self.counts.get(rule, 0) + int(count)

    @classmethod
    def from_dict(cls, data: dict) -> "SymbolReport":
        report = cls(data["item_id"])
        for key in ("files", "rows_read", "bars", "observed", "quarantined"):
            setattr(report, key, data[key])
        report.counts = dict(data["counts"])
        report.file_problems = list(data["file_problems"])
        report.missing_variates = list(data.get("missing_variates", []))
        return report

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
            "missing_variates": self.missing_variates,
        }


@dataclass(frozen=True)
class CleaningSettings:
    max_ffill_gap: int
    outlier_window: int
    outlier_threshold: float
    min_length: int
    max_off_session: float = 0.05  # a symbol with a larger share of bars outside its sessions is quarantined


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


def edge_timestamp(files, *, earliest: bool, start=None, end=None) -> "datetime | None":
    """The earliest (or latest) usable time stamp in a symbol's files — within [start, end] and not in
    the future —, trying files from that end; None if none is readable. Only ``ts`` is read.

    Files are in discovery's order: by year, a year's own file before its month folders. Where a year
    has both, the first usable file from that end does not settle the edge alone: the first usable file
    of the other kind in the same year is read too."""
    from ohlcv.lake.layout import file_partition

    found, settled = None, None  # the edge so far; the (year, kind) of the file that gave it
    for path in (files if earliest else reversed(files)):
        year, by_year = file_partition(path)
        if settled is not None and (year != settled[0] or by_year == settled[1]):
            if year != settled[0]:
                break
            continue  # another file of the kind already read: nearer the middle of the year
        stamps = _usable_stamps(path, start, end)
        if stamps is None or not stamps.len():
            continue
        edge = stamps.min() if earliest else stamps.max()
        found = edge if found is None else (min(found, edge) if earliest else max(found, edge))
        if settled is not None:
            break
        settled = (year, by_year)
    return found


def _usable_stamps(path, start, end):
    """A file's time stamps within [start, end] and not in the future; None if it cannot be read."""
    import polars as pl

    now = datetime.now(timezone.utc)
    try:
        frame, _ = to_utc_timestamps(pl.read_parquet(path, columns=["ts"]), SymbolReport("probe"))
        stamps = frame["ts"].drop_nulls()
        return stamps.filter((stamps <= now) & (stamps >= (start or stamps.min())) & (stamps <= (end or now)))
    except Exception as exc:  # noqa: BLE001 - a bad file is skipped here and reported by the build
        fatal = read_failure(path, exc)
        if fatal is not None:
            raise fatal from None
        return None


def _schema_is_clean(schema) -> bool:
    import polars as pl

    ts = schema.get("ts")
    if not isinstance(ts, pl.Datetime) or ts.time_zone != "UTC":
        return False
    return all(schema.get(c) == pl.Float64 for c in REQUIRED_COLUMNS[1:])


def read_symbol_files(files: list[Path] | tuple[Path, ...], report: SymbolReport) -> "pl.DataFrame | None":
    """Read and normalise every file of one symbol, one by one; skip (and count) the bad ones."""
    import polars as pl

    frames = []
    for path in files:
        report.files += 1
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is skipped; a failed fetch stops the build
            fatal = read_failure(path, exc)
            if fatal is not None:
                raise fatal from None
            report.add("files_unreadable")
            report.file_problems.append(f"{path}: unreadable ({type(exc).__name__})")
            continue
        rename = {c: c.lower() for c in frame.columns if c.lower() in REQUIRED_COLUMNS and c != c.lower()}
        frame = frame.rename(rename) if rename else frame
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing == ["volume"]:  # prices without volume (FX spot, indices): keep the bars
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("volume"))
            report.add("files_no_volume")
            missing = []
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
                    pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)
                    if frame.schema[c] == pl.Utf8
                    else pl.col(c).cast(pl.Float64, strict=False)
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


def _read_clean_files(sources) -> "pl.DataFrame | None":
    """One multi-file scan of a batch, if every file has the lake's clean schema; else None."""
    import polars as pl

    files = [f for source in sources for f in source.files]
    if not files:
        return None
    owner = {str(f): source.item_id for source in sources for f in source.files}
    try:
        scan = pl.scan_parquet(files, include_file_paths="_path")
        if not _schema_is_clean(scan.collect_schema()):
            return None
        frame = scan.select("_path", pl.col("ts").dt.cast_time_unit("us"), *REQUIRED_COLUMNS[1:]).collect()
    except Exception:  # noqa: BLE001 - differing schemas, a corrupt file...: the careful path sorts it out
        return None
    # the rows of each file are together: name each run of rows after its file's symbol
    # (cheaper than mapping every row's path string)
    runs = frame["_path"].rle()
    run_ids = pl.Series("item_id", [owner[p] for p in runs.struct.field("value").to_list()], dtype=pl.Utf8)
    index = np.repeat(np.arange(len(run_ids), dtype=np.uint32), runs.struct.field("len").to_numpy())
    return frame.select(run_ids.gather(index).alias("item_id"), *REQUIRED_COLUMNS)


def read_batch(sources, reports: dict[str, SymbolReport]) -> "pl.DataFrame":
    """Every file of a batch of symbols as one frame with an ``item_id`` column.

    A batch whose files all have the lake's clean schema is read in one
    multi-file scan. Otherwise each symbol is tried the same way, and a
    symbol with a defective file is read file by file, so that one bad file
    costs only itself.
    """
    import polars as pl

    scanned, careful = [], []
    whole = _read_clean_files(sources)
    if whole is not None:
        scanned.append(whole)
        for source in sources:
            reports[source.item_id].files += len(source.files)
    else:
        for source in sources:
            report = reports[source.item_id]
            frame = _read_clean_files([source])
            if frame is not None:
                report.files += len(source.files)
                scanned.append(frame)
                continue
            frame = read_symbol_files(source.files, report)  # counts its own rows and problems
            if frame is not None:
                careful.append(frame.select(pl.lit(source.item_id).alias("item_id"), *REQUIRED_COLUMNS))
    frames = scanned + careful
    if not frames:
        return pl.DataFrame(schema={"item_id": pl.Utf8, "ts": pl.Datetime("us", "UTC"), **{c: pl.Float64 for c in REQUIRED_COLUMNS[1:]}})
    return pl.concat(frames, how="vertical")


def _tally(counts: "pl.DataFrame", reports: dict[str, SymbolReport], ids: list[str]) -> None:
    for row in counts.iter_rows(named=True):
        item_id = ids[row.pop(KEY)]
        if "_rows" in row:  # every row of the symbol that was read
            reports[item_id].rows_read = int(row.pop("_rows"))
        for rule, value in row.items():
            reports[item_id].add(rule, int(value or 0))


KEY = "_k"  # the symbol's position in the batch (UInt32): grouping and sorting on it is cheaper than on strings


def clean_batch(
    frame: "pl.DataFrame",
    freq: Frequency,
    settings: CleaningSettings,
    reports: dict[str, SymbolReport],
    *,
    start=None,
    end=None,
    calendars: "Mapping[str, Calendar] | None" = None,
    now: "datetime | None" = None,
) -> "pl.DataFrame":
    """Clean a batch of symbols onto the bar grid of ``freq`` and of each symbol's venue.

    ``calendars`` maps asset classes to their :class:`~ohlcv.calendars.Calendar`
    (a class it does not name trades continuously).

    ``frame`` has ``item_id`` plus the lake columns, the rows of each symbol
    together and in file order. Returns the cleaned bars of every symbol that
    was not quarantined (its report says why), sorted by item id and time.

    Precedence: a bar dropped by one rule is not counted by a later one
    (duplicates first, then non-finite prices, then non-positive prices);
    repairs are counted on the bars that are kept.
    """
    import polars as pl

    runs = frame["item_id"].rle()
    run_ids = runs.struct.field("value").to_list()
    ids = sorted(set(run_ids))
    if len(run_ids) == len(ids):  # each symbol's rows together (as read_batch returns them): number the runs
        position = {item_id: k for k, item_id in enumerate(ids)}
        keys = np.repeat(np.array([position[i] for i in run_ids], dtype=np.uint32), runs.struct.field("len").to_numpy())
        frame = frame.with_columns(pl.Series(KEY, keys, dtype=pl.UInt32))
    else:
        frame = frame.with_columns(pl.col("item_id").replace_strict(ids, list(range(len(ids))), return_dtype=pl.UInt32).alias(KEY))
    key = pl.col(KEY)
    ts = pl.col("ts")
    future = (ts > (now or datetime.now(timezone.utc))).fill_null(False)
    in_range = ts.is_not_null() & ~future
    if start is not None:
        in_range = in_range & (ts >= start)
    if end is not None:
        in_range = in_range & (ts <= end)
    venue = {k: _calendar_of(item_id, calendars) for k, item_id in enumerate(ids)}
    sessions = {k for k, cal in venue.items() if not cal.continuous}
    if sessions:  # bars of venues with sessions: aligned to the bar of the session that contains them
        frame = frame.with_columns(_session_labels(frame, venue, sessions, freq, frame.select(in_range).to_series()))
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("_session"))
    on_sessions = key.is_in(sorted(sessions)) if sessions else pl.lit(False)
    prices_finite = pl.all_horizontal([pl.col(c).is_finite().fill_null(False) for c in PRICES])
    prices_positive = pl.all_horizontal([(pl.col(c) > 0).fill_null(False) for c in PRICES])
    # the business-day rule of the B frequency, for symbols without a venue calendar (a venue's own sessions
    # already leave weekends out: counted once, as off_session)
    weekend = (in_range & ~on_sessions & (ts.dt.weekday() > 5)) if freq.unit == "B" else pl.lit(False)
    same_as_previous = (key == key.shift(1)).fill_null(False)
    # after the sort: a bar whose successor is the same symbol at the same (aligned) time is a duplicate;
    # the sort is stable, so the last of the repeated bars in file order is the one kept
    repeated = ((key == key.shift(-1)) & (ts == ts.shift(-1))).fill_null(False)

    staged = (
        frame.lazy()
        .with_columns(
            ts.is_null().alias("_bad_ts"),
            future.alias("_future"),
            (ts.is_not_null() & ~future & ~in_range).alias("_out"),
            ((ts.diff().dt.total_microseconds() < 0).fill_null(False) & same_as_previous).alias("_back"),
        )
        .sort([KEY, "ts"], maintain_order=True, nulls_last=True)
        .with_columns(
            pl.when(on_sessions)
            .then(pl.from_epoch(pl.col("_session"), time_unit="us").dt.replace_time_zone("UTC"))
            .otherwise(ts.dt.truncate(polars_every(freq)))
            .alias("_aligned"),
            (in_range & on_sessions & pl.col("_session").is_null()).alias("_closed"),
        )
        .with_columns((pl.col("_aligned") != ts).fill_null(False).alias("_off"), pl.col("_aligned").alias("ts"))
        .with_columns(weekend.alias("_weekend"), (~in_range | weekend | pl.col("_closed")).alias("_gone"))
        .with_columns((~pl.col("_gone") & repeated).alias("_dup"))
        .with_columns((~pl.col("_gone") & ~pl.col("_dup") & ~prices_finite).alias("_nonfinite"))
        .with_columns(
            (~pl.col("_gone") & ~pl.col("_dup") & ~pl.col("_nonfinite") & ~prices_positive).alias("_nonpos")
        )
        .collect()
    )
    _tally(
        staged.group_by(KEY).agg(
            pl.col("_bad_ts").sum().alias("bad_timestamp"),
            pl.col("_out").sum().alias("out_of_range"),
            pl.col("_future").sum().alias("future_timestamp"),
            pl.col("_weekend").sum().alias("non_trading_day"),
            pl.col("_closed").sum().alias("off_session"),
            pl.col("_back").sum().alias("rows_unsorted"),
            (pl.col("_off") & ~pl.col("_gone")).sum().alias("off_grid"),
            pl.col("_dup").sum().alias("duplicate_ts"),
            pl.col("_nonfinite").sum().alias("non_finite"),
            pl.col("_nonpos").sum().alias("non_positive_price"),
            pl.len().alias("_rows"),
        ),
        reports,
        ids,
    )

    volume = pl.col("volume")
    swapped = pl.col("high") < pl.col("low")
    high = pl.when(swapped).then(pl.col("low")).otherwise(pl.col("high"))
    low = pl.when(swapped).then(pl.col("high")).otherwise(pl.col("low"))
    outside = (pl.max_horizontal("open", "close") > high) | (pl.min_horizontal("open", "close") < low)
    kept = (
        staged.lazy()
        .filter(~pl.col("_gone") & ~pl.col("_dup") & ~pl.col("_nonfinite") & ~pl.col("_nonpos"))
        .select(
            KEY,
            "item_id",
            "ts",
            "open",
            "close",
            swapped.alias("_swapped"),
            outside.alias("_outside"),
            pl.max_horizontal(pl.col("open"), high, pl.col("close")).alias("high"),
            pl.min_horizontal(pl.col("open"), low, pl.col("close")).alias("low"),
            (~volume.is_finite().fill_null(True)).alias("_badvol"),
            (volume < 0).fill_null(False).alias("_negvol"),
            pl.when(volume.is_finite() & (volume >= 0)).then(volume).otherwise(None).alias("volume"),
        )
        .with_columns(_outlier_expr(settings.outlier_window, settings.outlier_threshold).over(KEY).alias("_outlier"))
        .collect()
    )
    good = ~pl.col("_outlier")
    counts = kept.group_by(KEY).agg(
        pl.col("_swapped").sum().alias("high_below_low"),
        pl.col("_outside").sum().alias("open_close_outside"),
        pl.col("_badvol").sum().alias("non_finite_volume"),
        pl.col("_negvol").sum().alias("negative_volume"),
        pl.col("_outlier").sum().alias("outliers"),
        good.sum().alias("_bars"),
        pl.col("ts").filter(good).min().alias("_first"),
        pl.col("ts").filter(good).max().alias("_last"),
    )
    spans = counts.select(KEY, "_bars", "_first", "_last")
    _tally(counts.drop("_bars", "_first", "_last"), reports, ids)
    bars = kept.lazy().filter(good).select(KEY, "item_id", "ts", *PRICES, "volume")
    closed: dict[int, int] = {}
    if not sessions and freq.seconds is not None and freq.unit != "B" and _complete(spans, freq):
        grid = None
    else:
        grid, closed = _grids(spans, venue, freq)
    if grid is None:
        # no symbol of the batch has a gap: nothing to re-grid (the common case for clean lakes)
        gridded = bars.collect()
        summary = [(k, 0, 0, n, n) for k, n, _, _ in spans.iter_rows() if n]
    else:
        gridded = _to_grid(bars, grid, settings.max_ffill_gap).collect()
        summary = gridded.group_by(KEY).agg(
            pl.col("_fill").sum(),
            (pl.col("_missing") & ~pl.col("_fill")).sum(),
            pl.len(),
            pl.col("close").is_not_null().sum(),
        ).rows()
    keep: list[int] = []
    for k, filled, missing, length, observed in summary:
        report = reports[ids[k]]
        report.add("gap_bars_filled", int(filled))
        report.add("gap_bars_missing", int(missing))
        report.add("closed_market_bars", int(closed.get(k, 0)))
        report.bars, report.observed = int(length), int(observed)
        off = report.counts.get("off_session", 0)
        if off > settings.max_off_session * max(report.rows_read, 1):
            cause = ("the time stamps are in another time zone than the lake says, the bars are stamped at "
                     "their end (data.bar_label=end) or on the clock hour (data.session_alignment=clock), or the "
                     "symbol trades on another venue")
            report.quarantined = (
                f"{off} of {report.rows_read} bars ({off / max(report.rows_read, 1):.0%}) fall outside the "
                f"{venue[k].describe()} sessions (> data.cleaning.max_off_session={settings.max_off_session:g}): "
                f"{cause}; set data.calendars.{ids[k].split('/', 1)[0]}"
            )
        elif report.observed < settings.min_length:
            report.quarantined = (
                f"only {report.observed} clean bars (< data.cleaning.min_length={settings.min_length})"
            )
        else:
            keep.append(k)
    present = {ids[row[0]] for row in summary}
    for item_id, report in reports.items():
        if report.quarantined is None and item_id not in present:
            report.quarantined = "no valid bars left after cleaning" if report.rows_read else (
                "no readable files with the required columns" if report.files else "no files in the selected date range"
            )
    if len(keep) < len(summary):
        gridded = gridded.filter(key.is_in(keep))
    return gridded.select("item_id", "ts", *PRICES, "volume")


def _complete(spans: "pl.DataFrame", freq: Frequency) -> bool:
    """Whether every symbol's bars (``_bars`` of them, ``_first`` to ``_last``) fill its grid."""
    import polars as pl

    step = freq.seconds * 1_000_000
    expected = ((pl.col("_last") - pl.col("_first")).dt.total_microseconds() // step + 1).fill_null(0)
    return bool(spans.select((expected == pl.col("_bars")).all()).item())


def _outlier_expr(window: int, threshold: float) -> "pl.Expr":
    """True where log(close) is more than ``threshold`` robust deviations from its past median.

    Causal: the median and the scale use the ``window`` bars *before* each
    bar. The scale is the median absolute one-bar log return of those bars
    (x 1.4826, a normal-consistent MAD), grown by the square root of the
    median's typical lag so that ordinary drift is not flagged.
    """
    import polars as pl

    min_samples = max(10, window // 4)
    lc = pl.col("close").log()
    # rolling over columns without nulls, then shifted by one bar: the same windows as shifting first,
    # and several times faster (Polars' null-aware rolling median is slow)
    level = lc.rolling_median(window_size=window, min_samples=min_samples).shift(1)
    step = lc.diff().abs().backward_fill(limit=1)  # the first bar has no return: it borrows the second's
    scale = step.rolling_median(window_size=window, min_samples=min_samples).shift(1) * 1.4826 * ((window / 2) ** 0.5)
    return ((lc - level).abs() / (scale + 1e-12)).fill_null(0.0) > threshold


def _calendar_of(item_id: str, calendars: "Mapping[str, Calendar] | None") -> Calendar:
    asset_class = item_id.split("/", 1)[0]
    return (calendars or {}).get(asset_class) or Calendar("continuous")


def _epoch_us(series) -> np.ndarray:
    """Datetime values as int64 µs (nulls as the minimum int64)."""
    return series.dt.epoch("us").fill_null(np.iinfo(np.int64).min).to_numpy()


def _session_labels(frame: "pl.DataFrame", venue: dict[int, Calendar], sessions: set[int], freq: Frequency,
                    in_range: "pl.Series"):
    """``_session``: for rows of symbols with sessions, the label of the bar that contains the row's
    time stamp, or null when no bar does (the venue was closed); null for the other rows. Only rows
    in range count (a stray bar decades away is ``out_of_range``, and does not stretch the grid)."""
    import polars as pl

    stamps = _epoch_us(frame["ts"])
    stamps[~in_range.fill_null(False).to_numpy()] = np.iinfo(np.int64).min
    keys = frame[KEY].to_numpy()
    labels_out = np.full(frame.height, np.iinfo(np.int64).min, dtype=np.int64)
    valid = np.zeros(frame.height, dtype=bool)
    by_calendar: dict[Calendar, list[int]] = {}
    for k in sorted(sessions):
        by_calendar.setdefault(venue[k], []).append(k)
    for calendar, members in by_calendar.items():
        rows = np.isin(keys, members) & (stamps != np.iinfo(np.int64).min)
        if not rows.any():
            continue
        ts = stamps[rows]
        labels, ends = calendar.grid(int(ts.min()), int(ts.max()), freq)
        idx = np.searchsorted(labels, ts, side="right") - 1
        safe = np.clip(idx, 0, max(len(labels) - 1, 0))
        inside = (idx >= 0) & (ts < ends[safe]) if len(labels) else np.zeros(len(ts), dtype=bool)
        labels_out[rows] = np.where(inside, labels[safe] if len(labels) else 0, labels_out[rows])
        valid[rows] = inside
    return pl.DataFrame({"v": labels_out, "ok": valid}).select(
        pl.when(pl.col("ok")).then(pl.col("v")).alias("_session")
    ).to_series()


def _grids(spans: "pl.DataFrame", venue: dict[int, Calendar], freq: Frequency):
    """The bar grid of every symbol from its first to its last bar, and its count of closed-market bars.

    Returns (grid frame with ``_k`` and ``ts``, or None when every symbol already has every bar of
    its grid; {symbol key: clock bars while the venue was closed}). Continuous venues use Polars'
    datetime ranges (any frequency, months included).
    """
    import polars as pl

    keys, stamps, closed = [], [], {}
    continuous, complete = [], True
    bounds_us = spans.select(KEY, "_bars", pl.col("_first").dt.epoch("us"), pl.col("_last").dt.epoch("us"))
    for k, n, lo, hi in bounds_us.iter_rows():
        if not n:
            continue
        calendar = venue[k]
        if calendar.continuous and freq.unit != "B":
            continuous.append(k)
            continue
        if calendar.continuous:  # business days: Monday to Friday
            labels = Calendar("weekdays").labels(lo, hi, freq)
        else:
            labels = calendar.labels(lo, hi, freq)
        keys.append(np.full(len(labels), k, dtype=np.uint32))
        stamps.append(labels)
        complete &= len(labels) == n  # the symbol's bars are distinct labels of this grid: all there
        closed[k] = max(0, (hi - lo) // step_us(freq) + 1 - len(labels))
    if complete and continuous:
        complete = _complete(spans.filter(pl.col(KEY).is_in(continuous)), freq) if freq.seconds else False
    if complete:  # no symbol has a gap: no grid to join
        return None, closed
    frames = []
    if continuous:
        bounds = spans.filter(pl.col(KEY).is_in(continuous))
        frames.append(
            bounds.select(KEY, pl.datetime_ranges("_first", "_last", interval=polars_every(freq), time_unit="us")
                          .alias("ts")).explode("ts")
        )
    if keys:
        frames.append(pl.DataFrame({
            KEY: np.concatenate(keys),
            "ts": pl.Series(np.concatenate(stamps)).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        }))
    return pl.concat(frames, how="vertical_relaxed").sort(KEY, "ts"), closed


def _to_grid(bars: "pl.LazyFrame", grid: "pl.DataFrame", max_ffill_gap: int) -> "pl.LazyFrame":
    """Reindex each symbol onto its bar grid; mark filled bars (``_fill``) and every missing bar (``_missing``).

    Causal filling: the first ``max_ffill_gap`` bars of every gap are carried forward (price = the
    last close, volume 0), whatever the gap's length turns out to be; the rest stay missing. Whether
    bar t is filled depends only on bars up to t.
    """
    import polars as pl

    ids = bars.select(KEY, "item_id").unique(KEY)
    missing = pl.col("close").is_null()
    run_id = (missing != missing.shift(1)).fill_null(True).cum_sum().over(KEY)
    carried = pl.col("close").forward_fill().over(KEY)
    return (
        grid.lazy()
        .join(ids, on=KEY, how="left")
        .join(bars.drop("item_id"), on=[KEY, "ts"], how="left", maintain_order="left")
        .with_columns(run_id.alias("_run"))
        .with_columns(
            (missing & (pl.int_range(pl.len()).over(KEY, "_run") < max_ffill_gap)).alias("_fill"),
            missing.alias("_missing"),
        )
        .with_columns(
            [pl.when(pl.col("_fill")).then(carried).otherwise(pl.col(c)).alias(c) for c in PRICES]
            + [pl.when(pl.col("_fill")).then(0.0).otherwise(pl.col("volume")).alias("volume")]
        )
        .drop("_run")
        .sort([KEY, "ts"])
    )
