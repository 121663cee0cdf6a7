"""Where a model comes from and which MOIRAI family it is: one resolver for every command.

``--from`` / ``--model`` / ``--zero-shot`` accept

- a hub id, ``org/name`` or ``org/name@revision``: fetched by ``huggingface_hub`` into its own
  cache (``HF_HOME`` / ``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1``, or without network, only
  that cache is read;
- a Hugging Face model folder (``config.json`` and the weights, e.g. ``RUN/model``);
- a run folder of ``ohlcv pretrain`` / ``finetune`` (its ``model/`` folder);
- a Lightning checkpoint (``.ckpt``) of a run: the architecture from the checkpoint's
  hyper-parameters or its run's ``model/config.json``, the weights from the checkpoint.

:func:`resolve_model` answers without torch or uni2ts (a checkpoint is the exception: it is
read to learn its architecture), so a command can refuse a wrong ``--from`` before it builds
or loads any dataset. The family (:data:`FAMILIES`) is read from the model's ``config.json``:
the keys of the released configurations tell the three apart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohlcv.errors import ConfigError, OhlcvError


@dataclass(frozen=True)
class Family:
    """A MOIRAI family as uni2ts 2.0.0 ships it, and what ``ohlcv`` does with it."""

    key: str
    name: str  # as reports print it
    package: str  # the uni2ts package holding its classes
    module_class: str
    forecast_class: str
    output: str  # "samples" (a distribution to sample) or "quantiles" (fixed quantile levels)
    released: tuple[str, ...]  # the sizes Salesforce released, named as in MODEL_SIZES
    # finetune.pattern values `ohlcv finetune` supports for this family -> what each trains (docs/finetune.md);
    # empty: fine-tuning is refused
    finetune: dict[str, str] = field(default_factory=dict)
    refusal: str = ""  # why fine-tuning is refused, and what to do instead

    def check_finetune(self, spec: str, pattern: str) -> None:
        """Refuse (one line, before any dataset work) a fine-tune this family does not support."""
        if not self.finetune:
            raise ConfigError(f"{spec} is a {self.name} model: {self.refusal.format(spec=spec)}", key="--from")
        if pattern not in self.finetune:
            raise ConfigError(f"'{pattern}' is not supported for {self.name} models (supported: "
                              f"{', '.join(self.finetune)})", key="finetune.pattern")


# What each pattern trains, by family (the head is Moirai 1.x's distribution head, Moirai 2.0's quantile head).
_ADAPTERS = "low-rank adapters on attention and feed-forward layers, merged at export"
_EVERY = "every weight"
_NO_FFN = "every weight but the feed-forward layers"

# The one place that says which family fine-tunes with which patterns.
FAMILIES: dict[str, Family] = {
    "moirai": Family(
        "moirai", "Moirai 1.x", "uni2ts.model.moirai", "MoiraiModule", "MoiraiForecast", "samples",
        released=("small", "base", "large"),
        finetune={"full": _EVERY, "freeze_ffn": _NO_FFN, "head_only": "the distribution head (param_proj)",
                  "lora": _ADAPTERS},
    ),
    "moirai_moe": Family(
        "moirai_moe", "Moirai-MoE", "uni2ts.model.moirai_moe", "MoiraiMoEModule", "MoiraiMoEForecast", "samples",
        released=("small", "base"),
        refusal="ohlcv does not fine-tune Moirai-MoE (uni2ts 2.0.0 ships no training code for Moirai-MoE); "
                "evaluate it zero-shot with `ohlcv evaluate --zero-shot {spec}`, or fine-tune a Moirai 1.x "
                "or Moirai 2.0 model",
    ),
    "moirai2": Family(
        "moirai2", "Moirai 2.0", "uni2ts.model.moirai2", "Moirai2Module", "Moirai2Forecast", "quantiles",
        released=("small",),
        finetune={"full": _EVERY, "freeze_ffn": _NO_FFN, "head_only": "the quantile head (out_proj)",
                  "lora": _ADAPTERS},
    ),
}
CLASS_FAMILIES = {f.module_class: f for f in FAMILIES.values()}  # uni2ts module class name -> family


def family_of(config: dict[str, Any], where: str) -> Family:
    """The family a ``config.json`` (or a checkpoint's module hyper-parameters) describes.

    Moirai 2.0 has one ``patch_size`` and ``quantile_levels``; Moirai-MoE and Moirai 1.x both have
    ``patch_sizes`` and a ``distr_output``, and only Moirai-MoE an expert width ``d_ff``.
    """
    keys = set(config)
    if {"patch_size", "quantile_levels"} & keys and "distr_output" not in keys:
        return FAMILIES["moirai2"]
    if {"distr_output", "patch_sizes"} <= keys:
        return FAMILIES["moirai_moe" if "d_ff" in keys else "moirai"]
    raise OhlcvError(f"{where}: not a MOIRAI configuration (keys {sorted(keys)}); expected a model saved by "
                     "uni2ts or ohlcv (Moirai 1.x, Moirai-MoE or Moirai 2.0)")


def size_name(family: Family, config: dict[str, Any]) -> str | None:
    """'small' / 'base' / 'large' when the layers and width are those of a configuration Salesforce released."""
    from ohlcv.config.schema import MODEL_SIZES

    shape = (config.get("num_layers"), config.get("d_model"))
    return next((name for name in family.released if MODEL_SIZES[name] == shape), None)


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--from`` / ``--model``: where the model is, what it is."""

    spec: str  # as the user wrote it
    kind: str  # "hub", "folder", "run" or "checkpoint"
    family: Family
    config: dict[str, Any] = field(repr=False)  # the module's configuration (config.json)
    folder: Path | None = None  # a Hugging Face folder (config.json + weights)
    checkpoint: Path | None = None  # a Lightning checkpoint, whose weights replace the folder's
    repo_id: str | None = None
    revision: str | None = None

    @property
    def size(self) -> str | None:
        return size_name(self.family, self.config)

    def describe(self) -> dict[str, Any]:
        """What reports and run.json record about the model (the parameter count is added by the loader)."""
        where = {"hub": f"hub {self.repo_id}" + (f"@{self.revision}" if self.revision else ""),
                 "folder": f"folder {self.spec}", "run": f"run folder {self.spec}",
                 "checkpoint": f"Lightning checkpoint {self.spec}"}[self.kind]
        return {"spec": self.spec, "source": where, "family": self.family.name, "family_key": self.family.key,
                "size": self.size, "path": str(self.checkpoint or self.folder)}


def hub_cache() -> Path:
    """The cache ``huggingface_hub`` uses, by its own rules (read now, not when it was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise OhlcvError(f"{folder / 'config.json'}: unreadable ({type(exc).__name__}); "
                         "point at a model folder saved by uni2ts or ohlcv") from None


def _hf_folder(folder: Path, spec: str, kind: str) -> ModelSource:
    config = _read_config(folder)
    return ModelSource(spec, kind, family_of(config, str(folder / "config.json")), config, folder=folder)


def looks_like_hub_id(spec: str) -> bool:
    name = spec.split("@", 1)[0]
    return name.count("/") == 1 and not spec.startswith((".", "/", "~")) and all(name.split("/"))


def resolve_model(spec: str, *, option: str = "--from") -> ModelSource:
    """Resolve ``spec`` (see the module's docstring) or raise one line that says what to do."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ConfigError(f"{path}: a file, but not a Lightning checkpoint (.ckpt); pass a model folder, "
                              "a run folder, a .ckpt or a hub id", key=option)
        return _checkpoint(path, spec, option)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _hf_folder(path, spec, "folder")
        if (path / "model" / "config.json").is_file():
            return _hf_folder(path / "model", spec, "run")
        raise ConfigError(f"{path}: no config.json here (nor in {path / 'model'}); point at a model folder such "
                          "as RUN/model, a run folder, a .ckpt, or a hub id", key=option)
    if not looks_like_hub_id(spec):
        raise ConfigError(f"'{spec}': no such file or folder, and not a hub id of the form org/name[@revision]",
                          key=option)
    head = spec.split("/", 1)[0]
    if Path(head).expanduser().is_dir():  # runs/nope: a mistyped local path, not an organisation on the hub
        raise ConfigError(f"{path}: no such folder (its parent {head}/ is here); point at a model folder such as "
                          "RUN/model", key=option)
    return _hub(spec, option)


def _hub(spec: str, option: str) -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (  # (also exported here by releases before huggingface_hub.errors)
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = spec.partition("@")
    cache = hub_cache()
    offline = hub_offline()
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, cache_dir=str(cache),
                                        local_files_only=offline,
                                        allow_patterns=["config.json", "*.safetensors", "*.bin"]))
    except (GatedRepoError, RepositoryNotFoundError):
        raise ConfigError(f"{repo_id}: no such model on the Hugging Face hub (or it needs a login: `hf auth login`)",
                          key=option) from None
    except RevisionNotFoundError:
        raise ConfigError(f"{repo_id}: the hub has no revision '{revision}'", key=option) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise OhlcvError(
            f"{spec} is not in the Hugging Face cache {cache} and {why}: on a connected machine run `{fetch}`, copy "
            f"that machine's Hugging Face cache folder here and set HF_HOME to it, or run `{fetch} --local-dir DIR` "
            f"and pass DIR to {option}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a network or disk error: one line with the way out
        raise OhlcvError(f"cannot fetch {spec} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                         f"run `{fetch}` where there is network and pass the folder to {option}") from None
    if not (folder / "config.json").is_file():
        raise OhlcvError(f"{spec}: the cached snapshot {folder} has no config.json (an interrupted download?); "
                         f"run `{fetch}` again")
    config = _read_config(folder)
    return ModelSource(spec, "hub", family_of(config, f"{spec} config.json"), config, folder=folder,
                       repo_id=repo_id, revision=revision or None)


def _checkpoint(path: Path, spec: str, option: str) -> ModelSource:
    """A Lightning checkpoint: its module's configuration from its hyper-parameters, else its run's model/."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - not a torch file, truncated, ...
        raise ConfigError(f"{path}: cannot read this checkpoint ({type(exc).__name__})", key=option) from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ConfigError(f"{path}: not a Lightning checkpoint (no state_dict)", key=option)
    kwargs = (saved.get("hyper_parameters") or {}).get("module_kwargs")
    beside = path.parent.parent / "model"  # RUN/checkpoints/x.ckpt -> RUN/model
    if (beside / "config.json").is_file():
        config = _read_config(beside)
    elif isinstance(kwargs, dict):
        config = {k: v for k, v in kwargs.items()}
    else:
        raise ConfigError(f"{path}: the checkpoint does not record its model's configuration and there is no "
                          f"{beside / 'config.json'}; pass the run's model folder instead", key=option)
    family = family_of(config, str(path))
    return ModelSource(spec, "checkpoint", family, config, folder=beside if beside.is_dir() else None,
                       checkpoint=path)


def run_folder_of(spec: str) -> Path | None:
    """The ``ohlcv`` run folder a local model belongs to (``RUN``, ``RUN/model``, ``RUN/checkpoints/x.ckpt``), or None."""
    path = Path(str(spec)).expanduser()
    for run in (path, path.parent, path.parent.parent if path.suffix == ".ckpt" else None):
        if run is not None and (run / "run.json").is_file() and (run / "profile.yaml").is_file():
            return run
    return None
