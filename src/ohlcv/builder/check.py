"""Verify a built dataset the way uni2ts will read it, before any GPU time is spent.

Loads the dataset through ``uni2ts.data.indexer.HuggingFaceDatasetIndexer``,
runs every series through the pre-training transform (with the profile's
patch-size constraint), and reports what pre-training needs to know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ohlcv.errors import OhlcvError


@dataclass
class CheckReport:
    dataset: str
    series: int = 0
    variates: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    covariates: list[str] = field(default_factory=list)
    lengths: dict[str, float] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)
    infinite: dict[str, int] = field(default_factory=dict)  # variate -> values that are +-inf (never written by a build)
    too_short: list[str] = field(default_factory=list)
    patch_sizes_drawn: dict[int, int] = field(default_factory=dict)
    max_tokens: int = 0
    budget: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # hard: exit non-zero
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"ok": self.ok}


def check_dataset(dataset: Path, cfg, *, max_series: int | None = None, seed: int = 0) -> CheckReport:
    """Load ``dataset`` through uni2ts, push every series through the pre-training transform, report."""
    from ohlcv.budget import inputs_from_profile, plan

    dataset = Path(dataset).expanduser()
    manifest_file = dataset / "manifest.json"
    if not manifest_file.is_file():
        raise OhlcvError(f"{dataset}: no manifest.json; build it with `ohlcv build` first")
    manifest = json.loads(manifest_file.read_text())
    report = CheckReport(
        dataset=str(dataset),
        variates=list(manifest["variates"]),
        targets=list(manifest["targets"]),
        covariates=list(manifest["covariates"]),
    )
    budget = plan(inputs_from_profile(cfg, dataset=dataset))
    report.budget = json.loads(budget.to_json())
    if not budget.ok:
        report.problems.append("the token budget does not fit: run `ohlcv budget` for what to change")

    import datasets
    import torch

    from ohlcv.dataset.read import load_hf
    from ohlcv.moirai.data import pretraining_view

    datasets.disable_progress_bars()
    try:
        indexer, series = pretraining_view(load_hf(dataset, manifest), cfg)
    except Exception as exc:  # noqa: BLE001 - any failure here is the answer
        report.problems.append(f"uni2ts cannot load the dataset: {type(exc).__name__}: {exc}")
        return report
    report.series = len(indexer)
    np.random.seed(seed)
    torch.manual_seed(seed)
    need = int(cfg.data.context_length) + int(cfg.data.prediction_length)
    items = {item["item_id"]: item for item in manifest.get("items", [])}
    lengths, missing, observed_total = [], np.zeros(len(report.variates)), 0
    infinite = np.zeros(len(report.variates), dtype=np.int64)
    count = report.series if max_series is None else min(report.series, max_series)
    for index in range(count):
        raw = indexer[index]
        item_id = str(raw["item_id"])
        parts = [np.asarray(raw["target"], dtype=np.float64).reshape(len(report.targets), -1)]
        if report.covariates:
            parts.append(np.asarray(raw["past_feat_dynamic_real"], dtype=np.float64).reshape(len(report.covariates), -1))
        values = np.concatenate(parts)
        lengths.append(values.shape[1])
        missing += np.isnan(values).sum(axis=1)
        infinite += np.isinf(values).sum(axis=1)
        observed_total += values.shape[1]
        train_end = items.get(item_id, {}).get("train_end", values.shape[1])
        if train_end < need:
            report.too_short.append(f"{item_id}: training span {train_end} bars < context + horizon {need}")
        try:
            sample = series[index]
        except Exception as exc:  # noqa: BLE001 - report which series breaks uni2ts
            report.problems.append(f"{item_id}: uni2ts's pre-training transform failed: {type(exc).__name__}: {exc}")
            continue
        for size in np.unique(np.asarray(sample["patch_size"])):
            if size > 0:
                report.patch_sizes_drawn[int(size)] = report.patch_sizes_drawn.get(int(size), 0) + 1
        report.max_tokens = max(report.max_tokens, int(np.asarray(sample["target"]).shape[0]))
    if lengths:
        arr = np.array(lengths)
        report.lengths = {"min": int(arr.min()), "median": float(np.median(arr)), "max": int(arr.max()), "total": int(arr.sum())}
        report.missing_share = {name: round(float(m) / observed_total, 4) for name, m in zip(report.variates, missing)}
    report.infinite = {name: int(n) for name, n in zip(report.variates, infinite) if n}
    for name, n in report.infinite.items():
        report.problems.append(f"variate '{name}' has {n} infinite values: losses and scaling turn them into NaN; "
                               "rebuild the dataset with `ohlcv build --force` (a build writes them as missing)")
    causes = _likely_causes(cfg, manifest, report.lengths.get("median", 0))
    for name, share in report.missing_share.items():
        if share > 0.5:
            where = "everywhere" if share >= 0.999 else f"in {share:.0%} of bars"
            report.problems.append(f"variate '{name}' is missing {where}: {causes.get(name, _GAPS)}")
        elif share > 0.1:
            report.warnings.append(f"variate '{name}' is missing in {share:.0%} of bars")
    if report.too_short and len(report.too_short) == report.series:
        report.problems.append(
            f"every series has a training span shorter than context + horizon ({need}): "
            "raise data.cleaning.min_length, move data.split.train_end later or shorten data.context_length"
        )
    elif report.too_short:  # with a common date split, symbols that start late have short training spans
        report.warnings.append(
            f"{len(report.too_short)} of {report.series} series have a training span shorter than context + "
            f"horizon ({need}); training skips them, evaluation still uses their test span"
        )
    if report.max_tokens > int(cfg.model.max_seq_len):
        report.problems.append(f"a sample has {report.max_tokens} tokens > model.max_seq_len {cfg.model.max_seq_len}")
    return report


_GAPS = ("bars missing on the venue's calendar (see the build report's gap counts; "
         "is data.calendars right for this asset class?)")


def _likely_causes(cfg, manifest: dict[str, Any], median_length: float) -> dict[str, str]:
    """variate -> the feature that makes it and the likely reason it is missing."""
    from ohlcv.plugins import enabled_features, load_plugins

    causes = {"volume": "the lake has no volume for these symbols; leave volume out of data.columns"}
    try:
        resolved = enabled_features(cfg, load_plugins().features)
    except Exception:  # noqa: BLE001 - the check reports what it can
        return causes
    for feature, params, outputs in resolved:
        warmups = feature.output_warmups(params)
        for name in outputs:
            warmup = warmups.get(name, 0)
            if median_length and warmup > median_length / 2:
                why = f"its warm-up of {warmup} bars is more than half the median series ({median_length:,.0f} bars)"
            elif feature.reference is not None:
                why = ("a cross-asset feature: it needs other symbols of the same asset class with bars at the same "
                       "times (one symbol per class, or classes on different calendars)")
            elif "volume" in feature.inputs:
                why = "it reads volume, which is missing for these symbols"
            else:
                why = _GAPS
            causes[name] = f"feature '{feature.name}': {why}"
    return causes
