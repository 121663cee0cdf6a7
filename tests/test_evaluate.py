"""`ohlcv evaluate`: a tiny pre-trained model against the baselines on the test span, with outputs."""

from __future__ import annotations

import csv
import json

import pytest

from ohlcv.evaluate.windows import statsforecast_available
from tests.test_pretrain import TINY, pretrain_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    return root, pretrain_tiny(root, asset_classes=["crypto", "fx"], bars=900, seed=4)


def test_evaluate_scores_the_model_and_every_baseline_and_writes_the_report(trained, cli):
    root, model = trained
    out = root / "eval"
    result = cli("evaluate", "--profile", "hourly", "--model", str(model), "--zero-shot", str(model),
                 "--dataset", str(root / "ds"), "--out", str(out), *TINY,
                 "evaluate.windows=3", "evaluate.num_samples=16", "evaluate.plot_assets=2",
                 "evaluate.variates=[close,log_return_1]")
    assert result.exit_code == 0, result.stderr + result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"model", "zero_shot", "naive", "seasonal_naive", "drift"} | ({"autoets"} if statsforecast_available() else set())
    assert set(metrics["aggregate"]) == expected
    for model in metrics["aggregate"].values():
        assert set(model) == {"close", "log_return_1"}  # aggregated per variate, never across variates
        assert {"crps", "mase", "msis", "mae", "mse", "coverage_50", "coverage_80", "coverage_95",
                "directional_accuracy"} <= set(model["close"])
    assert metrics["relative_to_naive"]["naive"]["close"]["crps"] == pytest.approx(1.0)
    assert metrics["settings"]["units"].startswith("prices")
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected) * 2 * 4  # models x variates x assets
    if not statsforecast_available():
        assert "AutoETS skipped" in (out / "report.md").read_text()
    report = (out / "report.md").read_text()
    assert "naive random walk" in report and "## close" in report
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "relative_per_asset.png" in plots and sum(p.startswith("forecast_") for p in plots) == 2
    assert "CRPS/naive" in result.stdout


def test_evaluate_errors_are_one_line(trained, cli, tmp_path):
    root, _ = trained
    missing = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path / "nothing"), "--dataset", str(root / "ds"))
    assert missing.exit_code == 1 and "no such folder" in missing.stderr
    not_a_model = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path), "--dataset", str(root / "ds"))
    assert not_a_model.exit_code == 1 and "no config.json" in not_a_model.stderr
    # the hub path is real code; offline mode makes its failure immediate here (there is no network anyway)
    hub = cli("evaluate", "--profile", "hourly", "--model", "Salesforce/moirai-does-not-exist",
              "--dataset", str(root / "ds"), "--out", str(tmp_path / "e"), env={"HF_HUB_OFFLINE": "1"})
    assert hub.exit_code == 1 and "cannot load 'Salesforce/moirai-does-not-exist'" in hub.stderr
