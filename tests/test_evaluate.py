"""`ohlcv evaluate`: a tiny pre-trained model against the baselines of each variate's kind, on the same windows."""

from __future__ import annotations

import csv
import json
import types

import pytest

from ohlcv.config import load_profile
from ohlcv.errors import ConfigError
from ohlcv.evaluate.baselines import statsforecast_available
from ohlcv.evaluate.run import check_model_fits, evaluate
from tests.conftest import TINY, pretrain_tiny

pytestmark = pytest.mark.slow  # every test here trains or forecasts with a model

SMALL = ["evaluate.windows=3", "evaluate.num_samples=16", "evaluate.variates=[close,log_return_1]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    return root, pretrain_tiny(root, asset_classes=["crypto", "fx"], bars=900, seed=4)


def test_evaluate_scores_each_variate_against_the_baselines_of_its_kind_and_writes_the_report(trained, cli):
    root, model = trained
    out = root / "eval"
    result = cli("evaluate", "--profile", "hourly", "--model", str(model), "--zero-shot", str(model),
                 "--dataset", str(root / "ds"), "--out", str(out), *TINY, *SMALL, "evaluate.plot_assets=2")
    assert result.exit_code == 0, result.stderr + result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    prices = {"random_walk", "drift", "seasonal_naive"} | ({"autoets"} if statsforecast_available() else set())
    returns = {"zero_student_t", "zero_normal", "historical_mean"}
    assert set(metrics["aggregate"]) == {"model", "zero_shot"} | prices | returns
    assert set(metrics["aggregate"]["random_walk"]) == {"close"}  # baselines only where their kind is scored
    assert set(metrics["aggregate"]["zero_normal"]) == {"log_return_1"}
    assert metrics["variates"]["close"]["kind"] == "price" and metrics["variates"]["close"]["yardstick"] == "random_walk"
    assert metrics["variates"]["log_return_1"]["kind"] == "return"
    assert metrics["variates"]["log_return_1"]["yardstick"] == "zero_student_t"
    assert metrics["settings"]["units"]["close"].startswith("price") and "return" in metrics["settings"]["units"]["log_return_1"]
    assert "weighted quantile loss" in metrics["settings"]["crps"]
    assert metrics["relative"]["random_walk"]["close"]["crps"] == pytest.approx(1.0)
    for variate in ("close", "log_return_1"):
        yard = metrics["variates"][variate]["yardstick"]
        test = metrics["significance"]["model"][variate][yard]
        assert 0 <= test["crps"]["p_value"] <= 1 and 0 <= test["abs_error"]["p_value"] <= 1
        assert test["crps"]["n"] == 3  # 3 origins shared by the 4 series, whatever their calendars
        assert len(metrics["error_by_step"]["model"][variate]) == 24
        assert sum(metrics["calibration"]["model"][variate]["pit_histogram"]) == pytest.approx(1.0)
    # every forecaster on the same windows: same count per asset
    per_asset = metrics["per_asset"]
    assert len({(r["item_id"], r["variate"], r["windows"]) for r in per_asset}) == 8
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r for r in rows if r["item_id"] == "ALL" and r["model"] == "model" and r["variate"] == "close"]
    assert all(r["mae"] == "" for r in rows if r["item_id"] == "ALL")  # no MAE averaged over assets
    report = (out / "report.md").read_text()
    assert "The one to beat: **random_walk**" in report and "The one to beat: **zero_student_t**" in report
    assert "mean weighted quantile loss" in report and "crypto/CRY000" in report and "DM p CRPS" in report
    assert "the random walk on CRPS" in report or "random walk on CRPS, p =" in report
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert {"relative_per_asset.png", "error_by_step_close.png", "calibration_log_return_1.png"} <= set(plots)
    assert sum(p.startswith("forecast_") for p in plots) == 2
    assert "the one to beat: random_walk" in result.stdout and "DM p CRPS" in result.stdout

    as_json = cli("evaluate", "--profile", "hourly", "--model", str(model), "--dataset", str(root / "ds"),
                  "--out", str(root / "eval-json"), "--json", *TINY, *SMALL)
    assert as_json.exit_code == 0, as_json.stderr
    printed = json.loads(as_json.stdout)
    assert printed["variates"]["close"]["yardstick"] == "random_walk"
    for name in ("model", "random_walk"):  # the same numbers as the table, which printed them to 4 digits
        assert f"{printed['aggregate'][name]['close']['crps']:.4g}" in result.stdout


def test_adding_a_second_model_changes_no_number_of_the_first(trained):
    root, model = trained
    loaded = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, *SMALL])
    alone = evaluate(loaded, str(model), dataset=root / "ds", out=root / "alone", write=False)
    both = evaluate(loaded, str(model), dataset=root / "ds", out=root / "both", zero_shot=str(model), write=False)
    rows = lambda result: {(r["model"], r["item_id"], r["variate"]): r for r in result.per_asset  # noqa: E731
                           if r["model"] != "zero_shot"}
    assert rows(alone) == rows(both)
    assert alone.significance["model"] == both.significance["model"]


def test_a_model_trained_with_other_variates_or_context_is_refused(trained, cli, tmp_path):
    root, model = trained
    loaded = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY])
    module = types.SimpleNamespace(patch_sizes=[16, 32, 64])
    manifest = json.loads((root / "ds" / "manifest.json").read_text())
    # a pre-trained model saw crops of every length: another context is a note; a fine-tuned one is refused
    shorter = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, "data.context_length=144"])
    notes: list[str] = []
    check_model_fits(str(model), module, shorter.cfg, manifest, notes)
    assert "pre-trained with context 168; evaluated with 144" in notes[0]
    run = model.parent
    summary = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(summary, command="finetune")))
    try:
        result = cli("evaluate", "--profile", "hourly", "--model", str(model), "--dataset", str(root / "ds"),
                     "--out", str(tmp_path / "e"), *TINY, *SMALL, "data.context_length=144", "finetune.patch_size=32")
    finally:
        (run / "run.json").write_text(json.dumps(summary))
    assert result.exit_code == 2
    assert "context: trained 168, evaluated 144" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    other = dict(manifest, variates=manifest["variates"] + ["rsi"])
    with pytest.raises(ConfigError, match=r"variates: trained on 6, the dataset has 7 \(extra \['rsi'\], missing \[\]\)"):
        check_model_fits(str(model), module, loaded.cfg, other, [])
    notes = []
    lenient = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, "evaluate.allow_mismatch=true"])
    check_model_fits(str(model), module, lenient.cfg, other, notes)
    assert "evaluated anyway" in notes[0]


def test_evaluate_errors_are_one_line(trained, cli, tmp_path):
    root, _ = trained
    missing = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path / "nothing"), "--dataset", str(root / "ds"))
    assert missing.exit_code == 2 and "--model" in missing.stderr and "no such file or folder" in missing.stderr
    not_a_model = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path), "--dataset", str(root / "ds"))
    assert not_a_model.exit_code == 2 and "no config.json" in not_a_model.stderr
    # the hub path is real code; offline mode makes its failure immediate here (there is no network anyway)
    hub = cli("evaluate", "--profile", "hourly", "--model", "Salesforce/moirai-does-not-exist",
              "--dataset", str(root / "ds"), "--out", str(tmp_path / "e"), env={"HF_HUB_OFFLINE": "1"})
    assert hub.exit_code == 1 and "hf download Salesforce/moirai-does-not-exist" in hub.stderr
    bad = cli("evaluate", "--profile", "hourly", "--model", str(root), "--dataset", str(root / "ds"),
              "evaluate.baselines.return=[naive]")
    assert bad.exit_code == 2 and "evaluate.baselines.return: unknown baselines ['naive']" in bad.stderr


def test_conformal_recalibration_is_reported_beside_the_raw_model(trained):
    root, model = trained
    raw = evaluate(load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, *SMALL]), str(model),
                   dataset=root / "ds", out=root / "raw", write=False)
    loaded = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, *SMALL, "evaluate.calibrate=conformal",
                                     "evaluate.calibration_windows=2"])
    calibrated = evaluate(loaded, str(model), dataset=root / "ds", out=root / "cal", write=False)
    assert calibrated.models == ["model", "model+conformal"]
    assert calibrated.aggregate["model"] == raw.aggregate["model"]  # the raw model is untouched
    fitted = calibrated.conformal["model"]["close"]
    assert fitted["windows"] > 0 and len(fitted["shift_by_step"]["80"]) == 24
    assert calibrated.aggregate["model+conformal"]["close"]["crps"] != raw.aggregate["model"]["close"]["crps"]
    assert "model+conformal" in calibrated.significance and "model+conformal" in calibrated.calibration


def test_evaluate_reports_progress_per_model_and_per_forecast_up_to_each_total(trained):
    root, model = trained

    class Recorder:
        def __init__(self):
            self.phases: list[list] = []

        def on_start(self, phase, total, unit):
            self.phases.append([phase, total, unit, 0, []])

        def on_next(self, now="", count=1):
            self.phases[-1][3] += count
            self.phases[-1][4].append(now)

    progress = Recorder()
    loaded = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, *SMALL])
    evaluate(loaded, str(model), dataset=root / "ds", out=root / "progress", zero_shot=str(model), write=False,
             progress=progress)
    (loading, forecasting) = progress.phases
    assert loading[:4] == ["loading", 2, "models", 2] and loading[4] == ["model", "zero_shot"]
    phase, total, unit, done, said = forecasting
    assert (phase, unit) == ("forecasting", "forecasts") and done == total > 0
    assert any(s.endswith("random_walk") for s in said) and any("zero_shot" in s for s in said)


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_one_window_writes_strict_json_with_null_for_undefined_numbers(trained, cli):
    """One origin: the Diebold-Mariano test is undefined, written as null, not NaN (which strict parsers refuse)."""
    root, model = trained
    out = root / "one-window"
    result = cli("evaluate", "--profile", "hourly", "--model", str(model), "--dataset", str(root / "ds"),
                 "--out", str(out), "--json", *TINY, "evaluate.windows=1", "evaluate.num_samples=8",
                 "evaluate.variates=[close]")
    assert result.exit_code == 0, result.stderr + result.stdout
    metrics = _strict((out / "metrics.json").read_text())
    printed = _strict(result.stdout)
    yard = metrics["variates"]["close"]["yardstick"]
    assert metrics["significance"]["model"]["close"][yard]["crps"]["p_value"] is None
    assert printed["significance"]["model"]["close"][yard]["crps"]["p_value"] is None
