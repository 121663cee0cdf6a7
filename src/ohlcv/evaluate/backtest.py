"""``ohlcv backtest``: walk-forward evaluation over K folds that end with the profile's test span.

Fold k (0 … K-1) evaluates the same number of windows as ``ohlcv evaluate``
(``evaluate.windows`` origins, ``evaluate.stride`` apart) from an origin
``(K - 1 - k) x windows x stride`` bars before each series' test span, so the
last fold is exactly the profile's test span and the folds do not overlap.
With ``backtest.refit: finetune`` the model is first fine-tuned from ``--from``
on the bars before the fold, less an embargo (default: one horizon) between the
last bar fine-tuning sees and the fold's first forecast origin; the
fine-tuning's own validation span is the ``validation`` share just before the
embargo. With ``refit: none`` the same model is evaluated at every fold.

Each fold is a full ``ohlcv evaluate`` (its folder holds its report); the
backtest adds the spread over folds of every metric and ratio, a
Diebold–Mariano test on the loss differences of all folds pooled in time
order, a fold-by-fold plot and report.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ohlcv.config.loader import atomic_write_text, json_text, write_resolved_profile
from ohlcv.errors import OhlcvError
from ohlcv.dataset.read import read_timestamps
from ohlcv.evaluate.baselines import check_baselines
from ohlcv.evaluate.run import SIGNIFICANCE, EvalResult, evaluate, format_p, shift_of, trained_with
from ohlcv.evaluate.stats import diebold_mariano

SPREAD_METRICS = ("crps", "mase", "msis", "coverage_50", "coverage_80", "coverage_95", "directional_accuracy")


@dataclass
class BacktestResult:
    out: Path
    folds: list[dict[str, Any]]  # per fold: index, shift, span, model used, fine-tuning summary, results
    overall: dict[str, dict[str, Any]]  # variate -> forecaster -> metric -> {mean, sd, min, max}; pooled DM
    refit: str
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def verdict(self, variate: str) -> str:
        info = self.overall[variate]
        dm = info["pooled_dm"]["crps"]
        ratio = info["forecasters"]["model"]["crps_relative"]
        text = (f"over {len(self.folds)} folds the model's CRPS / {info['yardstick']} is {ratio['mean']:.3f} "
                f"(sd {ratio['sd']:.3f}, range {ratio['min']:.3f}–{ratio['max']:.3f})")
        if not math.isfinite(dm["p_value"]):
            return text + "; too few origins for a pooled significance test"
        if dm["p_value"] < SIGNIFICANCE:
            better = "better" if dm["statistic"] < 0 else "worse"
            return text + f"; pooled over every fold's origins it is significantly {better}, DM p = {format_p(dm['p_value'])}"
        return text + f"; pooled over every fold's origins, no significant difference (DM p = {format_p(dm['p_value'])})"

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "refit": self.refit, "folds": self.folds, "overall": self.overall,
                "verdicts": {v: self.verdict(v) for v in self.overall}, "notes": self.notes}


def fold_dataset(dataset: Path, manifest: dict[str, Any], target: Path, *, end_shift: int | dict[str, int]) -> Path:
    """A view of ``dataset`` whose training and validation spans end ``-end_shift`` bars earlier (one
    number for every series, or each series' own).

    The rows are shared (a link to the dataset's ``hf`` folder); only the
    manifest's per-series span boundaries move, so fine-tuning on the view sees
    no bar at or after ``validation_end + end_shift``.
    """
    target.mkdir(parents=True, exist_ok=True)
    items = []
    for item in manifest["items"]:
        moved = shift_of(end_shift, item["item_id"])
        train_end = max(0, int(item["train_end"]) + moved)
        validation_end = max(0, int(item["validation_end"]) + moved)
        items.append(dict(item, train_end=train_end, validation_end=validation_end,
                          train_end_ts=None, validation_end_ts=None))
    view = dict(manifest, items=items, fold_of=str(dataset), fold_end_shift=end_shift)
    stamps = Path(dataset) / str(manifest.get("timestamps") or "timestamps.parquet")
    if stamps.is_file() and not (target / stamps.name).exists():
        os.symlink(stamps.resolve(), target / stamps.name)
    link = target / "hf"
    if not link.exists():
        os.symlink(Path(dataset).resolve() / "hf", link, target_is_directory=True)
    atomic_write_text(target / "manifest.json", json_text(view, indent=2) + "\n")
    return target


def run_backtest(
    loaded,
    start: str,
    *,
    dataset: Path,
    out: Path,
    on_build: Callable[[Any, bool], Any] | None = None,
    rebuild: bool = False,
    lake: Path | None = None,
    on_fold: Callable[[int, int], None] | None = None,
    progress: Any = None,
) -> BacktestResult:
    """Walk-forward folds into ``out``; a backtest that fails removes the folder it created."""
    from ohlcv.train.runtime import discard_on_failure

    with discard_on_failure(Path(out).expanduser()):
        return _run_backtest(loaded, start, dataset=dataset, out=out, on_build=on_build, rebuild=rebuild, lake=lake,
                             on_fold=on_fold, progress=progress)


def _run_backtest(loaded, start: str, *, dataset: Path, out: Path, on_build, rebuild: bool, lake: Path | None,
                  on_fold, progress) -> BacktestResult:
    from ohlcv.moirai.sources import resolve_model
    from ohlcv.train.pretrain import ensure_dataset

    cfg = loaded.cfg
    check_baselines(cfg)
    source = resolve_model(start)  # before any dataset is built or read
    if cfg.backtest.refit.value == "finetune":
        from ohlcv.train.finetune import check_before_dataset

        check_before_dataset(cfg, source, dataset, rebuild)
    dataset = Path(dataset).expanduser()
    out = Path(out).expanduser()
    manifest = ensure_dataset(loaded, dataset, rebuild=rebuild, lake=lake, on_build=on_build)
    folds_n = int(cfg.backtest.folds)
    horizon, context = int(cfg.data.prediction_length), int(cfg.data.context_length)
    stride = int(cfg.evaluate.stride or horizon)
    span = int(cfg.evaluate.windows) * stride
    embargo = horizon if cfg.backtest.embargo is None else int(cfg.backtest.embargo)
    refit = cfg.backtest.refit.value
    notes: list[str] = []
    shifts = fold_shifts(dataset, manifest, folds_n, span)
    earliest = min(int(item["validation_end"]) + shift_of(shifts[0], item["item_id"]) for item in manifest["items"])
    if earliest < context:
        raise OhlcvError(
            f"{folds_n} folds of {span} bars reach back to bar {earliest}, before the first {context} bars of context; "
            "use fewer folds (--folds) or fewer evaluate.windows"
        )
    info = trained_with(start)
    if refit == "none" and folds_n > 1:
        trained_here = info is not None and _same_dataset(start, dataset)
        notes.append(
            ("the model was trained on this dataset: " if trained_here else "")
            + "with refit none, folds before the last evaluate bars inside the dataset's training/validation spans; "
            "they are out of sample only if the model never saw those bars"
        )
    if refit == "finetune":
        notes.append(f"each fold's model is fine-tuned from {start} on bars ending {embargo} bars (the embargo) before "
                     "the fold's first origin, in every series; normalization statistics are the dataset's (fitted on "
                     "its training span)")
    if isinstance(shifts[0], dict):
        notes.append("folds start at instants common to every series (a fold is as long as its windows take on the "
                     "sparsest calendar), so series on other calendars move back by different numbers of bars")
    out.mkdir(parents=True, exist_ok=True)
    folds: list[dict[str, Any]] = []
    results: list[EvalResult] = []
    for k in range(folds_n):
        if on_fold is not None:
            on_fold(k, folds_n)
        shift = shifts[k]
        folder = out / f"fold{k + 1}"
        model = start
        finetune_summary = None
        if refit == "finetune":
            from ohlcv.train.finetune import run_finetune

            view = fold_dataset(dataset, manifest, folder / "dataset",
                                end_shift={i["item_id"]: shift_of(shift, i["item_id"]) - embargo for i in manifest["items"]})
            tuned = run_finetune(loaded, source, dataset=view, out=folder / "finetune")  # resolved once
            model = str(tuned.model_dir)
            finetune_summary = {k2: tuned.summary.get(k2) for k2 in ("val_loss_before", "val_loss_after", "improved", "steps")}
        try:
            result = evaluate(loaded, model, dataset=dataset, out=folder / "evaluate", shift=shift,
                              origin_offset=-(folds_n - 1 - k) * int(cfg.evaluate.windows), progress=progress)
        except OhlcvError as exc:
            raise OhlcvError(f"fold {k + 1} of {folds_n}: {exc}") from None
        results.append(result)
        folds.append({
            "fold": k + 1, "shift": shift, "span": result.span, "model": model, "finetune": finetune_summary,
            "variates": {v: {"yardstick": i["yardstick"], "windows": i["windows"]} for v, i in result.variates.items()},
            "aggregate": result.aggregate, "relative": result.relative,
            "significance": {m: result.significance.get(m, {}) for m in result.models},
            "verdicts": {v: result.verdict(v) for v in result.variates}, "flags": result.flags(),
            "report": str(folder / "evaluate" / "report.md"),
        })
    overall = _overall(results, horizon, stride)
    backtest = BacktestResult(out=out, folds=folds, overall=overall, refit=refit, notes=notes)
    backtest.plots = _plot(out, backtest)
    write_resolved_profile(loaded, out)
    atomic_write_text(out / "backtest.json", json_text(backtest.to_json(), indent=2, default=float) + "\n")
    atomic_write_text(out / "report.md", _report(backtest, start))
    return backtest


def fold_shifts(dataset: Path, manifest: dict[str, Any], folds: int, span: int) -> list[int | dict[str, int]]:
    """Each fold's shift of the test start, per series: the folds start at instants common to every series.

    Fold k starts (folds - 1 - k) fold lengths before the test span; a fold length is the time ``span``
    bars take on the sparsest calendar of the dataset (NYSE hours, say), and each series' shift is the
    number of its own bars back to that instant. So a 24/7 series, a weekday series and a session
    series cut every fold at the same moment, and a fine-tuning view that ends before a fold sees no
    bar of any series after it. Without time stamps (a dataset built before they were kept), every
    series moves by ``span`` bars per fold.
    """
    stamps = read_timestamps(dataset, manifest)
    items = [i for i in manifest["items"] if i["item_id"] in stamps and int(i["validation_end"]) > span]
    if not items or len(items) < len(manifest["items"]):
        return [-(folds - 1 - k) * span for k in range(folds)]
    starts = {i["item_id"]: stamps[i["item_id"]][min(int(i["validation_end"]), len(stamps[i["item_id"]]) - 1)] for i in items}
    length = max(starts[i["item_id"]] - stamps[i["item_id"]][int(i["validation_end"]) - span] for i in items)
    test_start = min(starts.values())
    shifts: list[int | dict[str, int]] = []
    for k in range(folds):
        if k == folds - 1:
            shifts.append(0)  # the last fold is the profile's test span itself
            continue
        instant = test_start - (folds - 1 - k) * length
        shifts.append({i["item_id"]: int(np.searchsorted(stamps[i["item_id"]], instant)) - int(i["validation_end"])
                       for i in items})
    return shifts


def _same_dataset(start: str, dataset: Path) -> bool:
    from ohlcv.moirai.sources import run_folder_of

    folder = run_folder_of(start)
    if folder is None:
        return False
    run = folder / "run.json"
    try:
        used = Path(json.loads(run.read_text()).get("dataset", "")).expanduser().resolve()
    except (OSError, ValueError):
        return False
    return used == Path(dataset).resolve()


def _spread(values: list[float]) -> dict[str, float]:
    finite = np.array([v for v in values if v is not None and math.isfinite(v)])
    if not finite.size:
        return {"mean": float("nan"), "sd": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(finite.mean()), "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "min": float(finite.min()), "max": float(finite.max())}


def _overall(results: list[EvalResult], horizon: int, stride: int) -> dict[str, dict[str, Any]]:
    overall: dict[str, dict[str, Any]] = {}
    overlap = max(1, math.ceil(horizon / stride))
    for variate, info in results[-1].variates.items():
        yard = info["yardstick"]
        forecasters: dict[str, Any] = {}
        for name in results[-1].aggregate:
            if variate not in results[-1].aggregate[name]:
                continue
            spread = {m: _spread([r.aggregate.get(name, {}).get(variate, {}).get(m, float("nan")) for r in results])
                      for m in SPREAD_METRICS}
            spread["crps_relative"] = _spread([r.relative.get(name, {}).get(variate, {}).get("crps", float("nan")) for r in results])
            spread["mase_relative"] = _spread([r.relative.get(name, {}).get(variate, {}).get("mase", float("nan")) for r in results])
            forecasters[name] = spread
        pooled = {}
        for loss in ("crps", "abs_error"):
            series = [d for r in results for d in r.differences.get("model", {}).get(variate, {}).get(yard, {}).get(loss, [])]
            series.sort(key=lambda pair: pair[0])
            pooled[loss] = diebold_mariano(np.array([d for _t, d in series]), overlap).to_dict()
        overall[variate] = {"yardstick": yard, "forecasters": forecasters, "pooled_dm": pooled,
                            "fold_dm_p": [r.significance.get("model", {}).get(variate, {}).get(yard, {}).get("crps", {}).get("p_value")
                                          for r in results]}
    return overall


def _plot(out: Path, result: BacktestResult) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    labels = [f"fold {f['fold']}\n{str(f['span'].get('first_origin') or '')[:10]}" for f in result.folds]
    x = np.arange(len(result.folds))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for variate, info in result.overall.items():
        ratios = [f["relative"]["model"][variate]["crps"] for f in result.folds]
        pvalues = [p if p is not None else float("nan") for p in info["fold_dm_p"]]
        line = left.plot(x, ratios, marker="o", label=f"{variate} vs {info['yardstick']}")[0]
        significant = [i for i, p in enumerate(pvalues) if math.isfinite(p) and p < SIGNIFICANCE]
        left.scatter(x[significant], np.array(ratios)[significant], s=120, facecolors="none",
                     edgecolors=line.get_color(), lw=1.5)
        right.plot(x, [f["aggregate"]["model"][variate]["coverage_80"] for f in result.folds], marker="o", label=variate)
    left.axhline(1.0, color="#333333", ls="--", lw=1)
    left.set_xticks(x, labels, fontsize=8)
    left.set_ylabel("model CRPS / the one to beat (lower is better)")
    left.set_title("per fold (circled: DM p < 0.05)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.axhline(0.8, color="#333333", ls="--", lw=1, label="nominal 80%")
    right.axhspan(0.7, 0.9, color="#999999", alpha=0.2, lw=0)
    right.set_xticks(x, labels, fontsize=8)
    right.set_ylim(0, 1)
    right.set_ylabel("coverage of the 80% interval")
    right.set_title("calibration per fold")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    path = folder / "folds.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


def _report(result: BacktestResult, start: str) -> str:
    lines = [f"# Walk-forward backtest of `{start}`", "",
             f"{len(result.folds)} folds, refit: {result.refit}. Each fold is a full evaluation (its report is linked); "
             "the last fold is the profile's test span.", "",
             "| fold | first origin | last forecast bar | model | " + " | ".join(
                 f"{v}: CRPS / {i['yardstick']} (DM p) | {v}: coverage 80" for v, i in result.overall.items()) + " |",
             "| --- | --- | --- | --- | " + " | ".join("--- | ---" for _ in result.overall) + " |"]
    for fold in result.folds:
        cells = []
        for variate, info in result.overall.items():
            ratio = fold["relative"]["model"][variate]["crps"]
            p = fold["significance"].get("model", {}).get(variate, {}).get(info["yardstick"], {}).get("crps", {}).get("p_value")
            cells += [f"{ratio:.3f} ({format_p(p) if p is not None and math.isfinite(p) else '–'})",
                      f"{fold['aggregate']['model'][variate]['coverage_80']:.2f}"]
        tuned = fold["finetune"]
        model = ("starting model" if not tuned else
                 f"fine-tuned: val loss {tuned['val_loss_before']:.3f} → {tuned['val_loss_after']:.3f}"
                 + ("" if tuned["improved"] else " (no gain: starting weights kept)"))
        lines.append(f"| [{fold['fold']}]({Path(fold['report']).relative_to(result.out)}) | {fold['span']['first_origin']} | "
                     f"{fold['span']['last_forecast_bar']} | {model} | " + " | ".join(cells) + " |")
    lines += [""]
    for variate, info in result.overall.items():
        lines += [f"## {variate}", "", f"- {result.verdict(variate)}.",
                  f"- pooled DM on absolute error: p = {format_p(info['pooled_dm']['abs_error']['p_value']) if math.isfinite(info['pooled_dm']['abs_error']['p_value']) else '–'}", "",
                  "| forecaster | CRPS mean (sd) | MASE mean (sd) | CRPS / one to beat, mean (sd) [min–max] | coverage 80 mean (sd) | direction mean |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, s in info["forecasters"].items():
            r = s["crps_relative"]
            lines.append(f"| {name} | {s['crps']['mean']:.4g} ({s['crps']['sd']:.2g}) | {s['mase']['mean']:.3f} ({s['mase']['sd']:.2g}) | "
                         f"{r['mean']:.3f} ({r['sd']:.3f}) [{r['min']:.3f}–{r['max']:.3f}] | "
                         f"{s['coverage_80']['mean']:.2f} ({s['coverage_80']['sd']:.2f}) | {s['directional_accuracy']['mean']:.2f} |")
        lines += [""]
    for fold in result.folds:
        for flag in fold["flags"]:
            lines.append(f"- fold {fold['fold']}: calibration flag — {flag}")
    for note in result.notes:
        lines += ["", f"Note: {note}"]
    lines += [""] + [f"![{p.stem}](plots/{p.name})" for p in result.plots] + [""]
    return "\n".join(lines)
