"""Everything that touches uni2ts directly, and the fixes that let it run on both stacks.

Imported only by commands that need torch/uni2ts, never at CLI start-up.

Fix 1 (patch sizes): uni2ts's ``GetPatchSize`` uses ``DefaultPatchSizeConstraints``,
which allows only 32-64 for hourly data and raises ``KeyError: 'h'`` under
pandas >= 2.2 (which spells hourly ``h``). :func:`apply_patch_constraints`
replaces the constraint of every ``GetPatchSize`` in a transform chain by a
fixed range: the profile's ``model.patch_size_constraint``, or uni2ts's own
default range for the frequency, looked up by ohlcv's frequency parser.

Fix 2 (several processes): :func:`reduced_across_processes` makes uni2ts's logged
losses the mean over every process, so that decisions taken on them agree.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from ohlcv.freq import Frequency, parse_freq

DISTRIBUTIONS = {
    "student_t": "StudentTOutput",
    "normal_fixed_scale": "NormalFixedScaleOutput",
    "normal": "NormalOutput",
    "negative_binomial": "NegativeBinomialOutput",
    "log_normal": "LogNormalOutput",
    "laplace": "LaplaceOutput",
}


def distribution_output(names: list[str]):
    """A uni2ts ``MixtureOutput`` of the profile's components (a single component stands alone)."""
    import uni2ts.distribution as distributions

    components = [getattr(distributions, DISTRIBUTIONS[str(getattr(n, "value", n))])() for n in names]
    return components[0] if len(components) == 1 else distributions.MixtureOutput(components=components)


def patch_range(cfg, freq: Frequency | None = None) -> tuple[int, int]:
    freq = freq or parse_freq(cfg.data.freq)
    constraint = cfg.model.patch_size_constraint
    if constraint is not None:
        return int(constraint[0]), int(constraint[1])
    return freq.uni2ts_patch_range


def apply_patch_constraints(transform, low: int, high: int) -> int:
    """Give every ``GetPatchSize`` in ``transform`` the fixed range [low, high]; return how many."""
    from uni2ts.transform import GetPatchSize
    from uni2ts.transform.patch import FixedPatchSizeConstraints

    steps = getattr(transform, "transformations", [transform])
    replaced = 0
    for step in steps:
        if isinstance(step, GetPatchSize):
            step.patch_size_constraints = FixedPatchSizeConstraints(low, high)
            replaced += 1
    return replaced


def fixed_transform_map(transform_map, low: int, high: int) -> dict[str, Callable[[], Any]]:
    """Wrap a uni2ts transform map so that every transform it makes uses [low, high] patch sizes."""
    from collections import defaultdict

    def wrap(factory):
        def make():
            transform = factory()
            apply_patch_constraints(transform, low, high)
            return transform

        return make

    # uni2ts's maps are defaultdicts whose default_factory returns a transform *factory*
    fixed: dict[str, Callable[[], Any]]
    if isinstance(transform_map, defaultdict) and transform_map.default_factory is not None:
        fallback = transform_map.default_factory
        fixed = defaultdict(lambda: wrap(fallback()))
    else:
        fixed = {}
    for key, factory in transform_map.items():
        fixed[key] = wrap(factory)
    return fixed


def module_kwargs(cfg, *, d_model: int | None = None, num_layers: int | None = None) -> dict[str, Any]:
    from ohlcv.config.schema import MODEL_SIZES

    model = cfg.model
    size = model.size.value
    if size == "custom":
        layers, width = int(model.num_layers), int(model.d_model)
    else:
        layers, width = MODEL_SIZES[size]
    return {
        "distr_output": distribution_output(list(model.distribution)),
        "d_model": d_model or width,
        "num_layers": num_layers or layers,
        "patch_sizes": tuple(int(p) for p in model.patch_sizes),
        "max_seq_len": int(model.max_seq_len),
        "attn_dropout_p": float(model.attn_dropout),
        "dropout_p": float(model.dropout),
        "scaling": bool(model.scaling),
    }


def non_finite_distribution(exc: ValueError) -> bool:
    """torch.distributions' own check of a NaN/inf parameter (uni2ts validates its distributions)."""
    text = str(exc)
    return "to satisfy the constraint" in text and any(w in text for w in ("nan", "inf", "invalid values"))


@functools.lru_cache(maxsize=None)
def reduced_across_processes(name: str):
    """uni2ts's Lightning module ``name`` (``MoiraiPretrain``, ``MoiraiFinetune``), its losses reduced over processes.

    Fix 2 (DDP): uni2ts logs every loss with ``sync_dist=True`` but also ``rank_zero_only=True``,
    and Lightning does not reduce a value logged rank-zero-only. Under DDP each process then
    sees the loss of its own share of the data: checkpoint selection, early stopping and the
    fine-tuning guardrail each decided on a different number per rank. With
    ``rank_zero_only`` off, Lightning reduces the per-batch losses, weighted by uni2ts's batch
    size, over every process: the mean over all windows, the same value on every rank.

    The batch size becomes a float: Lightning averages the summed batch sizes over the
    processes, and an integer count is then truncated (45 windows on 2 processes counted as
    44, a loss 2.3% too high).
    """
    import torch
    import uni2ts.model.moirai as moirai

    base = getattr(moirai, name)

    class Reduced(base):
        def training_step(self, *args, **kwargs):
            try:
                return super().training_step(*args, **kwargs)
            except ValueError as exc:
                if not non_finite_distribution(exc):
                    raise
                # a distribution parameter went NaN/inf before the loss did: hand back a NaN loss, so that the
                # loss guard stops every process at the same step (a raise here would leave the others
                # waiting in the gradient all-reduce)
                return torch.stack([p.sum() for p in self.parameters() if p.requires_grad]).sum() * float("nan")

        def log(self, *args, **kwargs):
            if kwargs.get("sync_dist"):
                kwargs["rank_zero_only"] = False
                if kwargs.get("batch_size") is not None:
                    kwargs["batch_size"] = torch.as_tensor(kwargs["batch_size"]).float()
            return super().log(*args, **kwargs)

    Reduced.__name__ = Reduced.__qualname__ = name
    return Reduced


def pretrain_model(cfg, *, tiny: bool = False):
    """uni2ts's ``MoiraiPretrain`` for this profile (``tiny``: 1 layer, d_model 64, for transforms only)."""
    p = cfg.pretrain
    return reduced_across_processes("MoiraiPretrain")(
        module_kwargs=module_kwargs(cfg, d_model=64 if tiny else None, num_layers=1 if tiny else None),
        min_patches=int(p.min_patches),
        min_mask_ratio=float(p.mask_ratio_min),
        max_mask_ratio=float(p.mask_ratio_max),
        max_dim=int(p.max_dim),
        num_training_steps=int(p.max_steps),
        num_warmup_steps=int(p.warmup_steps),
        lr=float(p.lr),
        weight_decay=float(p.weight_decay),
        beta1=float(p.beta1),
        beta2=float(p.beta2),
    )


def pretrain_transform(cfg, *, tiny: bool = False):
    """uni2ts's pre-training transform for this profile, with the patch-size fix applied.

    ``tiny`` builds a 1-layer, 64-wide module: the transform depends only on
    the patch sizes, the sequence length and the pre-training settings.
    """
    model = pretrain_model(cfg, tiny=tiny)
    low, high = patch_range(cfg)
    return fixed_transform_map(model.train_transform_map, low, high), model


def keep_ctrl_c() -> None:
    """Take JAX's garbage-collection hook out of a process that trains or forecasts, so that Ctrl-C is never
    swallowed.

    uni2ts imports jax (through jaxtyping) without making a JAX array; jax then runs a Python callback at
    the start and end of every garbage collection. A Ctrl-C that lands in it is "ignored" by Python
    (``Exception ignored in: <function _xla_gc_callback>``) and training went on to its last step. With
    no JAX array in the process, the hook has nothing to collect."""
    import gc
    import sys

    jax_lib = sys.modules.get("jax._src.lib")
    hook = getattr(jax_lib, "_xla_gc_callback", None)
    while hook is not None and hook in gc.callbacks:
        gc.callbacks.remove(hook)
