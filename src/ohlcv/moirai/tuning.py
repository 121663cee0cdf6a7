"""What fine-tuning trains and how fast: patterns per family, the learning-rate schedule, Moirai 1.x's module.

Families (``family_of``): ``moirai`` (1.x, uni2ts's ``MoiraiModule``), ``moirai_moe`` (``MoiraiMoEModule``)
and ``moirai2`` (``Moirai2Module``). :data:`PATTERNS` is the one table of which ``finetune.pattern``
each family can fine-tune with; docs/finetune.md describes it.
"""

from __future__ import annotations

import functools
from typing import Any

from ohlcv.errors import ConfigError

# family -> the finetune.pattern values it supports, and the parameters each trains
PATTERNS: dict[str, dict[str, str]] = {
    "moirai": {
        "full": "every weight",
        "freeze_ffn": "every weight but the feed-forward layers",
        "head_only": "the distribution head (param_proj)",
        "lora": "low-rank adapters on attention and feed-forward layers, merged at export",
    },
    "moirai2": {
        "full": "every weight",
        "freeze_ffn": "every weight but the feed-forward layers",
        "head_only": "the quantile head (out_proj)",
        "lora": "low-rank adapters on attention and feed-forward layers, merged at export",
    },
    "moirai_moe": {},  # uni2ts 2.0.0 has no training objective for the MoE's routed experts: refused
}
FAMILY_NAMES = {"moirai": "Moirai 1.x", "moirai_moe": "Moirai-MoE", "moirai2": "Moirai 2.0"}
HEADS = {"moirai": "param_proj.", "moirai2": "out_proj."}  # the head's parameter-name prefix


def family_of(module) -> str:
    """The family of a uni2ts module (a peft-wrapped one included)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    name = type(base).__name__
    return {"MoiraiModule": "moirai", "MoiraiMoEModule": "moirai_moe", "Moirai2Module": "moirai2"}.get(name, name)


def check_pattern(family: str, pattern: str) -> None:
    supported = PATTERNS.get(family, {})
    if pattern not in supported:
        name = FAMILY_NAMES.get(family, family)
        if not supported:
            raise ConfigError(f"{name} models cannot be fine-tuned by ohlcv (uni2ts 2.0.0 has no training objective "
                              "for them); evaluate them zero-shot, or start from a Moirai 1.x or 2.0 model",
                              key="--from")
        raise ConfigError(f"{name} models fine-tune with finetune.pattern {', '.join(supported)}; not {pattern}",
                          key="finetune.pattern")


def apply_pattern(module, family: str, pattern: str) -> None:
    """Freeze what ``pattern`` does not train (``lora``: peft has already frozen all but the adapters)."""
    if pattern in ("full", "lora"):
        return
    for name, p in module.named_parameters():
        if pattern == "freeze_ffn" and ".ffn." in f".{name}":
            p.requires_grad = False
        elif pattern == "head_only" and not name.startswith(HEADS[family]):
            p.requires_grad = False


def parameter_counts(module) -> dict[str, Any]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"parameters": int(total), "trainable_parameters": int(trainable),
            "trainable_percent": round(100.0 * trainable / total, 3) if total else 0.0}


def warmup_cosine(optimizer, warmup_steps: int, max_steps: int):
    """Linear warm-up over ``warmup_steps`` from 0 to the profile's rate, then cosine decay to 0 at ``max_steps``
    (uni2ts's own cosine schedule; its ``MoiraiFinetune`` keeps the rate constant and ignores the warm-up)."""
    from uni2ts.optim import SchedulerType, get_scheduler

    return get_scheduler(SchedulerType.COSINE, optimizer, num_warmup_steps=int(warmup_steps),
                         num_training_steps=int(max_steps))


@functools.lru_cache(maxsize=None)
def moirai_finetune_class():
    """uni2ts's ``MoiraiFinetune`` (losses reduced over processes) with the warm-up and cosine decay applied."""
    from ohlcv.moirai.compat import reduced_across_processes

    base = reduced_across_processes("MoiraiFinetune")

    class MoiraiFinetune(base):
        def configure_optimizers(self) -> dict:
            configured = super().configure_optimizers()
            optimizer = configured["optimizer"]
            configured["lr_scheduler"] = {
                "scheduler": warmup_cosine(optimizer, self.hparams.num_warmup_steps, self.hparams.num_training_steps),
                "interval": "step",
            }
            return configured

    return MoiraiFinetune
