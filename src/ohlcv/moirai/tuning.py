"""What fine-tuning trains and how fast: patterns per family, the learning-rate schedule, Moirai 1.x's module.

Families (``family_of``): ``moirai`` (1.x, uni2ts's ``MoiraiModule``), ``moirai_moe`` (``MoiraiMoEModule``)
and ``moirai2`` (``Moirai2Module``). Which ``finetune.pattern`` each family fine-tunes with, and what each
trains, is :data:`ohlcv.moirai.sources.FAMILIES` (checked before any dataset work); docs/finetune.md describes it.
"""

from __future__ import annotations

import functools
from typing import Any


HEADS = {"moirai": "param_proj.", "moirai2": "out_proj."}  # the head's parameter-name prefix


def family_of(module) -> str:
    """The family key (:data:`ohlcv.moirai.sources.FAMILIES`) of a uni2ts module (a peft-wrapped one included)."""
    from ohlcv.moirai.sources import CLASS_FAMILIES

    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    name = type(base).__name__
    return CLASS_FAMILIES[name].key if name in CLASS_FAMILIES else name


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
    """Trainable parameters against the total of the model as exported: LoRA's adapters (merged at export)
    are counted as trainable, not in the total."""
    named = list(module.named_parameters())
    adapters = sum(p.numel() for n, p in named if "lora_" in n)
    total = sum(p.numel() for _, p in named) - adapters
    trainable = sum(p.numel() for _, p in named if p.requires_grad)
    return {"parameters": int(total), "trainable_parameters": int(trainable),
            "trainable_percent": round(100.0 * trainable / total, 3) if total else 0.0}


def warmup_cosine(optimizer, warmup_steps: int, max_steps: int):
    """Linear warm-up to the profile's rate over ``warmup_steps`` (step 1 at rate / warmup_steps, not 0, so that
    no step is wasted), then cosine decay to 0 at ``max_steps`` (uni2ts's ``MoiraiFinetune`` keeps the rate
    constant and ignores the warm-up)."""
    import math

    from torch.optim.lr_scheduler import LambdaLR

    warmup, total = int(warmup_steps), int(max_steps)

    def factor(step: int) -> float:  # step: optimizer steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


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
