"""Writing a dataset: rows in uni2ts's schema, their content hash, time stamps, atomic files and swaps."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ohlcv.config.loader import atomic_write_text, json_text
from ohlcv.dataset import normalize
from ohlcv.dataset.format import DATASET_ENTRIES, Variates, hf_schema
from ohlcv.errors import ConfigError, OhlcvError

if TYPE_CHECKING:
    import pyarrow as pa


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


def data_file_name(index: int, count: int) -> str:
    """The name ``datasets`` gives a saved dataset's data file ``index`` of ``count`` (``save_to_disk``'s pattern)."""
    return f"data-{index:05d}-of-{count:05d}.arrow"


# Each data file costs ``load_from_disk`` ~0.3 ms and a full read ~0.1 ms (measured: 10,000 one-row files
# load in 2.9 s against 0.2 s for one file, and read 57% slower): files under _OWN_FILE bytes are joined,
# in order, into files of at least _SHARD_BYTES; a file of _OWN_FILE bytes or more (read in >10 ms) is
# placed as it is.
_OWN_FILE = 8 << 20
_SHARD_BYTES = 64 << 20


def _file_groups(files: list[Path]) -> list[list[Path]]:
    """Consecutive files grouped into the dataset's data files: a large file alone, runs of small ones together."""
    groups: list[list[Path]] = []
    run: list[Path] = []
    run_bytes = 0
    for file in files:
        size = file.stat().st_size
        if size >= _OWN_FILE:
            groups.extend([run, [file]] if run else [[file]])
            run, run_bytes = [], 0
            continue
        run.append(file)
        run_bytes += size
        if run_bytes >= _SHARD_BYTES:
            groups.append(run)
            run, run_bytes = [], 0
    return groups + [run] if run else groups


def _concatenate(files: list[Path], target: Path) -> None:
    """Arrow IPC stream files, in order, as one: their record batches copied as they are (nothing decoded)."""
    import pyarrow as pa

    with pa.OSFile(str(target), "wb") as sink:
        writer = None
        for file in files:
            with pa.memory_map(str(file)) as source:
                reader = pa.ipc.open_stream(source)
                writer = writer or pa.ipc.new_stream(sink, reader.schema)
                for batch in reader:
                    writer.write_batch(batch)
        writer.close()


def place_dataset(arrow_files: list[Path], path: Path, variates: Variates, *, fingerprint: str, scratch: Path,
                  keep: bool) -> None:
    """Make ``path`` a ``datasets`` dataset whose rows are those of ``arrow_files`` (Arrow IPC stream
    files in the dataset's schema, as :func:`write_rows` writes them), in order, without decoding them.

    The data files are hard-linked (``keep``: their originals stay, so an interrupted merge can be
    redone from them) or renamed into ``path`` under ``datasets``' own names; runs of small files are
    first joined into larger ones (see ``_OWN_FILE``), the originals left as they are. The small metadata
    files come from ``datasets`` itself: it saves an empty dataset of the same features into
    ``scratch``, and its state's list of data files is pointed at the placed files. ``load_from_disk``
    then reads what ``save_to_disk`` of their concatenation would have written (the same rows,
    order, features and values; the files are only split differently). A ``datasets`` version
    whose saved state has no such list is refused with one clear line, not guessed at.
    """
    import datasets
    from datasets.table import InMemoryTable

    datasets.disable_progress_bars()
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    empty = datasets.Dataset(InMemoryTable(hf_schema(variates).empty_table()), fingerprint=fingerprint)
    empty.save_to_disk(str(scratch / "meta"), num_shards=1)  # one (empty) data file, even with no rows
    state_name = datasets.config.DATASET_STATE_JSON_FILENAME
    state = json.loads((scratch / "meta" / state_name).read_text())
    saved = state.get("_data_files")
    if not (isinstance(saved, list) and len(saved) == 1 and isinstance(saved[0], dict) and "filename" in saved[0]):
        raise OhlcvError(f"datasets {datasets.__version__} saves a dataset's state ({state_name}) in a layout this "
                         "version of ohlcv does not know (no list of data files); install the datasets version "
                         "of requirements/modern.txt or upgrade ohlcv")
    path.mkdir(parents=True, exist_ok=True)
    for entry in (scratch / "meta").iterdir():  # every metadata file datasets wrote, as it wrote it
        if entry.name not in (state_name, saved[0]["filename"]):
            os.replace(entry, path / entry.name)
    if not arrow_files:  # a dataset without rows: datasets' own empty data file
        arrow_files, keep = [scratch / "meta" / saved[0]["filename"]], False
    groups = _file_groups(arrow_files)
    names = [data_file_name(i, len(groups)) for i in range(len(groups))]
    for group, name in zip(groups, names):
        if len(group) > 1:
            _concatenate(group, path / name)
        elif not keep:
            os.replace(group[0], path / name)
        else:
            try:
                os.link(group[0], path / name)
            except OSError:  # a file system without hard links: a copy keeps the original as well
                shutil.copyfile(group[0], path / name)
    state["_data_files"] = [{**saved[0], "filename": name} for name in names]
    (path / state_name).write_text(json.dumps(state, indent=2, sort_keys=True))  # as save_to_disk writes it
    shutil.rmtree(scratch, ignore_errors=True)


def write_hf_dataset(path: Path, chunks: Iterator[list[dict]], *, variates: Variates, cache_dir: Path) -> str:
    """Write chunks of rows as a ``datasets`` dataset in uni2ts's schema; return the content hash.

    Each chunk is streamed into an Arrow file as one table, so memory stays at
    one chunk; the file is then renamed into the dataset (see :func:`place_dataset`).
    """
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    arrow_file = cache_dir / "rows.arrow"
    digests = write_rows(arrow_file, chunks, variates)
    content_hash = content_hash_of(digests)
    place_dataset([arrow_file], path, variates, fingerprint=content_hash[:16], scratch=cache_dir / "meta", keep=False)
    return content_hash


def write_timestamps(parts: "list[Path | pa.Table]", path: Path) -> None:
    """Concatenate time-stamp parts (files or tables; one row per series: item_id, ts list) into ``path``,
    one part in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("item_id", pa.string()), ("ts", pa.list_(pa.timestamp("us", tz="UTC")))])
    # regular time stamps delta-encode to almost nothing: measured on the full hourly lake (1.44M stamps),
    # 0.1 MiB written in 16 ms and read in 12 ms, against 2.7 MiB, 49 ms and 101 ms with the defaults
    encoding = {"use_dictionary": False, "column_encoding": {"ts.list.element": "DELTA_BINARY_PACKED"}}
    with pq.ParquetWriter(str(path), schema, **encoding) as writer:
        for part in parts:
            table = part if isinstance(part, pa.Table) else pq.read_table(str(part))
            writer.write_table(table.cast(schema))


def check_output_folder(out: Path, key: str) -> Path:
    """``out`` made ready to receive a dataset (its parent created), or one clear line saying why not:
    never the root or the home folder, never a file, never a non-empty folder that is not an ohlcv
    dataset (replacing it would delete what is in it). A symlink is followed: the dataset goes where
    it points and the link stays. Returns the folder to write."""
    out = Path(out).expanduser()
    out = out.resolve() if out.is_symlink() else out
    resolved = out.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise ConfigError(f"refusing to write a dataset over {resolved}", key=key)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder", key=key)
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise ConfigError(f"{out} exists, is not empty and is not an ohlcv dataset; choose another --out", key=key)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out.parent}: {exc.strerror}", key=key) from None
    if not os.access(out.parent, os.W_OK):
        raise ConfigError(f"{out.parent} is not writable", key=key)
    return out


def swap_into_place(staging: Path, out: Path, work: Path) -> None:
    """Replace ``out`` by ``staging`` with renames only (same filesystem).

    What a user put inside ``out`` beside the dataset's own files (an evaluation's folder, notes) is
    moved into the new dataset first, by rename: a rebuild replaces the dataset, not the user's files."""
    if out.is_dir():
        for entry in out.iterdir():  # (the old dataset's own files go, even those the new one lacks)
            if entry.name not in DATASET_ENTRIES and not (staging / entry.name).exists():
                os.replace(entry, staging / entry.name)
    if out.exists():
        old = work / "previous"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(staging, out)
