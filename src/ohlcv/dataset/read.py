"""Reading a built dataset: its manifest, its rows, its bar time stamps and the spans of its split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ohlcv.errors import OhlcvError


def read_manifest(dataset: Path) -> dict[str, Any]:
    """A built dataset's manifest; one clear line when there is none, or it is of a format this version
    cannot read."""
    from ohlcv.dataset.format import FORMAT

    path = Path(dataset) / "manifest.json"
    if not path.is_file():
        raise OhlcvError(f"{dataset}: no manifest.json; build the dataset with `ohlcv build`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise OhlcvError(f"{path}: not valid JSON; rebuild the dataset with `ohlcv build --force`") from None
    if manifest.get("format") != FORMAT:
        raise OhlcvError(f"{dataset}: dataset format {manifest.get('format')!r}, this version reads {FORMAT!r}; "
                         "rebuild it with `ohlcv build --force`")
    return manifest


def datasets_version() -> str:
    from importlib import metadata

    return metadata.version("datasets")


def same_datasets_major(manifest: dict[str, Any]) -> bool:
    """Datasets written by one major version of ``datasets`` may not load in another (2.x vs 5.x)."""
    written = str(manifest.get("datasets_version", ""))
    return written.split(".")[0] == datasets_version().split(".")[0]


def load_hf(dataset: Path, manifest: dict[str, Any] | None = None):
    """The Hugging Face dataset of a built dataset, or one clear line saying why not and what to do."""
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_from_disk(str(Path(dataset) / "hf"))
    except Exception as exc:  # noqa: BLE001 - the usual cause is a dataset written by another stack
        written = (manifest or {}).get("datasets_version", "another version")
        raise OhlcvError(
            f"{dataset}: datasets {datasets_version()} cannot load this dataset (written by datasets {written}: "
            f"{type(exc).__name__}); rebuild it on this stack with `ohlcv build --force`"
        ) from None


def read_timestamps(dataset: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every series' real bar time stamps (numpy datetime64[us], UTC), by item id.

    The model sees consecutive session bars (a regular ``start`` + ``freq``); these are the
    instants they really stand for. Empty for datasets built before time stamps were kept.
    """
    import numpy as np
    import polars as pl

    name = (manifest or {}).get("timestamps") or "timestamps.parquet"
    path = Path(dataset) / name
    if not path.is_file():
        return {}
    frame = pl.read_parquet(path)
    return {
        item_id: np.asarray(stamps.dt.replace_time_zone(None).to_numpy(), dtype="datetime64[us]")
        for item_id, stamps in zip(frame["item_id"].to_list(), frame["ts"])
    }


def span_bounds(item: dict[str, Any], span: str, lead: int = 0) -> tuple[int, int]:
    """The bars [start, end) of ``span`` (``train`` or ``validation`` with ``lead`` bars of context) of a series."""
    if span == "train":
        return 0, int(item["train_end"])
    return max(0, int(item["train_end"]) - lead), int(item["validation_end"])


def trainable_items(manifest: dict[str, Any], span: str, min_length: int, lead: int = 0) -> list[dict[str, Any]]:
    """The series whose ``span`` holds at least ``min_length`` bars.

    With a date split common to every series, a symbol that starts late has a short (or empty)
    training span: training skips it, evaluation still uses its test span.
    """
    kept = []
    for item in manifest["items"]:
        start, end = span_bounds(item, span, lead)
        if end - start >= min_length:
            kept.append(item)
    return kept


def manifest_hash(dataset: Path) -> str:
    """A short hash of the dataset's manifest (recorded by every run that reads the dataset)."""
    return hashlib.sha256((Path(dataset) / "manifest.json").read_bytes()).hexdigest()[:16]
