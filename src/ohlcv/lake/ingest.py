"""``ohlcv lake ingest``: per-symbol vendor files (CSV or Parquet) into the lake layout.

Each file holds one symbol (named after the file, unless ``symbol`` is
given): a timestamp column plus OHLCV, names matched case-insensitively
(``Date``/``Timestamp``/``time``…, ``Open``…, ``Vol``…). Rows are normalised
to UTC and written into ``asset_class=X/freq=Y/symbol=Z/year=YYYY/month=MM/part.parquet``
(intraday bars) or ``.../year=YYYY/part.parquet`` (daily and slower bars: a month of daily bars is ~21
rows, and a file per month makes a lake of many years mostly file overhead). A symbol already in the
lake keeps its layout. Ingesting again appends without duplicating bars: where a timestamp is
already stored, the incoming bar replaces it. Every file is written
atomically. Symbol names are percent-encoded the way hive partitions are, so
no name (``..``, ``a/b``) can place a file outside the lake.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ohlcv.builder.clean import SymbolReport, read_symbol_files, to_utc_timestamps
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.freq import parse_freq
from ohlcv.lake.layout import REQUIRED_COLUMNS, check_partition, part_path, resolve_partition, stored_layout
from ohlcv.lake.store import local_target

_ALIASES = {
    "ts": ("ts", "timestamp", "time", "date", "datetime", "date_time", "open_time", "time_utc", "timestamp_utc"),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price", "last"),
    "volume": ("volume", "v", "vol", "base_volume", "qty"),
}
SUFFIXES = (".csv", ".parquet", ".pq", ".csv.gz")


@dataclass
class IngestResult:
    symbols: dict[str, dict[str, int]] = field(default_factory=dict)  # symbol -> {rows, added, replaced, files}
    problems: list[str] = field(default_factory=list)


def partition_value(value: str, *, key: str) -> str:
    """Encode a partition value so that it is one safe path component."""
    text = str(value).strip()
    encoded = quote(text, safe="-_.^+@ ")
    if not text or set(encoded) <= {"."} or "\x00" in text:
        raise ConfigError(f"'{value}' cannot name a partition", key=key)
    return encoded.replace(" ", "%20")


def _standardise(frame, path: Path):
    lower = {c.lower().strip(): c for c in frame.columns}
    first = frame.columns[0] if frame.columns else None
    if first is not None and not any(o in lower for o in _ALIASES["ts"]) and (
        first.strip() in ("", "__index_level_0__") or first.startswith("Unnamed")
    ):  # a pandas export: the index (the time stamps) is the unnamed first column
        lower["ts"] = first
    import polars as pl

    rename = {}
    for target, options in _ALIASES.items():
        match = next((lower[o] for o in options if o in lower), None)
        if match is None and target == "volume":  # FX spot, indices: prices only; the bars keep volume missing
            continue
        if match is None:
            raise OhlcvError(f"{path}: no '{target}' column (looked for {', '.join(options)})")
        rename[match] = target
    frame = frame.rename(rename)
    # prices and volume as float64, the lake's clean schema (an int64 volume would be a "repair" at every
    # build); no volume column where the source has none (the builder then builds without volume)
    return frame.select("ts", *[pl.col(c).cast(pl.Float64, strict=False) for c in REQUIRED_COLUMNS[1:] if c in frame.columns])


def _read(path: Path):
    import polars as pl

    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pl.read_parquet(path)
    return pl.read_csv(path, try_parse_dates=True, infer_schema_length=10_000)


def _symbol_of(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _year_layouts(sym_dir: Path, years: list[int], partition: str, wanted: str) -> dict[int, str]:
    """How each incoming year of a symbol is written ("year" or "month"): as the lake already stores that
    year; a new year as the symbol's other years ("auto") or as asked. An OhlcvError when a year's files
    would conflict: written one way while stored the other, or stored both ways (a bar written to one
    kind could be hidden by the other at the build)."""
    stored = stored_layout(sym_dir)
    kinds = set().union(*stored.values()) if stored else set()
    fresh = next(iter(kinds)) if partition == "auto" and len(kinds) == 1 else wanted
    layouts = {}
    for year in years:
        held = stored.get(year, set())
        folder = sym_dir / f"year={year:04d}"
        if len(held) > 1:
            raise OhlcvError(f"{folder} holds both a year file and month=MM folders; move one kind's files out of "
                             f"the lake (ingest them again afterwards), then ingest")
        if held and partition != "auto" and partition not in held:
            (kind,) = held
            raise OhlcvError(f"{folder} is stored by {kind}; leave --partition out (or pass --partition {kind}), "
                             f"or run `ohlcv lake repartition` on the lake first")
        layouts[year] = next(iter(held)) if held else fresh
    return layouts


def ingest(source: Path, lake: Path, *, asset_class: str, freq: str, symbol: str | None = None,
           partition: str = "auto") -> IngestResult:
    """Ingest vendor files; ``partition`` is "month", "year" or "auto" (the symbol's layout in the lake,
    else :func:`~ohlcv.lake.layout.default_partition`)."""
    import polars as pl

    source, lake = Path(source).expanduser(), local_target(lake, "ingest")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))
    elif source.is_file():
        files = [source]
    else:
        raise OhlcvError(f"{source}: no such file or folder")
    if not files:
        raise OhlcvError(f"{source}: no .csv or .parquet files here")
    if symbol is not None and len(files) > 1:
        raise ConfigError("--symbol names a single file's symbol; point SOURCE at one file", key="--symbol")
    parsed = parse_freq(freq, key="--freq")
    canonical = parsed.canonical
    wanted = resolve_partition(partition, parsed)  # checked before any file is read
    class_dir = lake / f"asset_class={partition_value(asset_class, key='--asset-class')}" / f"freq={canonical}"
    result = IngestResult()
    for path in files:
        name = symbol or _symbol_of(path)
        try:
            sym_dir = class_dir / f"symbol={partition_value(name, key='symbol')}"
            frame = _standardise(_read(path), path)
            frame, _ = to_utc_timestamps(frame, SymbolReport(name))
            frame = frame.filter(pl.col("ts").is_not_null())
        except (OhlcvError, ConfigError) as exc:
            result.problems.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file never stops an ingest
            result.problems.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if not sym_dir.resolve().is_relative_to(lake.resolve()):
            result.problems.append(f"{path}: symbol '{name}' would leave the lake; skipped")
            continue
        frame = frame.with_columns(pl.col("ts").dt.year().alias("_y"), pl.col("ts").dt.month().alias("_m"))
        try:
            layouts = _year_layouts(sym_dir, sorted(frame["_y"].unique().to_list()), partition, wanted)
        except OhlcvError as exc:
            result.problems.append(f"{path}: {exc}")
            continue
        stats = {"rows": frame.height, "added": 0, "replaced": 0, "files": 0}
        by = {"year": 0, "month": 0}
        pieces = frame.with_columns(
            pl.when(pl.col("_y").replace_strict(layouts, return_dtype=pl.String) == "month")
            .then(pl.col("_m")).otherwise(None).alias("_m")
        ).partition_by(["_y", "_m"], as_dict=True)
        for (year, month), part in sorted(pieces.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            part = part.drop("_y", "_m").unique(subset="ts", keep="last").sort("ts")
            target = part_path(sym_dir, year, month)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                part = _merge_stored(target, part, stats, name)
            except Exception as exc:  # noqa: BLE001 - a bad lake file is left as it is, and named
                result.problems.append(f"{target}: unreadable lake file ({type(exc).__name__}); left as it is, and "
                                       f"{part.height} bars of {path.name} for it not ingested")
                continue
            _write_atomically(part, target)
            stats["files"] += 1
            by[layouts[year]] += 1
        stats["by"] = " and ".join(kind for kind in ("year", "month") if by[kind]) or "-"
        result.symbols[f"{asset_class}/{name}"] = stats
    return result


def _merge_stored(target: Path, part, stats: dict, name: str):
    """``part`` merged into the bars already stored at ``target`` (the incoming bar wins); counts added and
    replaced bars into ``stats``."""
    import polars as pl

    if not target.is_file():
        stats["added"] += part.height
        return part
    existing = pl.read_parquet(target)
    columns = [c for c in REQUIRED_COLUMNS if c in existing.columns and c in part.columns]
    existing, _ = to_utc_timestamps(existing.select(columns), SymbolReport(name))
    existing = existing.with_columns([pl.col(c).cast(pl.Float64) for c in columns[1:]])
    part = part.select(columns)
    overlap = existing.join(part.select("ts"), on="ts", how="semi").height
    stats["replaced"] += overlap
    stats["added"] += part.height - overlap
    kept = existing.join(part.select("ts"), on="ts", how="anti")
    return pl.concat([kept, part.with_columns([pl.col(c).cast(pl.Float64) for c in columns[1:]])]).sort("ts")


@dataclass
class RepartitionResult:
    # "asset class/symbol (freq)" -> {rows, files_before, files, duplicates}
    symbols: dict[str, dict[str, int]] = field(default_factory=dict)
    unchanged: int = 0  # symbol folders already stored as asked
    problems: list[str] = field(default_factory=list)


def repartition(lake: Path, *, partition: str, freq: str | None = None,
                asset_classes: tuple[str, ...] = ()) -> RepartitionResult:
    """Rewrite each selected symbol folder of a local lake as year files or month files (``partition``;
    "auto": :func:`~ohlcv.lake.layout.default_partition` of the folder's frequency).

    One ``asset_class=X/freq=Y/symbol=Z`` folder at a time: the same symbol under another frequency is
    another series. Its bars are read from all its files (a bar stored twice: the later file's copy, as
    the build keeps it), written to the new files, and only then are the old files removed: a run
    interrupted half-way leaves each bar stored at least once, and running it again finishes. A folder
    with a file the build would skip (unreadable, or without a price column) is left as it is, and named.
    """
    from ohlcv.lake.layout import discover

    lake = local_target(lake, "repartition")
    if not lake.is_dir():
        raise OhlcvError(f"{lake}: no such lake folder")
    canonical = parse_freq(freq, key="--freq").canonical if freq else None
    check_partition(partition)  # before anything is read
    found = discover(lake, freq=canonical, asset_classes=asset_classes)
    if not found.sources:
        raise OhlcvError(f"{lake}: no symbols match (freq {canonical or 'any'}, asset classes "
                         f"{list(asset_classes) or 'all'}); nothing rewritten")
    result = RepartitionResult()
    for source in found.sources:
        for sym_dir, files in _by_symbol_folder(source.files).items():
            folder_freq = parse_freq(sym_dir.parent.name.split("=", 1)[1])
            label = f"{source.item_id} ({folder_freq.canonical})"
            by = resolve_partition(partition, folder_freq)
            if all(kinds == {by} for kinds in stored_layout(sym_dir).values()):
                result.unchanged += 1
            else:
                try:
                    bars, duplicates = _all_bars(files, label)
                except OhlcvError as exc:
                    result.problems.append(str(exc))
                    continue
                written = _write_layout(bars, sym_dir, by)
                for path in map(Path, files):  # the old files, once every bar is in a new one
                    if path not in written:
                        path.unlink(missing_ok=True)
                result.symbols[label] = {"rows": bars.height, "files_before": len(files), "files": len(written),
                                         "duplicates": duplicates}
            _remove_empty_folders(sym_dir)  # (also those a run killed between an unlink and its rmdir left)
    result.problems.extend(f"not in the lake's layout, left as it is: {entry}" for entry in found.skipped)
    return result


def _by_symbol_folder(files) -> dict[Path, list]:
    """A source's files grouped by their ``symbol=Z`` folder, in order."""
    groups: dict[Path, list] = {}
    for path in files:
        folder = next(p for p in Path(path).parents if p.name.startswith("symbol="))
        groups.setdefault(folder, []).append(path)
    return groups


def _all_bars(files, label: str):
    """(every bar of ``files`` as the build reads them, sorted, a bar stored twice once: the later file's
    copy; how many copies were dropped), or an OhlcvError naming a file the build would skip."""
    import polars as pl

    report = SymbolReport(label)
    frame = read_symbol_files(files, report)  # the build's own reader: names, types and time zones repaired
    if report.file_problems:
        raise OhlcvError(f"{label}: left as it is: {report.file_problems[0]} (the build skips it); fix or remove "
                         f"it, then repartition again")
    stacked = frame.filter(pl.col("ts").is_not_null())
    bars = stacked.unique(subset="ts", keep="last", maintain_order=True).sort("ts")
    if report.counts.get("files_no_volume", 0) == report.files:  # a lake without volume stays without
        bars = bars.drop("volume")
    return bars, stacked.height - bars.height


def _write_layout(bars, sym_dir: Path, by: str) -> set[Path]:
    """``bars`` written under ``sym_dir`` by year or by month, each file atomically; the files written."""
    import polars as pl

    keys = ["_y", "_m"] if by == "month" else ["_y"]
    pieces = bars.with_columns(pl.col("ts").dt.year().alias("_y"), pl.col("ts").dt.month().alias("_m"))
    written = set()
    for parts, part in sorted(pieces.partition_by(keys, as_dict=True).items()):
        target = part_path(sym_dir, parts[0], parts[1] if by == "month" else None)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(part.drop("_y", "_m"), target)
        written.add(target)
    return written


def _write_atomically(frame, target: Path) -> None:
    """``frame`` as the Parquet file ``target``, whole or not at all (a temporary file renamed)."""
    tmp = target.with_name(f".{target.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, target)


def _remove_empty_folders(sym_dir: Path) -> None:
    for year_dir in (p for p in sym_dir.glob("year=*") if p.is_dir()):
        for month_dir in (p for p in year_dir.glob("month=*") if p.is_dir()):
            if not any(month_dir.iterdir()):
                month_dir.rmdir()
        if not any(year_dir.iterdir()):
            year_dir.rmdir()
