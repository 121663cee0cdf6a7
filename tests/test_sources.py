"""`--from` / `--model` / `--zero-shot`: hub ids (offline, from huggingface_hub's cache), folders, run folders,
checkpoints; the family read from the config; a wrong source refused before any dataset is touched."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.moirai.sources import FAMILIES, family_of, resolve_model
from tests.hubcache import STAND_INS, put_in_hub_cache, save_stand_in, warm_cache


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline machine whose HF_HOME cache holds the three stand-ins."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commits = warm_cache(home / "hub", scratch=tmp_path / "stand-ins")
    return home / "hub", commits


def test_the_cache_is_laid_out_as_huggingface_hub_reads_it(hub):
    from huggingface_hub import scan_cache_dir, snapshot_download

    cache, commits = hub
    scanned = scan_cache_dir(cache)
    assert not scanned.warnings  # huggingface_hub found nothing corrupt in the layout
    assert {r.repo_id: {rev.commit_hash for rev in r.revisions} for r in scanned.repos} == {
        repo: {commit} for repo, commit in commits.items()}
    for repo, commit in commits.items():
        folder = snapshot_download(repo, cache_dir=str(cache), local_files_only=True)
        assert folder.endswith(commit) and json.loads(open(f"{folder}/config.json").read())


@pytest.mark.parametrize("family", sorted(STAND_INS))
def test_a_hub_id_loads_offline_from_the_cache_with_its_family(hub, family):
    from ohlcv.moirai.models import describe, load_module

    cache, commits = hub
    repo = STAND_INS[family]
    source = resolve_model(repo)
    assert (source.kind, source.family, source.repo_id) == ("hub", FAMILIES[family], repo)
    assert str(source.folder).startswith(str(cache)) and source.folder.name == commits[repo]
    module = load_module(source)
    assert type(module).__name__ == FAMILIES[family].module_class
    info = describe(module)
    assert info["family"] == FAMILIES[family].name and info["size"] is None  # tiny: no released size
    assert info["parameters"] == sum(p.numel() for p in module.parameters()) > 0


def test_a_revision_after_the_at_sign_picks_that_snapshot(hub, tmp_path):
    cache, commits = hub
    repo = STAND_INS["moirai"]
    other = put_in_hub_cache(cache, repo, save_stand_in("moirai", tmp_path / "v2", seed=1), ref="v2")
    assert other != commits[repo]
    assert resolve_model(f"{repo}@v2").folder.name == other
    assert resolve_model(f"{repo}@{commits[repo]}").folder.name == commits[repo]
    assert resolve_model(repo).folder.name == commits[repo]  # main is untouched


def test_a_cold_cache_offline_says_what_to_run_and_where_to_point(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OhlcvError) as caught:
        resolve_model("Salesforce/moirai-1.1-R-small@v1")
    message = str(caught.value)
    assert "hf download Salesforce/moirai-1.1-R-small --revision v1" in message
    assert str(tmp_path / "empty" / "hub") in message and "HF_HOME" in message and "--from" in message
    result = cli("evaluate", "--profile", "demo", "--model", "Salesforce/moirai-2.0-R-small",
                 f"data.dataset={tmp_path / 'ds'}")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "hf download Salesforce/moirai-2.0-R-small" in result.stderr and "--model" in result.stderr


def test_a_run_folder_and_its_model_folder_are_the_same_model(tmp_path):
    run = tmp_path / "run"
    save_stand_in("moirai2", run / "model")
    by_run, by_folder = resolve_model(str(run)), resolve_model(str(run / "model"))
    assert (by_run.kind, by_folder.kind) == ("run", "folder")
    assert by_run.folder == by_folder.folder == run / "model"
    assert by_run.family is FAMILIES["moirai2"]


def test_a_lightning_checkpoint_loads_the_weights_it_holds(tmp_path):
    import torch

    from ohlcv.moirai.models import load_module

    run = tmp_path / "run"
    save_stand_in("moirai", run / "model", seed=0)
    other = load_module(str(save_stand_in("moirai", tmp_path / "other", seed=1)))
    (run / "checkpoints").mkdir()
    state = {f"module.{k}": v for k, v in other.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {}}, run / "checkpoints" / "best.ckpt")
    source = resolve_model(str(run / "checkpoints" / "best.ckpt"))
    assert source.kind == "checkpoint" and source.family is FAMILIES["moirai"]
    module = load_module(source)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in other.state_dict().items())
    # the run's exported model/ is another set of weights: the checkpoint's won
    assert not all(torch.equal(load_module(str(run / "model")).state_dict()[k], v) for k, v in other.state_dict().items())


@pytest.mark.parametrize("spec, words", [
    ("nope", "no such file or folder, and not a hub id"),
    ("runs/nope", "no such folder (its parent runs/ is here)"),
    ("a/b/c", "not a hub id"),
])
def test_a_wrong_source_is_one_line_naming_it(spec, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="--from") as caught:
        resolve_model(spec)
    assert words in str(caught.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json here"):
        resolve_model(str(empty))


def test_family_detection_reads_the_released_config_keys():
    moirai = {"d_model": 384, "num_layers": 6, "patch_sizes": [8, 16, 32, 64, 128], "distr_output": {}, "max_seq_len": 512}
    moe = {**moirai, "d_ff": 512, "patch_sizes": [16]}
    moirai2 = {"d_model": 384, "num_layers": 6, "d_ff": 1024, "patch_size": 16, "quantile_levels": [0.1, 0.5, 0.9]}
    assert [family_of(c, "x").key for c in (moirai, moe, moirai2)] == ["moirai", "moirai_moe", "moirai2"]
    from ohlcv.moirai.sources import size_name

    assert size_name(FAMILIES["moirai"], moirai) == "small"
    assert size_name(FAMILIES["moirai"], {**moirai, "d_model": 1024, "num_layers": 24}) == "large"
    assert size_name(FAMILIES["moirai2"], {**moirai2, "d_model": 1024, "num_layers": 24}) is None  # never released
    with pytest.raises(OhlcvError, match="not a MOIRAI configuration"):
        family_of({"hidden_size": 8, "model_type": "bert"}, "bert/config.json")


def test_a_wrong_from_fails_before_any_lake_or_dataset_is_made(tmp_path, cli):
    lake, dataset = tmp_path / "lake", tmp_path / "ds"
    data = [f"data.lake={lake}", f"data.dataset={dataset}", f"output.runs_dir={tmp_path / 'runs'}"]
    result = cli("finetune", "--profile", "demo", "--from", str(tmp_path / "no-such-model"), *data)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no-such-model" in result.stderr
    backtest = cli("backtest", "--profile", "demo", "--from", str(tmp_path / "no-such-model"), *data,
                   "--out", str(tmp_path / "bt"))
    assert backtest.exit_code == 2 and "no-such-model" in backtest.stderr
    assert not lake.exists() and not dataset.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "bt").exists()


def test_finetuning_a_family_ohlcv_does_not_train_is_refused_by_name_before_any_dataset(hub, tmp_path, cli):
    family = "moirai_moe"
    lake, dataset = tmp_path / "lake", tmp_path / "ds"
    result = cli("finetune", "--profile", "demo", "--from", STAND_INS[family], f"data.lake={lake}",
                 f"data.dataset={dataset}", f"output.runs_dir={tmp_path / 'runs'}")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"is a {FAMILIES[family].name} model" in result.stderr
    assert f"--zero-shot {STAND_INS[family]}" in result.stderr  # the command to run instead, with the model
    assert "ships no training code for Moirai-MoE" in result.stderr
    assert not lake.exists() and not dataset.exists()


def test_a_pattern_a_family_does_not_support_is_refused_by_name():
    supported = FAMILIES["moirai"].finetune
    assert {"full", "freeze_ffn", "head_only"} <= set(supported)
    FAMILIES["moirai"].check_finetune("x", "full")
    with pytest.raises(ConfigError, match=r"finetune.pattern: 'made_up' is not supported for Moirai 1.x models "
                                          r"\(supported: full, freeze_ffn, head_only"):
        FAMILIES["moirai"].check_finetune("x", "made_up")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=9, max_size=9), st.floats(-3, 3))
def test_the_quantile_grid_reads_back_the_predicted_quantiles(values, y):
    from ohlcv.evaluate.metrics import window_scores
    from ohlcv.moirai.models import GRID, quantile_grid

    levels = np.round(np.arange(0.1, 1.0, 0.1), 1)
    predicted = np.array(values)[None, :, None, None]  # (windows, levels, horizon, targets)
    grid = quantile_grid(predicted, levels)
    assert grid.shape == (1, GRID, 1, 1)
    assert np.all(np.diff(grid[0, :, 0, 0]) >= -1e-12)  # a quantile function: never decreasing
    # np.quantile of the grid (what every metric reads) gives back the sorted predicted quantiles
    np.testing.assert_allclose(np.quantile(grid[0, :, 0, 0], levels), np.sort(values), atol=1e-9)
    scores = window_scores(np.array([[y]]), grid[..., 0], np.array([[0.0, 1.0, 0.5, 2.0]]), 1, from_zero=False,
                           rng=np.random.default_rng(0))
    assert np.isfinite(scores.qloss).all() and 0.0 <= scores.pit[0, 0] <= 1.0
