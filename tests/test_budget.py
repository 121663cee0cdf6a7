"""The token-budget planner: arithmetic, verdicts, advice, and the CLI around it."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ohlcv.budget import (
    BudgetInputs,
    inputs_from_profile,
    model_tokens,
    patches_for,
    plan,
    smallest_fitting_patch,
    tokens_for,
)
from ohlcv.config import load_profile
from ohlcv.freq import parse_freq

HOURLY = parse_freq("1h")


def _inputs(context, horizon, patch_sizes, variates, max_seq_len=512, constraint=(1, 10_000), finetune_patch=None):
    return BudgetInputs(
        finetune_patch=finetune_patch,
        context=context,
        horizon=horizon,
        patch_sizes=list(patch_sizes),
        max_seq_len=max_seq_len,
        variates=variates,
        variate_names=[],
        variates_source="test",
        freq=HOURLY,
        constraint=constraint,
    )


@settings(max_examples=300, deadline=None)
@given(
    context=st.integers(1, 5000),
    horizon=st.integers(1, 1000),
    patch=st.integers(1, 512),
    variates=st.integers(1, 300),
)
def test_tokens_match_the_brief_formula(context, horizon, patch, variates):
    expected = variates * math.ceil((context + horizon) / patch)
    assert tokens_for(variates, context, horizon, patch) == expected
    assert patches_for(context, horizon, patch) * variates == expected


@settings(max_examples=300, deadline=None)
@given(
    context=st.integers(1, 3000),
    horizon=st.integers(1, 600),
    patch_sizes=st.lists(st.integers(1, 256), min_size=1, max_size=5),
    variates=st.integers(1, 100),
    max_seq_len=st.integers(16, 1024),
)
def test_fits_and_verdict_follow_the_formula(context, horizon, patch_sizes, variates, max_seq_len):
    report = plan(_inputs(context, horizon, patch_sizes, variates, max_seq_len, finetune_patch=patch_sizes[0]))
    assert [row.patch_size for row in report.rows] == sorted(set(patch_sizes))
    for row in report.rows:
        assert row.pretrain_tokens == variates * math.ceil((context + horizon) / row.patch_size)
        # what uni2ts packs: the context and the horizon each padded to whole patches; never fewer than the brief's
        assert row.tokens == variates * (math.ceil(context / row.patch_size) + math.ceil(horizon / row.patch_size))
        assert row.pretrain_tokens <= row.tokens <= row.pretrain_tokens + variates
        # pre-training crops whole patches of one stretch (uni2ts's PatchCrop): judged on the brief's count
        assert row.fits == (row.pretrain_tokens <= max_seq_len)
        assert row.usable == row.fits  # the constraint admits everything here
    rule = context >= 5 * horizon
    assert report.context_rule_ok == rule
    assert report.pretrain_ok == (rule and any(row.fits for row in report.rows))
    # fine-tuning packs the context and the horizon each padded to whole patches
    tuned = variates * (math.ceil(context / patch_sizes[0]) + math.ceil(horizon / patch_sizes[0]))
    assert report.finetune["tokens"] == tuned
    assert report.finetune_ok == (rule and tuned <= max_seq_len)
    assert report.ok == (report.pretrain_ok and report.finetune_ok)


@settings(max_examples=300, deadline=None)
@given(
    context=st.integers(1, 3000),
    horizon=st.integers(1, 600),
    variates=st.integers(1, 600),
    max_seq_len=st.integers(16, 1024),
)
def test_smallest_fitting_patch_is_minimal(context, horizon, variates, max_seq_len):
    smallest = smallest_fitting_patch(variates, context, horizon, max_seq_len)
    if 2 * variates > max_seq_len:  # a context and a horizon take a patch each, however large
        assert smallest is None
        return
    assert model_tokens(variates, context, horizon, smallest) <= max_seq_len
    if smallest > 1:
        assert model_tokens(variates, context, horizon, smallest - 1) > max_seq_len


def test_hourly_profile_plan():
    report = plan(inputs_from_profile(load_profile("hourly").cfg))
    assert report.ok
    rows = {row.patch_size: row for row in report.rows}
    assert report.inputs["variates"] == 32  # OHLCV + the default features of all three families
    # the brief's 384 tokens at patch 16; uni2ts packs ceil(168/16) + ceil(24/16) = 13 patches: 416
    assert (rows[16].pretrain_patches, rows[16].pretrain_tokens) == (12, 384)
    assert (rows[16].patches, rows[16].tokens) == (13, 416)
    assert rows[16].allowed and not rows[16].uni2ts_default_allows
    assert report.constraint["source"] == "profile"


def test_default_constraint_blocks_patch_16_for_hourly_and_says_so():
    cfg = load_profile("hourly", ["model.patch_size_constraint=null"]).cfg
    report = plan(inputs_from_profile(cfg))
    rows = {row.patch_size: row for row in report.rows}
    assert rows[16].fits and not rows[16].allowed and not rows[16].usable
    assert report.constraint == {
        "source": "uni2ts default for 'H'",
        "min": 32,
        "max": 64,
        "uni2ts_default": {"code": "H", "min": 32, "max": 64},
    }
    assert any("model.patch_size_constraint=[16,64]" in note for note in report.notes)


def test_when_nothing_fits_the_advice_names_what_would():
    report = plan(_inputs(336, 48, [16, 32], variates=60, constraint=(16, 64)))
    assert not report.ok
    text = "\n".join(report.suggestions)
    # pre-training at patch 32: ceil((336 + 48) / 32) = 12 patches -> 512 // 12 = 42 variates
    assert "at most 42 variates fit" in text
    # 60 variates: 512 // 60 = 8 patches each; at 48, 7 + 1 = 8; at 47, 8 + 2 = 10
    assert "smallest patch size that fits 60 variates is 48" in text
    # longest context at patch 32: 8 patches = 256 steps, 48 of them the horizon -> 208
    assert "longest context that fits is 208" in text
    assert any("crop keeps only 8 patches per variate" in note for note in report.notes)


def test_budget_cli_json_matches_formula(cli):
    result = cli("budget", "--profile", "hourly", "--json", "data.context_length=336", "model.patch_sizes=[32,64]")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    for row in data["rows"]:
        assert row["pretrain_tokens"] == data["inputs"]["variates"] * math.ceil((336 + 24) / row["patch_size"])
        assert row["tokens"] == data["inputs"]["variates"] * (math.ceil(336 / row["patch_size"]) + 1)


def test_budget_cli_exit_codes(cli):
    assert cli("budget", "--profile", "hourly").exit_code == 0
    # violates context >= 5 x horizon
    assert cli("budget", "--profile", "hourly", "data.prediction_length=48").exit_code == 1
    # too many variates for any patch size
    too_many = cli("budget", "--profile", "hourly", "--variates", "200")
    assert too_many.exit_code == 1
    assert "does not fit" in too_many.stdout


def test_budget_reads_variates_from_a_built_dataset(cli, tmp_path):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    names = [f"v{i}" for i in range(9)]
    (dataset / "manifest.json").write_text(json.dumps({"variates": names}))
    result = cli("budget", "--profile", "hourly", "--json", "--dataset", str(dataset))
    data = json.loads(result.stdout)
    assert data["inputs"]["variates"] == 9
    assert data["inputs"]["variates_source"] == f"dataset {dataset}"
    missing = cli("budget", "--profile", "hourly", "--dataset", str(tmp_path / "nothing"))
    assert missing.exit_code == 1 and "no manifest.json" in missing.stderr


def test_budget_counts_enabled_feature_outputs(cli):
    result = cli(
        "budget", "--profile", "hourly", "--json",
        "features.enabled=[log_return,simple_return]", "features.params.log_return.horizons=[1,4,24]",
    )
    data = json.loads(result.stdout)
    assert data["inputs"]["variate_names"][-4:] == ["log_return_1", "log_return_4", "log_return_24", "simple_return_1"]
    unknown = cli("budget", "--profile", "hourly", "features.enabled=[rsi_magic]")
    assert unknown.exit_code == 2
    assert "features.enabled" in unknown.stderr and "rsi_magic" in unknown.stderr


def _small_dataset(root):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.lake.sample import generate_sample_lake

    generate_sample_lake(root / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=800, seed=3)
    data = [f"data.lake={root / 'lake'}", f"data.dataset={root / 'ds'}", "features.enabled=[log_return]",
            "features.params.log_return.horizons=[1]", "model.size=custom", "model.d_model=64", "model.num_layers=1"]
    IterativeFinancialDatasetBuilder(load_profile("hourly", data).cfg).run()
    return data, json.loads((root / "ds" / "manifest.json").read_text())


def test_budget_pretrain_and_finetune_accept_and_refuse_the_same_profiles_with_the_same_numbers(tmp_path, cli):
    import pytest

    from ohlcv.errors import ConfigError
    from ohlcv.moirai.models import new_module
    from ohlcv.train.finetune import check_start
    from ohlcv.train.pretrain import preflight

    data, manifest = _small_dataset(tmp_path)
    variates = len(manifest["variates"])  # 6: OHLCV and one log return
    # patch 16, context 168, horizon 24: pre-training crops ceil(192/16) = 12 patches per variate (the brief's
    # count), fine-tuning packs ceil(168/16) + ceil(24/16) = 11 + 2 = 13
    shape = ["model.patch_sizes=[16]", "finetune.patch_size=16", "pretrain.allow_crop=false"]
    for max_seq_len, pretrains, finetunes in ((13 * variates, True, True), (13 * variates - 1, True, False),
                                              (12 * variates - 1, False, False)):
        overrides = [*data, *shape, f"model.max_seq_len={max_seq_len}"]
        cfg = load_profile("hourly", overrides).cfg
        budget = cli("budget", "--profile", "hourly", "--json", "--dataset", str(tmp_path / "ds"), *overrides)
        report = json.loads(budget.stdout)
        assert report["rows"][0]["pretrain_tokens"] == 12 * variates
        assert report["rows"][0]["tokens"] == report["finetune"]["tokens"] == 13 * variates
        assert (report["pretrain_ok"], report["finetune_ok"]) == (pretrains, finetunes)
        assert budget.exit_code == (0 if pretrains and finetunes else 1)
        module = new_module("moirai", d_model=64, num_layers=1, patch_sizes=(16,), max_seq_len=max_seq_len)
        if pretrains:
            assert preflight(cfg, tmp_path / "ds", manifest, tmp_path / "run").usable_patch_sizes == [16]
        else:
            with pytest.raises(ConfigError) as pretrain_refusal:
                preflight(cfg, tmp_path / "ds", manifest, tmp_path / "run")
            per_variate = max_seq_len // 12  # the same count in budget's advice and pretrain's refusal
            assert f"at most {per_variate} variates fit (12 patches each)" in str(pretrain_refusal.value)
            assert f"at most {per_variate} variates fit (12 patches each)" in " ".join(report["suggestions"])
        if finetunes:
            check_start(module, cfg, variates)
        else:
            with pytest.raises(ConfigError) as finetune_refusal:
                check_start(module, cfg, variates)
            tokens = f"{variates} variates x 13 patches = {13 * variates} tokens exceed"
            assert tokens in str(finetune_refusal.value) and tokens in " ".join(report["suggestions"])


def _profile_names():
    from ohlcv.config.loader import packaged_profiles_dir

    return sorted(path.stem for path in packaged_profiles_dir().glob("*.yaml"))


def test_every_shipped_profile_fits_for_pretraining_and_fine_tuning_and_the_trainers_agree(tmp_path, cli):
    from ohlcv.budget import profile_variates
    from ohlcv.train.finetune import check_fit
    from ohlcv.train.pretrain import preflight

    names = _profile_names()
    assert {"demo", "hourly", "daily", "minute"} <= set(names)
    for name in names:
        result = cli("budget", "--profile", name, "--json")
        report = json.loads(result.stdout)
        assert (result.exit_code, report["pretrain_ok"], report["finetune_ok"]) == (0, True, True), (name, report)
        cfg = load_profile(name).cfg
        variates = profile_variates(cfg)
        assert report["inputs"]["variates"] == len(variates)
        # what the trainers check, on a dataset of this profile's variates (one long series)
        dataset = tmp_path / name
        dataset.mkdir()
        item = {"train_end": 100_000, "validation_end": 110_000}
        manifest = {"variates": variates, "items": [item]}
        (dataset / "manifest.json").write_text(json.dumps(manifest))
        usable = preflight(cfg, dataset, manifest, tmp_path / f"{name}-run").usable_patch_sizes
        assert usable == [row["patch_size"] for row in report["rows"] if row["usable"]] != []
        sizes = [int(p) for p in cfg.model.patch_sizes]  # a model pre-trained with this profile
        assert check_fit("moirai", sizes, int(cfg.model.max_seq_len), cfg, len(variates)) == report["finetune"]["patch_size"]


def test_budget_from_a_model_judges_fine_tuning_as_finetune_does(tmp_path, cli):
    from tests.hubcache import save_stand_in

    moirai2 = save_stand_in("moirai2", tmp_path / "m2")  # reads patch 16 only; time patches count, not variates
    result = cli("budget", "--profile", "daily", "--json", "--from", str(moirai2), "finetune.patch_size=16")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["finetune_ok"], report
    assert (report["finetune"]["family"], report["finetune"]["patch_size"], report["finetune"]["tokens"]) == \
        ("moirai2", 16, 16 + 2)  # ceil(252/16) + ceil(21/16)
    # without --from the same profile is judged for a Moirai 1.x: 33 variates x 18 patches do not fit
    assert cli("budget", "--profile", "daily", "finetune.patch_size=16").exit_code == 1
    moirai = save_stand_in("moirai", tmp_path / "m1")  # patch sizes 16 and 32
    refused = cli("budget", "--profile", "daily", "--json", "--from", str(moirai), "finetune.patch_size=64")
    report = json.loads(refused.stdout)
    assert refused.exit_code == 1 and report["pretrain_ok"] and not report["finetune_ok"]
    assert "patch sizes are [16, 32]" in " ".join(report["suggestions"])
    finetune = cli("finetune", "--profile", "daily", "--from", str(moirai), "finetune.patch_size=64",
                   f"data.lake={tmp_path / 'lake'}", f"data.dataset={tmp_path / 'ds'}")
    assert finetune.exit_code == 2 and "patch sizes are [16, 32]" in finetune.stderr
