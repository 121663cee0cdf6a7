"""The plugin manager and the feature registry.

Plugins are discovered from the ``ohlcv`` entry-point group, built-ins
included (they are ordinary entry points of the ``ohlcv`` distribution).
``OHLCV_LOAD_PLUGINS=name1,name2`` restricts which entry points load (an empty
value loads none); ``OHLCV_TRACE_PLUGINS=1`` prints every hook call to stderr.
A plugin that fails to import is reported and skipped; it never stops the
command.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

import pluggy

from ohlcv import hookspecs
from ohlcv.errors import PluginError
from ohlcv.features import Feature

ENTRY_POINT_GROUP = "ohlcv"


@dataclass(frozen=True)
class PluginInfo:
    name: str  # entry-point name
    module: str
    distribution: str
    version: str


@dataclass(frozen=True)
class RegisteredFeature:
    feature: Feature
    plugin: PluginInfo


class DuplicateFeatureError(PluginError):
    """Two plugins registered a feature under the same name."""


class FeatureRegistry:
    """Every registered feature by name; a second feature of the same name is an error."""

    def __init__(self) -> None:
        self._features: dict[str, RegisteredFeature] = {}

    def add(self, feature: Feature, plugin: PluginInfo) -> None:
        if not isinstance(feature, Feature):
            raise PluginError(f"plugin '{plugin.name}' registered {feature!r}, which is not an ohlcv Feature")
        existing = self._features.get(feature.name)
        if existing is not None:
            raise DuplicateFeatureError(
                f"feature '{feature.name}' is registered by both plugin '{existing.plugin.name}' "
                f"and plugin '{plugin.name}'; uninstall one or narrow OHLCV_LOAD_PLUGINS"
            )
        self._features[feature.name] = RegisteredFeature(feature, plugin)

    def __contains__(self, name: str) -> bool:
        return name in self._features

    def __iter__(self):
        return iter(sorted(self._features.values(), key=lambda r: (r.feature.family.value, r.feature.name)))

    def __len__(self) -> int:
        return len(self._features)

    def get(self, name: str) -> Feature:
        try:
            return self._features[name].feature
        except KeyError:
            known = ", ".join(sorted(self._features)) or "none are registered"
            raise PluginError(
                f"unknown feature '{name}' in features.enabled (registered: {known}); "
                "see `ohlcv plugins list`"
            ) from None

    def plugin_of(self, name: str) -> PluginInfo:
        return self._features[name].plugin


class Plugins:
    """A loaded plugin manager plus the features its plugins registered."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo], warnings: list[str]):
        self.pm = pm
        self.infos = infos
        self.warnings = warnings
        self.features = FeatureRegistry()
        self._collect_features()

    def _collect_features(self) -> None:
        for impl in self.pm.hook.ohlcv_register_features.get_hookimpls():
            name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            info = self.infos.get(name) or PluginInfo(name, getattr(impl.plugin, "__name__", name), "?", "?")

            def register(*features: Feature, _info: PluginInfo = info) -> None:
                for feature in features:
                    self.features.add(feature, _info)

            try:
                impl.function(register=register)
            except DuplicateFeatureError:
                raise
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the tool
                self.warnings.append(f"plugin '{name}' failed to register its features and was skipped: {exc}")

    def describe(self) -> list[dict[str, Any]]:
        """One entry per registered feature, as ``ohlcv plugins list`` shows it (its table and ``--json``):
        name, family, outputs and their kinds, warm-up bars, plugin, distribution and version. A feature
        whose declaration raises is listed with the error instead of its outputs."""
        entries = []
        for entry in self.features:
            feature, info = entry.feature, entry.plugin
            try:
                outputs = {name: kind.value for name, kind in feature.output_kinds().items()}
                warmup, error = feature.warmup_bars(), None
            except Exception as exc:  # noqa: BLE001 - show, don't crash
                outputs, warmup, error = {}, None, str(exc)
            entries.append({"feature": feature.name, "family": feature.family.value, "outputs": outputs,
                            "warmup_bars": warmup, "error": error, "plugin": info.name,
                            "distribution": info.distribution, "version": info.version})
        return entries

    def versions(self) -> dict[str, str]:
        """``{plugin name: "distribution version"}``: recorded with every output."""
        return {name: f"{info.distribution} {info.version}" for name, info in sorted(self.infos.items())}


def allowed_plugins() -> set[str] | None:
    raw = os.environ.get("OHLCV_LOAD_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _entry_points() -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


_LOADED: dict[tuple, Plugins] = {}


def load_plugins(extra: Iterable[tuple[str, Any]] = ()) -> Plugins:
    """Every plugin of the entry-point group (and ``extra`` objects, for tests), loaded once per process:
    a later call with the same installed plugins and ``OHLCV_LOAD_PLUGINS`` returns the same registry."""
    extra = list(extra)
    key = (tuple(sorted((ep.name, ep.value) for ep in _entry_points())), os.environ.get("OHLCV_LOAD_PLUGINS"),
           os.environ.get("OHLCV_TRACE_PLUGINS"))
    if not extra and key in _LOADED:
        return _LOADED[key]
    plugins = _load_plugins(extra)
    if not extra:
        _LOADED[key] = plugins
    return plugins


def _load_plugins(extra: list[tuple[str, Any]]) -> Plugins:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("OHLCV_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda message: sys.stderr.write(f"[ohlcv plugins] {message}"))
        pm.enable_tracing()
    allowed = allowed_plugins()
    infos: dict[str, PluginInfo] = {}
    warnings: list[str] = []
    seen: set[str] = set()
    for ep in _entry_points():
        if ep.name in seen or (allowed is not None and ep.name not in allowed):
            continue
        seen.add(ep.name)
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else "?",
            version=dist.version if dist is not None else "?",
        )
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the tool
            warnings.append(f"plugin '{ep.name}' ({ep.value}) failed to load and was skipped: {exc}")
            continue
        infos[ep.name] = info
    for name, plugin in extra:
        pm.register(plugin, name=name)
        infos[name] = PluginInfo(name, getattr(plugin, "__name__", name), "(in process)", "-")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; hook names must match ohlcv's hookspecs (see docs/plugin-hooks.md)") from None
    return Plugins(pm, infos, warnings)


def enabled_features(cfg, registry: FeatureRegistry) -> list[tuple[Feature, dict[str, Any], list[str]]]:
    """The profile's ``features.enabled``, resolved: (feature, parameters, output names), in order.

    Every problem is a :class:`ConfigError` naming the profile key: an unknown
    feature or parameter, a feature that needs a column the lake lacks, or one
    whose outputs would overwrite a variate.
    """
    from ohlcv.errors import ConfigError
    from ohlcv.features import OHLCV_COLUMNS

    names = list(cfg.data.columns)
    resolved = []
    for name in cfg.features.enabled:
        try:
            feature = registry.get(name)
            params = feature.resolve_params(cfg.features.params.get(name))
            outputs = feature.output_names(params)
        except PluginError as exc:
            raise ConfigError(str(exc), key="features.enabled") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"feature '{name}': {exc}", key=f"features.params.{name}") from None
        missing = [c for c in feature.inputs if c not in OHLCV_COLUMNS]
        if missing:
            raise ConfigError(f"feature '{name}' needs columns {missing} that the lake does not have", key="features.enabled")
        if "volume" in feature.inputs and "volume" not in cfg.data.columns:
            continue  # instruments without volume (FX spot, indices): see volume_free_skips()
        clash = sorted(set(outputs) & set(names))
        if clash:
            raise ConfigError(f"feature '{name}' would overwrite variates {clash}", key="features.enabled")
        names.extend(outputs)
        resolved.append((feature, params, outputs))
    return resolved


def volume_free_skips(cfg) -> list[str]:
    """Enabled features left out because the profile's data.columns leave out volume."""
    if "volume" in cfg.data.columns:
        return []
    registry = load_plugins().features
    skipped = []
    for name in cfg.features.enabled:
        try:
            feature = registry.get(name)
        except PluginError:
            continue
        if "volume" in feature.inputs:
            skipped.append(name)
    return skipped
