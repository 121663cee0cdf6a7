"""`--json` on every command that prints a table: the output parses, and its numbers are the table's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ohlcv.lake.sample import generate_sample_lake
from tests.conftest import run_ohlcv_subprocess


def _rows(table: str) -> list[list[str]]:
    """The cells of a Rich table's body rows (a row that wraps gives several lines: fine for lookups)."""
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in table.splitlines()
            if line.startswith("│")]


def _column(table: str, index: int) -> dict[str, str]:
    """Each row's whole cell in column ``index``, its wrapped lines joined, keyed by the row's first cell."""
    cells: dict[str, list[str]] = {}
    name = ""
    for row in _rows(table):
        name = row[0] or name
        if len(row) > index and row[index]:
            cells.setdefault(name, []).append(row[index])
    return {key: " ".join(parts) for key, parts in cells.items()}


def test_profiles_list_json_is_the_table(cli):
    table, as_json = cli("profiles", "list"), cli("profiles", "list", "--json")
    assert table.exit_code == as_json.exit_code == 0, as_json.stderr
    profiles = json.loads(as_json.stdout)
    assert {p["name"] for p in profiles} >= {"hourly", "daily", "minute", "demo"}
    names = [row[0] for row in _rows(table.stdout) if row[0]]
    assert names == [p["name"] for p in profiles]
    descriptions = _column(table.stdout, 3)
    assert all(descriptions[p["name"]] == " ".join(p["description"].split()) for p in profiles)


def test_plugins_list_json_is_the_table(cli):
    table, as_json = cli("plugins", "list"), cli("plugins", "list", "--json")
    assert table.exit_code == as_json.exit_code == 0, as_json.stderr
    features = json.loads(as_json.stdout)
    by_name = {row[0]: row for row in _rows(table.stdout) if row[0]}
    assert sorted(by_name) == sorted(f["feature"] for f in features)
    for feature in features:
        row = by_name[feature["feature"]]
        assert row[1] == feature["family"] and row[3] == str(feature["warmup_bars"]) and row[4] == feature["plugin"]
        assert all(name in table.stdout for name in feature["outputs"])


def test_plugins_check_json_is_the_table(cli):
    table = cli("plugins", "check", "drawdown", "rsi")
    as_json = cli("plugins", "check", "drawdown", "rsi", "--json")
    assert table.exit_code == as_json.exit_code == 0, as_json.stderr
    checks = json.loads(as_json.stdout)
    assert [c["feature"] for c in checks] == ["drawdown", "rsi"] and all(c["ok"] for c in checks)  # as named
    rows = {row[0]: row for row in _rows(table.stdout) if row[0]}
    details = _column(table.stdout, 5)
    assert all(rows[c["feature"]][3] == "pass" and details[c["feature"]] == " ".join(c["detail"].split())
               for c in checks)
    assert "2 passed, 0 failed" in table.stdout


def test_build_json_has_the_cleaning_table_and_the_check(tmp_path, cli):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto", "equity"], bars=800,
                                dirt=["duplicates", "too_short"], seed=4)
    options = ["build", "--lake", str(lake.root), "--out", str(tmp_path / "ds"), "--force", "data.batch_size=2",
               "features.enabled=[log_return]", "features.params.log_return.horizons=[1]"]
    as_json = cli(*options, "--json", "--check")
    assert as_json.exit_code == 0, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["series"] == 3 and summary["check"]["ok"] is True
    assert [q["item_id"] for q in summary["quarantined"]] == ["crypto/CRY001"]
    table = cli(*options)
    assert table.exit_code == 0, table.stderr
    counts = {row[0]: row[1:3] for row in _rows(table.stdout) if row[0]}
    assert {r["rule"]: [f"{r['count']:,}", str(r["symbols"])] for r in summary["cleaning"]} == counts
    assert f"{summary['bars']:,} bars" in table.stdout


@pytest.mark.slow
def test_pretrain_demo_json_and_no_library_messages(tmp_path):
    """`ohlcv pretrain --profile demo` (a few steps) says none of the libraries' messages, and --json parses."""
    result = run_ohlcv_subprocess("pretrain", "--profile", "demo", "--json", "pretrain.max_steps=3",
                                  "pretrain.checkpoint_every_n_steps=3", "pretrain.warmup_steps=1", cwd=tmp_path,
                                  env={"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                                       "TTY_COMPATIBLE": "1"},  # Rich draws its progress as on a terminal
                                  timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout stays plain JSON even so
    assert summary["steps"] == 3 and (tmp_path / summary["model_dir"]).is_dir()
    stderr = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)  # the terminal's control codes
    printed = result.stdout + stderr
    totals = {int(total) for total in re.findall(r"\b\d+/(-?\d+) steps", printed)}
    assert totals == {3}, printed  # the step display was drawn, its total max_steps, never negative
    for message in ("💡 Tip", "litlogger", "LeafSpec", "no `val_dataloader`", "`weights_only` was not set",
                    "GPU available", "TPU available", "HPU available", "`Trainer.fit` stopped",
                    "Loading weights from local directory"):
        assert message not in printed, printed
    assert not re.search(r"\d+/-\d", printed) and "Epoch" not in printed
    assert "pre-training profile demo" in stderr  # what a person reads still shows, on stderr


def test_json_the_tool_writes_has_no_nan_or_infinity():
    from ohlcv.config.loader import json_text

    text = json_text({"p": float("nan"), "n": [1, float("inf"), np.float32("nan"), np.float64(2.5)]}, default=float)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written")) == {"p": None, "n": [1, None, None, 2.5]}


def test_a_build_in_a_log_writes_nothing_to_stderr(tmp_path):
    """Piped (not a terminal), the build's progress display is off: not even the blank line a live display leaves."""
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=800, seed=4)
    result = run_ohlcv_subprocess("build", "--lake", str(lake.root), "--out", str(tmp_path / "ds"),
                                  "features.enabled=[log_return]", "features.params.log_return.horizons=[1]",
                                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and (tmp_path / "ds").is_dir()
