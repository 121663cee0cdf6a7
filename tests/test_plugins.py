"""The plugin registry: entry points, the load filter, duplicates, and broken plugins."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path

import pytest

from ohlcv.errors import PluginError
from ohlcv.features import Feature
from ohlcv.hookspecs import hookimpl
from ohlcv.plugins import load_plugins
from tests.conftest import run_ohlcv_subprocess


def _plugin_module(name: str, *features: Feature) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def ohlcv_register_features(register):
        register(*features)

    module.ohlcv_register_features = ohlcv_register_features
    return module


def _feature(name: str) -> Feature:
    import polars as pl

    return Feature(
        name=name,
        family="indicator",
        inputs=("close",),
        outputs=[name],
        warmup=0,
        exprs=lambda p: [pl.col("close").alias(name)],
    )


def test_builtin_plugins_are_registered_through_the_entry_point_group():
    plugins = load_plugins()
    assert "returns" in plugins.infos
    assert plugins.infos["returns"].distribution == "ohlcv"
    assert "log_return" in plugins.features
    assert plugins.features.plugin_of("log_return").name == "returns"


def test_load_filter_restricts_which_plugins_load(monkeypatch):
    monkeypatch.setenv("OHLCV_LOAD_PLUGINS", "")
    assert len(load_plugins().features) == 0
    monkeypatch.setenv("OHLCV_LOAD_PLUGINS", "returns")
    assert "log_return" in load_plugins().features


def test_duplicate_feature_names_are_rejected_naming_both_plugins():
    extra = [("copycat", _plugin_module("copycat", _feature("log_return")))]
    with pytest.raises(PluginError, match="'log_return' is registered by both plugin 'returns' and plugin 'copycat'"):
        load_plugins(extra=extra)


def test_a_plugin_that_fails_to_register_is_skipped_with_a_warning():
    broken = types.ModuleType("broken")

    @hookimpl
    def ohlcv_register_features(register):
        raise RuntimeError("boom")

    broken.ohlcv_register_features = ohlcv_register_features
    plugins = load_plugins(extra=[("broken", broken)])
    assert "log_return" in plugins.features
    assert any("broken" in w and "boom" in w for w in plugins.warnings)


def test_misspelled_hook_is_caught_at_load_time():
    typo = types.ModuleType("typo")

    @hookimpl
    def ohlcv_register_feature(register):  # missing the s
        pass

    typo.ohlcv_register_feature = ohlcv_register_feature
    with pytest.raises(PluginError, match="ohlcv_register_feature"):
        load_plugins(extra=[("typo", typo)])


def test_feature_contract_is_checked_at_registration():
    with pytest.raises(PluginError, match="exactly one of exprs= and frame="):
        Feature(name="x", family="indicator", inputs=(), outputs=["x"], warmup=0)
    with pytest.raises(PluginError, match="family 'vibes'"):
        Feature(name="x", family="vibes", inputs=(), outputs=["x"], warmup=0, exprs=lambda p: [])
    with pytest.raises(PluginError, match="no parameter 'window'"):
        load_plugins().features.get("log_return").output_names({"window": 3})


def test_builtin_returns_are_causal_and_null_in_warm_up():
    import math

    import polars as pl

    frame = pl.DataFrame({"close": [100.0, 110.0, 99.0, 99.0]})
    feature = load_plugins().features.get("log_return")
    out = feature.compute(frame, {"horizons": [1, 2]})
    assert out.columns == ["log_return_1", "log_return_2"]
    assert out["log_return_1"][0] is None and out["log_return_2"][1] is None
    assert out["log_return_1"][1] == pytest.approx(math.log(1.1))
    assert out["log_return_2"][3] == pytest.approx(math.log(0.9))
    assert feature.warmup_bars({"horizons": [1, 2]}) == 2


def _install_fake_distribution(site: Path) -> None:
    """A real distribution on sys.path: dist-info metadata with an `ohlcv` entry point."""
    (site / "acme_features.py").write_text(
        textwrap.dedent(
            """
            import os
            import polars as pl
            from ohlcv.features import Feature
            from ohlcv.hookspecs import hookimpl

            @hookimpl
            def ohlcv_register_features(register):
                marker = os.environ.get("ACME_MARKER")
                if marker:
                    open(marker, "w").write("called")
                register(Feature(
                    name="acme_spread", family="indicator", inputs=("high", "low"),
                    outputs=["acme_spread"], warmup=0,
                    exprs=lambda p: [(pl.col("high") - pl.col("low")).alias("acme_spread")],
                ))
            """
        )
    )
    info = site / "acme_features-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-features\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[ohlcv]\nacme = acme_features\n")
    (info / "RECORD").write_text("")


def test_third_party_plugin_from_entry_point_shows_in_plugins_list(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site)
    marker = tmp_path / "called.txt"
    env = {"PYTHONPATH": str(site), "ACME_MARKER": str(marker)}
    result = run_ohlcv_subprocess("plugins", "list", env=env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "acme_spread" in line)
    assert "indicator" in line and "acme-features 1.2.3" in line and "acme" in line
    assert marker.read_text() == "called"
    # the built-ins are still there, and the load filter can exclude the newcomer
    assert "log_return" in result.stdout
    filtered = run_ohlcv_subprocess("plugins", "list", env={**env, "OHLCV_LOAD_PLUGINS": "returns"})
    assert "acme_spread" not in filtered.stdout and "log_return" in filtered.stdout


def test_a_plugin_that_fails_to_import_does_not_stop_the_cli(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    info = site / "ghost-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ghost\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ohlcv]\nghost = ghost_module_that_does_not_exist\n")
    result = run_ohlcv_subprocess("plugins", "list", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0
    assert "ghost" in result.stderr and "skipped" in result.stderr
    assert "log_return" in result.stdout
