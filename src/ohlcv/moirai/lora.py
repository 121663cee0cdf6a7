"""Low-rank adapters (LoRA) through peft, for every MOIRAI family, merged back into a plain module.

peft is optional (the ``ohlcv[lora]`` extra) and imported only here, only when ``finetune.pattern`` is
``lora``: it brings transformers, about 7 s of imports.
"""

from __future__ import annotations

from ohlcv.errors import ConfigError

INSTALL = 'pip install "ohlcv[lora]"'


def require_peft():
    """The peft package, or one line saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"finetune.pattern lora needs peft: {INSTALL} (or pip install peft)",
                          key="finetune.pattern") from None
    except Exception as exc:  # noqa: BLE001 - transformers 5 fails at import on torch < 2.5 (the pinned stack)
        import torch

        raise ConfigError(
            f"peft is installed but does not import ({type(exc).__name__}: {exc}); with torch {torch.__version__} "
            "use the modern stack (torch >= 2.5), see docs/finetune.md",
            key="finetune.pattern",
        ) from None
    return peft


def add_adapters(module, lora_cfg):
    """``module`` wrapped by peft with adapters on ``lora_cfg.target_modules``; everything else frozen.

    A target that names no layer of this model is refused (peft would silently adapt nothing
    for a misspelt name that happens to match nothing while another matches)."""
    peft = require_peft()
    targets = check_targets([name for name, _ in module.named_modules()], lora_cfg)
    config = peft.LoraConfig(r=int(lora_cfg.rank), lora_alpha=float(lora_cfg.alpha),
                             lora_dropout=float(lora_cfg.dropout), target_modules=targets, bias="none")
    try:
        return peft.get_peft_model(module, config)
    except ValueError as exc:  # e.g. a target that is not a linear layer
        raise ConfigError(f"peft cannot adapt these layers: {exc}", key="finetune.lora.target_modules") from None


def check_targets(names: list[str], lora_cfg) -> list[str]:
    """``lora_cfg.target_modules``, each of which must name a layer among ``names``."""
    targets = [str(t) for t in lora_cfg.target_modules]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(f"no layer of this model is named {', '.join(missing)}; "
                          "examples: self_attn.q_proj, ffn.fc1", key="finetune.lora.target_modules")
    return targets


def check_before_data(source, lora_cfg) -> None:
    """peft importable and every target a layer of the starting model: checked before any dataset work.

    The layer names come from the header of the model's weights file."""
    require_peft()
    from ohlcv.moirai.models import layer_names

    names = layer_names(source)
    if names is not None:  # a configuration this uni2ts cannot build: loading it will say so
        check_targets(names, lora_cfg)


def is_adapted(module) -> bool:
    return hasattr(module, "merge_and_unload") and hasattr(module, "peft_config")


def merged(module):
    """The plain module with the adapters folded into its weights (what uni2ts loads without peft)."""
    return module.merge_and_unload() if is_adapted(module) else module


def unadapted(module):
    """The plain module without the adapters (its weights as they were before fine-tuning)."""
    return module.unload() if is_adapted(module) else module
