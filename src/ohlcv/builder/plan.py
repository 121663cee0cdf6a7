"""Planning a build: shards, and the split's cut times common to every series."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ohlcv.builder.clean import edge_timestamp
from ohlcv.errors import ConfigError
from ohlcv.freq import Frequency


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise ConfigError(f"'{text}' is not K/N (e.g. 3/8)", key="--shard") from None
        if not 1 <= k <= n:
            raise ConfigError(f"'{text}': need 1 <= K <= N", key="--shard")
        return cls(k, n)

    def owns(self, item_id: str) -> bool:
        return zlib.crc32(item_id.encode()) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def refuse_per_class_shards(scaler: str, scope: str) -> None:
    """Shards normalized per asset class cannot be merged: each shard fits its class statistics on part of
    the class. Said by ``build --shard`` before any work and by ``build merge`` (shards built before)."""
    if scaler != "none" and scope == "asset_class":
        raise ConfigError("shards normalized per asset class cannot be merged (each shard sees part of a class); "
                          "build shards with data.normalization.scope=symbol or scaler none",
                          key="data.normalization.scope")


def split_cuts(sources, *, start, end, shares: tuple[float, float], freq: Frequency):
    """((train cut, validation cut), span info): the split's instants, common to every series.

    At ``shares`` (train, train + validation) of the selection's span, from the time stamps of each
    symbol's first and last readable file (only ``ts`` is read; bars outside [start, end] or in the
    future do not count), on a bar boundary, so every batch, shard and resumed run cuts at the same
    instants. The span info names the symbols that set its ends (a stray time stamp shows up there).
    """
    from concurrent.futures import ThreadPoolExecutor

    def edges(source):
        return (edge_timestamp(source.files, earliest=True, start=start, end=end),
                edge_timestamp(source.files, earliest=False, start=start, end=end))

    # two small reads per symbol: in threads (Polars reads without the GIL; an object store's latency
    # overlaps), then compared in the sources' order, so ties go to the same symbol as before
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(edges, sources))
    first, last = None, None
    for source, (lo, hi) in zip(sources, found):
        if lo is not None and (first is None or lo < first[0]):
            first = (lo, source.item_id)
        if hi is not None and (last is None or hi > last[0]):
            last = (hi, source.item_id)
    if first is None or last is None:
        return (None, None), None
    span_info = {"first": first[0].isoformat(), "first_set_by": first[1],
                 "last": last[0].isoformat(), "last_set_by": last[1]}
    first, last = first[0], last[0]
    span = (last - first).total_seconds()
    step = min(freq.seconds or 86400, 86400)  # cut on a bar boundary (a day for calendar frequencies)

    def at(share: float) -> datetime:
        seconds = (first + timedelta(seconds=span * share)).timestamp()
        return datetime.fromtimestamp(seconds // step * step, tz=timezone.utc)

    return (at(shares[0]), at(shares[1])), span_info


def iso(value) -> str | None:
    return None if value is None else value.isoformat()


def utc(text):
    if text is None:
        return None
    from datetime import datetime, timezone

    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    # in UTC whatever the offset written: Polars compares UTC time stamps with UTC instants only
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
