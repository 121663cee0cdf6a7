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
# what a build or a merge writes into a dataset folder; anything else there is the user's
DATASET_ENTRIES = frozenset({HF_SUBDIR, TIMESTAMPS_FILE, "manifest.json", "report.json", "profile.yaml"})


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


def dataset_spec(cfg) -> dict[str, Any]:
    """What a command needs a dataset to be, by profile key: its frequency and its variates (columns,
    layout, targets, the enabled features and their parameters). Recorded in the manifest at build
    time; a named dataset whose spec differs from the command's profile is refused, never rebuilt
    implicitly. Cleaning, split and selection settings are not in it: a dataset is used as built."""
    from omegaconf import OmegaConf

    from ohlcv.freq import parse_freq

    data = cfg.data
    enabled = [str(name) for name in cfg.features.enabled]
    params = OmegaConf.to_container(cfg.features.params, resolve=True, enum_to_str=True) or {}
    layout = data.layout.value if hasattr(data.layout, "value") else str(data.layout)
    spec: dict[str, Any] = {
        "data.freq": parse_freq(str(data.freq)).canonical,
        "data.columns": [str(c) for c in data.columns],
        "data.layout": layout,
        "features.enabled": enabled,
        "features.params": {name: params[name] for name in sorted(params) if name in enabled},
    }
    if layout == "covariates":
        spec["data.targets"] = [str(t) for t in data.targets]
    return spec


def spec_differences(built: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: built X, the profile asks for Y`` for every key where the two specs differ."""

    def show(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), default=str) if not isinstance(value, str) else value

    return [f"{key}: built with {show(built.get(key))}, the command asks for {show(wanted[key])}"
            for key in wanted if built.get(key) != wanted[key]]


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
