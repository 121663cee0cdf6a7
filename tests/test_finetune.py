"""`ohlcv finetune` end to end: build -> pretrain (tiny) -> finetune (validation, early stopping) -> evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FT, TINY, pretrain_tiny

pytestmark = pytest.mark.slow  # every test here trains or forecasts with a model



@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return root, pretrain_tiny(root, asset_classes=["equity", "fx"], bars=1000, seed=6)


def test_build_pretrain_finetune_evaluate_end_to_end(pretrained, cli):
    root, start = pretrained
    common = ["--profile", "hourly", "--dataset", str(root / "ds"), *TINY, *FT]
    result = cli("finetune", "--from", str(start), "--out", str(root / "ft"), *common,
                 "finetune.max_steps=6", "finetune.patience=1")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "ft" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["val_windows"] > 0 and summary["train_windows"] > 0
    assert summary["val_loss_before"] > 0 and summary["val_loss_after"] > 0
    assert "validation loss: starting model" in result.stdout
    assert ("improved the validation loss" in result.stdout) == summary["improved"]
    assert (root / "ft" / "checkpoints" / "last.ckpt").is_file()
    assert (root / "ft" / "model" / "config.json").is_file()
    evaluated = cli("evaluate", "--model", str(root / "ft" / "model"), "--zero-shot", str(start), "--out",
                    str(root / "eval"), *common, "evaluate.windows=2", "evaluate.num_samples=8", "evaluate.variates=[close]")
    assert evaluated.exit_code == 0, evaluated.stderr + evaluated.stdout
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert {"model", "zero_shot", "random_walk", "seasonal_naive", "drift"} <= set(metrics["aggregate"])
    assert (root / "eval" / "report.md").is_file() and (root / "eval" / "plots" / "relative_per_asset.png").is_file()


def test_when_finetuning_does_not_help_the_starting_model_is_exported(pretrained, cli):
    from safetensors.numpy import load_file

    root, start = pretrained
    result = cli("finetune", "--from", str(start), "--out", str(root / "ft0"), "--profile", "hourly",
                 "--dataset", str(root / "ds"), *TINY, *FT, "finetune.max_steps=2", "finetune.lr=0.0")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "ft0" / "run.json").read_text())
    assert summary["improved"] is False
    assert "did not improve on the starting model" in result.stdout
    exported, original = load_file(root / "ft0" / "model" / "model.safetensors"), load_file(start / "model.safetensors")
    assert exported.keys() == original.keys()
    assert all(np.array_equal(exported[k], original[k]) for k in original)


def test_a_diverging_finetune_names_what_is_left_and_leaves_no_model(pretrained, cli):
    root, start = pretrained
    result = cli("finetune", "--from", str(start), "--out", str(root / "nan"), "--profile", "hourly",
                 "--dataset", str(root / "ds"), *TINY, *FT, "finetune.max_steps=4", "finetune.lr=1e30",
                 "finetune.warmup_steps=0", "trainer.gradient_clip_val=1e30")
    assert result.exit_code != 0 and "the loss became" in result.stderr, result.stderr + result.stdout
    # stopped before its first validation: no checkpoint to name, and the starting model is untouched
    assert f"no checkpoint was written before it; the starting model ({start}) is unchanged" in result.stderr
    assert not (root / "nan" / "model").exists()


def test_a_checkpoint_that_does_not_fit_the_profile_is_refused(pretrained, cli):
    root, start = pretrained
    result = cli("finetune", "--from", str(start), "--out", str(root / "bad"), "--profile", "hourly",
                 "--dataset", str(root / "ds"), *TINY, *FT, "finetune.patch_size=8")
    assert result.exit_code == 2 and "patch sizes are [16, 32, 64]" in result.stderr
    missing = cli("finetune", "--from", str(root / "nope"), "--profile", "hourly", "--dataset", str(root / "ds"),
                  *TINY, *FT, "--out", str(root / "bad2"))
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr


def test_targets_with_past_covariates_work_through_every_step(tmp_path, cli):
    from ohlcv.lake.sample import generate_sample_lake

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=1000, seed=9)
    common = ["--profile", "hourly", *TINY, *FT, f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}",
              "data.layout=covariates", "data.targets=[close]", "features.enabled=[log_return,rsi]"]
    assert cli("pretrain", "--out", str(tmp_path / "pt"), *common, "pretrain.max_steps=2").exit_code == 0
    tuned = cli("finetune", "--from", str(tmp_path / "pt" / "model"), "--out", str(tmp_path / "ft"), *common,
                "finetune.max_steps=2")
    assert tuned.exit_code == 0, tuned.stderr + tuned.stdout
    evaluated = cli("evaluate", "--model", str(tmp_path / "ft" / "model"), "--out", str(tmp_path / "ev"), *common,
                    "evaluate.windows=1", "evaluate.num_samples=8", "evaluate.variates=[close]")
    assert evaluated.exit_code == 0, evaluated.stderr + evaluated.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics["aggregate"]["model"]) == {"close"}


def test_the_pretraining_checkpoint_and_its_run_folder_load_the_same_model(pretrained):
    import torch

    from ohlcv.moirai.models import load_module
    from ohlcv.moirai.sources import resolve_model

    root, start = pretrained
    run = start.parent  # RUN/model -> RUN
    by_checkpoint = resolve_model(str(run / "checkpoints" / "last.ckpt"))
    assert (by_checkpoint.kind, by_checkpoint.family.name, resolve_model(str(run)).kind) == ("checkpoint", "Moirai 1.x", "run")
    from_ckpt, from_run = load_module(by_checkpoint), load_module(str(run))
    assert from_ckpt.state_dict().keys() == from_run.state_dict().keys()
    assert all(torch.equal(from_ckpt.state_dict()[k], v) for k, v in from_run.state_dict().items())


def test_a_run_shorter_than_one_validation_interval_still_validates_and_saves(pretrained, cli):
    root, start = pretrained
    result = cli("finetune", "--from", str(start), "--out", str(root / "ft-short"), "--profile", "hourly",
                 "--dataset", str(root / "ds"), *TINY, *FT, "finetune.max_steps=1", "finetune.val_every_n_steps=5")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "ft-short" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 1 and summary["val_loss_after"] > 0
    assert (root / "ft-short" / "model" / "config.json").is_file()


def test_finetune_json_prints_the_summary_alone_on_stdout(pretrained, cli):
    root, start = pretrained
    result = cli("finetune", "--from", str(start), "--out", str(root / "ft-json"), "--profile", "hourly", "--json",
                 "--dataset", str(root / "ds"), *TINY, *FT, "finetune.max_steps=2")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)  # nothing else on stdout: the start line and notes go to stderr
    assert summary == {**json.loads((root / "ft-json" / "run.json").read_text()), "run_dir": str(root / "ft-json"),
                       "model_dir": str(root / "ft-json" / "model")}
    assert summary["steps"] == 2 and isinstance(summary["improved"], bool)
    assert "fine-tuning" in result.stderr and "trainable parameters" in result.stderr
