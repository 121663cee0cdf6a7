"""Fine-tuning Moirai 2.0 (uni2ts's ``Moirai2Module``): windows as arrays, the quantile objective, a Lightning module.

uni2ts 2.0.0 ships Moirai 2.0 for forecasting only. What its ``Moirai2Forecast`` does, and so what
this module trains for:

- The input is laid out by ``Moirai2Forecast``'s own converter: every target variate's context
  patches, then its horizon patches, then the past covariates' context patches; time ids count
  patches, the horizon's following the context's. Attention is causal in time (a patch sees its own
  and earlier patches of every variate of the window), and the instance scaling is fitted on the
  context alone (the horizon is flagged as prediction).
- Each patch token predicts, for the next ``num_predict_token`` patches of its own variate, the
  ``quantile_levels`` (9 levels, 0.1-0.9, in the released model) of every bar, in scaled units:
  the head's output is laid out (predict token, quantile, bar of the patch).
- Forecasting reads the last context token's predictions for the first patches of the horizon, and
  feeds its quantiles back for longer horizons.

Training here feeds the true horizon (teacher forcing, causal) and scores only the horizon's
patches, each as predicted by each of the ``num_predict_token`` tokens before it, where observed,
with the pinball (quantile) loss averaged over levels, bars, patches and windows, in the scaled
units the module works in. Context patches are not scored: the scaling is fitted on the context,
so their own bars would set the units they are scored in. Validation scores only what forecasting
reads: the horizon's patches as predicted from the last context token and from every
``num_predict_token``-th horizon token after it (uni2ts's decoding steps); when that takes several
steps, ``Moirai2Forecast`` itself forecasts (its quantiles fed back), except for several target
variates, which uni2ts 2.0.0 cannot decode recursively (see :func:`validation_note`). Covariates
are inputs only. The paper's patch-level random masking of the input is not reproduced.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

VAL_KEY = "val/PinballLoss"


class WindowArrays:
    """A uni2ts transform-like callable: window ``w`` of a series -> context and horizon arrays.

    The window is bars [w * distance, w * distance + context + horizon) of the series' span
    (see :func:`ohlcv.moirai.data.span_windows`); missing bars become 0 with an observed flag off.
    """

    def __init__(self, context: int, horizon: int, distance: int):
        self.context, self.horizon, self.distance = context, horizon, distance

    def __call__(self, entry: dict[str, Any]) -> dict[str, np.ndarray]:
        start = int(entry["window"]) * self.distance
        cut = slice(start, start + self.context + self.horizon)
        target = np.stack([np.asarray(s, dtype=np.float32)[cut] for s in entry["target"]], axis=-1)
        out = _observed("target", target, self.context)
        covariates = entry.get("past_feat_dynamic_real")
        if covariates is not None and len(covariates):
            past = np.stack([np.asarray(s, dtype=np.float32)[cut][: self.context] for s in covariates], axis=-1)
            seen = np.isfinite(past)
            out["past_feat_dynamic_real"] = np.where(seen, past, 0.0).astype(np.float32)
            out["past_observed_feat_dynamic_real"] = seen
        return out


def _observed(name: str, values: np.ndarray, context: int) -> dict[str, np.ndarray]:
    seen = np.isfinite(values)
    values = np.where(seen, values, 0.0).astype(np.float32)
    return {f"past_{name}": values[:context], f"past_observed_{name}": seen[:context],
            f"future_{name}": values[context:], f"future_observed_{name}": seen[context:]}


def pinball(pred, target, mask, levels):
    """Sum of the pinball loss over ``mask``ed bars and every level, and the count of terms.

    pred (..., quantiles, bars), target and mask (..., bars), levels (quantiles,)."""
    err = target.unsqueeze(-2) - pred
    q = levels.view(-1, 1)
    loss = (q * err).maximum((q - 1) * err)
    weight = mask.unsqueeze(-2).to(loss.dtype)
    return (loss * weight).sum(), weight.sum() * levels.numel()


def _sequence(module, layout, batch: dict[str, Any]):
    """A batch of windows laid out as ``Moirai2Forecast`` lays out a forecast, with the true horizon in place.

    ``_convert`` is private in uni2ts 2.0.0, but it is the layout forecasting uses: training on any other
    would train a model for inputs it never sees (pinned uni2ts; tests/test_finetune_patterns checks it)."""
    import torch

    past, future = batch["past_target"], batch["future_target"]
    n, context, _ = past.shape
    return layout._convert(
        int(module.patch_size), past, batch["past_observed_target"],
        torch.zeros(n, context, dtype=torch.bool, device=past.device),
        future_target=future, future_observed_target=batch["future_observed_target"],
        future_is_pad=torch.zeros(n, future.shape[1], dtype=torch.long, device=past.device),
        past_feat_dynamic_real=batch.get("past_feat_dynamic_real"),
        past_observed_feat_dynamic_real=batch.get("past_observed_feat_dynamic_real"),
    )


def _base(module):
    return module.get_base_model() if hasattr(module, "get_base_model") else module


def quantile_loss(module, layout, batch: dict[str, Any], *, forecast_only: bool):
    """The mean pinball loss of ``module`` on a batch of windows' horizons (see the module docstring).

    Only horizon patches are scored: the scaler is fitted on the context, so a context patch's own bars
    set the scaling it would be scored in. Each horizon patch is scored as predicted by each of the
    ``num_predict_token`` tokens before it (``forecast_only``: by the token forecasting reads it from).
    """
    import torch

    base = _base(module)
    past, future = batch["past_target"], batch["future_target"]
    context, targets, horizon = past.shape[1], past.shape[2], future.shape[1]
    patch, steps, levels = int(base.patch_size), int(base.num_predict_token), len(base.quantile_levels)
    seq = _sequence(base, layout, batch)
    observed, sample_id = seq[1], seq[2]
    preds, scaled = module(*seq, training_mode=True)
    preds = preds.view(*preds.shape[:2], steps, levels, patch)
    ctx_tokens, hor_tokens = math.ceil(context / patch), math.ceil(horizon / patch)
    # each target variate's tokens in time order: its context patches, then its horizon patches
    order = torch.stack([
        torch.cat([v * ctx_tokens + torch.arange(ctx_tokens),
                   targets * ctx_tokens + v * hor_tokens + torch.arange(hor_tokens)])
        for v in range(targets)
    ]).to(past.device)
    p, y = preds[:, order], scaled[:, order]
    seen = observed[:, order] & (sample_id[:, order] > 0).unsqueeze(-1)
    tokens = ctx_tokens + hor_tokens
    q = torch.tensor(base.quantile_levels, dtype=p.dtype, device=p.device)
    total = p.new_zeros(())
    count = p.new_zeros(())
    source = torch.arange(tokens, device=past.device)
    for k in range(1, min(steps, tokens - 1) + 1):
        keep = source[: tokens - k] + k >= ctx_tokens  # the predicted patch is a horizon patch
        if forecast_only:  # the decoding steps of Moirai2Forecast: from the last context token, every `steps`
            keep = keep & (source[: tokens - k] >= ctx_tokens - 1) & (
                (source[: tokens - k] - (ctx_tokens - 1)) % steps == 0)
        s, c = pinball(p[:, :, : tokens - k, k - 1], y[:, :, k:], seen[:, :, k:] & keep.view(1, 1, -1, 1), q)
        total, count = total + s, count + c
    return total / count.clamp(min=1)


def decodes_recursively(module, horizon: int) -> bool:
    """Whether ``Moirai2Forecast`` needs more than one decoding step for ``horizon`` (feeding its quantiles back)."""
    base = _base(module)
    return math.ceil(horizon / int(base.patch_size)) > int(base.num_predict_token)


def validation_note(module, horizon: int, targets: int) -> str | None:
    """How validation scores the horizon, when it is not simply the forecast's loss; None when it is."""
    if not decodes_recursively(module, horizon):
        return None
    if targets == 1:
        return ("the horizon needs several decoding steps: validation scores Moirai2Forecast's own forecasts "
                "(its quantiles fed back), as forecasting does")
    return ("the horizon needs several decoding steps and uni2ts 2.0.0's Moirai2Forecast cannot decode several "
            "target variates recursively: validation feeds the true values back (teacher forcing), which is "
            "a few percent more optimistic than forecasting; the guardrail still compares like with like")


def forecast_loss(module, layout, batch: dict[str, Any]):
    """The mean pinball loss of ``Moirai2Forecast``'s own forecast of each window's horizon, in the scaled
    units of :func:`quantile_loss` (each window and variate divided by the scale fitted on its context).

    For horizons that need several decoding steps: forecasting feeds its quantiles back where teacher
    forcing feeds the true values, so this, not :func:`quantile_loss`, is the loss a user's forecasts get."""
    import torch

    base = _base(module)
    past, future = batch["past_target"], batch["future_target"]
    n, context, targets = past.shape
    horizon = future.shape[1]
    target, observed, sample_id, _, variate_id, prediction_mask = _sequence(base, layout, batch)
    _, scale = base.scaler(target, observed * ~prediction_mask.unsqueeze(-1), sample_id, variate_id)
    per_variate = scale[:, [v * math.ceil(context / int(base.patch_size)) for v in range(targets)], 0]  # (n, targets)
    quantiles = layout(past, batch["past_observed_target"],
                       torch.zeros(n, context, dtype=torch.bool, device=past.device),
                       past_feat_dynamic_real=batch.get("past_feat_dynamic_real"),
                       past_observed_feat_dynamic_real=batch.get("past_observed_feat_dynamic_real"))
    quantiles = quantiles.reshape(n, len(base.quantile_levels), horizon, targets)
    divide = per_variate.view(n, 1, 1, targets)
    q = torch.tensor(base.quantile_levels, dtype=quantiles.dtype, device=quantiles.device)
    total, count = pinball((quantiles / divide).permute(0, 3, 1, 2), (future / divide[:, 0]).permute(0, 2, 1),
                           batch["future_observed_target"].permute(0, 2, 1), q)
    return total / count.clamp(min=1)


def layout_for(module, context: int, horizon: int, targets: int, covariates: int):
    """uni2ts's ``Moirai2Forecast`` for ``module``: its converter lays out training windows as forecasting does."""
    from uni2ts.model.moirai2 import Moirai2Forecast

    layout = Moirai2Forecast(prediction_length=horizon, target_dim=targets, feat_dynamic_real_dim=0,
                             past_feat_dynamic_real_dim=covariates, context_length=context, module=module)
    module.train()  # Moirai2Forecast puts the module in eval mode
    return layout


def finetune_model(module, *, context: int, horizon: int, targets: int, covariates: int, lr: float,
                   weight_decay: float, warmup_steps: int, max_steps: int):
    """The Lightning module that fine-tunes ``module`` (a ``Moirai2Module``, possibly with adapters)."""
    import lightning as L
    import torch

    from ohlcv.moirai.tuning import warmup_cosine

    recursive = decodes_recursively(module, horizon) and targets == 1  # see validation_note

    class Moirai2Finetune(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.module = module
            # held outside the module tree: it shares `module`, whose weights are registered once
            object.__setattr__(self, "layout", layout_for(module, context, horizon, targets, covariates))

        def _step(self, batch, key: str, forecast_only: bool):
            if forecast_only and recursive:
                loss = forecast_loss(self.module, self.layout, batch)
            else:
                loss = quantile_loss(self.module, self.layout, batch, forecast_only=forecast_only)
            self.log(key, loss, on_step=False, on_epoch=True, sync_dist=True,
                     batch_size=float(batch["past_target"].shape[0]))
            return loss

        def training_step(self, batch, batch_idx):
            return self._step(batch, "train/PinballLoss", False)

        def validation_step(self, batch, batch_idx):
            return self._step(batch, VAL_KEY, True)

        def configure_optimizers(self):
            trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
            # weight decay on weight matrices, none on biases, norms and the attention-bias embeddings
            decay = [p for n, p in trainable if p.ndim >= 2 and ".emb." not in n]
            rest = [p for n, p in trainable if not (p.ndim >= 2 and ".emb." not in n)]
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                           {"params": rest, "weight_decay": 0.0}],
                                          lr=lr, betas=(0.9, 0.98), eps=1e-6)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": warmup_cosine(optimizer, warmup_steps, max_steps),
                                     "interval": "step"}}

    return Moirai2Finetune()
