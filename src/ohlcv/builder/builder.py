"""``IterativeFinancialDatasetBuilder``: the lake -> a uni2ts dataset, in bounded memory.

One symbol at a time, ``data.batch_size`` symbols per batch:

1. discover the selected symbols from the partition layout (no data read);
2. for each batch: read, clean, add features, split, and fit the per-symbol
   normalization statistics on the training span; write the batch to
   ``<out parent>/.<out name>.building/batches/`` (Arrow IPC, then a small
   JSON that marks it done);
3. merge: the batch files, already in the dataset's final form, become the
   Hugging Face dataset's data files by hard link (runs of small ones are
   joined first; batches normalized per asset class are normalized and
   written here first), in a
   staging folder beside the output renamed into place at the end, so the
   output folder is either the old dataset or the complete new one, never half
   of either; the batch files stay until then, so a merge killed half-way is
   simply redone.

An interrupted build (even ``kill -9``) resumes after its last finished
batch and produces the same dataset, byte for byte in content, as an
uninterrupted one. Paths written never contain symbol names, so a symbol
called ``..`` cannot steer a write.

This module orchestrates; its helpers live beside it: :mod:`~ohlcv.builder.plan`
(shards, the split's common cut times), :mod:`~ohlcv.builder.workers` (batches
in worker threads, in order), :mod:`~ohlcv.builder.report` (the build report),
:mod:`~ohlcv.builder.clean` and :mod:`~ohlcv.builder.pipeline` (cleaning and
features); the files it writes follow :mod:`ohlcv.dataset`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ohlcv import __version__, calendars
from ohlcv.builder.clean import CleaningSettings, SymbolReport, clean_batch, read_batch
from ohlcv.builder.pipeline import FeaturePipeline, KeyedReference
from ohlcv.builder.plan import Shard, iso, refuse_per_class_shards, split_cuts, utc
from ohlcv.builder.report import build_report, missing_variate_notes, off_session_notes, variate_causes
from ohlcv.builder.workers import in_order
from ohlcv.config.loader import atomic_write_text, to_yaml
from ohlcv.dataset import normalize
from ohlcv.dataset.format import FORMAT, HF_SUBDIR, TIMESTAMPS_FILE, Variates, dataset_spec, profile_hash
from ohlcv.dataset.read import datasets_version, same_datasets_major
from ohlcv.dataset.write import (
    atomic_json,
    check_output_folder,
    content_hash_of,
    place_dataset,
    series_rows,
    swap_into_place,
    write_rows,
    write_timestamps,
)
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.freq import parse_freq
from ohlcv.lake.layout import SymbolSource, discover
from ohlcv.lake.store import RemoteReadError, file_stamp, is_remote, lake_label, lake_root

# layout of the temporary batch files and of what a build computes; a work folder or a dataset of another
# one is not resumed or kept (4: each feature output has its own warm-up; reports list missing variates)
WORK_FORMAT = 4


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    up_to_date: bool = False
    resumed_batches: int = 0

    def cleaning(self) -> list[dict[str, Any]]:
        """The rules that fired: rule, bars or events counted, symbols affected, outcome (the build's table)."""
        per_symbol = self.report.get("per_symbol", {}).values()
        return [{"rule": rule, "count": self.report["totals"][rule],
                 "symbols": sum(1 for r in per_symbol if r["counts"].get(rule)), "outcome": info["outcome"]}
                for rule, info in self.report.get("rules", {}).items() if self.report.get("totals", {}).get(rule)]

    def to_json(self) -> dict[str, Any]:
        """What ``ohlcv build --json`` prints: the folder, the cleaning table, quarantine, split and size."""
        report, manifest = self.report, self.manifest
        return {"out": str(self.out), "up_to_date": self.up_to_date, "resumed_batches": self.resumed_batches,
                "series": manifest.get("series"), "variates": manifest.get("variates"), "bars": manifest.get("bars"),
                "cleaning": self.cleaning(), "quarantined": report.get("quarantined", []),
                "notes": report.get("notes", []), "rows_read": report.get("rows_read"),
                "seconds": report.get("seconds"), "calendars": manifest.get("calendars"),
                "split": manifest.get("split")}


@dataclass
class _Progress:
    on_start: Callable[[int], None] = lambda total: None
    on_symbol: Callable[[str, int], None] = lambda item_id, rows: None
    on_merge: Callable[[], None] = lambda: None


def _debug_pause(batch_index: int) -> None:
    """Test hook: ``OHLCV_BUILD_PAUSE_AT_BATCH=k`` sleeps in the middle of batch k (half written)."""
    target = os.environ.get("OHLCV_BUILD_PAUSE_AT_BATCH")
    if target is not None and int(target) == batch_index:
        time.sleep(float(os.environ.get("OHLCV_BUILD_PAUSE_SECONDS", "60")))


class IterativeFinancialDatasetBuilder:
    """Build a uni2ts-ready dataset from the lake, one symbol at a time, in batches."""

    def __init__(self, cfg, *, shard: Shard | None = None, plugins=None, progress: _Progress | None = None):
        self.cfg = cfg
        self.data = cfg.data
        self.freq = parse_freq(self.data.freq)
        self.lake = lake_root(str(self.data.lake))  # a folder, or an object-store URL (s3://, gs://, az://)
        self.out = Path(str(self.data.dataset)).expanduser()
        self.shard = shard
        self.progress = progress or _Progress()
        self.executor = cfg.build.executor.value if "build" in cfg else "local"
        self.scratch: Path | None = None  # a Ray task's own work folder, in place of the shared one (builder.cluster)
        self.ray_tasks = 0  # Ray tasks this run submitted (recorded in the report)
        self.scaler = self.data.normalization.scaler.value
        self.scope = self.data.normalization.scope.value
        if self.scaler == "robust" and self.scope == "asset_class":
            raise ConfigError(
                "the robust scaler is fitted per symbol only; use scope symbol or the standard/minmax scaler",
                key="data.normalization.scope",
            )
        if self.data.batch_size <= 0:
            raise ConfigError("must be positive", key="data.batch_size")
        self._plugins = plugins
        self.variates = self._resolve_variates()
        self.settings = CleaningSettings(
            max_ffill_gap=int(self.data.cleaning.max_ffill_gap),
            outlier_window=int(self.data.cleaning.outlier_window),
            outlier_threshold=float(self.data.cleaning.outlier_threshold),
            min_length=int(self.data.cleaning.min_length),
            max_off_session=float(self.data.cleaning.max_off_session),
        )
        split = self.data.split
        self._split_method = split.method.value
        self._split_fractions = (float(split.train), float(split.train) + float(split.validation))
        self._split_dates = (utc(split.train_end), utc(split.validation_end))
        self._weekdays = calendars.weekdays_rule(self.data.weekdays)
        self.calendars: dict[str, calendars.Calendar] = {}
        self.split_span: dict[str, str] | None = None
        self.notes: list[str] = []
        self.peerless_classes: set[str] = set()  # asset classes of one symbol beside classes with peers
        from ohlcv.plugins import volume_free_skips

        without_volume = volume_free_skips(cfg)
        if without_volume:
            self.notes.append(f"data.columns leave out volume: features that read it are skipped "
                              f"({', '.join(without_volume)})")
        if self._split_method == "fraction":
            self.notes.append(
                "data.split.method=fraction cuts each symbol at its own share of its bars: with symbols of "
                "different ages, one symbol's training span covers another's test span (a leak through "
                "cross-asset features, pooled normalization and regimes); the date split avoids it"
            )

    def __getstate__(self) -> dict[str, Any]:
        """What a Ray task receives: the resolved build, without the plugin registry (reloaded where the
        task runs, if needed) or the progress callbacks (they draw on this process's terminal)."""
        state = dict(self.__dict__)
        state.update(_plugins=None, progress=None)
        return state

    # -- set-up --------------------------------------------------------------------------
    @property
    def plugins(self):
        if self._plugins is None:
            from ohlcv.plugins import load_plugins

            self._plugins = load_plugins()
        return self._plugins

    def _resolve_variates(self) -> Variates:
        from ohlcv.plugins import enabled_features

        names = list(self.data.columns)
        specs = []
        for feature, params, outputs in enabled_features(self.cfg, self.plugins.features):
            names.extend(outputs)
            specs.append((feature, params))
        if self.data.layout.value == "covariates":
            unknown = [t for t in self.data.targets if t not in names]
            if unknown:
                raise ConfigError(f"targets {unknown} are not variates of this build ({', '.join(names)})", key="data.targets")
            targets = [n for n in names if n in set(self.data.targets)]
            covariates = [n for n in names if n not in set(self.data.targets)]
        else:
            targets, covariates = names, []
        return Variates(names=names, targets=targets, covariates=covariates, feature_specs=specs)

    @property
    def work(self) -> Path:
        return self.scratch or self.out.parent / f".{self.out.name}.building"

    def discover(self) -> tuple[list[SymbolSource], list[str]]:
        found = discover(
            self.lake,
            freq=self.data.freq,
            asset_classes=list(self.data.asset_classes),
            symbols=list(self.data.symbols),
            start=self.data.start,
            end=self.data.end,
        )
        return found.sources, found.skipped

    def fingerprint(self, sources: list[SymbolSource], *, shard: bool = True) -> str:
        digest = hashlib.sha256()
        # what the features write, beyond their parameters (in the profile): each output and its warm-up
        features = [[f.name, f.output_warmups(p)] for f, p in self.variates.feature_specs]
        digest.update(json.dumps({"profile": profile_hash(self.cfg), "batch": int(self.data.batch_size),
                                  "shard": str(self.shard) if shard else None, "ohlcv": __version__, "work": WORK_FORMAT,
                                  "plugins": self.plugins.versions(), "features": features}, sort_keys=True).encode())
        for source in sources:
            digest.update(source.item_id.encode())
            for path in source.files:
                digest.update(file_stamp(path, self.lake).encode())
        return digest.hexdigest()[:24]

    # -- the build -----------------------------------------------------------------------
    def run(self, *, force: bool = False) -> BuildResult:
        import polars as pl

        # a batch is a few MB: Polars' in-memory engine runs such queries with less overhead than the
        # streaming engine (Polars 2's default); measured ~15% less CPU for a whole build
        with pl.Config(engine_affinity="in-memory"):
            return self._run(force=force)

    def _run(self, *, force: bool) -> BuildResult:
        if self.shard is not None:  # said now, not at `build merge` after every array job has run
            refuse_per_class_shards(self.scaler, self.scope)
        self._check_output_location()
        if self.executor == "ray":  # a missing Ray is said before anything is read or written
            from ohlcv.builder.cluster import import_ray

            import_ray()
        started = time.perf_counter()
        all_sources, skipped = self.discover()
        sources = [s for s in all_sources if self.shard is None or self.shard.owns(s.item_id)]
        if not sources and self.shard is None:
            held = [] if is_remote(self.lake) else sorted(
                {p.name.split("=", 1)[1] for p in self.lake.glob("asset_class=*/freq=*") if p.is_dir()})
            hint = (f"; the lake holds freq {', '.join(held)} (e.g. --profile daily for 1D, or data.freq=...)"
                    if held and self.freq.canonical not in held else "; check data.freq and the lake layout")
            raise OhlcvError(
                f"{self.lake}: no symbols match (freq {self.freq.canonical}, asset classes "
                f"{list(self.data.asset_classes) or 'all'}, symbols {list(self.data.symbols) or 'all'}"
                f"{', shard ' + str(self.shard) if self.shard else ''}){hint}"
            )
        self._resolve_calendars(all_sources)
        self._drop_peerless_features(all_sources)
        self._drop_missing_volume(all_sources)
        if self._split_method == "date" and self._split_dates[0] is None:
            self._split_dates = self.common_cuts(all_sources)
        # cross-asset features depend on every symbol of the lake, not only on this shard's
        fingerprint = self.fingerprint(all_sources if self.pipeline.needs_reference else sources)
        existing = self.out / "manifest.json"
        if existing.is_file() and not force:
            try:
                manifest = json.loads(existing.read_text())
            except (OSError, ValueError):
                manifest = {}
            if manifest.get("fingerprint") == fingerprint and same_datasets_major(manifest):
                report = json.loads((self.out / "report.json").read_text()) if (self.out / "report.json").is_file() else {}
                # an object store's file that could not be read may read next time: such a build is redone
                unread = is_remote(self.lake) and report.get("totals", {}).get("files_unreadable", 0) > 0
                if not unread:
                    # a build killed after its swap and before its clean-up left its work folder behind
                    if self.scratch is None:
                        shutil.rmtree(self.work, ignore_errors=True)
                    return BuildResult(self.out, manifest, report, up_to_date=True)

        batches = [sources[i : i + self.data.batch_size] for i in range(0, len(sources), self.data.batch_size)]
        work = self.work
        plan_file = work / "plan.json"
        if work.exists():
            try:
                previous = json.loads(plan_file.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                previous = None
            if previous != fingerprint or force:
                shutil.rmtree(work)
        (work / "batches").mkdir(parents=True, exist_ok=True)
        if not plan_file.is_file():
            atomic_json(plan_file, {"fingerprint": fingerprint, "batches": len(batches), "symbols": len(sources)})

        self.progress.on_start(len(sources))
        resumed = 0
        pending = []
        for index, batch in enumerate(batches):
            if self._marker(index).is_file():
                resumed += 1
                for source in batch:
                    self.progress.on_symbol(source.item_id, 0)
            else:
                pending.append((index, batch))
        if self.executor == "ray":
            from ohlcv.builder.cluster import run_on_ray

            prepared_batches = run_on_ray(self, batches, pending, all_sources)
        else:
            reference = None
            if self.pipeline.needs_reference:
                reference = self._reference_pass(batches) if self.shard is None else self._shared_reference(all_sources)
            reference = KeyedReference.of(reference)  # keyed for the join once, not per batch
            prepared_batches = in_order(pending, lambda i, bt: self._prepare(i, bt, reference))
        for index, batch, prepared in prepared_batches:
            self._finish_batch(index, batch, prepared)

        self.progress.on_merge()
        manifest, report = self._merge(len(batches), fingerprint, skipped, started, resumed)
        return BuildResult(self.out, manifest, report, resumed_batches=resumed)

    def _drop_peerless_features(self, sources: list[SymbolSource]) -> None:
        """Cross-asset features compare a symbol with the others of its class: with no class of two or
        more symbols they could only be missing everywhere, so they are left out, with a note."""
        counts: dict[str, int] = {}
        for source in sources:
            counts[source.asset_class] = counts.get(source.asset_class, 0) + 1
        dropped = [(f, p) for f, p in self.variates.feature_specs if f.reference is not None]
        if not sources or not dropped:
            return
        if max(counts.values()) >= 2:
            alone = sorted(c for c, n in counts.items() if n == 1)
            self.peerless_classes = set(alone)
            if alone:  # the other classes have peers: the features stay, missing for these classes' symbols
                self.notes.append(
                    f"cross-asset features ({', '.join(f.name for f, _ in dropped)}) are missing for asset class"
                    f"{'es' if len(alone) > 1 else ''} {', '.join(alone)}: a single symbol, no other asset to compare with")
            return
        self._drop_variates({n for f, p in dropped for n in f.output_names(p)}, lambda f: f.reference is None)
        self.notes.append(
            f"cross-asset features ({', '.join(f.name for f, _ in dropped)}) left out: every asset class of this "
            "selection has a single symbol, so there is no other asset to compare with"
        )

    def _drop_variates(self, gone: set[str], keep_feature) -> None:
        v = self.variates
        self.variates = Variates(
            names=[n for n in v.names if n not in gone],
            targets=[n for n in v.targets if n not in gone],
            covariates=[n for n in v.covariates if n not in gone],
            feature_specs=[(f, p) for f, p in v.feature_specs if keep_feature(f)],
        )

    def _drop_missing_volume(self, sources: list[SymbolSource]) -> None:
        """A lake whose files have no volume column (FX spot, indices) builds without the volume variate and
        without the features that read volume, with a note. Only file schemas are read (first file of each
        symbol)."""
        import polars as pl

        if "volume" not in self.variates.names or not sources:
            return
        for source in sources:
            for path in source.files[:1]:
                try:
                    if "volume" in {c.lower() for c in pl.read_parquet_schema(path)}:
                        return
                except Exception:  # noqa: BLE001 - an unreadable file is the build's to report
                    return
        dropped = [f.name for f, _ in self.variates.feature_specs if "volume" in f.inputs]
        gone = {"volume"} | {n for f, p in self.variates.feature_specs if "volume" in f.inputs for n in f.output_names(p)}
        self._drop_variates(gone, lambda f: "volume" not in f.inputs)
        self.notes.append("the lake has no volume column: built without the volume variate"
                          + (f" and the features that read it ({', '.join(dropped)})" if dropped else "")
                          + "; set data.columns=[open,high,low,close] to say so in the profile")

    def _resolve_calendars(self, sources: list[SymbolSource]) -> None:
        """The calendar of every asset class of the selection; an unknown name stops here, before any work."""
        mapping = dict(self.data.calendars)
        for asset_class in sorted({s.asset_class for s in sources}):
            calendar = calendars.resolve(mapping, asset_class, self._weekdays, self.data.session_alignment.value)
            if calendar.exchange:  # validates the name (one line with the known names), and the bars it can lay out
                calendars.exchange_module(calendar.name)
                calendars.check_exchange_freq(calendar.name, self.freq)
            self.calendars[asset_class] = calendar

    def common_cuts(self, sources: list[SymbolSource]):
        """Split timestamps common to every series (see :func:`ohlcv.builder.plan.split_cuts`)."""
        cuts, self.split_span = split_cuts(sources, start=utc(self.data.start), end=utc(self.data.end),
                                           shares=self._split_fractions, freq=self.freq)
        return cuts

    def _check_output_location(self) -> None:
        local_lake = None if is_remote(self.lake) else self.lake.resolve()
        out = self.out.resolve()
        if local_lake is not None and self.lake.exists() and (out == local_lake or local_lake in out.parents):
            raise ConfigError(f"{out} is inside the lake {self.lake}; choose another output folder", key="data.dataset")
        self.out = check_output_folder(self.out, "data.dataset")  # (a symlinked --out: where it points)

    @property
    def pipeline(self) -> FeaturePipeline:
        return FeaturePipeline(self.variates.feature_specs)

    def clean_batch(self, batch: list[SymbolSource]):
        """Read and clean a batch of symbols in a few columnar queries: (frame or None, reports).

        If the batch fails as a whole, each symbol is retried on its own, so one
        bad symbol is quarantined with the reason and the rest go on.
        """
        reports = {source.item_id: SymbolReport(source.item_id) for source in batch}
        try:
            raw = read_batch(batch, reports)
            if self.data.bar_label.value == "end" and self.freq.seconds and self.freq.seconds < 86400:
                import polars as pl  # end-stamped intraday bars: the bar starts one bar earlier

                raw = raw.with_columns(pl.col("ts") - pl.duration(seconds=self.freq.seconds))
            cleaned = clean_batch(
                raw, self.freq, self.settings, reports, start=utc(self.data.start), end=utc(self.data.end),
                calendars=self.calendars,
            )
            return (cleaned if cleaned.height else None), [reports[s.item_id] for s in batch]
        except Exception as exc:  # noqa: BLE001 - one bad symbol never stops the build
            return self._isolate(batch, exc)

    def _isolate(self, batch: list[SymbolSource], exc: Exception):
        import polars as pl

        if os.environ.get("OHLCV_DEBUG") or isinstance(exc, RemoteReadError):
            raise exc
        if len(batch) > 1:
            parts = [self.clean_batch([source]) for source in batch]
            frames = [frame for frame, _ in parts if frame is not None]
            return (pl.concat(frames) if frames else None), [r for _, rs in parts for r in rs]
        report = SymbolReport(batch[0].item_id)
        report.quarantined = f"failed while processing: {type(exc).__name__}: {exc}"
        return None, [report]

    def featurize(self, cleaned, reports: list[SymbolReport], reference=None):
        """Add every enabled feature to cleaned bars; a symbol whose features fail is quarantined."""
        import polars as pl

        if cleaned is None:
            return None, reports
        try:
            # features may produce NaN/inf (e.g. a division by a zero range): missing, not numbers
            lake_columns = set(self.variates.names) & set(cleaned.columns)  # (may be empty: then features only)
            featured = self.pipeline.apply(cleaned, reference=reference, train_end=self._train_ends(cleaned),
                                           finite=lake_columns)
            as_float = [pl.col(c) if c not in lake_columns else pl.col(c).cast(pl.Float64) for c in self.variates.names]
            return featured.select("item_id", "ts", *as_float), reports
        except Exception as exc:  # noqa: BLE001 - one bad symbol never stops the build
            if os.environ.get("OHLCV_DEBUG"):
                raise
            by_id = {r.item_id: r for r in reports}
            present = cleaned["item_id"].unique(maintain_order=True).to_list()
            if len(present) <= 1:
                for item_id in present:
                    by_id[item_id].quarantined = f"failed while adding features: {type(exc).__name__}: {exc}"
                return None, reports
            frames = []
            for item_id in present:
                frame, _ = self.featurize(cleaned.filter(pl.col("item_id") == item_id), [by_id[item_id]], reference)
                if frame is not None:
                    frames.append(frame)
            return (pl.concat(frames) if frames else None), reports

    def _train_ends(self, cleaned) -> dict[str, int] | None:
        if not self.pipeline.needs_split:
            return None
        return {item_id: span["train_end"] for item_id, span in self._spans(cleaned).items()}

    def _spans(self, frame, reports: list[SymbolReport] | None = None) -> dict[str, dict[str, Any]]:
        """Per symbol of a frame sorted by item id and time: its rows, start and split points.

        ``offset`` is where the symbol's rows begin in ``frame``; ``train_end`` and
        ``validation_end`` count bars from the symbol's first bar. The symbols and their
        lengths come from the cleaning reports when they account for every row.
        """
        from datetime import timezone

        if frame.height == 0:
            return {}
        kept = [r for r in (reports or []) if not r.quarantined]
        if kept and sum(r.bars for r in kept) == frame.height:  # the cleaned bars of each kept symbol, in order
            ids, lengths = [r.item_id for r in kept], [r.bars for r in kept]
        else:
            runs = frame["item_id"].rle()  # sorted by item: one run per symbol
            ids = runs.struct.field("value").to_list()
            lengths = runs.struct.field("len").to_list()
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).tolist()
        if self._split_method == "fraction":
            train, validation = self._split_fractions
            train_ends = [int(n * train) for n in lengths]
            validation_ends = [int(n * validation) for n in lengths]
        else:  # bars before each boundary date (each symbol's bars are in time order)
            ts = frame["ts"].dt.replace_time_zone(None).to_numpy()
            train_ends, validation_ends = (
                [
                    int(np.searchsorted(ts[o : o + n], np.datetime64(boundary.astimezone(timezone.utc).replace(tzinfo=None), "us")))
                    for o, n in zip(offsets, lengths)
                ]
                for boundary in self._split_dates
            )
        # each symbol's first bar, first validation bar and first test bar (None where a split is empty)
        wanted = [(o, True) for o in offsets] + [
            (o + e, e < n) for ends in (train_ends, validation_ends) for o, n, e in zip(offsets, lengths, ends)
        ]
        stamps = frame["ts"].gather([p if ok else 0 for p, ok in wanted]).to_list()
        stamps = [t.isoformat() if ok else None for t, (_, ok) in zip(stamps, wanted)]
        count = len(ids)
        spans = {}
        for i, item_id in enumerate(ids):
            spans[item_id] = {
                "offset": offsets[i],
                "length": lengths[i],
                "start": stamps[i],
                "train_end": train_ends[i],
                "validation_end": validation_ends[i],
                "train_end_ts": stamps[count + i],
                "validation_end_ts": stamps[2 * count + i],
            }
        return spans

    def _reference_pass(self, batches: list[list[SymbolSource]]):
        """Pass 1 for cross-asset features: clean every batch once, keep the cleaned bars, and add
        up the per-(asset class, bar) contributions into the reference series (small: one row per
        asset class and bar, whatever the number of symbols)."""
        import polars as pl

        folder = self.work / "reference"
        folder.mkdir(parents=True, exist_ok=True)
        combined = folder / "reference.parquet"

        def clean(index: int, batch: list[SymbolSource]) -> None:
            cleaned, reports = self.clean_batch(batch)
            contribution = self.pipeline.contributions(cleaned) if cleaned is not None else None
            # uncompressed Arrow IPC: written once and read once by the second pass, in the page cache
            # (compressed Parquet cost ~10x more CPU to write and read for a file that lives minutes)
            for name, frame in (("clean", cleaned), ("contrib", contribution)):
                if frame is not None:
                    tmp = folder / f".{name}-{index:05d}.arrow.tmp"
                    frame.write_ipc(tmp, compression="uncompressed")
                    os.replace(tmp, folder / f"{name}-{index:05d}.arrow")
            atomic_json(folder / f"clean-{index:05d}.json", {"reports": [r.to_dict() for r in reports]}, scratch=True)

        # batches are cleaned in the worker threads, as in the second pass; the parts are summed in batch order
        pending = [(i, b) for i, b in enumerate(batches) if not (folder / f"clean-{i:05d}.json").is_file()]
        for _ in in_order(pending, clean):
            pass
        if combined.is_file():
            return pl.read_parquet(combined)
        # folded in batch order, part by part (the same sums as all at once): memory stays one reference
        # series, not one per batch
        reference = None
        for index in range(len(batches)):
            part = folder / f"contrib-{index:05d}.arrow"
            if part.is_file():
                reference = FeaturePipeline.add(reference, pl.read_ipc(part))
        if reference is not None:
            tmp = folder / ".reference.parquet.tmp"
            reference.write_parquet(tmp)
            os.replace(tmp, combined)
        return reference

    def _shared_reference(self, all_sources: list[SymbolSource]):
        """The reference series of the whole selection, for a shard build.

        Every shard needs the same reference (computed over all symbols, not only
        its own), so it is cached beside the outputs under a name derived from
        the selection's fingerprint: shards writing to sibling folders compute it
        once. Delete ``.ohlcv-reference-*.parquet`` after merging.
        """
        import polars as pl

        cache = self.shared_reference_file(all_sources)
        if cache.is_file():
            return pl.read_parquet(cache)
        size = int(self.data.batch_size)
        parts = []
        for start in range(0, len(all_sources), size):
            cleaned, _ = self.clean_batch(all_sources[start : start + size])
            if cleaned is not None:
                parts.append(self.pipeline.contributions(cleaned))
        return self.save_reference(parts, cache)

    def shared_reference_file(self, all_sources: list[SymbolSource]) -> Path:
        """Where shard builds of one selection keep its reference series (see :meth:`_shared_reference`)."""
        key = self.fingerprint(all_sources, shard=False)[:20]
        return self.out.parent / f".ohlcv-reference-{key}.parquet"

    def save_reference(self, parts: list, target: Path):
        """The reference series from every batch's contributions (in batch order), saved at ``target``."""
        reference = FeaturePipeline.combine(parts)
        if reference is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            reference.write_parquet(tmp)
            os.replace(tmp, target)
        return reference

    def _cleaned_from_reference_pass(self, index: int):
        import polars as pl

        folder = self.work / "reference"
        meta = json.loads((folder / f"clean-{index:05d}.json").read_text())
        reports = [SymbolReport.from_dict(r) for r in meta["reports"]]
        path = folder / f"clean-{index:05d}.arrow"
        return (pl.read_ipc(path) if path.is_file() else None), reports

    def _prepare(self, index: int, batch: list[SymbolSource], reference) -> dict[str, Any]:
        """Clean, add features, split, fit statistics and write one batch's data file; its marker's content."""
        if self.pipeline.needs_reference and self.shard is None:
            cleaned, reports = self._cleaned_from_reference_pass(index)
        else:
            cleaned, reports = self.clean_batch(batch)
        return self.finish_cleaned(index, batch, cleaned, reports, reference)

    def finish_cleaned(self, index: int, batch: list[SymbolSource], cleaned, reports: list[SymbolReport], reference):
        """Features, split, statistics and the batch's data file from its cleaned bars; its marker's content."""
        frame, reports = self.featurize(cleaned, reports, reference)
        return self._write_batch(index, batch, frame, reports)

    @property
    def streams(self) -> bool:
        """Whether a finished batch can be written in the dataset's final form at once.

        True unless the normalization is fitted per asset class (then it needs every symbol's
        statistics first, and the batches are normalized at the merge)."""
        return self.scaler == "none" or self.scope == "symbol"

    def _write_batch(self, index: int, batch: list[SymbolSource], frame, reports: list[SymbolReport]) -> dict[str, Any]:
        """Write a prepared batch's data file (in a worker thread); return the content of its marker."""
        import polars as pl

        entries: list[dict[str, Any]] = []
        spans = self._spans(frame, reports) if frame is not None else {}
        if self.scaler != "none" and self.scope == "symbol":
            # a symbol with no bars before the training cut (it starts later) has nothing to fit its
            # scaler on without looking ahead: it is left out, with the reason
            empty = {item_id for item_id, span in spans.items() if span["train_end"] < 2}
            for report in reports:
                if report.item_id in empty:
                    report.quarantined = ("no bars before the common training cut to fit data.normalization on "
                                          "(the symbol starts later): use scope asset_class, scaler none, or an "
                                          "earlier data.split.train_end")
            if empty:
                frame = frame.filter(~pl.col("item_id").is_in(sorted(empty)))
                frame = frame if frame.height else None
                spans = self._spans(frame, reports) if frame is not None else {}
        # (time, variates), column-major; float32 (the dataset's type) when nothing is fitted on it
        columns = [pl.col(n).cast(pl.Float32) if self.scaler == "none" else pl.col(n) for n in self.variates.names]
        values = frame.select(columns).to_numpy(order="fortran") if frame is not None else None
        names = np.array(self.variates.names)
        for report in reports:  # a variate without one value in a series (a feature with nothing to work on)
            span = spans.get(report.item_id)
            if span is not None:
                block = values[span["offset"] : span["offset"] + span["length"]]
                report.missing_variates = names[np.isnan(block).all(axis=0)].tolist()
        for source, report in zip(batch, reports):
            entry: dict[str, Any] = {"report": report.to_dict()}
            span = spans.get(source.item_id)
            if span is not None:
                stats = {}
                if self.scaler != "none" and span["train_end"] > 0:  # (per class: fitted on the others' bars)
                    stats = normalize.fit_stats(values[span["offset"] : span["offset"] + span["train_end"]], self.scaler)
                entry.update(item_id=source.item_id, asset_class=source.asset_class, symbol=source.symbol)
                entry.update({k: v for k, v in span.items() if k != "offset"}, stats=stats)
            entries.append(entry)
        layout = [[item_id, span["length"]] for item_id, span in spans.items()]  # in the order of the frame's rows
        data_file = self._marker(index).with_suffix(".arrow")
        digests: list[str] = []
        if frame is not None:
            tmp = data_file.with_name(f".{data_file.name}.tmp")
            if self.streams:  # the dataset's rows, ready to be concatenated at the merge
                norm = self._normalization([e for e in entries if "item_id" in e])
                rows = series_rows(values, layout, {e["item_id"]: e for e in entries if "item_id" in e}, norm,
                                    self.variates, self.freq.canonical)
                digests = write_rows(tmp, [rows], self.variates)
            else:  # cleaned bars with features, normalized at the merge
                frame.write_ipc(tmp)
            os.replace(tmp, data_file)
            stamps = data_file.with_suffix(".ts.parquet")
            tmp = stamps.with_name(f".{stamps.name}.tmp")
            frame.select("item_id", "ts").group_by("item_id", maintain_order=True).agg("ts").write_parquet(tmp)
            os.replace(tmp, stamps)
        return {"index": index, "entries": entries, "rows": layout, "digests": digests, "has_data": frame is not None}

    def _marker(self, index: int) -> Path:
        return self.work / "batches" / f"batch-{index:05d}.json"

    def _finish_batch(self, index: int, batch: list[SymbolSource], meta: dict[str, Any]) -> None:
        """Mark a written batch done (in order, in the main thread): it is then never redone."""
        for position, (source, entry) in enumerate(zip(batch, meta["entries"])):
            self.progress.on_symbol(source.item_id, entry["report"]["rows_read"])
            if position == len(batch) // 2:
                _debug_pause(index)
        atomic_json(self._marker(index), meta, scratch=True)

    # -- merge ----------------------------------------------------------------------------
    def _merge(self, batch_count: int, fingerprint: str, skipped: list[str], started: float, resumed: int):
        import polars as pl

        work = self.work
        markers = [self._marker(i) for i in range(batch_count)]
        batch_meta = [json.loads(m.read_text()) for m in markers]
        items = [e for meta in batch_meta for e in meta["entries"] if "item_id" in e]
        reports = [e["report"] for meta in batch_meta for e in meta["entries"]]
        if not items and reports:
            reasons = "; ".join(f"{r['item_id']}: {r['quarantined']}" for r in reports[:3])
            more = f"; and {len(reports) - 3} more (run with fewer symbols to see each)" if len(reports) > 3 else ""
            raise OhlcvError(f"every selected symbol was quarantined ({len(reports)}): {reasons}{more}")
        norm = self._normalization(items)
        staging = work / "final"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        with_data = [(m, meta) for m, meta in zip(markers, batch_meta) if meta.get("has_data")]
        if self.streams:  # the batch files are the dataset's data files: hard-linked (small ones joined)
            digests = [d for _, meta in with_data for d in meta["digests"]]
            content_hash = content_hash_of(digests)
            place_dataset([m.with_suffix(".arrow") for m, _ in with_data], staging / HF_SUBDIR, self.variates,
                          fingerprint=content_hash[:16], scratch=work / "cache", keep=True)
        else:  # normalized now: each batch's rows written once more, then renamed into the dataset
            by_id = {e["item_id"]: e for e in items}
            cache = work / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
            digests, parts = [], []
            for marker, meta in with_data:
                values = pl.read_ipc(marker.with_suffix(".arrow"), columns=self.variates.names).to_numpy()
                parts.append(cache / marker.with_suffix(".arrow").name)
                digests += write_rows(parts[-1], [series_rows(values, meta["rows"], by_id, norm, self.variates,
                                                              self.freq.canonical)], self.variates)
            content_hash = content_hash_of(digests)
            place_dataset(parts, staging / HF_SUBDIR, self.variates, fingerprint=content_hash[:16],
                          scratch=cache / "meta", keep=False)
        write_timestamps([m.with_suffix(".ts.parquet") for m, _ in with_data], staging / TIMESTAMPS_FILE)
        report = build_report(reports, skipped, started, resumed, batch_count)
        causes = variate_causes(self.variates.feature_specs)
        report["variate_causes"], report["peerless_classes"] = causes, sorted(self.peerless_classes)
        report["notes"] = [*self.notes, *off_session_notes(reports, self.calendars),
                           *missing_variate_notes(reports, causes, self.peerless_classes)]
        report["executor"] = {"name": self.executor, "ray_tasks": self.ray_tasks}
        manifest = {
            "format": FORMAT,
            "name": str(self.cfg.name),
            "freq": self.freq.canonical,
            "layout": self.data.layout.value,
            "variates": self.variates.names,
            "targets": self.variates.targets,
            "covariates": self.variates.covariates,
            "context_length": int(self.data.context_length),
            "prediction_length": int(self.data.prediction_length),
            "series": len(items),
            "bars": int(sum(e["length"] for e in items)),
            "split": {"method": self.data.split.method.value, "train": float(self.data.split.train),
                      "validation": float(self.data.split.validation),
                      "train_end": iso(self._split_dates[0]) if self._split_method == "date" else None,
                      "validation_end": iso(self._split_dates[1]) if self._split_method == "date" else None,
                      "common": self._split_method == "date", "span": self.split_span},
            "calendars": {asset_class: calendar.describe() for asset_class, calendar in sorted(self.calendars.items())},
            "timestamps": TIMESTAMPS_FILE,
            "items": [
                {k: e[k] for k in ("item_id", "asset_class", "symbol", "start", "length", "train_end",
                                   "validation_end", "train_end_ts", "validation_end_ts")}
                for e in items
            ],
            "normalization": norm,
            "quarantined": report["quarantined"],
            "profile_hash": profile_hash(self.cfg),
            "spec": dataset_spec(self.cfg),
            "lake": lake_label(self.lake),
            "fingerprint": fingerprint,
            "shard": str(self.shard) if self.shard else None,
            "plugins": self.plugins.versions(),
            "content_hash": content_hash,
            "ohlcv_version": __version__,
            "datasets_version": datasets_version(),
        }
        atomic_json(staging / "manifest.json", manifest)
        atomic_json(staging / "report.json", report)
        atomic_write_text(staging / "profile.yaml", "# resolved profile of this build\n" + to_yaml(self.cfg))
        swap_into_place(staging, self.out, work)
        shutil.rmtree(work, ignore_errors=True)
        return manifest, report

    def _normalization(self, items: list[dict]) -> dict[str, Any]:
        names = self.variates.names
        result: dict[str, Any] = {"scaler": self.scaler, "scope": self.scope, "variates": names, "groups": {}}
        if self.scaler == "none":
            return result
        groups: dict[str, list[dict]] = {}
        for item in items:
            key = item["item_id"] if self.scope == "symbol" else item["asset_class"]
            if item["stats"]:  # a symbol with no training bars contributes nothing to its class's statistics
                groups.setdefault(key, []).append(item["stats"])
        for key, stats in sorted(groups.items()):
            merged = stats[0] if self.scope == "symbol" else normalize.merge_stats(stats, self.scaler)
            center, scale = normalize.center_scale(merged, self.scaler, len(names))
            result["groups"][key] = {"center": center.tolist(), "scale": scale.tolist(), "fit": merged}
        return result
