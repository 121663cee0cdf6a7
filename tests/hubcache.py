"""Tiny stand-ins for released MOIRAI checkpoints, placed in a Hugging Face cache as huggingface_hub lays it out.

The models are saved with ohlcv's own code (:func:`ohlcv.moirai.models.new_module`, then the export
that ``ohlcv pretrain`` / ``finetune`` use). huggingface_hub has no public API that fills its cache
without a download, so :func:`put_in_hub_cache` writes the layout its downloads write
(``models--ORG--NAME/{blobs, refs/REV, snapshots/COMMIT/FILE -> ../../blobs/ETAG}``), and the tests
check it with huggingface_hub's own readers (``scan_cache_dir``, ``snapshot_download(local_files_only=True)``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# (d_model, num_layers) small enough for a test; the patch sizes of the released models (Moirai 1.x: those of
# the demo and hourly profiles)
TINY_SHAPES = {
    "moirai": dict(d_model=64, num_layers=1, patch_sizes=(16, 32)),
    "moirai_moe": dict(d_model=64, num_layers=1, patch_sizes=(16,), d_ff=64),  # as released: patch 16 only
    "moirai2": dict(d_model=64, num_layers=1, patch_sizes=(16,), d_ff=64, num_predict_token=4),
}
STAND_INS = {
    "moirai": "Salesforce/moirai-1.1-R-small",
    "moirai_moe": "Salesforce/moirai-moe-1.0-R-small",
    "moirai2": "Salesforce/moirai-2.0-R-small",
}


def save_stand_in(family: str, folder: Path, seed: int = 0) -> Path:
    import torch

    from ohlcv.moirai.models import new_module
    from ohlcv.train.pretrain import export_hf

    torch.manual_seed(seed)
    export_hf(new_module(family, **TINY_SHAPES[family]), folder)
    return folder


def _etag(data: bytes, lfs: bool) -> str:
    """The name huggingface_hub gives a blob: an LFS file's sha256, a git blob's sha1 otherwise."""
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, *, ref: str = "main") -> str:
    """Place ``folder``'s files in ``cache`` as revision ``ref`` of ``repo_id``; returns the commit hash."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    etags = {p.name: _etag(p.read_bytes(), lfs=p.suffix in (".safetensors", ".bin")) for p in files}
    commit = hashlib.sha1("".join(f"{n}:{e}" for n, e in sorted(etags.items())).encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        blob = repo / "blobs" / etags[path.name]
        blob.write_bytes(path.read_bytes())
        link = snapshot / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
    (repo / "refs" / ref).write_text(commit)
    return commit


def warm_cache(cache: Path, families=tuple(STAND_INS), scratch: Path | None = None) -> dict[str, str]:
    """Every family's stand-in under its released hub id; returns id -> commit."""
    scratch = scratch or cache.parent / "stand-ins"
    return {STAND_INS[f]: put_in_hub_cache(cache, STAND_INS[f], save_stand_in(f, scratch / f)) for f in families}
