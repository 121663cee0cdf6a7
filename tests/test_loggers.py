"""trainer.logger: Lightning's own loggers, each writing where docs/pretrain.md says."""

from __future__ import annotations

import csv

import pytest

from ohlcv.config import load_profile
from ohlcv.errors import ConfigError
from ohlcv.lake.sample import generate_sample_lake
from tests.conftest import TINY


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return generate_sample_lake(tmp_path_factory.mktemp("loggers") / "lake", symbols_per_class=2,
                                asset_classes=["crypto"], bars=900, seed=4, calendars={})


def _pretrain(lake, root, *extra):
    from ohlcv.train.pretrain import run_pretrain

    loaded = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={root / 'ds'}",
                                     f"output.runs_dir={root / 'runs'}", *TINY, "pretrain.max_steps=2", *extra])
    return run_pretrain(loaded, dataset=root / "ds", out=root / "runs" / "run")


@pytest.mark.slow
def test_the_csv_logger_writes_the_losses_to_the_run_folder(lake, tmp_path):
    result = _pretrain(lake, tmp_path, "trainer.logger=csv")
    with open(result.run_dir / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("train/PackedNLLLoss") for row in rows)


@pytest.mark.slow
def test_a_resumed_run_keeps_the_csv_rows_of_its_earlier_part(lake, tmp_path):
    from ohlcv.train.pretrain import run_pretrain

    first = _pretrain(lake, tmp_path, "trainer.logger=csv")
    with open(first.run_dir / "logs" / "metrics.csv") as handle:
        earlier = list(csv.DictReader(handle))
    loaded = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}", *TINY,
                                     "pretrain.max_steps=4", "trainer.logger=csv"])
    run_pretrain(loaded, dataset=tmp_path / "ds", out=first.run_dir, resume=True)
    logs = first.run_dir / "logs"
    with open(logs / "metrics.1.csv") as handle:  # Lightning's CSV logger deleted the file it found
        assert list(csv.DictReader(handle)) == earlier
    with open(logs / "metrics.csv") as handle:
        later = list(csv.DictReader(handle))
    assert later and min(int(row["step"]) for row in later) >= max(int(row["step"]) for row in earlier)


@pytest.mark.slow
def test_the_mlflow_logger_records_the_run_in_a_local_file_store(lake, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # (restored after the test)

    result = _pretrain(lake, tmp_path, "trainer.logger=mlflow", "trainer.experiment=loggers-test")
    store = tmp_path / "runs" / "mlruns"
    assert store.is_dir()
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("loggers-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_name for run in runs] == [result.run_dir.name]
    assert "train/PackedNLLLoss" in runs[0].data.metrics


def test_a_logger_whose_package_is_missing_says_which_extra_installs_it(monkeypatch, tmp_path):
    import importlib.util

    from ohlcv.train.runtime import make_logger

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = load_profile("hourly", ["trainer.logger=wandb"]).cfg
    with pytest.raises(ConfigError, match=r'trainer.logger: the wandb logger needs wandb: pip install "ohlcv\[wandb\]"'):
        make_logger(cfg, tmp_path)
    with pytest.raises(ConfigError, match="trainer.logger"):
        load_profile("hourly", ["trainer.logger=comet"])


@pytest.mark.slow
def test_no_logger_trains_and_writes_no_logs(lake, tmp_path):
    result = _pretrain(lake, tmp_path, "trainer.logger=none")
    assert result.summary["status"] == "finished" and not (result.run_dir / "logs").exists()
