"""`ohlcv build`: the dirty lake, the report, the dataset, resume after kill -9, shards, safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ohlcv.builder.builder import IterativeFinancialDatasetBuilder, Shard
from ohlcv.builder.clean import RULES
from ohlcv.config import load_profile
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.lake.sample import DIRT_KINDS, generate_sample_lake

# A bar the cleaner drops leaves a one-bar hole that the gap filler then fills.
DROPPED_RULES = {"duplicate_ts": 0, "non_finite": 1, "non_positive_price": 1, "outliers": 1}


def _cfg(lake: Path, out: Path, *extra: str):
    """The hourly profile with one feature: these tests are about the builder, not the features."""
    overrides = [f"data.lake={lake}", f"data.dataset={out}", "data.batch_size=4", "features.enabled=[log_return]",
                 "features.params.log_return.horizons=[1]"]
    return load_profile("hourly", [*overrides, *extra]).cfg


def _build(lake: Path, out: Path, *extra: str, **kwargs):
    return IterativeFinancialDatasetBuilder(_cfg(lake, out, *extra), **kwargs).run()


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty")
    lake = generate_sample_lake(root / "lake", symbols_per_class=5, bars=1500, dirt=DIRT_KINDS, seed=3)
    result = _build(lake.root, root / "ds")
    return lake, result


def test_every_injected_defect_is_counted_by_its_rule(dirty):
    lake, result = dirty
    per_symbol = result.report["per_symbol"]
    assert set(per_symbol) == set(lake.symbols)
    for item_id, injected in lake.injected.items():
        counts = per_symbol[item_id]["counts"]
        expected = {rule: n for rule, n in injected.items() if not rule.startswith("_") and rule != "quarantined"}
        for rule, n in injected.items():
            if DROPPED_RULES.get(rule):
                expected["gap_bars_filled"] = expected.get("gap_bars_filled", 0) + n
        counts = {rule: n for rule, n in counts.items() if rule != "closed_market_bars"}  # not a defect
        assert counts == expected, item_id


def test_clean_symbols_have_no_false_alarms(dirty):
    lake, result = dirty
    for item_id, report in result.report["per_symbol"].items():
        if item_id not in lake.injected:
            assert set(report["counts"]) <= {"closed_market_bars"}, item_id
            assert report["quarantined"] is None


def test_closed_market_time_is_counted_apart_and_is_not_a_gap(dirty):
    """Nights, weekends and holidays of FX and equity venues are not gaps: no bar is missing or filled."""
    lake, result = dirty
    for item_id, report in result.report["per_symbol"].items():
        if item_id in lake.injected or report["quarantined"]:
            continue
        closed = report["counts"].get("closed_market_bars", 0)
        if item_id.startswith("crypto/"):
            assert closed == 0, item_id  # 24/7
        else:
            assert closed > report["bars"] * (0.25 if item_id.startswith("fx/") else 2.0), (item_id, closed)
        assert report["bars"] == report["observed"] == report["rows_read"], item_id


def test_report_lists_every_rule_with_its_outcome(dirty):
    _, result = dirty
    assert set(result.report["rules"]) == set(RULES)
    assert set(result.report["totals"]) <= set(RULES)
    assert result.report["quarantined"] == [
        {"item_id": "fx/FX004", "reason": "only 120 clean bars (< data.cleaning.min_length=720)"}
    ]
    unreadable = result.report["per_symbol"]["fx/FX003"]["file_problems"]
    assert len(unreadable) == 1 and "unreadable" in unreadable[0]


def test_every_clean_symbol_is_in_the_dataset_in_uni2ts_schema(dirty):
    import datasets

    lake, result = dirty
    manifest = result.manifest
    hf = datasets.load_from_disk(str(result.out / "hf"))
    ids = list(hf["item_id"])
    assert ids == sorted(set(lake.symbols) - {"fx/FX004"})
    assert manifest["series"] == len(ids) and manifest["variates"] == ["open", "high", "low", "close", "volume", "log_return_1"]
    row = hf.with_format("numpy")[0]
    target = np.stack(row["target"])
    assert target.dtype == np.float32 and target.shape == (6, manifest["items"][0]["length"])
    assert str(row["freq"]) == "1h"
    assert set(hf.features) == {"item_id", "start", "freq", "target"}
    # the first 3 bars of each gap are filled (causal), the rest stay missing (NaN) for the observed mask
    gappy = ids.index("equity/EQU004")
    values = np.stack(hf.with_format("numpy")[gappy]["target"])
    assert np.isnan(values[3]).sum() == 60 - 2 * 3
    # every bar's real time stamp is kept beside the dataset, in the dataset's row order
    from ohlcv.dataset.read import read_timestamps

    stamps = read_timestamps(result.out, manifest)
    assert list(stamps) == ids and len(stamps["equity/EQU004"]) == 1500
    assert manifest["timestamps"] == "timestamps.parquet" and manifest["split"]["common"] is True
    for name in ("manifest.json", "report.json", "profile.yaml"):
        assert (result.out / name).is_file()
    assert load_profile(str(result.out / "profile.yaml")).cfg.data.dataset == str(result.out)


def test_dataset_loads_through_uni2ts_and_its_pretraining_transform(dirty):
    from ohlcv.builder.check import check_dataset

    _, result = dirty
    cfg = _cfg(Path("unused"), result.out)
    report = check_dataset(result.out, cfg)
    assert report.ok, report.problems
    assert report.series == result.manifest["series"]
    assert 16 in report.patch_sizes_drawn  # the hourly profile's widened constraint is applied
    assert set(report.patch_sizes_drawn) <= {16, 32, 64}
    assert report.max_tokens <= 512


def test_check_fails_when_series_are_too_short_for_the_windows(dirty):
    from ohlcv.builder.check import check_dataset

    _, result = dirty
    # longer than some training spans (the equities': NYSE hours are the sparsest): those are skipped, a warning
    cfg = _cfg(Path("unused"), result.out, "data.context_length=1500", "data.prediction_length=48", "model.patch_sizes=[64]")
    report = check_dataset(result.out, cfg)
    assert any("training span shorter than context + horizon" in w and "training skips them" in w
               for w in report.warnings)
    # longer than every training span: nothing to train on
    cfg = _cfg(Path("unused"), result.out, "data.context_length=9000", "data.prediction_length=48", "model.patch_sizes=[64]")
    report = check_dataset(result.out, cfg)
    assert not report.ok
    assert any("every series has a training span shorter than context + horizon" in p for p in report.problems)


def test_check_names_a_variate_with_infinite_values(dirty, tmp_path):
    """A build never writes inf, but a dataset written or edited elsewhere may hold it: check says so."""
    import shutil

    import datasets

    from ohlcv.builder.check import check_dataset

    _, result = dirty
    copy = tmp_path / "edited"
    shutil.copytree(result.out, copy)
    hf = datasets.load_from_disk(str(result.out / "hf"))

    def poison(row, index):
        if index == 0:
            row["target"][5][10] = float("inf")  # log_return_1 of the first series
        return row

    shutil.rmtree(copy / "hf")
    hf.map(poison, with_indices=True).save_to_disk(str(copy / "hf"))
    report = check_dataset(copy, _cfg(Path("unused"), copy))
    assert report.infinite == {"log_return_1": 1}
    assert not report.ok and any("'log_return_1' has 1 infinite values" in p for p in report.problems)
    assert check_dataset(result.out, _cfg(Path("unused"), result.out)).infinite == {}


def test_rebuild_is_up_to_date_and_identical(dirty, tmp_path):
    lake, result = dirty
    again = _build(lake.root, result.out)
    assert again.up_to_date
    fresh = _build(lake.root, tmp_path / "copy")
    assert fresh.manifest["content_hash"] == result.manifest["content_hash"]


def _content_hash_of(path: Path) -> str:
    import hashlib

    import datasets

    digest = hashlib.sha256()
    for row in datasets.load_from_disk(str(path / "hf")).with_format("numpy"):
        digest.update(str(row["item_id"]).encode())
        digest.update(np.ascontiguousarray(np.stack(row["target"]), dtype=np.float32).tobytes())
    return digest.hexdigest()


def test_kill_9_mid_build_then_resume_gives_the_same_dataset(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=4, bars=900, seed=11)
    reference = _build(lake.root, tmp_path / "reference", "data.batch_size=2")
    out = tmp_path / "out"
    work = tmp_path / ".out.building"
    command = [sys.executable, "-m", "ohlcv", "build", "--profile", "hourly", "--lake", str(lake.root),
               "--out", str(out), "--quiet", "data.batch_size=2", "features.enabled=[log_return]",
               "features.params.log_return.horizons=[1]"]
    env = {**os.environ, "OHLCV_BUILD_PAUSE_AT_BATCH": "2", "OHLCV_BUILD_PAUSE_SECONDS": "120"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (work / "batches" / "batch-00001.json").exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the build never finished its second batch"
        time.sleep(0.05)
    time.sleep(0.3)  # now inside batch 2 (paused half-way)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed build must not leave a (partial) dataset"
    assert sorted(p.name for p in (work / "batches").glob("*.json")) == ["batch-00000.json", "batch-00001.json"]

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed after 2 finished batches" in rerun.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content_hash"] == reference.manifest["content_hash"]
    assert _content_hash_of(out) == _content_hash_of(reference.out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_normalization_is_fitted_on_the_training_span_only(tmp_path):
    import polars as pl

    from ohlcv.dataset import normalize

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=1200, seed=5)
    extra = ("data.normalization.scaler=standard",)
    before = _build(lake.root, tmp_path / "a", *extra)
    # rewrite every bar after the training span (80% of 1,200 = 960) with wild values
    for item in before.manifest["items"]:
        cut = np.datetime64(item["train_end_ts"][:19])
        symbol_dir = lake.root / f"asset_class={item['asset_class']}" / "freq=1h" / f"symbol={item['symbol']}"
        for path in symbol_dir.rglob("part.parquet"):
            frame = pl.read_parquet(path)
            late = pl.col("ts") >= pl.lit(cut).dt.replace_time_zone("UTC")
            frame = frame.with_columns([pl.when(late).then(pl.col(c) * 7.5 + 3).otherwise(pl.col(c)).alias(c)
                                        for c in ("open", "high", "low", "close", "volume")])
            frame.write_parquet(path)
    after = _build(lake.root, tmp_path / "b", *extra)
    assert after.manifest["content_hash"] != before.manifest["content_hash"]  # the data did change
    assert after.manifest["normalization"]["groups"] == before.manifest["normalization"]["groups"]
    # the saved statistics invert the normalization back to prices
    import datasets

    group = after.manifest["normalization"]["groups"]["crypto/CRY000"]
    row = datasets.load_from_disk(str(after.out / "hf")).with_format("numpy")[0]
    prices = normalize.invert(np.stack(row["target"]).astype(np.float64), np.array(group["center"]), np.array(group["scale"]))
    raw = pl.read_parquet(next((lake.root / "asset_class=crypto" / "freq=1h" / "symbol=CRY000").rglob("part.parquet")))
    assert prices[3, 0] == pytest.approx(raw["close"][0], rel=1e-5)
    train = np.stack(row["target"])[:, : after.manifest["items"][0]["train_end"]]
    assert np.nanmean(train[3]) == pytest.approx(0.0, abs=1e-4)


def test_asset_class_scope_merges_statistics_exactly(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=3, asset_classes=["fx"], bars=900, seed=2)
    result = _build(lake.root, tmp_path / "ds", "data.normalization.scaler=standard", "data.normalization.scope=asset_class")
    import datasets

    hf = datasets.load_from_disk(str(result.out / "hf")).with_format("numpy")
    group = result.manifest["normalization"]["groups"]["fx"]
    assert len(group["center"]) == len(group["scale"]) == 6 and set(result.manifest["normalization"]["groups"]) == {"fx"}
    ends = {item["item_id"]: item["train_end"] for item in result.manifest["items"]}
    pooled = np.concatenate([np.stack(r["target"])[:, : ends[str(r["item_id"])]] for r in hf], axis=1)
    assert np.nanmean(pooled, axis=1) == pytest.approx(np.zeros(6), abs=1e-4)
    assert np.nanstd(pooled, axis=1) == pytest.approx(np.ones(6), abs=1e-3)
    with pytest.raises(ConfigError, match="robust scaler"):
        _build(lake.root, tmp_path / "x", "data.normalization.scaler=robust", "data.normalization.scope=asset_class")


def test_covariates_layout_splits_targets_from_past_covariates(tmp_path):
    import datasets

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["equity"], bars=900)
    result = _build(lake.root, tmp_path / "ds", "data.layout=covariates", "data.targets=[close]")
    assert result.manifest["targets"] == ["close"]
    assert result.manifest["covariates"] == ["open", "high", "low", "volume", "log_return_1"]
    row = datasets.load_from_disk(str(result.out / "hf")).with_format("numpy")[0]
    assert np.stack(row["target"]).shape == (1, 900)
    assert np.stack(row["past_feat_dynamic_real"]).shape == (5, 900)
    with pytest.raises(ConfigError, match="data.targets"):
        _build(lake.root, tmp_path / "bad", "data.layout=covariates", "data.targets=[sentiment]")


def test_shards_merge_into_the_same_dataset(tmp_path):
    from ohlcv.builder.merge import merge_shards

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=4, bars=800, seed=8)
    # cross-asset features: every shard must see the whole asset class, not only its own symbols
    extra = ("features.enabled=[log_return,class_return,relative_strength]",)
    full = _build(lake.root, tmp_path / "full", *extra)
    parts = []
    for k in (1, 2, 3):
        part = _build(lake.root, tmp_path / f"shard{k}", *extra, shard=Shard(k, 3))
        parts.append(part.out)
    assert len(list(tmp_path.glob(".ohlcv-reference-*.parquet"))) == 1  # computed once, shared by the shards
    owned = [set(json.loads((p / "manifest.json").read_text())["items"][i]["item_id"]
                 for i in range(json.loads((p / "manifest.json").read_text())["series"])) for p in parts]
    assert sum(len(o) for o in owned) == 12 and not (owned[0] & owned[1])
    merged = merge_shards(parts, tmp_path / "merged")
    assert merged["content_hash"] == full.manifest["content_hash"]
    assert merged["series"] == full.manifest["series"]
    assert _loaded_rows(tmp_path / "merged") == _loaded_rows(full.out)
    with pytest.raises(Exception, match="incomplete"):
        merge_shards(parts[:2], tmp_path / "partial")


def test_path_tricks_in_symbol_names_cannot_escape_the_output(tmp_path):
    import polars as pl

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["crypto"], bars=800)
    source = next((lake.root / "asset_class=crypto" / "freq=1h" / "symbol=CRY000").rglob("part.parquet"))
    frame = pl.read_parquet(source)
    for name in ("symbol=..", "symbol=a%2F..%2F..%2Fescape", "symbol=with space", "symbol=..%2F..%2Fup"):
        target = lake.root / "asset_class=crypto" / "freq=1h" / name / "year=2023" / "month=01" / "part.parquet"
        target.parent.mkdir(parents=True)
        frame.head(800).write_parquet(target)
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "data" / "ds"
    result = _build(lake.root, out, "data.cleaning.min_length=100")
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(out == p or out in p.parents or p == out.parent for p in created), sorted(map(str, created))
    ids = [item["item_id"] for item in result.manifest["items"]]
    assert "crypto/.." in ids and "crypto/with space" in ids and "crypto/a/../../escape" in ids


def test_one_symbol_failing_inside_a_plugin_is_quarantined_not_fatal(tmp_path):
    import types

    import polars as pl

    from ohlcv.features import Feature
    from ohlcv.hookspecs import hookimpl
    from ohlcv.plugins import load_plugins

    def explode(frame, params):
        if frame["close"][0] > 1000:  # crypto prices only
            raise RuntimeError("plugin bug")
        return frame.select(pl.col("close").alias("same_close"))

    module = types.ModuleType("fragile")

    @hookimpl
    def ohlcv_register_features(register):
        register(Feature(name="same_close", family="indicator", inputs=("close",), outputs=["same_close"], warmup=0, frame=explode))

    module.ohlcv_register_features = ohlcv_register_features
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["crypto", "fx"], bars=800)
    cfg = _cfg(lake.root, tmp_path / "ds", "features.enabled=[log_return,same_close]")
    result = IterativeFinancialDatasetBuilder(cfg, plugins=load_plugins(extra=[("fragile", module)])).run()
    assert [q["item_id"] for q in result.report["quarantined"]] == ["crypto/CRY000"]
    assert "plugin bug" in result.report["quarantined"][0]["reason"]
    assert result.manifest["series"] == 1


def test_non_finite_feature_values_are_written_as_missing(tmp_path):
    import types

    import polars as pl

    from ohlcv.features import Feature
    from ohlcv.hookspecs import hookimpl
    from ohlcv.plugins import load_plugins

    module = types.ModuleType("dividing")

    @hookimpl
    def ohlcv_register_features(register):
        # +inf on every 10th bar, NaN on every 7th, beyond float32 (1e39) on every 11th, the close elsewhere
        value = (pl.when(pl.int_range(pl.len()) % 10 == 0).then(float("inf"))
                 .when(pl.int_range(pl.len()) % 7 == 0).then(float("nan"))
                 .when(pl.int_range(pl.len()) % 11 == 0).then(-1e39).otherwise(pl.col("close")))
        register(Feature(name="ragged", family="indicator", inputs=("close",), outputs=["ragged"], warmup=0,
                         exprs=lambda p: [value.alias("ragged")]))

    module.ohlcv_register_features = ohlcv_register_features
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["crypto"], bars=800)
    cfg = _cfg(lake.root, tmp_path / "ds", "features.enabled=[ragged]")
    result = IterativeFinancialDatasetBuilder(cfg, plugins=load_plugins(extra=[("dividing", module)])).run()
    import datasets

    row = datasets.load_from_disk(str(result.out / "hf")).with_format("numpy")[0]
    ragged, close = row["target"][result.manifest["variates"].index("ragged")], row["target"][3]
    position = np.arange(len(ragged))
    odd = (position % 10 == 0) | (position % 7 == 0) | (position % 11 == 0)
    assert np.isnan(ragged[odd]).all() and np.isfinite(ragged[~odd]).all()
    np.testing.assert_array_equal(ragged[~odd], close[~odd])


def test_build_cli_prints_the_report_and_writes_the_profile(tmp_path, cli):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=3, bars=800,
                                dirt=["duplicates", "too_short", "unreadable"])
    result = cli("build", "--lake", str(lake.root), "--out", str(tmp_path / "ds"), "data.batch_size=2")
    assert result.exit_code == 0, result.stderr
    assert "duplicate_ts" in result.stdout and "quarantined" in result.stdout
    skipped = [line for line in result.stdout.splitlines() if line.startswith("file skipped")]
    assert len(skipped) == 1 and ".parquet" in skipped[0] and "unreadable" in skipped[0]  # which file, not a count
    assert (tmp_path / "ds" / "profile.yaml").is_file()
    missing = cli("build", "--lake", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"))
    assert missing.exit_code == 1 and "lake folder not found" in missing.stderr
    not_ours = tmp_path / "precious"
    not_ours.mkdir()
    (not_ours / "thesis.txt").write_text("keep me")
    refused = cli("build", "--lake", str(lake.root), "--out", str(not_ours))
    assert refused.exit_code == 2 and "not an ohlcv dataset" in refused.stderr
    assert (not_ours / "thesis.txt").read_text() == "keep me"


def test_build_docs_list_every_cleaning_rule():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "build.md").read_text()
    for rule in RULES:
        assert f"`{rule}`" in doc, rule


def test_check_and_merge_commands(tmp_path, cli):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=800)
    for k in (1, 2):
        shard = cli("build", "--lake", str(lake.root), "--out", str(tmp_path / f"s{k}"), "--shard", f"{k}/2", "-q")
        assert shard.exit_code == 0, shard.stderr
    merged = cli("build", "merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "all"))
    assert merged.exit_code == 0, merged.stderr
    assert "merged 2 shards: 2 series" in merged.stdout
    ok = cli("check", str(tmp_path / "all"), "--json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    too_long = cli("check", str(tmp_path / "all"), "data.context_length=2000", "model.patch_sizes=[64]",
                   "data.prediction_length=64")
    assert too_long.exit_code == 1 and "not ready" in too_long.stdout
    bad_shard = cli("build", "--lake", str(lake.root), "--out", str(tmp_path / "x"), "--shard", "3/2")
    assert bad_shard.exit_code == 2 and "--shard" in bad_shard.stderr


def test_check_without_a_profile_uses_the_profile_the_dataset_was_built_with(tmp_path, cli):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=900)
    built = cli("build", "--lake", str(lake.root), "--out", str(tmp_path / "ds"), "data.context_length=240", "-q")
    assert built.exit_code == 0, built.stderr
    own = cli("check", str(tmp_path / "ds"), "--json")
    assert own.exit_code == 0, own.stderr
    assert json.loads(own.stdout)["budget"]["inputs"]["context_length"] == 240
    named = cli("check", str(tmp_path / "ds"), "--profile", "hourly", "--json")  # named: that profile, as before
    assert json.loads(named.stdout)["budget"]["inputs"]["context_length"] == 168


def test_merge_never_replaces_a_folder_that_is_not_a_dataset_or_holds_a_shard(tmp_path, cli):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=800)
    project = tmp_path / "project"
    for k in (1, 2):
        shard = cli("build", "--lake", str(lake.root), "--out", str(project / f"s{k}"), "--shard", f"{k}/2", "-q")
        assert shard.exit_code == 0, shard.stderr
    (project / "NOTES.md").write_text("mine")
    shards = [str(project / "s1"), str(project / "s2")]
    for out in (project, project / "s1"):  # holds the shards (and a user's file); is a shard
        refused = cli("build", "merge", *shards, "--out", str(out))
        assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "important.txt").write_text("keep")
    refused = cli("build", "merge", *shards, "--out", str(tmp_path / "mine"))
    assert refused.exit_code == 2 and "not an ohlcv dataset" in refused.stderr
    assert (project / "NOTES.md").read_text() == "mine" and (tmp_path / "mine" / "important.txt").is_file()
    assert all((project / f"s{k}" / "manifest.json").is_file() for k in (1, 2))
    assert json.loads((project / "s1" / "manifest.json").read_text())["shard"] == "1/2"


def test_a_shard_normalized_per_asset_class_is_refused_before_it_is_built(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=800)
    with pytest.raises(ConfigError, match="scope=symbol"):
        _build(lake.root, tmp_path / "s1", "data.normalization.scaler=standard", "data.normalization.scope=asset_class",
               shard=Shard(1, 2))
    assert not (tmp_path / "s1").exists() and not list(tmp_path.glob(".s1*"))


def test_a_class_of_one_symbol_beside_classes_with_peers_is_named_in_a_note(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx", "equity"], bars=800)
    result = _build(lake.root, tmp_path / "ds", "features.enabled=[log_return,class_return]",
                    "data.symbols=[EQU000,FX000,FX001]")
    notes = [n for n in result.report["notes"] if "cross-asset" in n]
    assert len(notes) == 1 and "asset class equity" in notes[0] and "fx" not in notes[0]
    assert "class_return" in result.manifest["variates"]


def test_shards_of_different_lakes_do_not_merge(tmp_path):
    import shutil

    from ohlcv.builder.merge import merge_shards

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=800)
    shutil.copytree(lake.root, tmp_path / "other")
    first = _build(lake.root, tmp_path / "s1", shard=Shard(1, 2))
    second = _build(tmp_path / "other", tmp_path / "s2", shard=Shard(2, 2))
    with pytest.raises(OhlcvError, match="different lakes"):
        merge_shards([first.out, second.out], tmp_path / "merged")


def test_a_symlinked_output_receives_the_dataset_and_stays_a_link(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=800)
    target = tmp_path / "elsewhere" / "ds"
    target.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(target)
    result = _build(lake.root, link)
    assert link.is_symlink() and (target / "manifest.json").is_file()
    assert _build(lake.root, link).up_to_date and link.is_symlink()
    assert result.manifest["series"] == 1


def test_a_rebuild_keeps_the_files_a_user_put_inside_the_dataset(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=800)
    out = tmp_path / "ds"
    _build(lake.root, out)
    (out / "eval").mkdir()
    (out / "eval" / "metrics.json").write_text("{}")
    rebuilt = IterativeFinancialDatasetBuilder(_cfg(lake.root, out, "data.cleaning.min_length=100")).run(force=True)
    assert not rebuilt.up_to_date and rebuilt.manifest["series"] == 1
    assert (out / "eval" / "metrics.json").read_text() == "{}"


def test_a_build_killed_after_its_swap_leaves_no_work_folder_after_the_next_run(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=800)
    out = tmp_path / "ds"
    first = _build(lake.root, out)
    stale = out.parent / f".{out.name}.building"  # what a kill between the swap and the clean-up leaves
    (stale / "batches").mkdir(parents=True)
    (stale / "batches" / "batch-00000.arrow").write_bytes(b"x" * 1000)
    again = _build(lake.root, out)
    assert again.up_to_date and again.manifest["content_hash"] == first.manifest["content_hash"]
    assert not stale.exists()


def test_split_by_date_records_the_boundaries(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["crypto"], bars=1000,
                                start="2023-01-01")
    result = _build(lake.root, tmp_path / "ds", "data.split.method=date",
                    "data.split.train_end=2023-02-01", "data.split.validation_end=2023-02-10T12:00:00")
    (item,) = result.manifest["items"]
    assert item["train_end"] == 31 * 24  # hourly bars in January
    assert item["validation_end"] == (31 + 9) * 24 + 12
    assert item["train_end_ts"].startswith("2023-02-01T00:00:00")
    assert result.manifest["split"]["method"] == "date"


def test_a_dataset_from_another_datasets_major_version_is_rebuilt_or_refused_clearly(tmp_path):
    import shutil

    from ohlcv.builder.check import check_dataset
    from ohlcv.errors import OhlcvError
    from ohlcv.dataset.read import load_hf

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=800)
    first = _build(lake.root, tmp_path / "ds")
    manifest_file = first.out / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["datasets_version"]
    manifest["datasets_version"] = "1.0.0"  # as if written by another stack
    manifest_file.write_text(json.dumps(manifest))
    again = _build(lake.root, tmp_path / "ds")
    assert not again.up_to_date  # rebuilt for this stack
    shutil.rmtree(first.out / "hf")
    (first.out / "hf").mkdir()
    (first.out / "hf" / "state.json").write_text("{}")
    with pytest.raises(OhlcvError, match="cannot load this dataset .* rebuild it on this stack"):
        load_hf(first.out, again.manifest)
    report = check_dataset(first.out, _cfg(lake.root, first.out))
    assert not report.ok and any("cannot load this dataset" in p for p in report.problems)


def _loaded_rows(path: Path) -> tuple[list, object]:
    """Every row of a built dataset as ``load_from_disk`` reads it (numpy format), and its features."""
    import datasets

    hf = datasets.load_from_disk(str(path / "hf"))
    rows = [(str(r["item_id"]), r["start"], str(r["freq"]), np.stack(r["target"]).tobytes())
            for r in hf.with_format("numpy")]
    return rows, hf.features


@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize("scope", ["symbol", "asset_class"])
def test_batch_files_become_the_datasets_files_without_changing_what_loads(tmp_path, monkeypatch, scope, joined):
    import ohlcv.dataset.write as write

    if not joined:
        monkeypatch.setattr(write, "_OWN_FILE", 1)  # every batch file large enough to be placed as it is
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=3, asset_classes=["crypto", "fx"], bars=700, seed=12)
    extra = ("data.normalization.scaler=standard", f"data.normalization.scope={scope}")
    one_file = _build(lake.root, tmp_path / "one", "data.batch_size=100", *extra)
    per_batch = _build(lake.root, tmp_path / "many", "data.batch_size=2", *extra)
    # fx has 700 < min_length bars: quarantined, so of the batches [CRY000, CRY001], [CRY002, FX000] and
    # [FX001, FX002] the last is empty and contributes no file; one file per other batch, in datasets' names,
    # or (small files) the two joined in one
    files = 1 if joined else 2
    assert sorted(p.name for p in (per_batch.out / "hf").glob("*.arrow")) == [
        f"data-{i:05d}-of-{files:05d}.arrow" for i in range(files)]
    assert per_batch.manifest["content_hash"] == one_file.manifest["content_hash"]
    rows, features = _loaded_rows(per_batch.out)
    reference_rows, reference_features = _loaded_rows(one_file.out)
    assert rows == reference_rows and features == reference_features
    assert [r[0] for r in rows] == ["crypto/CRY000", "crypto/CRY001", "crypto/CRY002"]
    if scope == "symbol" and not joined:  # uni2ts's loaders and transforms read a dataset of several files
        from ohlcv.builder.check import check_dataset

        report = check_dataset(per_batch.out, _cfg(lake.root, per_batch.out, "data.batch_size=2", *extra))
        assert report.ok and report.series == 3, report.problems
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the work folder is gone


def test_a_shard_that_owns_no_symbol_is_an_empty_loadable_dataset(tmp_path):
    from ohlcv.builder.plan import Shard as PlanShard

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=700)
    (symbol,) = lake.symbols
    empty = next(PlanShard(k, 7) for k in range(1, 8) if not PlanShard(k, 7).owns(symbol))
    result = _build(lake.root, tmp_path / "empty", shard=empty)
    rows, features = _loaded_rows(result.out)
    assert rows == [] and result.manifest["series"] == 0
    assert set(features) == {"item_id", "start", "freq", "target"}


def test_a_merge_killed_half_way_resumes_to_the_same_dataset(tmp_path, monkeypatch):
    import ohlcv.dataset.write as write

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=6, asset_classes=["crypto"], bars=900, seed=13)
    reference = _build(lake.root, tmp_path / "reference", "data.batch_size=2")
    monkeypatch.setattr(write, "_OWN_FILE", 1)  # each batch file placed as it is (hard-linked)
    link, placed = os.link, []

    class Killed(BaseException):
        """The process dying (nothing in the build catches it)."""

    def dies_after_two(source, target):  # the process dies between the merge's second and third file
        if len(placed) == 2:
            raise Killed
        link(source, target)
        placed.append(target)

    monkeypatch.setattr(write.os, "link", dies_after_two)
    with pytest.raises(Killed):
        _build(lake.root, tmp_path / "out", "data.batch_size=2")
    assert not (tmp_path / "out").exists() and len(placed) == 2
    monkeypatch.setattr(write.os, "link", link)
    resumed = _build(lake.root, tmp_path / "out", "data.batch_size=2")
    assert resumed.resumed_batches == 3
    assert resumed.manifest["content_hash"] == reference.manifest["content_hash"]
    assert _loaded_rows(resumed.out) == _loaded_rows(reference.out)


def test_every_defect_is_counted_in_a_daily_lake_of_year_files(tmp_path):
    """Dirt injected file by file works the same when a file holds a year of daily bars."""
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=5, bars=1500, dirt=DIRT_KINDS, seed=3,
                                freq="1D", start="2015-01-02", partition="year")
    assert {p.parent.name[:5] for p in lake.root.rglob("*.parquet")} == {"year="}
    cfg = load_profile("daily", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}",
                                 "features.enabled=[log_return]", "data.cleaning.max_ffill_gap=3"]).cfg
    per_symbol = IterativeFinancialDatasetBuilder(cfg).run().report["per_symbol"]
    for item_id, injected in lake.injected.items():
        expected = {rule: n for rule, n in injected.items() if not rule.startswith("_") and rule != "quarantined"}
        for rule, n in injected.items():
            if DROPPED_RULES.get(rule):
                expected["gap_bars_filled"] = expected.get("gap_bars_filled", 0) + n
        counts = {rule: n for rule, n in per_symbol[item_id]["counts"].items() if rule != "closed_market_bars"}
        assert counts == expected, item_id


def test_a_variate_without_a_value_in_a_series_is_named_in_the_report_and_a_note(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto", "fx"], bars=900,
                                seed=2)
    # log_return_1000 needs 1,000 bars: more than the FX series have (900), fewer than crypto's (24/7: ~1,260)
    result = _build(lake.root, tmp_path / "ds", "features.params.log_return.horizons=[1,1000]")
    per_symbol = result.report["per_symbol"]
    assert {k: v["missing_variates"] for k, v in per_symbol.items()} == {
        "crypto/CRY000": [], "crypto/CRY001": [], "fx/FX000": ["log_return_1000"], "fx/FX001": ["log_return_1000"]}
    notes = [n for n in result.report["notes"] if n.startswith("log_return_1000")]
    assert notes == ["log_return_1000: no value at all in 2 of 4 series (fx/FX000, fx/FX001); likely log_return: "
                     "a warm-up of 1000 bars, longer than the series"]
    # a shard merge words it over every shard's series, once
    from ohlcv.builder.merge import merge_shards

    shards = [_build(lake.root, tmp_path / f"s{k}", "features.params.log_return.horizons=[1,1000]", shard=Shard(k, 2))
              for k in (1, 2)]
    merge_shards([s.out for s in shards], tmp_path / "merged")
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert [n for n in merged["notes"] if "no value at all" in n] == notes


def test_the_note_for_a_symbol_without_volume_names_the_volume_not_a_warm_up(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=900, seed=3)
    for path in (lake.root / "asset_class=crypto").rglob("symbol=CRY001/**/*.parquet"):
        pl.read_parquet(path).drop("volume").write_parquet(path)
    result = _build(lake.root, tmp_path / "ds", "features.enabled=[log_return,volume_z]")
    assert result.report["per_symbol"]["crypto/CRY001"]["missing_variates"] == ["volume", "volume_z"]
    assert [n for n in result.report["notes"] if "no value at all" in n] == [
        "volume, volume_z: no value at all in 1 of 2 series (crypto/CRY001); likely no volume in its files"]


def test_a_dataset_whose_features_would_now_be_computed_differently_is_rebuilt(tmp_path, monkeypatch):
    """The fingerprint covers what the features write (each output's warm-up), not only their parameters:
    a dataset built by a feature definition of another version is not kept as up to date."""
    from ohlcv.features import Feature

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=800, seed=1)
    first = _build(lake.root, tmp_path / "ds", "features.params.log_return.horizons=[1,24]")
    assert _build(lake.root, tmp_path / "ds", "features.params.log_return.horizons=[1,24]").up_to_date
    longest = Feature.output_warmups

    def as_before(self, overrides=None):  # every output waiting for the longest, as before this version
        warmups = longest(self, overrides)
        return dict.fromkeys(warmups, max(warmups.values(), default=0))

    monkeypatch.setattr(Feature, "output_warmups", as_before)
    again = _build(lake.root, tmp_path / "ds", "features.params.log_return.horizons=[1,24]")
    assert not again.up_to_date and again.manifest["content_hash"] != first.manifest["content_hash"]
