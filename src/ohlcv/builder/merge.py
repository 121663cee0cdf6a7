"""``ohlcv build merge``: combine the outputs of ``ohlcv build --shard K/N`` jobs.

Each shard is a complete dataset over a deterministic 1/N of the symbols.
Merging checks that the shards come from the same profile and lake settings,
that all N are present, then streams their series, in item-id order, into one
dataset — the same content (and content hash) as a single unsharded build.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ohlcv.builder.plan import refuse_per_class_shards
from ohlcv.builder.report import missing_variate_notes
from ohlcv.dataset.format import HF_SUBDIR, TIMESTAMPS_FILE, Variates
from ohlcv.dataset.read import load_hf
from ohlcv.dataset.write import (atomic_json, check_output_folder, swap_into_place, write_hf_dataset,
                                  write_timestamps)
from ohlcv.config.loader import atomic_write_text
from ohlcv.errors import ConfigError, OhlcvError

# a merged dataset is one split and one set of calendars: shards built after the lake grew (other cuts) do not merge
_SAME = ("format", "freq", "layout", "variates", "targets", "covariates", "profile_hash", "split", "calendars")


def merge_shards(shards: list[Path], out: Path) -> dict[str, Any]:
    if not shards:
        raise ConfigError("name the shard folders to merge", key="ohlcv build merge")
    manifests = []
    for shard in shards:
        path = Path(shard).expanduser() / "manifest.json"
        if not path.is_file():
            raise OhlcvError(f"{shard}: no manifest.json; is this the output of `ohlcv build --shard K/N`?")
        manifests.append(json.loads(path.read_text()))
    first = manifests[0]
    for shard, manifest in zip(shards[1:], manifests[1:]):
        for key in _SAME:
            if manifest.get(key) != first.get(key):
                raise OhlcvError(f"{shard}: '{key}' differs from {shards[0]}; shards must come from the same profile")
    labels = [m.get("shard") for m in manifests]
    if any(label is None for label in labels):
        raise OhlcvError("every folder must be a shard output (built with --shard K/N)")
    counts = {int(label.split("/")[1]) for label in labels}
    if len(counts) != 1:
        raise OhlcvError(f"shards of different N: {sorted(labels)}")
    total = counts.pop()
    present = sorted(int(label.split("/")[0]) for label in labels)
    if present != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(present))
        duplicate = sorted({k for k in present if present.count(k) > 1})
        raise OhlcvError(f"shards incomplete: missing {missing}, duplicated {duplicate} (of {total})")
    lakes = {m.get("lake") for m in manifests}
    if len(lakes) > 1:
        raise OhlcvError(f"the shards come from different lakes ({', '.join(sorted(map(str, lakes)))}): a symbol's "
                         "cross-asset features and split would not match; build every shard from the same lake")
    norm = first["normalization"]
    refuse_per_class_shards(norm["scaler"], norm["scope"])

    out = check_output_folder(out, "--out")
    for shard in shards:  # replacing --out deletes what is in it: never a shard, or a folder holding one
        folder = Path(shard).expanduser().resolve()
        if folder == out.resolve() or out.resolve() in folder.parents:
            raise ConfigError(f"--out {out} is, or holds, the shard {shard}; merge into another folder", key="--out")
    # an empty shard (no symbol hashed to it) has no data files: datasets cannot load it, nothing to take
    loaded = [load_hf(Path(s).expanduser(), m).with_format("numpy")  # (another datasets major: one clear line)
              for s, m in zip(shards, manifests) if m["series"] > 0]
    work = out.parent / f".{out.name}.merging"
    shutil.rmtree(work, ignore_errors=True)
    staging = work / "final"
    staging.mkdir(parents=True)
    order = sorted((str(item_id), k, i) for k, ds in enumerate(loaded) for i, item_id in enumerate(ds["item_id"]))
    has_covariates = bool(first["covariates"])

    def rows():
        chunk = []
        for item_id, k, i in order:
            row = loaded[k][i]
            out_row = {
                "item_id": item_id,
                "start": np.datetime64(row["start"], "s"),
                "freq": str(row["freq"]),
                "target": np.stack(row["target"]).astype(np.float32),
            }
            if has_covariates:
                out_row["past_feat_dynamic_real"] = np.stack(row["past_feat_dynamic_real"]).astype(np.float32)
            chunk.append(out_row)
            if len(chunk) == 64:
                yield chunk
                chunk = []
        yield chunk

    variates = Variates(names=first["variates"], targets=first["targets"], covariates=first["covariates"])
    content_hash = write_hf_dataset(staging / HF_SUBDIR, rows(), variates=variates, cache_dir=work / "cache")
    _merge_timestamps([Path(s).expanduser() / TIMESTAMPS_FILE for s, m in zip(shards, manifests) if m["series"] > 0],
                      staging / TIMESTAMPS_FILE)
    items = sorted((item for m in manifests for item in m["items"]), key=lambda item: item["item_id"])
    groups: dict[str, Any] = {}
    for manifest in manifests:
        groups.update(manifest["normalization"]["groups"])
    manifest = dict(first)
    manifest.update(
        items=items,
        series=len(items),
        bars=int(sum(item["length"] for item in items)),
        normalization={**norm, "groups": dict(sorted(groups.items()))},
        quarantined=sorted((q for m in manifests for q in m["quarantined"]), key=lambda q: q["item_id"]),
        shard=None,
        merged_from=[str(s) for s in shards],
        fingerprint=None,
        content_hash=content_hash,
    )
    atomic_json(staging / "manifest.json", manifest)
    reports = [json.loads((Path(s).expanduser() / "report.json").read_text()) for s in shards]
    # the missing-variate notes are worded over every shard's series, not once per shard with its own counts
    causes, peerless = reports[0].get("variate_causes", {}), reports[0].get("peerless_classes", [])
    shards_own = {note for r in reports
                  for note in missing_variate_notes(list(r["per_symbol"].values()), causes, set(peerless))}
    totals: dict[str, int] = {}
    for report in reports:
        for rule, count in report["totals"].items():
            totals[rule] = totals.get(rule, 0) + count
    merged_report = {
        "symbols": sum(r["symbols"] for r in reports),
        "built": sum(r["built"] for r in reports),
        "quarantined": manifest["quarantined"],
        "totals": dict(sorted(totals.items())),
        "rules": reports[0]["rules"],
        "per_symbol": {k: v for r in reports for k, v in r["per_symbol"].items()},
        "skipped_paths": sorted({p for r in reports for p in r["skipped_paths"]}),
        "notes": sorted({n for r in reports for n in r.get("notes", []) if n not in shards_own}),
        "variate_causes": causes,
        "peerless_classes": peerless,
        "merged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    merged_report["notes"] += missing_variate_notes(list(merged_report["per_symbol"].values()), causes, set(peerless))
    atomic_json(staging / "report.json", merged_report)
    profile = Path(shards[0]).expanduser() / "profile.yaml"
    if profile.is_file():
        atomic_write_text(staging / "profile.yaml", profile.read_text())
    swap_into_place(staging, out, work)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _merge_timestamps(files: list[Path], target: Path) -> None:
    """The shards' time-stamp files as one, rows in item-id order (the dataset's order)."""
    import polars as pl

    present = [f for f in files if f.is_file()]
    if len(present) != len(files):  # shards built before time stamps were kept: the merged set has none either
        return
    frames = [pl.read_parquet(f) for f in present]
    merged = pl.concat(frames) if frames else pl.DataFrame(schema={"item_id": pl.Utf8, "ts": pl.List(pl.Datetime("us", "UTC"))})
    write_timestamps([merged.sort("item_id").to_arrow()], target)  # the builder's encoding
