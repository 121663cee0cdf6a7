"""The CLI's contract: one-line errors with exit code 2, fast start-up, no heavy imports."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_ohlcv_subprocess


def test_misspelled_profile_key_is_one_line_exit_2(cli, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("extends: hourly\nmodel:\n  patch_size: [16]\n")
    result = cli("budget", "--profile", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "model.patch_size" in result.stderr and str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_profile_is_one_line_exit_2(cli):
    result = cli("budget", "--profile", "no-such-profile")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no-such-profile" in result.stderr


def test_wrong_typed_override_is_one_line_exit_2(cli):
    result = cli("budget", "--profile", "hourly", "data.context_length=a-week")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "data.context_length" in result.stderr and "override" in result.stderr


@pytest.mark.parametrize("command", [["build"], ["pretrain"], ["finetune", "--from", "m"], ["evaluate", "--model", "m"],
                                     ["backtest", "--from", "m"], ["check"]])
def test_every_command_validates_its_profile(cli, command):
    bad = cli(*command, "--profile", "hourly", "trainer.precision=bf16-true")
    assert bad.exit_code == 2 and "trainer.precision" in bad.stderr


def test_build_options_are_profile_overrides(cli, tmp_path):
    result = cli("build", "--profile", "hourly", "--lake", str(tmp_path / "lake"), "data.batch_size=zero")
    assert result.exit_code == 2 and "data.batch_size" in result.stderr


def test_debug_variable_shows_the_traceback():
    quiet = run_ohlcv_subprocess("budget", "--profile", "nope")
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    loud = run_ohlcv_subprocess("budget", "--profile", "nope", env={"OHLCV_DEBUG": "1"})
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "ConfigError" in loud.stderr


_IMPORT_PROBE = """
import sys
from ohlcv.cli import main
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "lightning", "uni2ts", "datasets", "jax", "pandas", "polars", "ray", "obstore")
               if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
print("CODE=" + str(code))
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["budget", "--profile", "hourly"], ["budget", "--profile", "hourly", "--json"], ["profiles", "list"]],
)
def test_start_up_path_imports_no_heavy_library(args):
    result = run_ohlcv_subprocess(python_code=_IMPORT_PROBE.format(args=args))
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith(("HEAVY=", "CODE=")))
    assert lines["CODE"] in ("0", "None"), result.stderr
    assert lines["HEAVY"] == "", f"{args} imported {lines['HEAVY']}"


def test_console_script_runs_budget_json():
    result = run_ohlcv_subprocess("budget", "--profile", "hourly", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_version(cli):
    from ohlcv import __version__

    result = cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_build_merge_is_a_sub_command_with_its_own_help_and_options(cli, tmp_path):
    from ohlcv.lake.sample import generate_sample_lake

    help_text = cli("build", "merge", "--help")
    assert help_text.exit_code == 0 and "ohlcv build merge [OPTIONS]" in help_text.stdout
    assert "merge" in cli("build", "--help").stdout  # listed by the group
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=400,
                                calendars={})
    common = ["--lake", str(lake.root), "-q", "features.enabled=[log_return]", "data.cleaning.min_length=100"]
    for k in (1, 2):  # build options may come before or after the overrides
        built = cli("build", "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}"), *common)
        assert built.exit_code == 0, built.stderr
    merged = cli("build", "merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "all"))
    assert merged.exit_code == 0 and "merged 2 shards: 2 series" in merged.stdout
    assert cli("build", "merge", str(tmp_path / "s1"), "--out", str(tmp_path / "x"), "--force").exit_code == 2
    refused = cli("build", "data.freq=1h", "merge", str(tmp_path / "s1"), "--out", str(tmp_path / "y"))
    assert refused.exit_code == 2 and "overrides belong to `ohlcv build`" in refused.stderr


@pytest.mark.parametrize("command", ["evaluate", "build", "pretrain", "budget"])
def test_help_shows_boolean_options_as_flags(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout and "--help" in result.stdout


def test_the_demo_cache_is_one_per_datasets_major_version(cli):
    from importlib import metadata

    from ohlcv.config import load_profile

    major = metadata.version("datasets").split(".")[0]
    data = load_profile("demo").cfg.data
    assert str(data.dataset) == f"~/.cache/ohlcv/demo-ds{major}/dataset"
    assert str(data.lake) == f"~/.cache/ohlcv/demo-ds{major}/lake"


def test_check_takes_the_dataset_as_an_option_like_every_command(cli, tmp_path):
    missing = tmp_path / "no-such-dataset"
    as_option, as_positional = cli("check", "--dataset", str(missing)), cli("check", str(missing))
    assert as_option.exit_code == as_positional.exit_code == 1
    assert as_option.stderr == as_positional.stderr and f"{missing}: no manifest.json" in as_option.stderr
    both = cli("check", str(missing), "--dataset", str(tmp_path / "other"))
    assert both.exit_code == 2 and "two datasets" in both.stderr
