"""``ohlcv evaluate``: rolling-origin forecasts on the test span, against baselines on the same windows.

Forecasts come from uni2ts's ``MoiraiForecast`` around a ``MoiraiModule``
loaded from a local Hugging Face folder (``ohlcv pretrain``'s ``RUN/model``)
or a hub id. Values are de-normalized with the dataset's saved statistics, so
metrics are in price units; baselines (naive random walk, seasonal naive,
drift) forecast exactly the same windows. Metrics are kept per variate and
per asset and aggregated per variate only: volume never swamps prices.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ohlcv.config.loader import atomic_write_text, write_resolved_profile
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.evaluate.metrics import METRICS, score
from ohlcv.evaluate.windows import BASELINES, cut_windows, rolling_origins, statsforecast_available
from ohlcv.freq import parse_freq


@dataclass
class EvalResult:
    out: Path
    aggregate: dict[str, dict[str, dict[str, float]]]  # model -> variate -> metric -> value
    relative: dict[str, dict[str, dict[str, float]]]  # model -> variate -> metric -> value / naive's
    per_asset: list[dict[str, Any]] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    windows: int = 0
    notes: list[str] = field(default_factory=list)


def load_module(spec: str):
    """A MoiraiModule from a local Hugging Face folder or a hub id (e.g. Salesforce/moirai-1.1-R-small)."""
    from uni2ts.model.moirai import MoiraiModule

    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise OhlcvError(f"{path}: no config.json here; point at a model folder such as RUN/model")
        return MoiraiModule.from_pretrained(str(path))
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise OhlcvError(f"'{spec}': no such folder, and not a hub id of the form org/name")
    try:
        return MoiraiModule.from_pretrained(spec)
    except Exception as exc:  # noqa: BLE001 - network, missing repo, wrong format: one clear line
        raise OhlcvError(
            f"cannot load '{spec}' from the Hugging Face hub ({type(exc).__name__}); "
            "download it where there is network, or pass a local model folder"
        ) from None


def _forecaster(module, cfg, targets: int, covariates: int):
    from uni2ts.model.moirai import MoiraiForecast

    patch = int(cfg.finetune.patch_size)
    sizes = tuple(int(p) for p in module.patch_sizes)
    if patch not in sizes:
        raise ConfigError(f"the model has patch sizes {list(sizes)}, not {patch}", key="finetune.patch_size")
    model = MoiraiForecast(
        module=module,
        prediction_length=int(cfg.data.prediction_length),
        context_length=int(cfg.data.context_length),
        patch_size=patch,
        num_samples=int(cfg.evaluate.num_samples),
        target_dim=targets,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=covariates,
    )
    model.eval()
    return model


def _model_samples(forecaster, context: np.ndarray, target_idx: list[int], cov_idx: list[int]) -> np.ndarray:
    """(windows, samples, horizon, targets) in the dataset's (normalized) units."""
    import torch

    past = np.transpose(context[:, target_idx, :], (0, 2, 1))  # (windows, context, targets)
    observed = np.isfinite(past)
    inputs = {
        "past_target": torch.as_tensor(np.where(observed, past, 0.0), dtype=torch.float32),
        "past_observed_target": torch.as_tensor(observed),
        "past_is_pad": torch.zeros(past.shape[:2], dtype=torch.bool),
    }
    if cov_idx:
        cov = np.transpose(context[:, cov_idx, :], (0, 2, 1))
        seen = np.isfinite(cov)
        inputs["past_feat_dynamic_real"] = torch.as_tensor(np.where(seen, cov, 0.0), dtype=torch.float32)
        inputs["past_observed_feat_dynamic_real"] = torch.as_tensor(seen)
    with torch.no_grad():
        samples = forecaster(**inputs).float().numpy()
    if samples.ndim == 3:
        samples = samples[..., None]
    return samples


def _denormalize(values: np.ndarray, group: dict | None, index: int) -> np.ndarray:
    if group is None:
        return values
    return values * group["scale"][index] + group["center"][index]


def evaluate(
    loaded,
    model_spec: str,
    *,
    dataset: Path,
    out: Path,
    zero_shot: str | None = None,
    seed: int = 0,
    on_item: Callable[[str], None] | None = None,
) -> EvalResult:
    import torch

    from ohlcv.train.data import read_manifest

    cfg = loaded.cfg
    dataset = Path(dataset).expanduser()
    manifest = read_manifest(dataset)
    horizon, context = int(cfg.data.prediction_length), int(cfg.data.context_length)
    stride = int(cfg.evaluate.stride or horizon)
    season = int(cfg.evaluate.seasonality or parse_freq(manifest["freq"]).season_length)
    samples_n = int(cfg.evaluate.num_samples)
    unknown = sorted(set(cfg.evaluate.baselines) - set(BASELINES))
    if unknown:
        raise ConfigError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}", key="evaluate.baselines")
    if "naive" not in cfg.evaluate.baselines:
        raise ConfigError("the naive baseline is the yardstick of every relative metric; keep it", key="evaluate.baselines")
    baselines = list(cfg.evaluate.baselines)
    notes = []
    if "autoets" in baselines and not statsforecast_available():
        baselines.remove("autoets")
        notes.append("AutoETS skipped: statsforecast is not installed beside this stack (pip install statsforecast)")
    names = manifest["variates"]
    targets, covariates = manifest["targets"], manifest["covariates"]
    wanted = list(cfg.evaluate.variates) or list(targets)
    missing = [v for v in wanted if v not in targets]
    if missing:
        raise ConfigError(f"{missing} are not target variates of this dataset ({', '.join(targets)})", key="evaluate.variates")
    target_idx = [names.index(v) for v in targets]
    cov_idx = [names.index(v) for v in covariates]
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    models = {"model": _forecaster(load_module(model_spec), cfg, len(targets), len(covariates))}
    if zero_shot:
        models["zero_shot"] = _forecaster(load_module(zero_shot), cfg, len(targets), len(covariates))
    norm = manifest["normalization"]
    groups = {k: {"center": np.array(v["center"]), "scale": np.array(v["scale"])} for k, v in norm["groups"].items()}

    import datasets

    datasets.disable_progress_bars()
    from ohlcv.train.data import load_hf

    hf = load_hf(dataset, manifest).with_format("numpy")
    items = {item["item_id"]: item for item in manifest["items"]}
    rng = np.random.default_rng(seed)
    per_asset: list[dict[str, Any]] = []
    plot_data: list[dict[str, Any]] = []
    total_windows = 0
    for row in hf:
        item_id = str(row["item_id"])
        item = items[item_id]
        parts = [np.stack(row["target"]).astype(np.float64)]
        if covariates:
            parts.append(np.stack(row["past_feat_dynamic_real"]).astype(np.float64))
        stacked = np.concatenate(parts)
        values = np.empty_like(stacked)  # back to the manifest's variate order
        for position, index in enumerate(target_idx + cov_idx):
            values[index] = stacked[position]
        origins = rolling_origins(values.shape[1], item["validation_end"], context, horizon,
                                  int(cfg.evaluate.windows), stride)
        if not len(origins):
            continue
        total_windows += len(origins)
        cut = cut_windows(values, origins, context, horizon)
        forecasts = {name: _model_samples(model, cut.context, target_idx, cov_idx) for name, model in models.items()}
        key = item_id if norm["scope"] == "symbol" else item["asset_class"]
        group = groups.get(key)
        for variate in wanted:
            v = names.index(variate)
            t = targets.index(variate)
            ctx = _denormalize(cut.context[:, v, :], group, v)
            label = _denormalize(cut.label[:, v, :], group, v)
            candidates = {name: _denormalize(f[..., t], group, v) for name, f in forecasts.items()}
            for baseline in baselines:
                candidates[baseline] = BASELINES[baseline](ctx, horizon, samples_n, rng, season=season)
            for name, samples in candidates.items():
                per_asset.append({"model": name, "item_id": item_id, "variate": variate, "windows": len(origins),
                                  **score(label, samples, ctx, season)})
            if variate == wanted[0] and len(plot_data) < int(cfg.evaluate.plot_assets):
                plot_data.append({"item_id": item_id, "variate": variate, "context": ctx[-1], "label": label[-1],
                                  "samples": candidates["model"][-1]})
        if on_item is not None:
            on_item(item_id)
    if not per_asset:
        raise OhlcvError(
            f"no test window fits: series need context {context} + horizon {horizon} bars at or after the test span; "
            "lower evaluate.windows / data.context_length or rebuild with a longer test span"
        )
    aggregate, relative = _aggregate(per_asset, list(models) + baselines, wanted)
    plots = _plots(out, plot_data, per_asset, wanted[0], horizon)
    result = EvalResult(out=out, aggregate=aggregate, relative=relative, per_asset=per_asset, plots=plots,
                        windows=total_windows, notes=notes)
    _write_outputs(loaded, result, model_spec, zero_shot, dataset, manifest, season)
    return result


def _aggregate(per_asset, models, variates):
    aggregate: dict = {}
    relative: dict = {}
    for model in models:
        aggregate[model], relative[model] = {}, {}
        for variate in variates:
            rows = [r for r in per_asset if r["model"] == model and r["variate"] == variate]
            naive = {r["item_id"]: r for r in per_asset if r["model"] == "naive" and r["variate"] == variate}
            aggregate[model][variate] = {m: _nanmean([r[m] for r in rows]) for m in METRICS}
            ratios = {}
            for metric in ("crps", "mase", "msis", "mae", "mse"):
                values = [r[metric] / naive[r["item_id"]][metric] for r in rows
                          if naive[r["item_id"]][metric] and math.isfinite(r[metric] / naive[r["item_id"]][metric])]
                ratios[metric] = float(np.exp(np.mean(np.log(values)))) if values and min(values) > 0 else _nanmean(values)
            relative[model][variate] = ratios
    return aggregate, relative


def _nanmean(values) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _plots(out: Path, plot_data, per_asset, variate: str, horizon: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in plot_data:
        ctx, label, samples = entry["context"], entry["label"], entry["samples"]
        shown = ctx[-max(3 * horizon, 48):]
        x_ctx = np.arange(-len(shown), 0)
        x_fc = np.arange(0, horizon)
        fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
        ax.plot(x_ctx, shown, color="#333333", lw=1.2, label="context")
        ax.plot(x_fc, label, color="#111111", lw=1.6, ls="--", label="realised")
        for (low, high), alpha in (((0.025, 0.975), 0.15), ((0.1, 0.9), 0.25), ((0.25, 0.75), 0.4)):
            ax.fill_between(x_fc, np.quantile(samples, low, axis=0), np.quantile(samples, high, axis=0),
                            color="#1f77b4", alpha=alpha, lw=0, label=f"{int(round((high - low) * 100))}% interval")
        ax.plot(x_fc, np.median(samples, axis=0), color="#1f77b4", lw=1.8, label="median forecast")
        ax.axvline(-0.5, color="#999999", lw=0.8)
        # keep the axis on the data and the 80% band: a few extreme samples must not flatten the picture
        visible = np.concatenate([shown, label, np.quantile(samples, [0.1, 0.9], axis=0).ravel()])
        visible = visible[np.isfinite(visible)]
        if visible.size:
            low, high = visible.min(), visible.max()
            pad = 0.15 * (high - low or abs(high) or 1.0)
            ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"{entry['item_id']} — {variate}: last test window")
        ax.set_xlabel("bars relative to the forecast origin")
        ax.set_ylabel(variate)
        ax.legend(loc="upper left", fontsize=8, ncol=3)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / f"forecast_{entry['item_id'].replace('/', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    rows = [r for r in per_asset if r["model"] == "model" and r["variate"] == variate]
    naive = {r["item_id"]: r for r in per_asset if r["model"] == "naive" and r["variate"] == variate}
    assets = [r["item_id"] for r in rows]
    if assets:
        crps = [r["crps"] / naive[r["item_id"]]["crps"] if naive[r["item_id"]]["crps"] else np.nan for r in rows]
        mase = [r["mase"] / naive[r["item_id"]]["mase"] if naive[r["item_id"]]["mase"] else np.nan for r in rows]
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(assets) + 2), 4.2), dpi=110)
        x = np.arange(len(assets))
        ax.bar(x - 0.2, crps, 0.4, label="CRPS / naive", color="#1f77b4")
        ax.bar(x + 0.2, mase, 0.4, label="MASE / naive", color="#ff7f0e")
        ax.axhline(1.0, color="#333333", lw=1, ls="--", label="naive (random walk) = 1")
        ax.set_xticks(x, assets, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("model / naive (lower is better)")
        ax.set_title(f"{variate}: model relative to the naive baseline, per asset")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / "relative_per_asset.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _write_outputs(loaded, result: EvalResult, model_spec, zero_shot, dataset, manifest, season) -> None:
    cfg = loaded.cfg
    out = result.out
    settings = {
        "model": model_spec, "zero_shot": zero_shot, "dataset": str(dataset),
        "dataset_content_hash": manifest.get("content_hash"), "windows_total": result.windows,
        "windows_per_series": int(cfg.evaluate.windows), "stride": int(cfg.evaluate.stride or cfg.data.prediction_length),
        "context_length": int(cfg.data.context_length), "prediction_length": int(cfg.data.prediction_length),
        "num_samples": int(cfg.evaluate.num_samples), "seasonality": season,
        "units": "prices (de-normalized with the dataset's statistics)",
        "notes": result.notes,
    }
    atomic_write_text(out / "metrics.json", json.dumps(
        {"settings": settings, "aggregate": result.aggregate, "relative_to_naive": result.relative,
         "per_asset": result.per_asset}, indent=2, default=float) + "\n")
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "item_id", "variate", "windows", *METRICS])
        writer.writeheader()
        writer.writerows(result.per_asset)
    write_resolved_profile(loaded, out)
    lines = [f"# Evaluation of `{model_spec}`", "",
             f"Dataset `{dataset}`; {result.windows} rolling-origin windows on the test span "
             f"(context {settings['context_length']}, horizon {settings['prediction_length']}, stride {settings['stride']}); "
             f"{settings['num_samples']} samples; metrics in price units.", ""]
    for variate in next(iter(result.aggregate.values())):
        lines += [f"## {variate}", "", "| model | CRPS | MASE | MSIS | MAE | coverage 50/80/95 | direction | CRPS / naive | MASE / naive |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for model, by_variate in result.aggregate.items():
            m, r = by_variate[variate], result.relative[model][variate]
            lines.append(f"| {model} | {m['crps']:.4g} | {m['mase']:.3f} | {m['msis']:.3f} | {m['mae']:.4g} | "
                         f"{m['coverage_50']:.2f} / {m['coverage_80']:.2f} / {m['coverage_95']:.2f} | "
                         f"{m['directional_accuracy']:.2f} | {r['crps']:.3f} | {r['mase']:.3f} |")
        verdict = result.relative["model"][variate]["crps"]
        lines += ["", ("The model beats the naive random walk on CRPS." if verdict < 1 else
                       "**The model does not beat the naive random walk on CRPS.**") + f" (ratio {verdict:.3f})", ""]
    for note in result.notes:
        lines += [f"Note: {note}", ""]
    for plot in result.plots:
        lines += [f"![{plot.stem}](plots/{plot.name})", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
