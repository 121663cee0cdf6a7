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

from ohlcv.builder.clean import SymbolReport, to_utc_timestamps
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.freq import parse_freq
from ohlcv.lake.layout import REQUIRED_COLUMNS

_ALIASES = {
    "ts": ("ts", "timestamp", "time", "date", "datetime", "date_time", "open_time", "time_utc", "timestamp_utc"),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price", "last"),
    "volume": ("volume", "v", "vol", "base_volume", "qty"),
}
SUFFIXES = (".csv", ".parquet", ".pq", ".csv.gz")
PARTITIONS = ("auto", "month", "year")


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


def stored_partition(sym_dir: Path) -> str | None:
    """How a symbol already in the lake is partitioned: "month", "year", "mixed", or None (not there)."""
    kinds = set()
    for year_dir in (sym_dir.glob("year=*") if sym_dir.is_dir() else ()):
        for entry in year_dir.iterdir():
            if entry.is_dir() and entry.name.startswith("month="):
                kinds.add("month")
            elif entry.is_file() and entry.name.endswith(".parquet"):
                kinds.add("year")
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def default_partition(freq) -> str:
    """Year files for daily and slower bars, month files for intraday bars."""
    return "month" if freq.seconds is not None and freq.seconds < 86400 else "year"


def ingest(source: Path, lake: Path, *, asset_class: str, freq: str, symbol: str | None = None,
           partition: str = "auto") -> IngestResult:
    """Ingest vendor files; ``partition`` is "month", "year" or "auto" (the symbol's layout in the lake,
    else :func:`default_partition`)."""
    import polars as pl

    if partition not in PARTITIONS:
        raise ConfigError(f"'{partition}' is not a partition; use one of {', '.join(PARTITIONS)}", key="--partition")

    source, lake = Path(source).expanduser(), Path(lake).expanduser()
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
        stored = stored_partition(sym_dir)
        if stored == "mixed" or (stored is not None and partition != "auto" and partition != stored):
            what = ("both in month=MM folders and in year files; keep one layout (move the other's bars) and ingest again"
                    if stored == "mixed" else
                    f"by {stored}; pass --partition {stored} (or leave it out), or repartition the symbol first")
            result.problems.append(f"{path}: {sym_dir} is stored {what}")
            continue
        by = stored or (default_partition(parsed) if partition == "auto" else partition)
        stats = {"rows": frame.height, "added": 0, "replaced": 0, "files": 0}
        keys = ["_y", "_m"] if by == "month" else ["_y"]
        pieces = frame.with_columns(
            pl.col("ts").dt.year().alias("_y"), pl.col("ts").dt.month().alias("_m")
        ).partition_by(keys, as_dict=True)
        for parts, part in sorted(pieces.items()):
            part = part.drop("_y", "_m").unique(subset="ts", keep="last").sort("ts")
            folder = sym_dir / f"year={parts[0]:04d}"
            target = (folder / f"month={parts[1]:02d}" if by == "month" else folder) / "part.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_file():
                existing = pl.read_parquet(target)
                columns = [c for c in REQUIRED_COLUMNS if c in existing.columns and c in part.columns]
                existing, _ = to_utc_timestamps(existing.select(columns), SymbolReport(name))
                existing = existing.with_columns([pl.col(c).cast(pl.Float64) for c in columns[1:]])
                part = part.select(columns)
                overlap = existing.join(part.select("ts"), on="ts", how="semi").height
                stats["replaced"] += overlap
                stats["added"] += part.height - overlap
                kept = existing.join(part.select("ts"), on="ts", how="anti")
                part = pl.concat([kept, part.with_columns([pl.col(c).cast(pl.Float64) for c in columns[1:]])]).sort("ts")
            else:
                stats["added"] += part.height
            tmp = target.with_name(f".{target.name}.tmp")
            part.write_parquet(tmp)
            os.replace(tmp, target)
            stats["files"] += 1
        result.symbols[f"{asset_class}/{name}"] = stats
    return result
