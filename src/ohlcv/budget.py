"""The token-budget planner behind ``ohlcv budget``.

MOIRAI flattens every variate's patches into one token sequence. The usual
estimate of a sample, ``variates x ceil((context + horizon) / patch)`` tokens,
is what pre-training packs: uni2ts's ``PatchCrop`` cuts whole patches
from one stretch of a series and ``MaskedPrediction`` then marks the last of
them as the horizon, so a context-plus-horizon stretch is
``ceil((context + horizon) / patch)`` patches per variate. Fine-tuning and
forecasting patch the context and the horizon separately (each padded to whole
patches): ``variates x (ceil(context / patch) + ceil(horizon / patch))``
tokens, which can be more (hourly, 32 variates at patch 16: 384 when
pre-training, 416 when fine-tuning). The plan shows both, judges pre-training on the first
and fine-tuning on the second (:func:`finetune_fit`, which ``finetune`` checks
too), so ``ohlcv budget``, ``pretrain`` and ``finetune`` agree. uni2ts packs
``past_feat_dynamic_real`` covariates into the same sequence, so they count
as variates too. This module is pure arithmetic over the profile: no torch,
no uni2ts, no pandas.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.freq import Frequency, parse_freq

MIN_CONTEXT_TO_HORIZON = 5  # context >= 5 x horizon: less history than five horizons makes forecasts unstable


def patches_for(context: int, horizon: int, patch: int) -> int:
    """Patches per variate as pre-training packs them: ceil((context + horizon) / patch)."""
    return -(-(context + horizon) // patch)  # ceil without floats


def tokens_for(variates: int, context: int, horizon: int, patch: int) -> int:
    """Tokens of a pre-training sample: variates x ceil((context + horizon) / patch)."""
    return variates * patches_for(context, horizon, patch)


def model_patches(context: int, horizon: int, patch: int) -> int:
    """Patches per variate uni2ts really packs: the context and the horizon each padded to whole patches."""
    return -(-context // patch) + -(-horizon // patch)


def model_tokens(variates: int, context: int, horizon: int, patch: int) -> int:
    """Tokens a sample of this many variates really takes (what max_seq_len must hold)."""
    return variates * model_patches(context, horizon, patch)


@dataclass(frozen=True)
class PatchRow:
    patch_size: int
    patches: int  # per variate, as fine-tuning and forecasting pack them: ceil(context / patch) + ceil(horizon / patch)
    tokens: int  # variates x patches
    pretrain_patches: int  # ceil((context + horizon) / patch): what pre-training's crop packs
    pretrain_tokens: int
    fits: bool  # pre-training: pretrain_tokens <= max_seq_len
    allowed: bool  # by the constraint that applies
    uni2ts_default_allows: bool
    usable: bool  # for pre-training: fits and allowed
    crop_steps: int  # time steps uni2ts's pre-training crop keeps at this patch size


@dataclass
class BudgetInputs:
    context: int
    horizon: int
    patch_sizes: list[int]
    max_seq_len: int
    variates: int
    variate_names: list[str]
    variates_source: str
    freq: Frequency
    constraint: tuple[int, int] | None  # the profile's; None: uni2ts's default
    max_dim: int = 128
    min_patches: int = 2
    finetune_patch: int | None = None  # finetune.patch_size: checked like `ohlcv finetune` checks it
    # the starting model of `ohlcv finetune --from` (`ohlcv budget --from`): its family, patch sizes, max_seq_len;
    # None: a Moirai 1.x of the profile's model section
    start: dict[str, Any] | None = None


@dataclass
class BudgetReport:
    inputs: dict[str, Any]
    constraint: dict[str, Any]
    rows: list[PatchRow]
    context_rule_ok: bool
    ok: bool  # pretrain_ok and finetune_ok
    finetune: dict[str, Any] | None = None  # finetune.patch_size's tokens and whether they fit
    pretrain_ok: bool = True  # context rule and a usable patch size for pre-training
    finetune_ok: bool = True  # context rule and the fine-tuning count fits the starting model
    suggestions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "inputs": self.inputs,
                "constraint": self.constraint,
                "rows": [asdict(row) for row in self.rows],
                "context_rule": {
                    "rule": f"context >= {MIN_CONTEXT_TO_HORIZON} x horizon",
                    "ok": self.context_rule_ok,
                },
                "finetune": self.finetune,
                "pretrain_ok": self.pretrain_ok,
                "finetune_ok": self.finetune_ok,
                "ok": self.ok,
                "suggestions": self.suggestions,
                "notes": self.notes,
            },
            indent=2,
        )


def smallest_fitting_patch(variates: int, context: int, horizon: int, max_seq_len: int) -> int | None:
    """The smallest patch size p whose fine-tuning count (:func:`model_tokens`) fits max_seq_len (pre-training's
    count is never larger, so it fits both)."""
    largest = max(context, horizon)  # from here on every sample is 2 patches per variate
    if model_tokens(variates, context, horizon, largest) > max_seq_len:
        return None
    low, high = 1, largest  # the count never grows with p: bisect for the first p that fits
    while low < high:
        mid = (low + high) // 2
        if model_tokens(variates, context, horizon, mid) <= max_seq_len:
            high = mid
        else:
            low = mid + 1
    return low


def finetune_fit(variates: int, context: int, horizon: int, patch: int, max_seq_len: int,
                 family: str = "moirai") -> dict[str, Any]:
    """What ``ohlcv finetune`` checks at its patch size: the real token count against max_seq_len.

    Moirai 1.x packs every variate's patches into one sequence; Moirai 2.0 (``family="moirai2"``) reads
    the variates side by side, so its rotary positions count time patches only.
    """
    patches = model_patches(context, horizon, patch)
    tokens = patches if family == "moirai2" else model_tokens(variates, context, horizon, patch)
    what = (f"{patches} time patches (patch {patch}, {variates} variates side by side)" if family == "moirai2"
            else f"{variates} variates x {patches} patches")
    return {"patch_size": patch, "patches": patches, "tokens": tokens, "what": what,
            "max_seq_len": max_seq_len, "fits": tokens <= max_seq_len}


def starting_fit(family: str, sizes: list[int] | None, max_seq_len: int, variates: int, context: int, horizon: int,
                 patch: int) -> dict[str, Any]:
    """What ``ohlcv finetune`` checks of its starting model, before and after loading it: the patch it
    trains at (``patch``, or the one a Moirai 2.0 reads), that the model has that patch size (``sizes``;
    None: not known, not checked) and :func:`finetune_fit` against its max_seq_len; ``why`` when it does
    not fit."""
    patch = int(sizes[0]) if family == "moirai2" else int(patch)
    fit = finetune_fit(variates, context, horizon, patch, max_seq_len, family)
    if sizes is not None and patch not in sizes:
        fit.update(fits=False, why=f"the starting model's patch sizes are {list(sizes)}; {patch} is not one of them "
                                   "(finetune.patch_size)")
    elif not fit["fits"]:
        fit["why"] = (f"{fit['what']} = {fit['tokens']} tokens exceed the checkpoint's max_seq_len {max_seq_len}: "
                      "use a larger finetune.patch_size, fewer variates or a shorter context")
    return fit


def start_fit(inputs: BudgetInputs) -> dict[str, Any]:
    """:func:`starting_fit` of the profile's fine-tune: from ``--from``'s model when given, else a Moirai 1.x of
    the profile's model section."""
    start = inputs.start or {"family": "moirai", "patch_sizes": None, "max_seq_len": inputs.max_seq_len}
    fit = starting_fit(start["family"], start["patch_sizes"], int(start["max_seq_len"]), inputs.variates,
                       inputs.context, inputs.horizon, int(inputs.finetune_patch))
    fit.update(start_model=start.get("spec"), family=start["family"])
    return fit


def plan(inputs: BudgetInputs) -> BudgetReport:
    ctx, hor, seq, v = inputs.context, inputs.horizon, inputs.max_seq_len, inputs.variates
    default_lo, default_hi = inputs.freq.uni2ts_patch_range
    if inputs.constraint is not None:
        lo, hi = inputs.constraint
        constraint = {"source": "profile", "min": lo, "max": hi, "key": "model.patch_size_constraint"}
    else:
        lo, hi = default_lo, default_hi
        constraint = {"source": f"uni2ts default for '{inputs.freq.uni2ts_code}'", "min": lo, "max": hi}
    constraint["uni2ts_default"] = {"code": inputs.freq.uni2ts_code, "min": default_lo, "max": default_hi}

    rows = []
    for p in sorted(set(inputs.patch_sizes)):
        patches = model_patches(ctx, hor, p)
        tokens = v * patches
        fits = tokens_for(v, ctx, hor, p) <= seq  # pre-training packs ceil((context + horizon) / patch) per variate
        allowed = lo <= p <= hi
        rows.append(
            PatchRow(
                patch_size=p,
                patches=patches,
                tokens=tokens,
                pretrain_patches=patches_for(ctx, hor, p),
                pretrain_tokens=tokens_for(v, ctx, hor, p),
                fits=fits,
                allowed=allowed,
                uni2ts_default_allows=default_lo <= p <= default_hi,
                usable=fits and allowed,
                crop_steps=(seq // v) * p if v > 0 else 0,
            )
        )
    rule_ok = ctx >= MIN_CONTEXT_TO_HORIZON * hor
    any_usable = any(row.usable for row in rows)
    tune = None if inputs.finetune_patch is None else start_fit(inputs)
    report = BudgetReport(
        inputs={
            "context_length": ctx,
            "prediction_length": hor,
            "patch_sizes": sorted(set(inputs.patch_sizes)),
            "max_seq_len": seq,
            "variates": v,
            "variate_names": inputs.variate_names,
            "variates_source": inputs.variates_source,
            "freq": inputs.freq.canonical,
        },
        constraint=constraint,
        rows=rows,
        context_rule_ok=rule_ok,
        ok=rule_ok and any_usable and (tune is None or tune["fits"]),
        finetune=tune,
        pretrain_ok=rule_ok and any_usable,
        finetune_ok=rule_ok and (tune is None or tune["fits"]),
    )
    _advise(inputs, report, lo, hi)
    return report


def _advise(inputs: BudgetInputs, report: BudgetReport, lo: int, hi: int) -> None:
    ctx, hor, seq, v = inputs.context, inputs.horizon, inputs.max_seq_len, inputs.variates
    if not report.context_rule_ok:
        report.suggestions.append(
            f"context {ctx} is shorter than {MIN_CONTEXT_TO_HORIZON} x horizon ({MIN_CONTEXT_TO_HORIZON * hor}): "
            f"set data.context_length>={MIN_CONTEXT_TO_HORIZON * hor} or data.prediction_length<={ctx // MIN_CONTEXT_TO_HORIZON}"
        )
    allowed_rows = [row for row in report.rows if row.allowed]
    if not allowed_rows:
        report.suggestions.append(
            f"none of model.patch_sizes {report.inputs['patch_sizes']} is allowed by the constraint "
            f"[{lo}, {hi}] ({report.constraint['source']}): add a patch size in that range or set "
            "model.patch_size_constraint"
        )
    blocked = [row.patch_size for row in report.rows if row.fits and not row.allowed]
    if blocked and inputs.constraint is None:
        report.notes.append(
            f"patch sizes {blocked} fit the budget but uni2ts's default constraint for "
            f"'{inputs.freq.uni2ts_code}' ({lo}-{hi}) would never pick them; set "
            f"model.patch_size_constraint=[{min(blocked + [lo])},{hi}] to use them"
        )
    if allowed_rows and not any(row.usable for row in report.rows):
        largest = max(row.patch_size for row in allowed_rows)
        patches = patches_for(ctx, hor, largest)
        max_variates = seq // patches
        report.suggestions.append(
            f"at patch {largest}, at most {max_variates} variates fit ({patches} patches each); "
            f"this profile has {v}: enable fewer features or data.columns"
        )
        smallest = smallest_fitting_patch(v, ctx, hor, seq)
        if smallest is None:
            report.suggestions.append(
                f"{v} variates exceed max_seq_len {seq} even at one patch each: reduce the variates"
            )
        else:
            note = "" if lo <= smallest <= hi else f" (outside the constraint [{lo}, {hi}]: widen model.patch_size_constraint)"
            report.suggestions.append(
                f"the smallest patch size that fits {v} variates is {smallest}: add it to model.patch_sizes{note}"
            )
            longest = (seq // v) * largest - hor  # the steps pre-training's whole patches hold, less the horizon
            if longest > 0:
                rule = "" if longest >= MIN_CONTEXT_TO_HORIZON * hor else f", below the {MIN_CONTEXT_TO_HORIZON}x-horizon rule"
                report.suggestions.append(
                    f"at patch {largest}, the longest context that fits is {longest} (data.context_length={longest}{rule})"
                )
        per_variate = seq // v if v else 0
        if per_variate >= inputs.min_patches:
            report.notes.append(
                f"uni2ts would not refuse this: its pre-training crop keeps only {per_variate} patches per variate "
                f"({per_variate * largest} steps at patch {largest}), silently shorter than "
                f"context + horizon = {ctx + hor}"
            )
        else:
            report.notes.append(
                f"uni2ts's pre-training crop cannot fit {inputs.min_patches} patches per variate for {v} variates; "
                "pre-training would fail"
            )
    tune = report.finetune
    if tune is not None and not tune["fits"]:
        report.suggestions.append(f"fine-tuning: {tune['why']}")
    if v > inputs.max_dim:
        report.notes.append(
            f"pre-training samples at most pretrain.max_dim={inputs.max_dim} of the {v} variates per sample"
        )


def read_dataset_variates(dataset: Path) -> list[str] | None:
    """Variate names from a built dataset's ``manifest.json``; None when there is none."""
    manifest = Path(dataset) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        names = data["variates"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OhlcvError(f"{manifest}: unreadable dataset manifest (no 'variates' list); rebuild the dataset") from None
    return [str(name) for name in names]


def profile_variates(cfg, features=None) -> list[str]:
    """Variate names a build with this profile would produce: OHLCV columns, then feature outputs."""
    names = list(cfg.data.columns)
    if list(cfg.features.enabled):
        from ohlcv.plugins import enabled_features, load_plugins

        registry = features if features is not None else load_plugins().features
        for _, _, outputs in enabled_features(cfg, registry):
            names.extend(outputs)
    return names


def inputs_from_profile(cfg, *, dataset: Path | None = None, variates: int | None = None,
                        start=None) -> BudgetInputs:
    """Gather the planner's inputs from a loaded profile (and a built dataset, when there is one, and the
    starting model of a fine-tune, a resolved :class:`ohlcv.moirai.sources.ModelSource`, when given)."""
    names: list[str] | None = None
    source = "profile (data.columns + features.enabled)"
    candidate = Path(dataset) if dataset is not None else Path(str(cfg.data.dataset))
    if dataset is not None and not (candidate / "manifest.json").is_file():
        raise OhlcvError(f"{candidate}: no manifest.json here; is this a dataset built by `ohlcv build`?")
    from_dataset = read_dataset_variates(candidate)
    if from_dataset is not None:
        names, source = from_dataset, f"dataset {candidate}"
    if names is None:
        names = profile_variates(cfg)
    count = len(names)
    if variates is not None:
        if variates <= 0:
            raise ConfigError(f"must be positive, got {variates}", key="--variates")
        count, source = variates, "--variates"
    constraint = cfg.model.patch_size_constraint
    return BudgetInputs(
        context=int(cfg.data.context_length),
        horizon=int(cfg.data.prediction_length),
        patch_sizes=[int(p) for p in cfg.model.patch_sizes],
        max_seq_len=int(cfg.model.max_seq_len),
        variates=count,
        variate_names=names if variates is None else [],
        variates_source=source,
        freq=parse_freq(cfg.data.freq),
        constraint=(int(constraint[0]), int(constraint[1])) if constraint is not None else None,
        max_dim=int(cfg.pretrain.max_dim),
        min_patches=int(cfg.pretrain.min_patches),
        finetune_patch=int(cfg.finetune.patch_size),
        start=None if start is None else {
            "spec": start.spec, "family": start.family.key, "max_seq_len": int(start.config["max_seq_len"]),
            "patch_sizes": start.patch_sizes},
    )
