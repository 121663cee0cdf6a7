"""Format constants, the variate layout and the Arrow schema of a built dataset."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

FORMAT = "ohlcv-dataset/1"
HF_SUBDIR = "hf"
TIMESTAMPS_FILE = "timestamps.parquet"  # every bar's real time stamp, per series (the manifest names it)


@dataclass
class Variates:
    names: list[str]
    targets: list[str]
    covariates: list[str]
    feature_specs: list[tuple[Any, dict]] = field(default_factory=list)  # (Feature, params)


def profile_hash(cfg) -> str:
    """Hash of the sections that decide a dataset's content."""
    from omegaconf import OmegaConf

    content = {
        "data": {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True).items() if k not in ("lake", "dataset")},
        "features": OmegaConf.to_container(cfg.features, resolve=True, enum_to_str=True),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hf_schema(variates: Variates):
    """The Arrow schema (with its ``datasets`` features) of uni2ts's dataset layout for these variates."""
    return _hf_schema(len(variates.targets), len(variates.covariates))


@functools.lru_cache(maxsize=8)
def _hf_schema(targets: int, covariates: int):
    from datasets import Features, Sequence, Value

    spec = {
        "item_id": Value("string"),
        "start": Value("timestamp[s]"),
        "freq": Value("string"),
        "target": Sequence(Sequence(Value("float32")), length=targets),
    }
    if covariates:
        spec["past_feat_dynamic_real"] = Sequence(Sequence(Value("float32")), length=covariates)
    return Features(spec).arrow_schema
