"""Discover symbols in a hive-partitioned lake without reading any data.

Layout: ``asset_class=X/freq=Y/symbol=Z/year=YYYY/month=MM/part.parquet``, or, for daily and slower
bars, one file per year: ``.../symbol=Z/year=YYYY/part.parquet`` (a symbol may mix both; the build's
duplicate rule settles a bar stored twice).
Selection (asset classes, frequency, symbols, date range) prunes partitions
by their names alone. Folders, and Parquet files, that do not follow the layout are reported,
never fatal; names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files, a macOS
``._part.parquet``) are ignored, as Arrow's and Spark's readers ignore them, and so is a file
that is not Parquet.
"""

from __future__ import annotations

import calendar
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote

from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.freq import Frequency, parse_freq

REQUIRED_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
LEVELS = ("asset_class", "freq", "symbol", "year", "month")
PARTITIONS = ("auto", "month", "year")  # how a writer (ingest, the sample lake) lays out a symbol's files


@dataclass(frozen=True)
class SymbolSource:
    """One symbol of the lake: its partition values and its (selected) files, year by year (a year's own
    file before its month folders)."""

    asset_class: str
    freq: Frequency
    symbol: str
    files: tuple[Path, ...]

    @property
    def item_id(self) -> str:
        return f"{self.asset_class}/{self.symbol}"


@dataclass
class Discovery:
    sources: list[SymbolSource]
    skipped: list[str] = field(default_factory=list)  # folders/files outside the layout
    freq_spellings: dict[str, str] = field(default_factory=dict)  # on disk -> canonical


def _partition(name: str, level: str) -> str | None:
    prefix = f"{level}="
    if not name.startswith(prefix):
        return None
    return unquote(name[len(prefix):])


def _year_of(name: str) -> int | None:
    """The year of a ``year=YYYY`` name; None for any other name."""
    text = _partition(name, "year")
    return int(text) if text is not None and text.isdigit() else None


def _month_of(name: str) -> int | None:
    """The month of a ``month=MM`` name (1 to 12); None for any other name."""
    text = _partition(name, "month")
    return int(text) if text is not None and text.isdigit() and 1 <= int(text) <= 12 else None


def _entries(path: str | Path) -> list[os.DirEntry]:
    """A folder's entries by name; none if it cannot be listed."""
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []


def is_hidden(name: str) -> bool:
    """A name the lake's readers pass over (the convention of Arrow's datasets and of Spark's output)."""
    return name.startswith((".", "_"))


def _subdirs(path: str | Path) -> list[os.DirEntry]:
    return [e for e in _entries(path) if not is_hidden(e.name) and e.is_dir(follow_symlinks=False)]


def _is_part(entry: os.DirEntry) -> bool:
    """A Parquet file a reader takes (not hidden)."""
    return entry.name.endswith(".parquet") and not is_hidden(entry.name) and entry.is_file()


def _is_other(entry: os.DirEntry) -> bool:
    """A file a reader passes over without a word of its own: not Parquet, not hidden (notes, a ``.pq``)."""
    return not entry.name.endswith(".parquet") and not is_hidden(entry.name) and entry.is_file()


def _passed_over(where: str, others: list[str]) -> str:
    """The one line that says a symbol's folders hold files not named *.parquet (a symbol can be left
    without bars that way: ``.pq`` files, or a writer's ``000000_0``)."""
    return f"{where}: {len(others)} file(s) not named *.parquet passed over (e.g. {others[0]})"


def _parse_instant(text: str | None, key: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"'{text}' is not an ISO date or timestamp (e.g. 2024-01-31)", key=key) from None
    # in UTC: partitions are named by UTC year and month (an offset can move an instant into another year)
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _month_overlaps(year: int, month: int, start: datetime | None, end: datetime | None) -> bool:
    if start is None and end is None:  # (called for every month folder of the lake)
        return True
    first = datetime(year, month, 1, tzinfo=timezone.utc)
    last_day = calendar.monthrange(year, month)[1]
    last = datetime(year, month, last_day, 23, 59, 59, 999999, tzinfo=timezone.utc)
    if start is not None and last < start:
        return False
    if end is not None and first > end:
        return False
    return True


def _year_overlaps(year: int, start: datetime | None, end: datetime | None) -> bool:
    if start is not None and year < start.year:
        return False
    return end is None or year <= end.year


def default_partition(freq: Frequency) -> str:
    """Year files for daily and slower bars (a month of daily bars is ~21 rows), month files for intraday bars."""
    return "month" if freq.seconds is not None and freq.seconds < 86400 else "year"


def check_partition(partition: str, *, key: str = "--partition") -> str:
    """``partition`` if it names one of :data:`PARTITIONS`, else a ConfigError."""
    if partition not in PARTITIONS:
        raise ConfigError(f"'{partition}' is not a partition; use one of {', '.join(PARTITIONS)}", key=key)
    return partition


def resolve_partition(partition: str, freq: Frequency, *, key: str = "--partition") -> str:
    """"month" or "year" for a writer's ``partition`` ("auto": :func:`default_partition`)."""
    return default_partition(freq) if check_partition(partition, key=key) == "auto" else partition


def stored_layout(symbol_dir: Path) -> dict[int, set[str]]:
    """A local symbol folder's years and how each is stored: {"year"} (a year file), {"month"} (month=MM
    folders holding files), or both; empty when the symbol has no files yet."""
    years: dict[int, set[str]] = {}
    for year_entry in _subdirs(symbol_dir):
        year = _year_of(year_entry.name)
        if year is None:
            continue
        for entry in _entries(year_entry.path):
            if _is_part(entry):
                years.setdefault(year, set()).add("year")
            elif (entry.is_dir(follow_symlinks=False) and _month_of(entry.name) is not None
                  and any(_is_part(e) for e in _entries(entry.path))):
                years.setdefault(year, set()).add("month")
    return years


def part_path(symbol_dir: Path, year: int, month: int | None = None) -> Path:
    """Where a symbol's file for a year (``month`` None) or for a month of a year goes."""
    folder = symbol_dir / f"year={int(year):04d}"
    return (folder if month is None else folder / f"month={int(month):02d}") / "part.parquet"


def file_partition(path) -> tuple[str | None, bool]:
    """(year, whether it is a year file) of a lake file — a path or an object's URL — from its partition
    names: ``.../year=YYYY/part.parquet`` is a year file, ``.../year=YYYY/month=MM/part.parquet`` is not."""
    parts = str(path).replace("\\", "/").split("/")
    for index in range(len(parts) - 2, -1, -1):
        year = _partition(parts[index], "year")
        if year is not None:
            return year, index == len(parts) - 2
    return None, False


def _matches(values: Sequence[str], *candidates: str) -> bool:
    return not values or any(c in values for c in candidates)


def discover(
    lake: Path,
    *,
    freq: str | None = None,
    asset_classes: Iterable[str] = (),
    symbols: Iterable[str] = (),
    start: str | None = None,
    end: str | None = None,
) -> Discovery:
    """Every selected symbol of the lake, sorted by item id; reads directory names only."""
    from ohlcv.lake.store import is_remote

    if is_remote(lake):
        return discover_remote(str(lake), freq=freq, asset_classes=asset_classes, symbols=symbols, start=start, end=end)
    lake = Path(lake).expanduser()
    if not lake.is_dir():
        raise OhlcvError(f"{lake}: lake folder not found; pass --lake DIR or set data.lake (try `ohlcv lake sample DIR`)")
    wanted_freq = parse_freq(freq) if freq else None
    classes, wanted_symbols = list(asset_classes), list(symbols)
    t0, t1 = _parse_instant(start, "data.start"), _parse_instant(end, "data.end")
    found: dict[tuple[str, str], list[Path]] = {}
    freqs: dict[tuple[str, str], Frequency] = {}
    discovery = Discovery(sources=[])

    for ac_entry in _subdirs(lake):
        asset_class = _partition(ac_entry.name, "asset_class")
        if asset_class is None:
            discovery.skipped.append(f"{ac_entry.path}: not an asset_class=X folder")
            continue
        if not _matches(classes, asset_class):
            continue
        for freq_entry in _subdirs(ac_entry.path):
            spelled = _partition(freq_entry.name, "freq")
            if spelled is None:
                discovery.skipped.append(f"{freq_entry.path}: not a freq=Y folder")
                continue
            try:
                parsed = parse_freq(spelled)
            except ConfigError:
                discovery.skipped.append(f"{freq_entry.path}: unknown frequency '{spelled}'")
                continue
            discovery.freq_spellings[spelled] = parsed.canonical
            if wanted_freq is not None and parsed != wanted_freq:
                continue
            for sym_entry in _subdirs(freq_entry.path):
                symbol = _partition(sym_entry.name, "symbol")
                if symbol is None or not symbol.strip():
                    discovery.skipped.append(f"{sym_entry.path}: not a symbol=Z folder")
                    continue
                if not _matches(wanted_symbols, symbol, f"{asset_class}/{symbol}"):
                    continue
                key = (asset_class, symbol)
                files = found.setdefault(key, [])
                freqs[key] = parsed
                year_entries, others = [], []
                for entry in _entries(sym_entry.path):
                    if _is_part(entry):  # bars stored beside the year folders are read by nobody
                        discovery.skipped.append(f"{entry.path}: not in a year=YYYY folder")
                    elif not is_hidden(entry.name) and entry.is_dir(follow_symlinks=False):
                        year_entries.append(entry)
                for year_entry in year_entries:
                    year = _year_of(year_entry.name)
                    if year is None:
                        discovery.skipped.append(f"{year_entry.path}: not a year=YYYY folder")
                        continue
                    # a year's bars in files directly under year=YYYY (a year file: the layout for daily and
                    # slower bars), in month=MM folders, or both
                    year_files, month_dirs = [], []
                    for entry in _entries(year_entry.path):
                        if _is_part(entry):
                            year_files.append(entry.path)
                        elif not is_hidden(entry.name) and entry.is_dir(follow_symlinks=False):
                            month_dirs.append(entry)
                        elif _is_other(entry) and _year_overlaps(year, t0, t1):
                            others.append(f"{year_entry.name}/{entry.name}")
                    if year_files and _year_overlaps(year, t0, t1):
                        files.extend(Path(p) for p in year_files)
                    for month_entry in month_dirs:
                        month = _month_of(month_entry.name)
                        if month is None:
                            discovery.skipped.append(f"{month_entry.path}: not a month=MM folder")
                            continue
                        if not _month_overlaps(year, month, t0, t1):
                            continue
                        for entry in _entries(month_entry.path):
                            if _is_part(entry):
                                files.append(Path(entry.path))
                            elif not is_hidden(entry.name) and entry.is_dir(follow_symlinks=False):
                                discovery.skipped.append(f"{entry.path}: not read (a month's files go directly in month=MM)")
                            elif _is_other(entry):
                                others.append(f"{year_entry.name}/{month_entry.name}/{entry.name}")
                if others:
                    discovery.skipped.append(_passed_over(sym_entry.path, others))
    for (asset_class, symbol), files in sorted(found.items(), key=lambda kv: f"{kv[0][0]}/{kv[0][1]}"):
        discovery.sources.append(SymbolSource(asset_class, freqs[(asset_class, symbol)], symbol, tuple(files)))
    return discovery


def discover_remote(
    url: str,
    *,
    freq: str | None = None,
    asset_classes: Iterable[str] = (),
    symbols: Iterable[str] = (),
    start: str | None = None,
    end: str | None = None,
) -> Discovery:
    """:func:`discover` for a lake on object storage: the same selection, by listing.

    The asset-class, frequency and symbol levels are listed one level at a time (with a delimiter), and
    only below the selected ones; each selected symbol's files in one recursive listing. So the
    requests grow with the selection, not with the lake, and no object is read.
    """
    from ohlcv.lake.store import RemoteFile, listing_error, open_store

    store = open_store(url)  # first: a missing obstore is one line with the install command
    from obstore import list as list_objects
    from obstore import list_with_delimiter

    wanted_freq = parse_freq(freq) if freq else None
    classes, wanted_symbols = list(asset_classes), list(symbols)
    t0, t1 = _parse_instant(start, "data.start"), _parse_instant(end, "data.end")
    discovery = Discovery(sources=[])
    # one source per (asset class, symbol), whatever the spelling of its freq folder (freq=1h and
    # freq=60min merge), as :func:`discover` does
    found: dict[tuple[str, str], list] = {}
    freqs: dict[tuple[str, str], Frequency] = {}

    def folders(prefix: str | None) -> list[str]:
        try:
            listed = list_with_delimiter(store, prefix)
        except Exception as exc:  # noqa: BLE001 - no such bucket, refused credentials, no endpoint...
            raise listing_error(url, exc) from None
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in listed["common_prefixes"])
        return sorted(name for name in names if not is_hidden(name))

    for ac_name in folders(None):
        asset_class = _partition(ac_name, "asset_class")
        if asset_class is None:
            discovery.skipped.append(f"{url}/{ac_name}: not an asset_class=X folder")
            continue
        if not _matches(classes, asset_class):
            continue
        for freq_name in folders(ac_name):
            spelled = _partition(freq_name, "freq")
            where = f"{url}/{ac_name}/{freq_name}"
            if spelled is None:
                discovery.skipped.append(f"{where}: not a freq=Y folder")
                continue
            try:
                parsed = parse_freq(spelled)
            except ConfigError:
                discovery.skipped.append(f"{where}: unknown frequency '{spelled}'")
                continue
            discovery.freq_spellings[spelled] = parsed.canonical
            if wanted_freq is not None and parsed != wanted_freq:
                continue
            for sym_name in folders(f"{ac_name}/{freq_name}"):
                symbol = _partition(sym_name, "symbol")
                if symbol is None or not symbol.strip():
                    discovery.skipped.append(f"{where}/{sym_name}: not a symbol=Z folder")
                    continue
                if not _matches(wanted_symbols, symbol, f"{asset_class}/{symbol}"):
                    continue
                prefix = f"{ac_name}/{freq_name}/{sym_name}"
                files = found.setdefault((asset_class, symbol), [])
                freqs[(asset_class, symbol)] = parsed
                try:
                    listed = [meta for chunk in list_objects(store, prefix + "/") for meta in chunk]
                except Exception as exc:  # noqa: BLE001
                    raise listing_error(url, exc) from None
                others = []
                for meta in sorted(listed, key=_remote_order(prefix)):
                    key = meta["path"]
                    parts = key[len(prefix) + 1 :].split("/")
                    if any(is_hidden(part) for part in parts):
                        continue  # what a local lake's discovery passes over too
                    if not parts[-1].endswith(".parquet"):  # counted where a local lake's discovery counts it
                        year, month = _remote_partition([*parts[:-1], "part.parquet"])
                        if year is not None and (_year_overlaps(year, t0, t1) if month is None
                                                 else _month_overlaps(year, month, t0, t1)):
                            others.append("/".join(parts))
                        continue
                    year, month = _remote_partition(parts)
                    if year is None:
                        discovery.skipped.append(f"{url}/{key}: not year=YYYY/[month=MM/]*.parquet")
                        continue
                    wanted = _year_overlaps(year, t0, t1) if month is None else _month_overlaps(year, month, t0, t1)
                    if wanted:
                        version = str(meta.get("e_tag") or meta["last_modified"])
                        files.append(RemoteFile(f"{url}/{key}", int(meta["size"]), version))
                if others:
                    discovery.skipped.append(_passed_over(f"{url}/{prefix}", others))
    for (asset_class, symbol), files in sorted(found.items(), key=lambda kv: f"{kv[0][0]}/{kv[0][1]}"):
        discovery.sources.append(SymbolSource(asset_class, freqs[(asset_class, symbol)], symbol, tuple(files)))
    return discovery


def _remote_partition(parts: list[str]) -> tuple[int | None, int | None]:
    """(year, month) of an object below a symbol's prefix, split on "/": (year, None) for a year file,
    (None, None) for anything outside the layout."""
    if not parts[-1].endswith(".parquet") or len(parts) not in (2, 3):
        return None, None
    year = _year_of(parts[0])
    if year is None:
        return None, None
    if len(parts) == 2:
        return year, None
    month = _month_of(parts[1])
    return (year, month) if month is not None else (None, None)


def _remote_order(prefix: str):
    """Sort key of a symbol's listed objects: by year, a year's own files before its month folders
    (the order :func:`discover` gives a local lake)."""
    def key(meta) -> tuple:
        parts = meta["path"][len(prefix) + 1 :].split("/")
        return (parts[0], len(parts), parts[1:])
    return key
