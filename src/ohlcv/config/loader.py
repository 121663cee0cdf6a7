"""Find, load, validate and save profiles.

Lookup order for ``--profile NAME_OR_PATH``: an existing path, then
``./profiles/NAME.yaml``, then the profiles packaged with ohlcv. A profile may
start from another one with ``extends: NAME`` (merged first, OmegaConf-style).
Then come the ``key=value`` overrides. Every step is validated against
:class:`ohlcv.config.schema.Profile`; anything wrong is a :class:`ConfigError`
that names the key and the file (or "override") it came from.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from ohlcv.config.schema import MODEL_SIZES, ModelSize, Profile
from ohlcv.errors import ConfigError
from ohlcv.freq import parse_freq


def datasets_major() -> str:
    """The installed ``datasets`` major version (``${datasets_major:}`` in profiles): datasets written by one
    major version may not load in another, so the demo keeps one cache per major version."""
    from importlib import metadata

    try:
        return metadata.version("datasets").split(".")[0]
    except metadata.PackageNotFoundError:
        return "none"


if not OmegaConf.has_resolver("datasets_major"):
    import warnings

    with warnings.catch_warnings():  # omegaconf 2.4 renames register_new_resolver (same behaviour)
        warnings.simplefilter("ignore")
        OmegaConf.register_new_resolver("datasets_major", datasets_major)

PROFILE_SUFFIXES = (".yaml", ".yml")
_VALID_PRECISIONS = {"auto", "32", "32-true", "16-mixed", "bf16-mixed", "64", "64-true"}


@dataclass
class LoadedProfile:
    """A validated profile and where it came from."""

    cfg: DictConfig
    path: Path
    chain: list[Path] = field(default_factory=list)  # extends chain, base first
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.cfg.name)

    def to_container(self) -> dict[str, Any]:
        return OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    path: Path
    origin: str  # "local" (./profiles) or "packaged"
    description: str
    extends: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "origin": self.origin, "extends": self.extends, "description": self.description,
                "path": str(self.path)}


def packaged_profiles_dir() -> Path:
    """Profiles shipped with ohlcv: inside the wheel, or the source checkout's ``profiles/``."""
    here = Path(__file__).resolve()
    in_package = here.parents[1] / "profiles"  # site-packages/ohlcv/profiles (wheel)
    if in_package.is_dir():
        return in_package
    return here.parents[3] / "profiles"  # src/ohlcv/config/loader.py -> repo root


def local_profiles_dir() -> Path:
    return Path.cwd() / "profiles"


def _candidates(name: str, directory: Path) -> Iterable[Path]:
    if Path(name).suffix in PROFILE_SUFFIXES:
        yield directory / name
    else:
        for suffix in PROFILE_SUFFIXES:
            yield directory / f"{name}{suffix}"


def find_profile(name_or_path: str, *, near: Path | None = None) -> Path:
    """Resolve ``--profile``: a path, then ./profiles/NAME.yaml, then packaged profiles."""
    given = Path(name_or_path).expanduser()
    if given.is_file():
        return given
    searched = [str(given)]
    directories = ([near] if near is not None else []) + [
        local_profiles_dir(),
        packaged_profiles_dir(),
    ]
    for directory in directories:
        for candidate in _candidates(name_or_path, directory):
            searched.append(str(candidate))
            if candidate.is_file():
                return candidate
    known = ", ".join(p.name for p in list_profiles()) or "none"
    raise ConfigError(
        f"profile '{name_or_path}' not found (known profiles: {known}); "
        "pass a YAML path or see `ohlcv profiles list`",
        key="--profile",
    )


def list_profiles() -> list[ProfileInfo]:
    """Every profile reachable by name; a local one shadows a packaged one of the same name."""
    found: dict[str, ProfileInfo] = {}
    packaged, local = packaged_profiles_dir(), local_profiles_dir()
    for origin, directory in (("packaged", packaged), ("local", local)):
        if not directory.is_dir() or (origin == "local" and directory.resolve() == packaged.resolve()):
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in PROFILE_SUFFIXES or path.name.startswith("_"):
                continue
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                raw = {}
            if not isinstance(raw, dict):
                raw = {}
            found[path.stem] = ProfileInfo(
                name=path.stem,
                path=path,
                origin=origin,
                description=str(raw.get("description", "")).strip(),
                extends=raw.get("extends"),
            )
    return sorted(found.values(), key=lambda info: info.name)


def _read_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"not valid YAML{where}: fix the syntax", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError("a profile must be a YAML mapping of sections", source=str(path))
    return loaded


def _resolve_chain(path: Path) -> list[tuple[Path, DictConfig]]:
    """The profile and the profiles it extends, base first."""
    chain: list[tuple[Path, DictConfig]] = []
    seen: set[Path] = set()
    current: Path | None = path
    while current is not None:
        resolved = current.resolve()
        if resolved in seen:
            raise ConfigError("'extends' forms a cycle", key="extends", source=str(current))
        seen.add(resolved)
        node = _read_yaml(current)
        parent = node.pop("extends", None) if "extends" in node else None
        chain.append((current, node))
        if parent is None:
            current = None
        elif not isinstance(parent, str):
            raise ConfigError("must be the name or path of a profile", key="extends", source=str(current))
        else:
            try:
                current = find_profile(parent, near=current.parent)
            except ConfigError:
                raise ConfigError(
                    f"extends profile '{parent}', which was not found", key="extends", source=str(current)
                ) from None
    chain.reverse()
    return chain


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of the schema, dotted (``data.split.train``), depth first."""
    keys = []
    if isinstance(node, dict):
        for name, child in node.items():
            full = f"{prefix}{name}"
            keys.append(full)
            keys.extend(_dotted_keys(child, f"{full}."))
    return keys


def _suggest(schema: DictConfig, key: str) -> str:
    """`` (did you mean 'data.context_length'?)``: the same name in another section first (an override
    written without its section), then a close spelling beside it, then a close spelling anywhere."""
    try:
        known = _dotted_keys(OmegaConf.to_container(schema, resolve=False))
    except Exception:  # noqa: BLE001 - best effort only
        return ""
    leaf = key.rsplit(".", 1)[-1]
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    leaves: dict[str, list[str]] = {}
    for full in known:
        leaves.setdefault(full.rsplit(".", 1)[-1], []).append(full)
    found = [full for full in leaves.get(leaf, []) if full != key]
    if not found:
        beside = [full.rsplit(".", 1)[-1] for full in known
                  if full.startswith(parent) and "." not in full[len(parent):]]
        close = difflib.get_close_matches(leaf, beside, n=1)
        found = [parent + close[0]] if close else []
    if not found:
        close = difflib.get_close_matches(leaf, list(leaves), n=1)
        found = leaves[close[0]] if close else []
    if not found:
        return ""
    shown = [f"'{full}'" for full in found[:3]]
    return f" (did you mean {shown[0] if len(shown) == 1 else ', '.join(shown[:-1]) + ' or ' + shown[-1]}?)"


def _explain(exc: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ConfigKeyError):
        return ConfigError(
            f"unknown key{_suggest(schema, key)}; remove it or fix the spelling",
            key=key,
            source=source,
        )
    if isinstance(exc, ValidationError):
        return ConfigError(f"wrong type: {first_line}", key=key, source=source)
    return ConfigError(first_line, key=key or None, source=source)


def _merge(base: DictConfig, node: DictConfig, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(base, node)
    except OmegaConfBaseException as exc:
        raise _explain(exc, base, source) from None
    assert isinstance(merged, DictConfig)
    return merged


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(
                f"'{item}' is not an override; write KEY=VALUE, e.g. data.context_length=336",
                source="override",
            )
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse: {str(exc).splitlines()[0]}", source="override") from None


def load_profile(name_or_path: str, overrides: Sequence[str] = ()) -> LoadedProfile:
    """Load a profile by name or path, apply overrides, validate, and resolve it."""
    path = find_profile(name_or_path)
    cfg: DictConfig = OmegaConf.structured(Profile)
    chain = _resolve_chain(path)
    for step_path, node in chain:
        cfg = _merge(cfg, node, str(step_path))
    if OmegaConf.is_missing(cfg, "name"):
        cfg.name = path.stem
    if overrides:
        cfg = _merge(cfg, _parse_overrides(overrides), "override")
    source = str(path) if not overrides else f"{path} (+ overrides)"
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            "required value is missing; set it in the profile or with "
            f"{missing[0]}=VALUE",
            key=missing[0],
            source=source,
        )
    try:
        OmegaConf.resolve(cfg)
    except (InterpolationResolutionError, OmegaConfBaseException) as exc:
        raise _explain(exc, cfg, source) from None
    validate(cfg, source)
    OmegaConf.set_readonly(cfg, True)
    return LoadedProfile(cfg=cfg, path=path, chain=[p for p, _ in chain], overrides=list(overrides))


def validate(cfg: DictConfig, source: str) -> None:
    """Checks the types alone cannot express."""

    def fail(key: str, message: str) -> None:
        raise ConfigError(message, key=key, source=source)

    data, model, pretrain = cfg.data, cfg.model, cfg.pretrain
    parse_freq(data.freq, key=f"{source}: data.freq")
    for key in ("context_length", "prediction_length", "batch_size"):
        if data[key] <= 0:
            fail(f"data.{key}", f"must be a positive integer, got {data[key]}")
    split = data.split
    explicit = split.method.value == "date" and (split.train_end is not None or split.validation_end is not None)
    if explicit:
        if split.train_end is None or split.validation_end is None:
            fail("data.split", "give both train_end and validation_end (ISO timestamps), or neither to cut at "
                               "data.split.train / validation of the lake's span")
        if str(split.train_end) > str(split.validation_end):
            fail("data.split.train_end", f"{split.train_end} is after validation_end {split.validation_end}")
    elif not (0 < split.train < 1 and 0 <= split.validation < 1 and split.train + split.validation < 1):
        fail(
            "data.split",
            f"train ({split.train}) and validation ({split.validation}) must be shares in (0, 1) "
            "that leave room for a test span",
        )
    from ohlcv.calendars import weekdays_rule

    weekdays_rule(data.weekdays)
    if "://" in str(data.lake):  # a URL with credentials in it never reaches a saved profile or a log line
        from ohlcv.lake.store import lake_root

        lake_root(str(data.lake))
    if not 0 <= data.cleaning.max_off_session <= 1:
        fail("data.cleaning.max_off_session", f"must be a share in [0, 1], got {data.cleaning.max_off_session}")
    if not data.columns:
        fail("data.columns", "list at least one OHLCV column")
    unknown = sorted(set(data.columns) - {"open", "high", "low", "close", "volume"})
    if unknown:
        fail("data.columns", f"{unknown} are not OHLCV columns; features go in features.enabled")
    if data.layout.value == "covariates" and not data.targets:
        fail("data.targets", "layout 'covariates' needs at least one target variate")
    if not model.patch_sizes or any(p <= 0 for p in model.patch_sizes):
        fail("model.patch_sizes", f"must be positive integers, got {list(model.patch_sizes)}")
    if model.max_seq_len <= 0:
        fail("model.max_seq_len", "must be positive")
    constraint = model.patch_size_constraint
    if constraint is not None:
        if len(constraint) != 2 or constraint[0] <= 0 or constraint[0] > constraint[1]:
            fail("model.patch_size_constraint", f"must be [min, max] with 0 < min <= max, got {list(constraint)}")
    if model.size == ModelSize.custom:
        for key in ("d_model", "num_layers"):
            if model[key] is None or model[key] <= 0:
                fail(f"model.{key}", "size 'custom' needs a positive d_model and num_layers")
    elif model.d_model is not None or model.num_layers is not None:
        layers, width = MODEL_SIZES[model.size.value]
        fail(
            "model.size",
            f"size '{model.size.value}' fixes {layers} layers / d_model {width}; "
            "set model.size=custom to choose d_model and num_layers",
        )
    if not model.distribution:
        fail("model.distribution", "list at least one mixture component")
    if not (0 <= pretrain.mask_ratio_min <= pretrain.mask_ratio_max < 1):
        fail(
            "pretrain.mask_ratio_min",
            f"need 0 <= mask_ratio_min <= mask_ratio_max < 1, got {pretrain.mask_ratio_min} / {pretrain.mask_ratio_max}",
        )
    if pretrain.warmup_steps > pretrain.max_steps:
        fail("pretrain.warmup_steps", f"{pretrain.warmup_steps} warmup steps exceed max_steps {pretrain.max_steps}")
    finetune = cfg.finetune
    if finetune.warmup_steps > finetune.max_steps:
        fail("finetune.warmup_steps", f"{finetune.warmup_steps} warmup steps exceed max_steps {finetune.max_steps}")
    for key in ("batch_size", "max_steps", "val_every_n_steps", "patience", "patch_size", "num_samples",
                "val_windows"):
        if finetune[key] <= 0:
            fail(f"finetune.{key}", f"must be a positive integer, got {finetune[key]}")
    if finetune.lora.rank <= 0:
        fail("finetune.lora.rank", f"must be a positive integer, got {finetune.lora.rank}")
    if finetune.lora.alpha <= 0:
        fail("finetune.lora.alpha", f"must be positive (the adapters' update is scaled by alpha / rank), "
                                    f"got {finetune.lora.alpha}")
    if not 0 <= finetune.lora.dropout < 1:
        fail("finetune.lora.dropout", f"must be in [0, 1), got {finetune.lora.dropout}")
    if not finetune.lora.target_modules:
        fail("finetune.lora.target_modules", "list at least one module name, e.g. self_attn.q_proj")
    evaluate = cfg.evaluate
    for key in ("windows", "num_samples", "calibration_windows"):
        if evaluate[key] <= 0:
            fail(f"evaluate.{key}", f"must be a positive integer, got {evaluate[key]}")
    from ohlcv.features import Kind

    kinds = [k.value for k in Kind]
    for kind, names in evaluate.baselines.items():  # (the baseline names: checked by evaluate, which owns them)
        if kind not in kinds:
            fail(f"evaluate.baselines.{kind}", f"'{kind}' is not a variate kind; kinds: {', '.join(kinds)}")
    for variate, kind in evaluate.kinds.items():
        if kind not in kinds:
            fail(f"evaluate.kinds.{variate}", f"'{kind}' is not a variate kind; kinds: {', '.join(kinds)}")
    if cfg.backtest.folds <= 0:
        fail("backtest.folds", f"must be a positive integer, got {cfg.backtest.folds}")
    if cfg.backtest.embargo is not None and cfg.backtest.embargo < 0:
        fail("backtest.embargo", f"must be 0 or more bars, got {cfg.backtest.embargo}")
    if cfg.trainer.compile:  # a misspelt backend fails here, not after the dataset and the model are ready
        from torch._dynamo import list_backends

        backends = list_backends(exclude_tags=())
        if str(cfg.trainer.compile_backend) not in backends:
            fail("trainer.compile_backend", f"'{cfg.trainer.compile_backend}' is not a torch.compile backend; "
                                            f"e.g. {', '.join(b for b in ('inductor', 'aot_eager', 'eager', 'cudagraphs') if b in backends)}")
    precision = str(cfg.trainer.precision)
    if precision == "bf16-true":
        fail("trainer.precision", "bf16-true fails inside uni2ts; use auto or bf16-mixed")
    if precision not in _VALID_PRECISIONS:
        fail("trainer.precision", f"'{precision}' is not one of {sorted(_VALID_PRECISIONS)}")


def to_yaml(cfg: DictConfig | dict[str, Any]) -> str:
    container = (
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if isinstance(cfg, (DictConfig, ListConfig))
        else cfg
    )
    return yaml.safe_dump(container, sort_keys=False, default_flow_style=None)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def json_text(data: Any, *, default=str, **options) -> str:
    """JSON any strict parser reads: a number that is not finite (NaN, infinity) is written as null."""
    import json
    import math

    def clean(value):
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return json.dumps(clean(data), default=lambda value: clean(default(value)), allow_nan=False, **options)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> Path:
    """Write a file so that readers see the old content or the new, never half of it.

    ``durable=False`` skips the fsync: still atomic if the process is killed,
    not if the machine loses power (for scratch files that can be redone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_resolved_profile(profile: LoadedProfile | DictConfig, directory: Path, filename: str = "profile.yaml") -> Path:
    """Save the fully resolved profile next to a command's outputs."""
    cfg = profile.cfg if isinstance(profile, LoadedProfile) else profile
    header = "# Fully resolved ohlcv profile: `ohlcv <command> --profile THIS_FILE` reproduces the run.\n"
    return atomic_write_text(Path(directory) / filename, header + to_yaml(cfg))
