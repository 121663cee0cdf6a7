"""Released MOIRAI models by hub id, offline: tiny stand-ins of each family in a warm huggingface_hub cache.

`ohlcv finetune --profile demo --from Salesforce/moirai-1.1-R-small` fine-tunes from the cache with
HF_HUB_OFFLINE=1, and the Moirai-MoE and Moirai 2.0 stand-ins score zero-shot through `ohlcv evaluate`,
each with its family's own uni2ts forecast class.
"""

from __future__ import annotations

import json

import pytest

from tests.hubcache import STAND_INS, warm_cache

pytestmark = pytest.mark.slow  # builds the demo dataset, fine-tunes and forecasts

FAST = ["finetune.max_steps=2", "finetune.val_every_n_steps=2", "finetune.batch_size=4", "trainer.logger=none"]


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    warm_cache(root / "hf" / "hub", scratch=root / "stand-ins")
    env = {"HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"}
    data = [f"data.lake={root / 'lake'}", f"data.dataset={root / 'ds'}", f"output.runs_dir={root / 'runs'}"]
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake

    generate_sample_lake(root / "lake", symbols_per_class=3, freq="1h", bars=1200, seed=0)  # as the demo does
    IterativeFinancialDatasetBuilder(load_profile("demo", data).cfg).run()
    return root, env, data


def test_finetune_the_demo_from_a_hub_id_offline(offline, cli):
    root, env, data = offline
    result = cli("finetune", "--profile", "demo", "--from", STAND_INS["moirai"], "--out", str(root / "ft"), *data,
                 *FAST, env=env)
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "fine-tuning Salesforce/moirai-1.1-R-small (Moirai 1.x" in result.stdout
    summary = json.loads((root / "ft" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["start"] == STAND_INS["moirai"]
    assert summary["start_model"]["family"] == "Moirai 1.x"
    assert summary["start_model"]["path"].startswith(str(root / "hf" / "hub" / "models--Salesforce--moirai-1.1-R-small"))
    assert (root / "ft" / "model" / "config.json").is_file()


@pytest.mark.parametrize("family, name", [("moirai_moe", "Moirai-MoE"), ("moirai2", "Moirai 2.0")])
def test_zero_shot_moe_and_moirai2_score_with_their_own_forecast_class(offline, cli, family, name):
    root, env, data = offline
    out = root / f"eval-{family}"
    result = cli("evaluate", "--profile", "demo", "--model", STAND_INS["moirai"], "--zero-shot", STAND_INS[family],
                 "--out", str(out), *data, "evaluate.windows=2", "evaluate.variates=[close]", env=env)
    assert result.exit_code == 0, result.stderr + result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    info = metrics["models_info"]["zero_shot"]
    assert info["family"] == name and info["parameters"] > 0
    assert info["output"] == ("quantiles" if family == "moirai2" else "samples")
    assert metrics["models_info"]["model"]["family"] == "Moirai 1.x"
    scores = metrics["aggregate"]["zero_shot"]["close"]
    assert all(0 < scores[m] < float("inf") for m in ("crps", "mase", "msis"))
    assert f"zero_shot: {name}" in (out / "report.md").read_text()
    if family == "moirai2":
        assert any("predicts the quantiles 0.1-0.9" in note for note in metrics["notes"])
