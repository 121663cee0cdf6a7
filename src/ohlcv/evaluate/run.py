"""``ohlcv evaluate``: rolling-origin forecasts on the test span, against baselines on the same windows.

Forecasts come from uni2ts's ``MoiraiForecast`` around a ``MoiraiModule``
loaded from a local Hugging Face folder (``ohlcv pretrain``'s ``RUN/model``)
or a hub id. Values are de-normalized with the dataset's saved statistics, so
every variate is scored in its own units; each scored variate is compared with
the baselines of its kind (a random walk for a price, a zero return for a
return), the first of which is "the one to beat".

Every forecaster is scored on the same (series, origin) windows: a window that
any forecaster cannot be scored on is removed for all of them, and the count is
reported. Each forecaster samples with its own seed (derived from
``evaluate.seed``, its name, the series and the variate), so adding a model
changes no other row. Differences against the baselines come with
Diebold–Mariano p-values; calibration with PIT and coverage; optionally a
conformally recalibrated copy of each model (``evaluate.calibrate``).
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ohlcv.config.loader import atomic_write_text, json_text, write_resolved_profile
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.evaluate.baselines import (
    BASELINES,
    DEFAULT_BASELINES,
    DESCRIPTIONS,
    SHORT_NAMES,
    check_baselines,
    statsforecast_available,
)
from ohlcv.evaluate.calibrate import Conformal, apply_conformal, fit_conformal
from ohlcv.evaluate.metrics import (
    INTERVALS, METRICS, RELIABILITY_LEVELS, WindowScores, direction_counts, seasonal_errors, summarize, usable,
    window_scores,
)
from ohlcv.evaluate.stats import by_origin, diebold_mariano, information_coefficient
from ohlcv.evaluate.windows import cut_windows, rolling_origins
from ohlcv.features import Kind
from ohlcv.freq import parse_freq
from ohlcv.moirai.models import describe, forecast_patch, forecast_samples, forecaster, load_module
from ohlcv.moirai.sources import model_line, resolve_model, run_folder_of

COVERAGE_TOLERANCE = 0.10  # flag a central interval whose coverage is further than this from nominal
PIT_DISPERSION_TOLERANCE = 0.2  # flag 12 x var(PIT) outside 1 +- this (1 for a calibrated forecast)
PIT_BIAS_TOLERANCE = 0.1  # flag a mean PIT further than this from 0.5
SIGNIFICANCE = 0.05
AGGREGATED = ("crps", "mase", "msis", "coverage_50", "coverage_80", "coverage_95")  # scale-free: averaged over assets
RELATIVE = ("crps", "mase", "msis", "mae", "mse")


@dataclass
class EvalResult:
    out: Path
    variates: dict[str, dict[str, Any]]  # variate -> kind, units, baselines, the one to beat, windows kept/dropped
    aggregate: dict[str, dict[str, dict[str, float]]]  # forecaster -> variate -> metric -> value
    relative: dict[str, dict[str, dict[str, float]]]  # forecaster -> variate -> metric -> value / the one to beat's
    significance: dict[str, dict[str, dict[str, dict[str, Any]]]]  # forecaster -> variate -> baseline -> loss -> DM
    calibration: dict[str, dict[str, dict[str, Any]]]  # forecaster -> variate -> PIT, reliability, flags
    ic: dict[str, dict[str, Any]]  # forecaster -> variate -> IC summary (or absent)
    by_step: dict[str, dict[str, list[float]]]  # forecaster -> variate -> scaled CRPS per horizon step
    per_asset: list[dict[str, Any]] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    windows: int = 0  # (series, origin) windows cut
    span: dict[str, Any] = field(default_factory=dict)  # first origin, last forecast bar, symbols
    models: list[str] = field(default_factory=list)  # the learned forecasters (and their recalibrated copies)
    model_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # forecaster -> source, family, size, parameters
    conformal: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # forecaster -> variate -> baseline -> loss -> [(origin time, mean loss difference)], for pooling folds
    differences: dict[str, Any] = field(default_factory=dict, repr=False)

    def verdict(self, variate: str, model: str = "model") -> str:
        """One sentence: does ``model`` beat the one to beat on CRPS, with the DM p-value."""
        info = self.variates[variate]
        base = info["yardstick"]
        name = SHORT_NAMES.get(base, base)
        dm = self.significance.get(model, {}).get(variate, {}).get(base, {}).get("crps")
        ratio = self.relative.get(model, {}).get(variate, {}).get("crps", float("nan"))
        if dm is None or not math.isfinite(dm["p_value"]):
            return f"{model}: too few origins for a significance test against the {name} (CRPS ratio {ratio:.3f})"
        p = format_p(dm["p_value"])
        if dm["p_value"] < SIGNIFICANCE and dm["statistic"] < 0:
            return f"{model} beats the {name} on CRPS, p = {p} (ratio {ratio:.3f})"
        if dm["p_value"] < SIGNIFICANCE:
            return f"{model} is significantly worse than the {name} on CRPS, p = {p} (ratio {ratio:.3f})"
        return f"{model}: no significant difference from the {name} on CRPS, p = {p} (ratio {ratio:.3f})"

    def flags(self) -> list[str]:
        """Calibration flags of the models (the baselines' calibration is in ``calibration`` too, unflagged)."""
        return [f"{model} / {variate}: {flag}" for model, by_variate in self.calibration.items() if model in self.models
                for variate, info in by_variate.items() for flag in info["flags"]]

    def to_json(self) -> dict[str, Any]:
        return {"variates": self.variates, "span": self.span, "windows_total": self.windows,
                "aggregate": self.aggregate, "relative": self.relative, "significance": self.significance,
                "calibration": self.calibration, "ic": self.ic, "error_by_step": self.by_step,
                "conformal": self.conformal,
                "verdicts": {m: {v: self.verdict(v, m) for v in self.variates} for m in self.models},
                "flags": self.flags(), "notes": self.notes, "per_asset": self.per_asset, "models_info": self.model_info}


def shift_of(shift: int | dict[str, int], item_id: str) -> int:
    """A series' shift in bars: one for all, or its own (see :func:`evaluate`)."""
    return int(shift.get(item_id, 0)) if isinstance(shift, dict) else int(shift)


def format_p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def seed_for(base: int, *parts: str) -> int:
    """A seed that depends on ``base`` and the names only (not on which other forecasters run)."""
    return int(np.random.SeedSequence([int(base), *(zlib.crc32(p.encode()) for p in parts)]).generate_state(1)[0])


def trained_with(spec: str) -> dict[str, Any] | None:
    """What a model folder written by ``ohlcv pretrain``/``finetune`` was trained with (its run folder's
    profile.yaml and run.json): variates, context length, patch size. None for other models."""
    run = run_folder_of(spec)
    if run is None:
        return None
    from omegaconf import OmegaConf

    try:
        profile = OmegaConf.load(run / "profile.yaml")
        summary = json.loads((run / "run.json").read_text())
    except Exception:  # noqa: BLE001 - an unreadable run folder: nothing to compare with
        return None
    info: dict[str, Any] = {"command": summary.get("command"), "context": int(profile.data.context_length)}
    if summary.get("command") == "finetune":  # the patch it really used (Moirai 2.0: its own, not the profile's)
        info["patch"] = int(summary.get("patch_size") or profile.finetune.patch_size)
    manifest = Path(str(summary.get("dataset", ""))) / "manifest.json"
    if summary.get("dataset") and manifest.is_file():
        info["variates"] = json.loads(manifest.read_text())["variates"]
    elif isinstance(summary.get("variates"), int):
        info["variates"] = summary["variates"]
    return info


def check_model_fits(spec: str, module, cfg, manifest: dict[str, Any], notes: list[str]) -> None:
    """Refuse (exit 2, one line) a model trained with other variates, context or patch size than this run's."""
    patch = forecast_patch(module, cfg)
    if patch != int(cfg.finetune.patch_size):
        notes.append(f"{spec} reads patches of {patch} steps only (its family's single patch size); "
                     f"finetune.patch_size={int(cfg.finetune.patch_size)} does not apply to it")
    info = trained_with(spec)
    if info is None:
        notes.append(f"{spec}: no ohlcv run folder beside it, so its training variates and context are not checked")
        return
    differences = []
    variates = manifest["variates"]
    trained = info.get("variates")
    if isinstance(trained, list) and trained != variates:
        extra, missing = sorted(set(variates) - set(trained)), sorted(set(trained) - set(variates))
        detail = f"extra {extra}, missing {missing}" if extra or missing else "in another order"
        differences.append(f"variates: trained on {len(trained)}, the dataset has {len(variates)} ({detail})")
    elif isinstance(trained, int) and trained != len(variates):
        differences.append(f"variates: trained on {trained}, the dataset has {len(variates)}")
    if info["context"] != int(cfg.data.context_length):
        if info.get("command") == "finetune":  # fine-tuned on windows of exactly that context
            differences.append(f"context: trained {info['context']}, evaluated {int(cfg.data.context_length)}")
        else:  # pre-training draws crops of every length up to it: another context is a fair question
            notes.append(f"{spec} was pre-trained with context {info['context']}; evaluated with "
                         f"{int(cfg.data.context_length)}")
    if "patch" in info and info["patch"] != patch:
        differences.append(f"patch: trained {info['patch']}, evaluated {patch}")
    if not differences:
        return
    message = f"the model {spec} does not match this evaluation: " + "; ".join(differences)
    if bool(cfg.evaluate.allow_mismatch):
        notes.append(message + " (evaluated anyway: evaluate.allow_mismatch=true)")
        return
    raise ConfigError(message + "; evaluate with the profile and dataset it was trained on, "
                      "or set evaluate.allow_mismatch=true", key="--model")


def _denormalize(values: np.ndarray, group: dict | None, index: int) -> np.ndarray:
    if group is None:
        return values
    return values * group["scale"][index] + group["center"][index]


def bar_times(item: dict[str, Any], freq: str, index: np.ndarray) -> list[str]:
    """ISO timestamps (UTC) of bars ``index`` of a series: the real bar times the dataset keeps
    (``timestamps.parquet``: session bars skip nights, weekends and holidays), or, for a dataset
    built before they were kept, its start plus whole bars of its frequency."""
    import pandas as pd

    stamps = item.get("times")
    if stamps is not None and len(index) and 0 <= int(np.min(index)) and int(np.max(index)) < len(stamps):
        return [pd.Timestamp(stamps[int(i)]).tz_localize("UTC").isoformat() for i in index]
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
        start = pd.Timestamp(item["start"])
        return [(start + int(i) * offset).isoformat() for i in index]
    except (ValueError, TypeError, KeyError):
        return [f"bar {int(i)}" for i in index]


def baselines_by_kind(cfg, notes: list[str]) -> dict[str, list[str]]:
    chosen = {kind: list(names) for kind, names in DEFAULT_BASELINES.items()}
    for kind, names in cfg.evaluate.baselines.items():
        chosen[str(kind)] = [str(n) for n in names]
    if not statsforecast_available() and any("autoets" in names for names in chosen.values()):
        for names in chosen.values():
            if "autoets" in names and len(names) > 1:
                names.remove("autoets")
        notes.append("AutoETS skipped: statsforecast is not installed beside this stack (pip install statsforecast)")
    return chosen


@dataclass
class _Row:
    """One dataset row as the evaluation needs it."""

    item_id: str
    item: dict[str, Any]
    values: np.ndarray  # (variates, time) in the manifest's variate order, normalized
    group: dict | None


def _rows(dataset: Path, manifest: dict[str, Any]):
    import datasets

    from ohlcv.dataset.read import load_hf, read_timestamps

    datasets.disable_progress_bars()
    names, targets, covariates = manifest["variates"], manifest["targets"], manifest["covariates"]
    order = [names.index(v) for v in targets] + [names.index(v) for v in covariates]
    norm = manifest["normalization"]
    groups = {k: {"center": np.array(v["center"]), "scale": np.array(v["scale"])} for k, v in norm["groups"].items()}
    items = {item["item_id"]: item for item in manifest["items"]}
    times = read_timestamps(dataset, manifest)
    for row in load_hf(dataset, manifest).with_format("numpy"):
        item_id = str(row["item_id"])
        parts = [np.stack(row["target"]).astype(np.float64)]
        if covariates:
            parts.append(np.stack(row["past_feat_dynamic_real"]).astype(np.float64))
        stacked = np.concatenate(parts)
        values = np.empty_like(stacked)
        for position, index in enumerate(order):
            values[index] = stacked[position]
        item = {**items[item_id], "times": times.get(item_id)}
        key = item_id if norm["scope"] == "symbol" else item["asset_class"]
        yield _Row(item_id, item, values, groups.get(key))


def evaluate(
    loaded,
    model_spec: str,
    *,
    dataset: Path,
    out: Path,
    zero_shot: str | None = None,
    shift: int | dict[str, int] = 0,
    origin_offset: int = 0,
    on_item: Callable[[str], None] | None = None,
    write: bool = True,
    progress: Any = None,
) -> EvalResult:
    """Score ``model_spec`` (and ``zero_shot``) and the baselines on the test span of ``dataset``.

    ``shift`` moves every series' train/validation/test boundaries by that many
    bars (negative: earlier), which is how ``ohlcv backtest`` evaluates a fold; a mapping gives
    each series its own (the bars of one instant differ between calendars). ``origin_offset`` is
    added to the origins' numbers (a fold's place in a backtest). ``progress`` (see
    ``ohlcv.render.count_progress``) hears of each model loaded and each forecast of a series made.
    """
    from ohlcv.evaluate.kinds import UNITS, variate_kinds
    from ohlcv.dataset.read import read_manifest

    cfg = loaded.cfg
    check_baselines(cfg)
    specs = {"model": model_spec} | ({"zero_shot": zero_shot} if zero_shot else {})
    # before any dataset is read: a wrong --model / --zero-shot costs nothing
    sources = {name: resolve_model(spec, option="--model" if name == "model" else "--zero-shot")
               for name, spec in specs.items()}
    dataset = Path(dataset).expanduser()
    manifest = read_manifest(dataset)
    horizon, context = int(cfg.data.prediction_length), int(cfg.data.context_length)
    stride = int(cfg.evaluate.stride or horizon)
    season = int(cfg.evaluate.seasonality or parse_freq(manifest["freq"]).season_length)
    samples_n, seed = int(cfg.evaluate.num_samples), int(cfg.evaluate.seed)
    notes: list[str] = []
    names, targets, covariates = manifest["variates"], manifest["targets"], manifest["covariates"]
    wanted = list(cfg.evaluate.variates) or list(targets)
    missing = [v for v in wanted if v not in targets]
    if missing:
        raise ConfigError(f"{missing} are not target variates of this dataset ({', '.join(targets)})", key="evaluate.variates")
    kinds, kind_notes = variate_kinds(cfg, dataset, wanted)
    notes += kind_notes
    by_kind = baselines_by_kind(cfg, notes)
    target_idx = [names.index(v) for v in targets]
    cov_idx = [names.index(v) for v in covariates]
    progress = progress or _NoProgress()
    progress.on_start("loading", len(specs), "models")
    models, model_info = {}, {}
    for name, spec in specs.items():
        progress.on_next(name)
        module = load_module(sources[name])
        check_model_fits(spec, module, cfg, manifest, notes)
        models[name] = forecaster(module, cfg, len(targets), len(covariates))
        models[name].ohlcv_spec = spec  # (which run folder it came from: notes about its training)
        model_info[name] = describe(module) | {"output": sources[name].family.output, "patch_size": models[name].patch}
        notes += models[name].notes
    out = Path(out).expanduser()

    conformal: dict[str, dict[str, Conformal]] = {}
    if cfg.evaluate.calibrate.value == "conformal":
        progress.on_start("calibrating", len(manifest["items"]), "series")
        conformal = _fit_conformal(models, dataset, manifest, cfg, wanted, shift, season, seed, notes,
                                   on_item=progress.on_next)

    store: dict[str, dict[str, list[tuple[str, list[str], WindowScores]]]] = {}
    kept = {v: 0 for v in wanted}
    dropped = {v: 0 for v in wanted}
    plot_data: list[dict[str, Any]] = []
    total_windows, symbols, first, last = 0, [], None, None
    capped = 0  # the most windows a series' test span could hold
    per_series = len(models) + sum(len(by_kind[kinds[v].value]) for v in wanted)
    progress.on_start("forecasting", per_series * len(manifest["items"]), "forecasts")
    for row in _rows(dataset, manifest):
        test_start = int(row.item["validation_end"]) + shift_of(shift, row.item_id)
        length = row.values.shape[1]
        origins = rolling_origins(length, test_start, context, horizon, int(cfg.evaluate.windows), stride)
        possible = max(0, (length - horizon - max(test_start, context)) // max(1, stride) + 1)
        capped = max(capped, possible)
        if not len(origins):
            progress.on_next(f"{row.item_id}: no window", per_series)
            continue
        total_windows += len(origins)
        symbols.append(row.item_id)
        times = bar_times(row.item, manifest["freq"], origins)
        ends = bar_times(row.item, manifest["freq"], origins + horizon - 1)
        first = min(first or times[0], times[0])
        last = max(last or ends[-1], ends[-1])
        cut = cut_windows(row.values, origins, context, horizon)
        forecasts = {}
        for name, model in models.items():
            progress.on_next(f"{row.item_id}: {name}, {len(origins)} windows")
            forecasts[name] = forecast_samples(model, cut.context, target_idx, cov_idx, seed_for(seed, name, row.item_id))
        for variate in wanted:
            v, t, kind = names.index(variate), targets.index(variate), kinds[variate]
            ctx = _denormalize(cut.context[:, v, :], row.group, v)
            label = _denormalize(cut.label[:, v, :], row.group, v)
            scale = seasonal_errors(ctx, season)
            candidates = {name: _denormalize(f[..., t], row.group, v) for name, f in forecasts.items()}
            for name in list(candidates):
                if variate in conformal.get(name, {}):
                    candidates[f"{name}+conformal"] = apply_conformal(candidates[name], scale, conformal[name][variate])
            for baseline in by_kind[kind.value]:
                progress.on_next(f"{row.item_id} {variate}: {baseline}")
                rng = np.random.default_rng(seed_for(seed, baseline, row.item_id, variate))
                candidates[baseline] = BASELINES[baseline](ctx, horizon, samples_n, rng, season=season)
            keep = np.logical_and.reduce([usable(label, s, ctx, season) for s in candidates.values()])
            kept[variate] += int(keep.sum())
            dropped[variate] += int((~keep).sum())
            if not keep.any():
                continue
            # origins are keyed by their number from the (common) test start, not by time stamp: series on
            # different calendars (24/7 crypto, weekday FX, NYSE sessions) forecast the same period at different
            # clock times, and must be pooled as one origin, not counted as independent ones
            # (a backtest's folds add their offset, so that their origins stay in time order when pooled)
            kept_origins = [origin_offset + int((o - test_start) // stride) for o, k in zip(origins, keep) if k]
            for name, samples in candidates.items():
                rng = np.random.default_rng(seed_for(seed, name, row.item_id, variate, "pit"))
                scores = window_scores(label[keep], samples[keep], ctx[keep], season,
                                       from_zero=kind is Kind.return_, rng=rng)
                store.setdefault(name, {}).setdefault(variate, []).append((row.item_id, kept_origins, scores))
            if variate == wanted[0] and len(plot_data) < int(cfg.evaluate.plot_assets):
                at = int(np.flatnonzero(keep)[-1])
                bars = np.arange(origins[at] - context, origins[at] + horizon)
                plot_data.append({"item_id": row.item_id, "variate": variate, "context": ctx[at], "label": label[at],
                                  "samples": candidates["model"][at],
                                  "baseline": candidates[by_kind[kind.value][0]][at],
                                  "baseline_name": by_kind[kind.value][0], "times": bar_times(row.item, manifest["freq"], bars)})
        if on_item is not None:
            on_item(row.item_id)
    if not store:
        raise OhlcvError(
            f"no test window fits: series need context {context} + horizon {horizon} bars at or after the test span, "
            "with every value observed; lower evaluate.windows / data.context_length or rebuild with a longer test span"
        )
    if capped > int(cfg.evaluate.windows):
        notes.append(f"{int(cfg.evaluate.windows)} windows per series (evaluate.windows) of up to {capped} the test span "
                     f"holds at stride {stride}: raise evaluate.windows for more power (significance needs origins)")
    if samples_n < 100:
        notes.append(f"{samples_n} samples per sampled forecast (evaluate.num_samples): with few samples the empirical "
                     "intervals are too narrow even for a perfect forecaster (about 0.87 coverage at 95% with 20), so "
                     "coverage and PIT flags lean towards 'too narrow'; use 100 or more for calibration")
        quantile = [name for name, info in model_info.items() if info.get("output") == "quantiles"]
        if quantile:
            notes.append(f"{', '.join(quantile)}: quantile forecasts, scored exactly; the sampled forecasters' CRPS "
                         f"carries Monte-Carlo noise that raises it (about +5% at 20 samples, +1% at 100), which "
                         "favours the quantile model: compare them with evaluate.num_samples=100 or more")
    for variate in wanted:
        if dropped[variate]:
            notes.append(f"{variate}: {dropped[variate]} of {kept[variate] + dropped[variate]} windows removed for every "
                         "forecaster (a missing value, or one forecaster could not be scored there)")
    variates_info = {
        v: {"kind": kinds[v].value, "units": UNITS[kinds[v]], "baselines": by_kind[kinds[v].value],
            "yardstick": by_kind[kinds[v].value][0], "windows": kept[v], "windows_removed": dropped[v]}
        for v in wanted if kept[v]
    }
    learned = [n for n in store if n in models or n.endswith("+conformal")]
    result = summarize_scores(store, variates_info, learned, horizon=horizon, stride=stride)
    result.update(out=out, windows=total_windows, models=learned, notes=notes, model_info=model_info,
                  span={"first_origin": first, "last_forecast_bar": last, "symbols": symbols,
                        "series": len(symbols), "shift": shift},
                  conformal={m: {v: c.to_dict() for v, c in by_v.items()} for m, by_v in conformal.items()})
    evaluation = EvalResult(**result)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        evaluation.plots = _plots(out, plot_data, evaluation, store)
        _write_outputs(loaded, evaluation, model_spec, zero_shot, dataset, manifest, season, stride)
    return evaluation


class _NoProgress:
    def on_start(self, phase: str, total: int, unit: str) -> None:
        pass

    def on_next(self, now: str = "", count: int = 1) -> None:
        pass


def _fit_conformal(models, dataset, manifest, cfg, wanted, shift, season, seed, notes,
                   on_item: Callable[[str], None]) -> dict[str, dict[str, Conformal]]:
    """Split conformal shifts per model and variate from windows on the validation span."""
    names, targets = manifest["variates"], manifest["targets"]
    target_idx = [names.index(v) for v in targets]
    cov_idx = [names.index(v) for v in manifest["covariates"]]
    horizon, context = int(cfg.data.prediction_length), int(cfg.data.context_length)
    stride = int(cfg.evaluate.stride or horizon)
    pooled: dict[tuple[str, str], list[list[np.ndarray]]] = {}
    for row in _rows(dataset, manifest):
        on_item(row.item_id)
        moved = shift_of(shift, row.item_id)
        end = int(row.item["validation_end"]) + moved  # calibration windows end inside the validation span
        origins = rolling_origins(end, int(row.item["train_end"]) + moved, context, horizon,
                                  int(cfg.evaluate.calibration_windows), stride)
        if not len(origins):
            continue
        cut = cut_windows(row.values, origins, context, horizon)
        for name, model in models.items():
            samples = forecast_samples(model, cut.context, target_idx, cov_idx, seed_for(seed, name, row.item_id, "calibration"))
            for variate in wanted:
                v, t = names.index(variate), targets.index(variate)
                ctx = _denormalize(cut.context[:, v, :], row.group, v)
                label = _denormalize(cut.label[:, v, :], row.group, v)
                forecast = _denormalize(samples[..., t], row.group, v)
                keep = usable(label, forecast, ctx, season)
                if keep.any():
                    parts = pooled.setdefault((name, variate), [[], [], []])
                    parts[0].append(label[keep])
                    parts[1].append(forecast[keep])
                    parts[2].append(seasonal_errors(ctx[keep], season))
    fitted: dict[str, dict[str, Conformal]] = {}
    for name in models:
        for variate in wanted:
            parts = pooled.get((name, variate))
            if not parts:
                notes.append(f"conformal: no validation window for {name} / {variate}; not recalibrated")
                continue
            conformal = fit_conformal(*(np.concatenate(p) for p in parts))
            fitted.setdefault(name, {})[variate] = conformal
            short = [w for w in (50, 80, 95) if math.ceil((conformal.windows + 1) * w / 100) > conformal.windows]
            if short:
                notes.append(f"conformal ({name} / {variate}): {conformal.windows} validation windows are too few for "
                             f"the {'/'.join(map(str, short))}% interval (its exact shift would be unbounded); the "
                             "largest score was used, so its coverage may fall short: raise evaluate.calibration_windows")
    for name, spec in _finetuned(models, cfg):
        notes.append(f"conformal ({name}): {spec} was fine-tuned with early stopping on the validation span it is "
                     "calibrated on; scores measured where a model was selected are optimistic, so its recalibrated "
                     "intervals may still be a little narrow")
    return fitted


def _finetuned(models, cfg):
    for name in models:
        spec = getattr(models[name], "ohlcv_spec", None)
        info = trained_with(spec) if spec else None
        if info and info.get("command") == "finetune":
            yield name, spec


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _geomean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(finite)))) if finite else float("nan")


def summarize_scores(store, variates_info, learned, *, horizon: int, stride: int) -> dict[str, Any]:
    """Aggregates, ratios to the one to beat, DM tests, calibration, IC and error by step.

    ``store``: forecaster -> variate -> [(item_id, origin numbers, WindowScores)], every forecaster with the
    same windows; ``variates_info``: variate -> {"kind", "baselines", "yardstick", ...}; ``learned``: the
    forecasters tested against every baseline (the others are tested against the one to beat).
    """
    aggregate: dict = {}
    relative: dict = {}
    significance: dict = {}
    calibration: dict = {}
    ic: dict = {}
    by_step: dict = {}
    differences: dict = {}
    per_asset: list[dict[str, Any]] = []
    overlap = max(1, math.ceil(horizon / stride))  # consecutive windows whose forecasts overlap
    for variate, info in variates_info.items():
        yard = {item: scores for item, _t, scores in store[info["yardstick"]][variate]}
        yard_rows = {item: summarize(scores) for item, scores in yard.items()}
        for name in store:
            entries = store[name].get(variate)
            if not entries:
                continue
            rows = []
            for item, _times, scores in entries:
                row = {"model": name, "item_id": item, "variate": variate, "kind": info["kind"],
                       "windows": len(scores.scale), **summarize(scores)}
                for metric in RELATIVE:
                    base = yard_rows[item][metric]
                    row[f"{metric}_relative"] = row[metric] / base if base else float("nan")
                rows.append(row)
            per_asset.extend(rows)
            hits = np.concatenate([s.hits.ravel() for _i, _t, s in entries])
            calls = np.concatenate([s.window_hits for _i, _t, s in entries])
            aggregate.setdefault(name, {})[variate] = ({m: _mean([r[m] for r in rows]) for m in AGGREGATED}
                                                       | direction_counts(hits, calls))
            relative.setdefault(name, {})[variate] = {m: _geomean([r[f"{m}_relative"] for r in rows]) for m in RELATIVE}
            by_step.setdefault(name, {})[variate] = np.concatenate([s.crps_by_step() for _i, _t, s in entries]).mean(axis=0).tolist()
            keys = [t for _i, t, _s in entries]
            compare = info["baselines"] if name in learned else ([info["yardstick"]] if name != info["yardstick"] else [])
            for baseline in compare:
                other = {item: scores for item, _t, scores in store[baseline][variate]}
                tests = {}
                for loss in ("crps", "abs_error"):
                    attr = "crps_scaled" if loss == "crps" else "ae_scaled"
                    diffs = [getattr(s, attr) - getattr(other[item], attr) for item, _t, s in entries]
                    origins, series = by_origin(keys, diffs)
                    tests[loss] = diebold_mariano(series, overlap).to_dict()
                    differences.setdefault(name, {}).setdefault(variate, {}).setdefault(baseline, {})[loss] = list(
                        zip(origins, series.tolist()))
                significance.setdefault(name, {}).setdefault(variate, {})[baseline] = tests
            if name in learned or name == info["yardstick"]:
                calibration.setdefault(name, {})[variate] = _calibration(entries, aggregate[name][variate])
            if info["kind"] in (Kind.price.value, Kind.return_.value):
                summary = information_coefficient(keys, [s.forecast_move for _i, _t, s in entries],
                                                  [s.realised_move for _i, _t, s in entries])
                if summary is not None:
                    ic.setdefault(name, {})[variate] = summary
    return {"variates": variates_info, "aggregate": aggregate, "relative": relative, "significance": significance,
            "calibration": calibration, "ic": ic, "by_step": by_step, "per_asset": per_asset, "differences": differences}


def _calibration(entries, aggregate: dict[str, float]) -> dict[str, Any]:
    pit = np.concatenate([s.pit.ravel() for _i, _t, s in entries])
    reliability = np.concatenate([s.reliability for _i, _t, s in entries]).mean(axis=0)
    histogram = np.histogram(pit, bins=10, range=(0.0, 1.0))[0] / max(len(pit), 1)
    dispersion = float(12 * pit.var()) if len(pit) else float("nan")
    flags = []
    off = {w: aggregate[f"coverage_{w}"] - w / 100 for w in INTERVALS}
    far = {w: d for w, d in off.items() if abs(d) > COVERAGE_TOLERANCE}
    if far:
        coverage = "/".join(f"{aggregate[f'coverage_{w}']:.2f}" for w in INTERVALS)
        biased = len(pit) and abs(pit.mean() - 0.5) > PIT_BIAS_TOLERANCE
        direction = ("off centre: the forecasts are biased, see the PIT mean" if biased  # not a width problem
                     else "too narrow" if all(d < 0 for d in far.values())
                     else "too wide" if all(d > 0 for d in far.values()) else "miscalibrated")
        flags.append(f"coverage {coverage} at {'/'.join(str(w) for w in INTERVALS)}%: more than "
                     f"{int(COVERAGE_TOLERANCE * 100)} points from nominal (intervals {direction})")
    if dispersion > 1 + PIT_DISPERSION_TOLERANCE:
        flags.append(f"PIT U-shaped (12 var = {dispersion:.2f} > {1 + PIT_DISPERSION_TOLERANCE}): overconfident")
    elif dispersion < 1 - PIT_DISPERSION_TOLERANCE:
        flags.append(f"PIT hump-shaped (12 var = {dispersion:.2f} < {1 - PIT_DISPERSION_TOLERANCE}): underconfident")
    if len(pit) and abs(pit.mean() - 0.5) > PIT_BIAS_TOLERANCE:
        flags.append(f"PIT mean {pit.mean():.2f}: forecasts biased {'low' if pit.mean() > 0.5 else 'high'}")
    return {"pit_histogram": histogram.tolist(), "pit_mean": float(pit.mean()) if len(pit) else float("nan"),
            "pit_dispersion": dispersion, "reliability": dict(zip((str(r) for r in RELIABILITY_LEVELS), reliability.tolist())),
            "flags": flags}


def _mean(values) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _dates(times: list[str]):
    import pandas as pd

    try:
        return pd.to_datetime(times)
    except (ValueError, TypeError):
        return None


def _with_breaks(x, y):
    """(x, y) with the line broken where the market was closed (a step over 3x the usual one): a weekend
    or a night is drawn as a gap, not as a straight line across it."""
    if not hasattr(x, "values") or len(x) < 3:
        return x, y
    t = np.asarray(x.values, dtype="datetime64[ns]")
    step = np.median(np.diff(t))
    cut = np.flatnonzero(np.diff(t) > 3 * step)
    if not len(cut):
        return x, y
    return np.insert(t, cut + 1, t[cut] + step), np.insert(np.asarray(y, dtype=float), cut + 1, np.nan)


def _plots(out: Path, plot_data, result: EvalResult, store) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in plot_data:
        ctx, label, samples, base = entry["context"], entry["label"], entry["samples"], entry["baseline"]
        horizon = len(label)
        shown = min(len(ctx), max(3 * horizon, 48))
        dates = _dates(entry["times"])
        x = dates if dates is not None else np.arange(-len(ctx), horizon)
        x_ctx, x_fc = x[len(ctx) - shown:len(ctx)], x[len(ctx):]
        fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
        ax.plot(*_with_breaks(x_ctx, ctx[-shown:]), color="#333333", lw=1.2, label="context")
        ax.plot(*_with_breaks(x_fc, label), color="#111111", lw=1.6, ls="--", label="realised")
        for (low, high), alpha in (((0.025, 0.975), 0.15), ((0.1, 0.9), 0.25), ((0.25, 0.75), 0.4)):
            ax.fill_between(x_fc, np.quantile(samples, low, axis=0), np.quantile(samples, high, axis=0),
                            color="#1f77b4", alpha=alpha, lw=0, label=f"model {int(round((high - low) * 100))}%")
        ax.plot(x_fc, np.median(samples, axis=0), color="#1f77b4", lw=1.8, label="model median")
        b_low, b_high = np.quantile(base, [0.1, 0.9], axis=0)
        ax.plot(x_fc, np.median(base, axis=0), color="#d62728", lw=1.2, label=f"{entry['baseline_name']} median")
        ax.plot(x_fc, b_low, color="#d62728", lw=0.8, ls=":", label=f"{entry['baseline_name']} 80%")
        ax.plot(x_fc, b_high, color="#d62728", lw=0.8, ls=":")
        visible = np.concatenate([ctx[-shown:], label, np.quantile(samples, [0.1, 0.9], axis=0).ravel(), b_low, b_high])
        visible = visible[np.isfinite(visible)]
        if visible.size:  # keep the axis on the data and the 80% bands: extreme samples must not flatten it
            low, high = visible.min(), visible.max()
            pad = 0.15 * (high - low or abs(high) or 1.0)
            ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"{entry['item_id']} — {entry['variate']}: last scored test window")
        ax.set_xlabel("time (UTC)" if dates is not None else "bars relative to the forecast origin")
        ax.set_ylabel(f"{entry['variate']} [{result.variates[entry['variate']]['units']}]", fontsize=8)
        ax.legend(loc="upper left", fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = folder / f"forecast_{entry['item_id'].replace('/', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    for variate, info in result.variates.items():
        fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
        for name, by_variate in result.by_step.items():
            if variate in by_variate:
                curve = by_variate[variate]
                ax.plot(np.arange(1, len(curve) + 1), curve, lw=2.0 if name in result.models else 1.0,
                        ls="-" if name in result.models else "--", label=name)
        ax.set_xlabel("forecast step (bars after the origin)")
        ax.set_ylabel("quantile loss / seasonal error")
        ax.set_title(f"{variate}: error by forecast step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, folder / f"error_by_step_{variate}.png"))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
        for name, by_variate in result.calibration.items():
            if variate not in by_variate:
                continue
            cal = by_variate[variate]
            if name in result.models:
                left.step(np.linspace(0.05, 0.95, 10), np.asarray(cal["pit_histogram"]) * 10, where="mid", label=name)
            levels = [float(k) for k in cal["reliability"]]
            right.plot(levels, list(cal["reliability"].values()), marker="o", ms=3, label=name)
        left.axhline(1.0, color="#333333", ls="--", lw=1, label="calibrated")
        left.set_xlabel("PIT")
        left.set_ylabel("density")
        left.set_title(f"{variate}: PIT histogram")
        left.legend(fontsize=7)
        right.plot([0, 1], [0, 1], color="#333333", ls="--", lw=1, label="calibrated")
        right.fill_between([0, 1], [-COVERAGE_TOLERANCE, 1 - COVERAGE_TOLERANCE], [COVERAGE_TOLERANCE, 1 + COVERAGE_TOLERANCE],
                           color="#999999", alpha=0.2, lw=0, label=f"±{int(COVERAGE_TOLERANCE * 100)} points")
        right.set_xlabel("nominal coverage of the central interval")
        right.set_ylabel("observed coverage")
        right.set_xlim(0, 1)
        right.set_ylim(0, 1)
        right.set_title(f"{variate}: reliability")
        right.legend(fontsize=7)
        paths.append(_save(fig, folder / f"calibration_{variate}.png"))
    variate = next(iter(result.variates))
    rows = [r for r in result.per_asset if r["model"] == "model" and r["variate"] == variate]
    if rows:
        yard = result.variates[variate]["yardstick"]
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 2), 4.2), dpi=110)
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["crps_relative"] for r in rows], 0.4, label=f"CRPS / {yard}", color="#1f77b4")
        ax.bar(x + 0.2, [r["mase_relative"] for r in rows], 0.4, label=f"MASE / {yard}", color="#ff7f0e")
        ax.axhline(1.0, color="#333333", lw=1, ls="--", label=f"{yard} = 1")
        ax.set_xticks(x, [r["item_id"] for r in rows], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(f"model / {yard} (lower is better)")
        ax.set_title(f"{variate}: model relative to the one to beat, per asset")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / "relative_per_asset.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


CSV_FIELDS = ["model", "item_id", "variate", "kind", "windows", *METRICS, "direction_n", "direction_windows", "direction_p",
              "crps_relative", "mase_relative", "msis_relative", "mae_relative", "mse_relative", "dm_p_crps", "dm_p_abs_error"]


def _write_outputs(loaded, result: EvalResult, model_spec, zero_shot, dataset, manifest, season, stride) -> None:
    cfg = loaded.cfg
    out = result.out
    settings = {
        "model": model_spec, "zero_shot": zero_shot, "dataset": str(dataset),
        "dataset_content_hash": manifest.get("content_hash"), "windows_total": result.windows,
        "windows_per_series": int(cfg.evaluate.windows), "stride": stride,
        "context_length": int(cfg.data.context_length), "prediction_length": int(cfg.data.prediction_length),
        "num_samples": int(cfg.evaluate.num_samples), "seasonality": season, "seed": int(cfg.evaluate.seed),
        "calibrate": cfg.evaluate.calibrate.value,
        "units": {v: info["units"] for v, info in result.variates.items()},
        "crps": "mean weighted quantile loss over levels 0.1-0.9 (GluonTS mean_wQuantileLoss), scale-free",
        "models": result.model_info,
    }
    atomic_write_text(out / "metrics.json", json_text({"settings": settings, **result.to_json()}, indent=2,
                                                       default=float) + "\n")
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in result.per_asset:
            writer.writerow(row)
        for name, by_variate in result.aggregate.items():  # aggregate rows: mean over assets, MAE/MSE as ratios only
            for variate, metrics in by_variate.items():
                yard = result.variates[variate]["yardstick"]
                dm = result.significance.get(name, {}).get(variate, {}).get(yard, {})
                rel = result.relative[name][variate]
                writer.writerow({"model": name, "item_id": "ALL", "variate": variate, "kind": result.variates[variate]["kind"],
                                 "windows": result.variates[variate]["windows"], **metrics,
                                 **{f"{m}_relative": rel[m] for m in RELATIVE},
                                 "dm_p_crps": dm.get("crps", {}).get("p_value", ""),
                                 "dm_p_abs_error": dm.get("abs_error", {}).get("p_value", "")})
    write_resolved_profile(loaded, out)
    atomic_write_text(out / "report.md", render_report(result, settings, dataset))


def _quantile_clause(model_info: dict[str, dict[str, Any]]) -> str:
    names = [name for name, info in model_info.items() if info.get("output") == "quantiles"]
    return f" ({', '.join(names)}: fixed quantile levels, not sampled)" if names else ""


def render_report(result: EvalResult, settings: dict[str, Any], dataset) -> str:
    span = result.span
    lines = [f"# Evaluation of `{settings['model']}`", "",
             f"Dataset `{dataset}`; test span {span['first_origin']} to {span['last_forecast_bar']} "
             f"(first forecast origin to last forecast bar), {span['series']} series: {', '.join(span['symbols'])}.", "",
             *[f"- {name}: {model_line(info)} ({info.get('source', '')})" for name, info in result.model_info.items()], "",
             f"{result.windows} rolling-origin windows (context {settings['context_length']}, horizon "
             f"{settings['prediction_length']}, stride {settings['stride']}); {settings['num_samples']} samples per "
             f"sampled forecaster, each with its own seed{_quantile_clause(result.model_info)}. Every forecaster is "
             "scored on the same windows.", "",
             "CRPS here is the mean weighted quantile loss (levels 0.1–0.9, divided by the sum of |actual|: "
             "scale-free); MASE and MSIS are divided by the window's seasonal error; MAE and MSE are in the "
             "variate's units, so they appear per asset and, across assets, only as ratios. p-values: "
             "Diebold–Mariano with the Harvey–Leybourne–Newbold correction, on per-window losses averaged over "
             "the series sharing an origin; direction: hit rate over every step (from the last observed value for a "
             "level, from zero for a return), p: binomial test against 50% on one call per window (the move over "
             "the horizon). Definitions: docs/evaluate.md.", ""]
    for variate, info in result.variates.items():
        yard = info["yardstick"]
        lines += [f"## {variate} ({info['kind']}; {info['units']})", "",
                  f"The one to beat: **{yard}** ({DESCRIPTIONS.get(yard, yard)}). {info['windows']} windows scored"
                  + (f", {info['windows_removed']} removed for every forecaster." if info["windows_removed"] else "."), "",
                  f"| forecaster | CRPS | MASE | MSIS | coverage 50/80/95 | direction: steps / windows (p) | CRPS / {yard} | "
                  f"MAE / {yard} | DM p CRPS | DM p abs. error |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, by_variate in result.aggregate.items():
            if variate not in by_variate:
                continue
            m, r = by_variate[variate], result.relative[name][variate]
            dm = result.significance.get(name, {}).get(variate, {}).get(yard, {})
            p_crps = format_p(dm["crps"]["p_value"]) if dm and math.isfinite(dm["crps"]["p_value"]) else "–"
            p_abs = format_p(dm["abs_error"]["p_value"]) if dm and math.isfinite(dm["abs_error"]["p_value"]) else "–"
            lines.append(f"| {name} | {m['crps']:.4g} | {m['mase']:.3f} | {m['msis']:.3f} | "
                         f"{m['coverage_50']:.2f} / {m['coverage_80']:.2f} / {m['coverage_95']:.2f} | "
                         f"{m['directional_accuracy']:.2f} / {m['direction_window_accuracy']:.2f} ({format_p(m['direction_p'])}) | "
                         f"{r['crps']:.3f} | {r['mae']:.3f} | {p_crps} | {p_abs} |")
        lines += [""] + [f"- {result.verdict(variate, model)}." for model in result.models] + [""]
        other = [(name, b, tests) for name in result.models
                 for b, tests in result.significance.get(name, {}).get(variate, {}).items() if b != yard]
        if other:
            lines += ["Against the other baselines (DM p-value on CRPS / on absolute error; negative statistic: the "
                      "model is better):", ""]
            lines += [f"- {name} vs {b}: p = {format_p(t['crps']['p_value'])} (stat {t['crps']['statistic']:.2f}) / "
                      f"p = {format_p(t['abs_error']['p_value'])} (stat {t['abs_error']['statistic']:.2f})"
                      for name, b, t in other if math.isfinite(t["crps"]["p_value"])] + [""]
        for name in result.models:
            summary = result.ic.get(name, {}).get(variate)
            if summary:
                lines += [f"Cross-sectional skill of {name} over {summary['origins']} origins: IC mean "
                          f"{summary['ic']['mean']:.3f} (sd {summary['ic']['sd']:.3f}, t {summary['ic']['t']:.2f}); "
                          f"rank IC mean {summary['rank_ic']['mean']:.3f} (sd {summary['rank_ic']['sd']:.3f}, "
                          f"t {summary['rank_ic']['t']:.2f}).", ""]
        flags = [f"{name}: {flag}" for name, by_v in result.calibration.items() if name in result.models
                 for flag in by_v.get(variate, {}).get("flags", [])]
        lines += [f"**Calibration flag** — {flag}" for flag in flags] + ([""] if flags else [])
        per_asset = [r for r in result.per_asset if r["variate"] == variate and r["model"] in result.models + [yard]]
        lines += ["Per asset (MAE in the variate's units):", "",
                  f"| forecaster | asset | windows | CRPS | MASE | MAE | coverage 80 | direction | CRPS / {yard} |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['model']} | {r['item_id']} | {r['windows']} | {r['crps']:.4g} | {r['mase']:.3f} | {r['mae']:.4g} | "
                  f"{r['coverage_80']:.2f} | {r['directional_accuracy']:.2f} | {r['crps_relative']:.3f} |" for r in per_asset]
        lines += [""]
    for model, by_variate in result.conformal.items():
        for variate, info in by_variate.items():
            lines += [f"Conformal recalibration of {model} / {variate}: fitted on {info['windows']} validation windows; "
                      f"reported as `{model}+conformal` beside the raw model.", ""]
    for note in result.notes:
        lines += [f"Note: {note}", ""]
    for plot in result.plots:
        lines += [f"![{plot.stem}](plots/{plot.name})", ""]
    return "\n".join(lines)
