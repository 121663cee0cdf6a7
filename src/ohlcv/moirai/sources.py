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


# What each family's uni2ts 2.0.0 module takes (its __init__ arguments, as config.json records them): the
# arguments all of its configurations carry, and those that belong to another family only. tests/test_sources.py
# checks these against the classes' signatures.
SIGNATURES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "moirai2": (frozenset({"d_model", "d_ff", "num_layers", "patch_size", "max_seq_len"}),
                frozenset({"distr_output", "patch_sizes"})),
    "moirai_moe": (frozenset({"distr_output", "d_model", "d_ff", "num_layers", "patch_sizes", "max_seq_len"}),
                   frozenset({"patch_size"})),
    "moirai": (frozenset({"distr_output", "d_model", "num_layers", "patch_sizes", "max_seq_len"}),
               frozenset({"d_ff", "patch_size"})),
}
# keys of a transformers configuration (ViT, Toto, Chronos, ...): a model that is not a uni2ts module
FOREIGN_KEYS = frozenset({"model_type", "architectures", "transformers_version"})


def family_of(config: dict[str, Any], where: str, *, option: str = "--from") -> Family:
    """The family a ``config.json`` (or a checkpoint's module hyper-parameters) describes.

    Every argument its uni2ts module requires must be there and none that only another family has
    (:data:`SIGNATURES`); a transformers configuration (``model_type``, ``architectures``) is refused.
    """
    keys = set(config)
    if not keys & FOREIGN_KEYS:
        for key, (required, foreign) in SIGNATURES.items():
            if required <= keys and not keys & foreign:
                return FAMILIES[key]
    what = f"a {config['model_type']} model" if isinstance(config.get("model_type"), str) else "not a MOIRAI model"
    raise ConfigError(f"{where}: {what} (config keys {sorted(keys)[:8]}{' ...' if len(keys) > 8 else ''}); "
                      "expected a Moirai 1.x, Moirai-MoE or Moirai 2.0 model saved by uni2ts or ohlcv", key=option)


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
    commit: str | None = None  # the hub snapshot resolved (a revision names a branch; this is what was read)

    @property
    def size(self) -> str | None:
        return size_name(self.family, self.config)

    @property
    def patch_sizes(self) -> list[int]:
        """The patch sizes the model reads (a Moirai 2.0 has one, ``patch_size``)."""
        return [int(p) for p in (self.config.get("patch_sizes") or [self.config.get("patch_size")])]

    def describe(self) -> dict[str, Any]:
        """What reports and run.json record about the model (the parameter count is added by the loader)."""
        where = {"hub": f"hub {self.repo_id}" + (f"@{self.revision}" if self.revision else "")
                 + (f" (commit {self.commit[:12]})" if self.commit else ""),
                 "folder": f"folder {self.spec}", "run": f"run folder {self.spec}",
                 "checkpoint": f"Lightning checkpoint {self.spec}"}[self.kind]
        return {"spec": self.spec, "source": where, "family": self.family.name, "family_key": self.family.key,
                "size": self.size, "path": str(self.checkpoint or self.folder)}


def _expanded(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def model_line(info: dict[str, Any]) -> str:
    """'Moirai 1.x, small, 13.8M parameters, patch 32' (where it came from is ``info["source"]``)."""
    size = f", {info['size']}" if info.get("size") else ""
    count = info.get("parameters", 0)
    shown = f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count:,}"
    output = "; quantile forecasts" if info.get("output") == "quantiles" else ""
    return f"{info.get('family', 'MOIRAI')}{size}, {shown} parameters, patch {info.get('patch_size')}{output}"


def hub_cache_setting() -> tuple[Path, str]:
    """The cache ``huggingface_hub`` uses and the variable that chose it, by its rules (huggingface_hub.constants),
    read now rather than when it was imported: HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else
    HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub (~/.cache/huggingface/hub)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return _expanded(os.environ[name]), name
    if os.environ.get("HF_HOME"):
        return _expanded(os.environ["HF_HOME"]) / "hub", "HF_HOME"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return _expanded(xdg) / "huggingface" / "hub", "HF_HOME"


def hub_cache() -> Path:
    return hub_cache_setting()[0]


def hub_offline() -> bool:
    truthy = ("1", "ON", "YES", "TRUE")
    return any(os.environ.get(name, "").strip().upper() in truthy for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what uni2ts's from_pretrained (PyTorchModelHubMixin) reads


def _read_config(folder: Path, option: str) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder / 'config.json'}: unreadable ({type(exc).__name__}); "
                          "point at a model folder saved by uni2ts or ohlcv", key=option) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{folder / 'config.json'}: not a JSON object; point at a model folder saved by uni2ts "
                          "or ohlcv", key=option)
    return config


def _check_weights(folder: Path, where: str, option: str, advice: str) -> None:
    if not any((folder / name).is_file() for name in WEIGHTS):
        raise ConfigError(f"{where}: config.json but no weights ({' or '.join(WEIGHTS)}) in {folder}; {advice}",
                          key=option)


def _hf_folder(folder: Path, spec: str, kind: str, option: str) -> ModelSource:
    config = _read_config(folder, option)
    family = family_of(config, str(folder / "config.json"), option=option)
    _check_weights(folder, spec, option, "copy the whole model folder")
    return ModelSource(spec, kind, family, config, folder=folder)


def looks_like_hub_id(spec: str) -> bool:
    """``org/name[@revision]``; ``hub:org/name`` forces the hub when a local folder of that name exists."""
    name = spec.removeprefix("hub:").split("@", 1)[0]
    return name.count("/") == 1 and not spec.startswith((".", "/", "~")) and all(name.split("/"))


def resolve_model(spec: str, *, option: str = "--from") -> ModelSource:
    """Resolve ``spec`` (see the module's docstring) or raise one line that says what to do."""
    spec = str(spec)
    if spec.startswith("hub:"):
        if not looks_like_hub_id(spec):
            raise ConfigError(f"'{spec}': not a hub id of the form hub:org/name[@revision]", key=option)
        return _hub(spec.removeprefix("hub:"), option, forced=True)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ConfigError(f"{path}: a file, but not a Lightning checkpoint (.ckpt); pass a model folder, "
                              "a run folder, a .ckpt or a hub id", key=option)
        return _checkpoint(path, spec, option)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _hf_folder(path, spec, "folder", option)
        if (path / "model" / "config.json").is_file():
            return _hf_folder(path / "model", spec, "run", option)
        last = path / "checkpoints" / "last.ckpt"
        hint = f"pass its checkpoint {last}" if last.is_file() else "point at a model folder such as RUN/model"
        raise ConfigError(f"{path}: no config.json here (nor in {path / 'model'}); {hint}, a run folder, a .ckpt, "
                          "or a hub id", key=option)
    if not looks_like_hub_id(spec):
        raise ConfigError(f"'{spec}': no such file or folder, and not a hub id of the form org/name[@revision]",
                          key=option)
    head = spec.split("/", 1)[0]
    if Path(head).expanduser().is_dir():  # runs/nope: a mistyped local path, not an organisation on the hub
        raise ConfigError(f"{path}: no such folder (its parent {head}/ is here); point at a model folder such as "
                          "RUN/model", key=option)
    return _hub(spec, option)


def _hub(spec: str, option: str, *, forced: bool = False) -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (  # (also exported here by releases before huggingface_hub.errors)
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = spec.partition("@")
    cache, variable = hub_cache_setting()
    offline = hub_offline()
    local = "" if forced else f" (and there is no local folder {spec})"
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, cache_dir=str(cache),
                                        local_files_only=offline,
                                        allow_patterns=["config.json", "*.safetensors", "*.bin"]))
    except (GatedRepoError, RepositoryNotFoundError):
        raise ConfigError(f"{repo_id}: no such model on the Hugging Face hub{local} (or it needs a login: "
                          "`hf auth login`)", key=option) from None
    except RevisionNotFoundError:
        raise ConfigError(f"{repo_id}: the hub has no revision '{revision}'", key=option) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        repo = f"models--{repo_id.replace('/', '--')}"
        raise OhlcvError(
            f"{spec} is not in the Hugging Face cache {cache} (set by {variable}){local} and {why}: on a connected "
            f"machine run `{fetch}` and copy its {repo} folder (from that machine's cache) into {cache}, or run "
            f"`{fetch} --local-dir DIR` and pass DIR to {option}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a network or disk error: one line with the way out
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OhlcvError(f"cannot fetch {spec} from the Hugging Face hub ({type(exc).__name__}: {first}); "
                         f"run `{fetch}` where there is network and pass the folder to {option}") from None
    again = f"run `{fetch}` again (an interrupted download?)"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{spec}: the cached snapshot {folder} has no config.json; {again}", key=option)
    config = _read_config(folder, option)
    family = family_of(config, f"{spec} config.json", option=option)
    _check_weights(folder, spec, option, again)
    return ModelSource(spec, "hub", family, config, folder=folder, repo_id=repo_id, revision=revision or None,
                       commit=folder.name)


def read_checkpoint(path: Path, option: str = "--from") -> dict[str, Any]:
    """A Lightning checkpoint, memory-mapped (its tensors are read when used, so resolving it costs little).

    ``weights_only=False``: a checkpoint also holds pickled Python objects (its hyper-parameters), and
    unpickling runs code: load only checkpoints you trust (your own runs)."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # noqa: BLE001 - not a torch file, truncated, ...
        raise ConfigError(f"{path}: cannot read this checkpoint ({type(exc).__name__})", key=option) from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ConfigError(f"{path}: not a Lightning checkpoint (no state_dict)", key=option)
    return saved


def _checkpoint(path: Path, spec: str, option: str) -> ModelSource:
    """A Lightning checkpoint: its run's model/config.json (when it is in a run folder), else its hyper-parameters."""
    saved = read_checkpoint(path, option)
    kwargs = (saved.get("hyper_parameters") or {}).get("module_kwargs")
    run = run_folder_of(str(path))
    beside = run / "model" if run is not None else None
    if beside is not None and (beside / "config.json").is_file():
        config = _read_config(beside, option)
    elif isinstance(kwargs, dict):
        config, beside = dict(kwargs), None
    else:
        raise ConfigError(f"{path}: the checkpoint does not record its model's configuration and it is not in a run "
                          "folder with a model/config.json; pass the run's model folder instead", key=option)
    family = family_of(config, str(path), option=option)
    return ModelSource(spec, "checkpoint", family, config, folder=beside, checkpoint=path)


def run_folder_of(spec: str) -> Path | None:
    """The ``ohlcv`` run folder a local model belongs to (``RUN``, ``RUN/model``, ``RUN/checkpoints/x.ckpt``), or None."""
    path = Path(str(spec)).expanduser()
    for run in (path, path.parent, path.parent.parent if path.suffix == ".ckpt" else None):
        if run is not None and (run / "run.json").is_file() and (run / "profile.yaml").is_file():
            return run
    return None
