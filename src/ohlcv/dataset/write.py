"""Writing a dataset: rows in uni2ts's schema, their content hash, time stamps, atomic files and swaps."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ohlcv.config.loader import atomic_write_text, json_text
from ohlcv.dataset import normalize
from ohlcv.dataset.format import Variates, hf_schema


def atomic_json(path: Path, data: Any, *, scratch: bool = False) -> None:
    """``scratch``: a compact file of the work folder, not fsynced (a killed process cannot tear it)."""
    text = json_text(data, separators=(",", ":")) if scratch else json_text(data, indent=2)
    atomic_write_text(path, text + "\n", durable=not scratch)


_MAX_VALUES_PER_TABLE = 1 << 30  # Arrow list offsets are int32: keep each written table well below 2**31 values


def series_rows(values: np.ndarray, layout: list, entries: dict[str, dict], norm: dict, variates: Variates,
                 freq: str) -> list[dict]:
    """The dataset rows of one batch: ``values`` (time of every symbol, variates) holds the symbols'
    bars one after the other, as ``layout`` ([item id, length], ...) says."""
    target_idx = [variates.names.index(n) for n in variates.targets]
    cov_idx = [variates.names.index(n) for n in variates.covariates]
    every = list(range(values.shape[1]))
    groups = norm["groups"]
    rows, offset = [], 0
    for item_id, n in layout:
        entry = entries[item_id]
        # (variates, time): a view; with column-major ``values`` each variate's row is contiguous, and
        # float32 values without normalization are never copied here (the writer copies them once)
        block = values[offset : offset + n].T
        offset += n
        group = groups.get(item_id if norm["scope"] == "symbol" else entry["asset_class"])
        if group is not None:
            block = normalize.apply(block.astype(np.float64), np.asarray(group["center"]), np.asarray(group["scale"]))
        row = {
            "item_id": item_id,
            "start": np.datetime64(entry["start"][:19], "s"),
            "freq": freq,
            "target": (block if target_idx == every else block[target_idx]).astype(np.float32, copy=False),
        }
        if cov_idx:
            row["past_feat_dynamic_real"] = block[cov_idx].astype(np.float32, copy=False)
        rows.append(row)
    return rows


def _rows_of(array: np.ndarray) -> list[np.ndarray]:
    """A (variates, time) array's rows as contiguous 1-D float32 arrays (views where they already are)."""
    return [np.ascontiguousarray(row, dtype=np.float32) for row in array]


def _nested(arrays: list[np.ndarray], arrow_type):
    """(variates, time) float32 arrays, one per row, as an Arrow array of ``arrow_type`` (list of lists)."""
    import pyarrow as pa

    variates = arrays[0].shape[0]
    lengths = np.repeat(np.array([a.shape[1] for a in arrays], dtype=np.int64), variates)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([row for a in arrays for row in _rows_of(a)])  # the values' only copy
    inner = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))
    if pa.types.is_fixed_size_list(arrow_type):
        outer = pa.FixedSizeListArray.from_arrays(inner, variates)
    else:
        outer = pa.ListArray.from_arrays(pa.array(np.arange(0, variates * len(arrays) + 1, variates, dtype=np.int32)), inner)
    return outer.cast(arrow_type)


def content_hash_of(row_digests: list[str]) -> str:
    """The dataset's content hash: one digest per row, in order (independent of how rows were batched)."""
    return hashlib.sha256("".join(row_digests).encode()).hexdigest()


def _tables(chunks: Iterator[list[dict]], schema, digests: list[str]) -> Iterator:
    """Arrow tables of ``schema`` from chunks of rows; each row's digest is appended to ``digests``."""
    import pyarrow as pa

    names = [n for n in ("target", "past_feat_dynamic_real") if n in schema.names]
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            stop, size = start, 0
            while stop < len(chunk) and (stop == start or size + chunk[stop]["target"].size * len(names) <= _MAX_VALUES_PER_TABLE):
                size += chunk[stop]["target"].size * len(names)
                stop += 1
            rows = chunk[start:stop]
            start = stop
            arrays = {n: [np.asarray(r[n], dtype=np.float32) for r in rows] for n in names}
            for i, row in enumerate(rows):
                digest = hashlib.sha256()
                digest.update(row["item_id"].encode())
                digest.update(str(row["start"]).encode())
                digest.update(row["freq"].encode())
                for n in names:
                    for values in _rows_of(arrays[n][i]):  # row by row, in place: the bytes of the C-order array
                        digest.update(values)
                digests.append(digest.hexdigest())
            columns = {
                "item_id": pa.array([r["item_id"] for r in rows], pa.string()),
                "start": pa.array([r["start"] for r in rows], pa.timestamp("s")),
                "freq": pa.array([r["freq"] for r in rows], pa.string()),
                **{n: _nested(arrays[n], schema.field(n).type) for n in names},
            }
            yield pa.table(columns, schema=schema)


def write_rows(path: Path, chunks, variates: Variates) -> list[str]:
    """Stream chunks of rows into an Arrow IPC stream file in the dataset's schema; return the row digests."""
    import pyarrow as pa

    schema = hf_schema(variates)
    digests: list[str] = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        written = 0
        for table in _tables((c for c in chunks if c), schema, digests):
            writer.write_table(table)
            written += table.num_rows
        if not written:  # an empty shard: datasets needs one (empty) record batch
            writer.write_table(schema.empty_table())
    return digests


def save_dataset(arrow_files: list[Path], path: Path, variates: Variates, *, cache_dir: Path) -> None:
    """Save Arrow stream files of dataset rows, in order, as one ``datasets`` dataset at ``path``."""
    import datasets

    datasets.disable_progress_bars()
    if not arrow_files:
        cache_dir.mkdir(parents=True, exist_ok=True)
        empty = cache_dir / "empty.arrow"
        write_rows(empty, [], variates)
        arrow_files = [empty]
    parts = [datasets.Dataset.from_file(str(f)) for f in arrow_files]
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    dataset.save_to_disk(str(path))
    del dataset, parts


def write_hf_dataset(path: Path, chunks: Iterator[list[dict]], *, variates: Variates, cache_dir: Path) -> str:
    """Write chunks of rows as a ``datasets`` dataset in uni2ts's schema; return the content hash.

    Each chunk is streamed into an Arrow file as one table, so memory stays at
    one chunk; ``datasets`` then memory-maps the file and saves it.
    """
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    arrow_file = cache_dir / "rows.arrow"
    digests = write_rows(arrow_file, chunks, variates)
    save_dataset([arrow_file], path, variates, cache_dir=cache_dir)
    return content_hash_of(digests)


def write_timestamps(parts: list[Path], path: Path) -> None:
    """Concatenate per-batch time-stamp files (one row per series: item_id, ts list) into ``path``,
    one part in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("item_id", pa.string()), ("ts", pa.list_(pa.timestamp("us", tz="UTC")))])
    with pq.ParquetWriter(str(path), schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(str(part)).cast(schema))


def swap_into_place(staging: Path, out: Path, work: Path) -> None:
    """Replace ``out`` by ``staging`` with renames only (same filesystem)."""
    if out.exists():
        old = work / "previous"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(staging, out)
