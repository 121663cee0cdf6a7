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
    assert "hf download Salesforce/moirai-1.1-R-small --revision v1" in message and "\n" not in message
    # the folder to copy and where it goes: HF_HOME's hub/ (copying a whole cache to HF_HOME would look in hub/hub)
    assert f"copy its models--Salesforce--moirai-1.1-R-small folder (from that machine's cache) into " \
           f"{tmp_path / 'empty' / 'hub'}" in message and "set by HF_HOME" in message and "--from" in message
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
    (run / "run.json").write_text("{}")  # what makes it a run folder of ohlcv
    (run / "profile.yaml").write_text("name: x\n")
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
    ("hub:a/b/c", "not a hub id of the form hub:org/name"),
])
def test_a_wrong_source_is_one_line_naming_it(spec, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="--from") as caught:
        resolve_model(spec)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json here"):
        resolve_model(str(empty))


def _signature_config(family: str, *, optional: bool) -> dict:
    """A config.json as uni2ts's hub mixin writes it for ``family``: the module's __init__ arguments (those
    without a default, or every one)."""
    import importlib
    import inspect

    cls = getattr(importlib.import_module(FAMILIES[family].package), FAMILIES[family].module_class)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: 1 for p in params if optional or p.default is inspect.Parameter.empty}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_detection_matches_the_uni2ts_module_signatures(family):
    from ohlcv.moirai.sources import SIGNATURES

    assert family_of(_signature_config(family, optional=True), "x") is FAMILIES[family]
    assert family_of(_signature_config(family, optional=False), "x") is FAMILIES[family]
    required, _ = SIGNATURES[family]
    assert required <= set(_signature_config(family, optional=False)) | {"max_seq_len"}  # only real arguments


@pytest.mark.parametrize("config, words", [
    # a ViT: a patch size and a width, but a transformers model
    ({"model_type": "vit", "architectures": ["ViTModel"], "patch_size": 16, "hidden_size": 768, "num_hidden_layers": 12},
     "a vit model"),
    # Toto-style: a patch size and layers, no d_model / d_ff / max_seq_len
    ({"patch_size": 32, "stride": 32, "embed_dim": 768, "num_layers": 12, "num_heads": 12, "mlp_hidden_dim": 3072},
     "not a MOIRAI model"),
    # half of Moirai 2.0's arguments, or a mix of two families
    ({"patch_size": 16, "quantile_levels": [0.5]}, "not a MOIRAI model"),
    ({"d_model": 8, "d_ff": 8, "num_layers": 1, "patch_size": 16, "max_seq_len": 512, "patch_sizes": [16]},
     "not a MOIRAI model"),
])
def test_a_config_of_another_model_is_refused_as_a_wrong_value(config, words):
    with pytest.raises(ConfigError, match="--from") as caught:
        family_of(config, "m/config.json")
    assert words in str(caught.value) and "m/config.json" in str(caught.value)
    assert caught.value.exit_code == 2


def test_family_detection_reads_the_released_config_keys():
    moirai = {"d_model": 384, "num_layers": 6, "patch_sizes": [8, 16, 32, 64, 128], "distr_output": {}, "max_seq_len": 512}
    moe = {**moirai, "d_ff": 512, "patch_sizes": [16]}
    moirai2 = {"d_model": 384, "num_layers": 6, "d_ff": 1024, "patch_size": 16, "quantile_levels": [0.1, 0.5, 0.9],
               "max_seq_len": 512, "num_predict_token": 4}
    assert [family_of(c, "x").key for c in (moirai, moe, moirai2)] == ["moirai", "moirai_moe", "moirai2"]
    from ohlcv.moirai.sources import size_name

    assert size_name(FAMILIES["moirai"], moirai) == "small"
    assert size_name(FAMILIES["moirai"], {**moirai, "d_model": 1024, "num_layers": 24}) == "large"
    assert size_name(FAMILIES["moirai2"], {**moirai2, "d_model": 1024, "num_layers": 24}) is None  # never released
    with pytest.raises(ConfigError, match="a bert model"):
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
    # the table as it stands: Moirai 1.x and 2.0 fine-tune with every pattern, Moirai-MoE is refused
    patterns = {"full", "freeze_ffn", "head_only", "lora"}
    assert {key: set(f.finetune) for key, f in FAMILIES.items()} == {
        "moirai": patterns, "moirai2": patterns, "moirai_moe": set()}
    assert FAMILIES["moirai_moe"].refusal and not FAMILIES["moirai"].refusal
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


def test_a_checkpoint_outside_a_run_ignores_an_unrelated_model_folder_beside_it(tmp_path):
    import torch

    from ohlcv.moirai.models import load_module, new_module

    # a/ckpts/x.ckpt with an unrelated a/model/ (another family): not a run folder, so the checkpoint's own
    # hyper-parameters say what it is
    save_stand_in("moirai2", tmp_path / "a" / "model")
    module = new_module("moirai", d_model=64, num_layers=1, patch_sizes=(16,))
    kwargs = {"d_model": 64, "num_layers": 1, "patch_sizes": (16,), "max_seq_len": 512, "attn_dropout_p": 0.0,
              "dropout_p": 0.0, "distr_output": module.distr_output}
    (tmp_path / "a" / "ckpts").mkdir()
    ckpt = tmp_path / "a" / "ckpts" / "x.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()},
                "hyper_parameters": {"module_kwargs": kwargs}}, ckpt)
    source = resolve_model(str(ckpt))
    assert source.family is FAMILIES["moirai"] and source.folder is None
    loaded = load_module(source)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in module.state_dict().items())
    # weights of another width under the same description: one line, a wrong --from
    wider = new_module("moirai", d_model=128, num_layers=1, patch_sizes=(16,))
    torch.save({"state_dict": {f"module.{k}": v for k, v in wider.state_dict().items()},
                "hyper_parameters": {"module_kwargs": kwargs}}, ckpt)
    with pytest.raises(ConfigError, match="--from") as caught:
        load_module(str(ckpt))
    assert "do not fit the Moirai 1.x model" in str(caught.value) and "size mismatch" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_model_without_weights_is_refused_when_resolved(tmp_path, monkeypatch, cli):
    folder = tmp_path / "m"
    save_stand_in("moirai", folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ConfigError, match="no weights"):
        resolve_model(str(folder))
    # a hub snapshot holding only config.json: refused before any dataset work, a wrong value
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    put_in_hub_cache(cache, "Salesforce/moirai-1.1-R-small", folder)
    lake, dataset = tmp_path / "lake", tmp_path / "ds"
    result = cli("finetune", "--profile", "demo", "--from", "Salesforce/moirai-1.1-R-small", f"data.lake={lake}",
                 f"data.dataset={dataset}", f"output.runs_dir={tmp_path / 'runs'}")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no weights" in result.stderr and "hf download Salesforce/moirai-1.1-R-small" in result.stderr
    assert not lake.exists() and not dataset.exists()


def test_a_config_of_another_model_on_the_command_line_is_exit_2(tmp_path, cli):
    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "patch_size": 16, "hidden_size": 8}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    for spec, words in ((folder, "a vit model"), (tmp_path / "broken", "unreadable")):
        result = cli("finetune", "--profile", "demo", "--from", str(spec), f"data.lake={tmp_path / 'lake'}",
                     f"data.dataset={tmp_path / 'ds'}", f"output.runs_dir={tmp_path / 'runs'}")
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--from" in result.stderr and words in result.stderr


def test_a_mistyped_path_that_reads_as_a_hub_id_says_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here: runs/nope could be a hub id
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OhlcvError) as caught:
        resolve_model("runs/nope")
    assert "no local folder runs/nope" in str(caught.value) and "hf download runs/nope" in str(caught.value)


def test_the_cache_follows_huggingface_hub_rules(tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download

    from ohlcv.moirai.sources import hub_cache_setting

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_setting() == (tmp_path / "home" / ".cache" / "huggingface" / "hub", "HF_HOME")
    monkeypatch.setenv("MY_ROOT", str(tmp_path))
    monkeypatch.setenv("HF_HOME", "$MY_ROOT/hf")  # variables expanded, as huggingface_hub does
    assert hub_cache_setting() == (tmp_path / "hf" / "hub", "HF_HOME")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache_setting() == (tmp_path / "legacy", "HUGGINGFACE_HUB_CACHE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))  # wins over HF_HOME and the legacy name
    assert hub_cache_setting() == (tmp_path / "cache", "HF_HUB_CACHE")
    commit = put_in_hub_cache(tmp_path / "cache", "Salesforce/moirai-2.0-R-small",
                              save_stand_in("moirai2", tmp_path / "m2"))
    source = resolve_model("Salesforce/moirai-2.0-R-small")
    assert source.folder == tmp_path / "cache" / "models--Salesforce--moirai-2.0-R-small" / "snapshots" / commit
    assert source.commit == commit and commit[:12] in source.describe()["source"]
    with pytest.raises(OhlcvError) as caught:
        resolve_model("Salesforce/moirai-1.1-R-small")
    assert f"cache {tmp_path / 'cache'} (set by HF_HUB_CACHE)" in str(caught.value)
    assert f"folder (from that machine's cache) into {tmp_path / 'cache'}" in str(caught.value)
    # a local folder named like a hub id hides the hub id; hub: forces the hub
    monkeypatch.chdir(tmp_path)
    save_stand_in("moirai", tmp_path / "Salesforce" / "moirai-2.0-R-small")
    assert resolve_model("Salesforce/moirai-2.0-R-small").kind == "folder"
    assert resolve_model("hub:Salesforce/moirai-2.0-R-small").folder == source.folder


def test_a_single_patch_model_forecasts_at_its_own_patch_under_any_profile(tmp_path):
    import torch

    from ohlcv.config import load_profile
    from ohlcv.moirai.models import forecaster, load_module

    cfg = load_profile("demo").cfg  # finetune.patch_size 32; the released Moirai-MoE reads 16 only
    assert int(cfg.finetune.patch_size) == 32
    module = load_module(str(save_stand_in("moirai_moe", tmp_path / "moe")))
    from ohlcv.evaluate.run import check_model_fits

    model = forecaster(module, cfg, targets=1, covariates=0)
    assert model.patch == 16
    notes: list[str] = []
    check_model_fits("moe", module, cfg, {}, notes)
    assert any("reads patches of 16 steps only" in n and "finetune.patch_size=32" in n for n in notes)
    context = int(cfg.data.context_length)
    out = model({"past_target": torch.randn(2, context, 1), "past_observed_target": torch.ones(2, context, 1, dtype=torch.bool),
                 "past_is_pad": torch.zeros(2, context, dtype=torch.bool)})
    assert out.shape[0] == 2 and out.shape[2:] == (int(cfg.data.prediction_length), 1) and np.isfinite(out).all()


@pytest.mark.parametrize("override, words", [
    ("finetune.patch_size=64", "patch sizes are [16, 32]; 64 is not one of them"),
    ("data.context_length=4000", "tokens exceed the checkpoint's max_seq_len 512"),
])
def test_a_start_that_cannot_fit_the_profile_is_refused_before_any_dataset(override, words, tmp_path, cli):
    start = save_stand_in("moirai", tmp_path / "m")  # patch sizes 16 and 32, max_seq_len 512
    lake, dataset = tmp_path / "lake", tmp_path / "ds"
    result = cli("finetune", "--profile", "demo", "--from", str(start), override, f"data.lake={lake}",
                 f"data.dataset={dataset}", f"output.runs_dir={tmp_path / 'runs'}")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr and "finetune.patch_size" in result.stderr
    backtest = cli("backtest", "--profile", "demo", "--from", str(start), "--refit", "finetune", override,
                   f"data.lake={lake}", f"data.dataset={dataset}", "--out", str(tmp_path / "bt"))
    assert backtest.exit_code == 2 and words in backtest.stderr, backtest.stderr
    assert not lake.exists() and not dataset.exists() and not (tmp_path / "runs").exists()


def test_moirai2_per_target_fallback_matches_the_joint_forecast_and_covers_long_horizons(tmp_path):
    import torch

    from ohlcv.config import load_profile
    from ohlcv.moirai.models import Forecaster, load_module

    module = load_module(str(save_stand_in("moirai2", tmp_path / "m2")))  # patch 16 x 4 predicted tokens = 64
    torch.manual_seed(0)
    context = 160
    targets, covariates = torch.randn(3, context, 2).cumsum(1), torch.randn(3, context, 1)
    inputs = {"past_target": targets, "past_observed_target": torch.ones_like(targets, dtype=torch.bool),
              "past_is_pad": torch.zeros(3, context, dtype=torch.bool), "past_feat_dynamic_real": covariates,
              "past_observed_feat_dynamic_real": torch.ones_like(covariates, dtype=torch.bool)}
    short = load_profile("demo", ["data.prediction_length=32", f"data.context_length={context}"]).cfg
    joint, alone = Forecaster(module, short, 2, 1), Forecaster(module, short, 2, 1, one_by_one=True)
    assert (joint.one_by_one, alone.one_by_one) == (False, True)
    # one decoding step: the other target as a past covariate is what the joint forecast sees of it
    np.testing.assert_allclose(alone(inputs), joint(inputs), rtol=1e-4, atol=1e-4)
    long = load_profile("demo", ["data.prediction_length=96", f"data.context_length={context * 3}"]).cfg
    longer = {k: torch.cat([v] * 3, dim=1) for k, v in inputs.items()}
    needed = Forecaster(module, long, 2, 1)  # 96 > 64: several steps, which uni2ts cannot do jointly
    out = needed(longer)
    assert needed.one_by_one and out.shape == (3, 101, 96, 2) and np.isfinite(out).all()
    assert any("each target forecast on its own" in note for note in needed.notes)


def test_the_quantile_grid_extends_the_outermost_segments_into_the_tails():
    from ohlcv.moirai.models import quantile_grid

    levels = np.round(np.arange(0.1, 1.0, 0.1), 1)
    values = np.array([1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 6.0, 10.0])  # steeper at both ends
    grid = quantile_grid(values[None, :, None, None], levels)[0, :, 0, 0]
    # below 0.1: the slope of 0.1-0.2 (10 per unit level); above 0.9: the slope of 0.8-0.9 (40 per unit level)
    assert grid[0] == pytest.approx(1.0 - 0.1 * 10.0) and grid[5] == pytest.approx(1.0 - 0.05 * 10.0)
    assert grid[100] == pytest.approx(10.0 + 0.1 * 40.0) and grid[95] == pytest.approx(10.0 + 0.05 * 40.0)
    assert grid[50] == pytest.approx(3.5) and grid[15] == pytest.approx(1.5)  # inside: linear between levels
