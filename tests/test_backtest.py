"""`ohlcv backtest`: walk-forward folds that end with the test span; fine-tuning never sees a fold's bars."""

from __future__ import annotations

import json

import pytest

from ohlcv.dataset.read import read_timestamps
from ohlcv.evaluate.backtest import fold_dataset
from tests.conftest import FT, TINY, pretrain_tiny

pytestmark = pytest.mark.slow  # every test here trains or forecasts with a model

SMALL = ["evaluate.windows=2", "evaluate.num_samples=8", "evaluate.variates=[close,log_return_1]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bt")
    return root, pretrain_tiny(root, asset_classes=["crypto", "fx"], bars=1000, seed=8)


def test_a_fold_view_ends_fine_tuning_data_an_embargo_before_the_fold(trained, tmp_path):
    root, _ = trained
    manifest = json.loads((root / "ds" / "manifest.json").read_text())
    view = fold_dataset(root / "ds", manifest, tmp_path / "view", end_shift=-48 - 24)
    moved = json.loads((view / "manifest.json").read_text())
    for before, after in zip(manifest["items"], moved["items"]):
        fold_origin = before["validation_end"] - 48  # the fold starts 48 bars before the test span
        assert after["validation_end"] == fold_origin - 24  # the last bar fine-tuning sees is 24 bars earlier
        assert after["train_end"] == before["train_end"] - 72
    assert (view / "hf").resolve() == (root / "ds" / "hf").resolve()


def test_backtest_without_refit_evaluates_every_fold_and_summarizes(trained, cli):
    root, model = trained
    out = root / "bt"
    result = cli("backtest", "--profile", "hourly", "--from", str(model), "--folds", "3", "--dataset", str(root / "ds"),
                 "--out", str(out), *TINY, *SMALL)
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((out / "backtest.json").read_text())
    # folds cut at instants common to every series: crypto (24/7) moves back more bars than FX (weekdays)
    shifts = [f["shift"] for f in summary["folds"]]
    assert shifts[-1] == 0 and all(isinstance(s, dict) for s in shifts[:-1])
    stamps = read_timestamps(root / "ds", json.loads((root / "ds" / "manifest.json").read_text()))
    items = {i["item_id"]: i for i in json.loads((root / "ds" / "manifest.json").read_text())["items"]}
    for shift in shifts[:-1]:
        firsts = [stamps[i][items[i]["validation_end"] + s] for i, s in shift.items()]
        befores = [stamps[i][items[i]["validation_end"] + s - 1] for i, s in shift.items()]
        # one instant T with every series' fold starting at its first bar at or after T
        assert max(befores) < min(firsts) and all(s < 0 for s in shift.values())
    origins = [f["span"]["first_origin"] for f in summary["folds"]]
    assert origins == sorted(origins) and len(set(origins)) == 3
    last = json.loads((out / "fold3" / "evaluate" / "metrics.json").read_text())
    assert summary["folds"][-1]["relative"] == last["relative"]  # the last fold is the plain evaluation's test span
    close = summary["overall"]["close"]
    assert close["yardstick"] == "random_walk" and len(close["fold_dm_p"]) == 3
    assert close["forecasters"]["model"]["crps_relative"]["sd"] >= 0
    assert 0 <= close["pooled_dm"]["crps"]["p_value"] <= 1 and close["pooled_dm"]["crps"]["n"] == 6  # 3 folds x 2
    assert "model was trained on this dataset" in " ".join(summary["notes"])
    report = (out / "report.md").read_text()
    assert "Walk-forward backtest" in report and "(fold1/evaluate/report.md)" in report and "pooled" in report
    assert (out / "plots" / "folds.png").is_file()
    assert "model vs random_walk per fold" in result.stdout


def test_backtest_with_refit_fine_tunes_before_each_fold(trained, cli):
    root, model = trained
    out = root / "bt-ft"
    result = cli("backtest", "--profile", "hourly", "--from", str(model), "--folds", "2", "--refit", "finetune",
                 "--dataset", str(root / "ds"), "--out", str(out), "--json", *TINY, *FT, *SMALL,
                 "finetune.max_steps=2", "finetune.patch_size=16")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert summary["refit"] == "finetune"
    for fold in summary["folds"]:
        assert fold["finetune"]["steps"] is not None and (out / f"fold{fold['fold']}" / "finetune" / "model").is_dir()
        assert fold["model"].endswith("model") and str(out) in fold["model"]


def test_too_many_folds_is_one_line(trained, cli):
    root, model = trained
    result = cli("backtest", "--profile", "hourly", "--from", str(model), "--folds", "40", "--dataset", str(root / "ds"),
                 *TINY, *SMALL)
    assert result.exit_code == 1 and "use fewer folds" in result.stderr
