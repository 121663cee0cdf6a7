"""Fine-tuning that is right: whole-span windows, a real warm-up, short runs, the guardrail, every pattern, Moirai 2.0."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from tests.conftest import FT, TINY, pretrain_tiny

pytestmark = pytest.mark.slow  # every test here trains or forecasts with a model

needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                                reason='LoRA needs peft: pip install "ohlcv[lora]" (modern stack, torch >= 2.5)')


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftp")
    return root, pretrain_tiny(root, asset_classes=["crypto"], bars=1000, seed=4)


def tiny_moirai2(folder, *, patch: int = 16, steps: int = 2):
    """A 2-layer Moirai 2.0 with random weights, saved as uni2ts saves the released ones."""
    import torch
    from uni2ts.model.moirai2 import Moirai2Module

    torch.manual_seed(0)
    module = Moirai2Module(d_model=64, d_ff=128, num_layers=2, patch_size=patch, max_seq_len=512,
                           attn_dropout_p=0.0, dropout_p=0.0, num_predict_token=steps)
    module.save_pretrained(str(folder))
    return folder


def weights(folder):
    from safetensors.numpy import load_file

    return load_file(folder / "model.safetensors")


def finetune(cli, root, start, out, *extra):
    return cli("finetune", "--from", str(start), "--out", str(root / out), "--profile", "hourly",
               "--dataset", str(root / "ds"), *TINY, *FT, *extra)


# --- windows ---------------------------------------------------------------------------------------------------

def test_windows_cover_the_whole_training_span_of_series_of_very_different_lengths(tmp_path):
    """A symbol that starts three months late has a short training span; the long one's newest bars are trained on."""
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile
    from ohlcv.dataset.read import load_hf, span_bounds
    from ohlcv.lake.sample import generate_sample_lake
    from ohlcv.moirai.data import WindowDraws, span_windows, spread_windows
    from ohlcv.moirai.moirai2 import WindowArrays

    sample = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=3000, seed=3)
    late = sorted((tmp_path / "lake").glob("asset_class=crypto/freq=*/symbol=*"))[0]
    for month in ("01", "02", "03"):
        shutil.rmtree(late / "year=2023" / f"month={month}")
    loaded = load_profile("hourly", [f"data.lake={sample.root}", f"data.dataset={tmp_path / 'ds'}", *TINY])
    IterativeFinancialDatasetBuilder(loaded.cfg).run()
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    lengths = {i["item_id"]: span_bounds(i, "train")[1] for i in manifest["items"]}
    assert max(lengths.values()) > 5 * min(lengths.values())  # really very different lengths
    context, horizon = 168, 24
    data, counts = span_windows(tmp_path / "ds", manifest, WindowArrays(context, horizon, 1), span="train",
                                need=context + horizon, distance=1)
    assert counts == {k: n - context - horizon + 1 for k, n in lengths.items()}
    assert len(data) == sum(counts.values())
    series = {str(r["item_id"]): np.asarray(r["target"], dtype=np.float32) for r in load_hf(tmp_path / "ds", manifest)}
    offset = 0
    for item_id in data.indexer.dataset["item_id"]:
        n, last = lengths[str(item_id)], data[offset + counts[str(item_id)] - 1]
        newest = series[str(item_id)][:, n - horizon:n].T  # the last bars of the training span
        np.testing.assert_array_equal(last["future_target"], np.nan_to_num(newest))
        offset += counts[str(item_id)]
    # training draws reach every window, the long series' newest one included
    draws = set(WindowDraws(len(data), 50 * len(data), seed=0))
    assert draws == set(range(len(data)))
    # validation: a capped, fixed set spread over every series' whole validation span, never before train_end
    val, val_counts = span_windows(tmp_path / "ds", manifest, WindowArrays(context, horizon, horizon),
                                   span="validation", need=context + horizon, distance=horizon, lead=context)
    for item in manifest["items"]:  # every horizon of the validation span, up to its last full one
        span = item["validation_end"] - item["train_end"]
        assert val_counts[item["item_id"]] == span // horizon
    picked = spread_windows(list(val_counts.values()), 6)
    assert len(picked) <= 6 + len(val_counts) and picked == spread_windows(list(val_counts.values()), 6)
    starts = np.cumsum([0, *val_counts.values()])
    for k, item_id in enumerate(val_counts):
        mine = [i - starts[k] for i in picked if starts[k] <= i < starts[k + 1]]
        assert mine[0] == 0 and mine[-1] == val_counts[item_id] - 1  # the span's first and last windows
    ends = {i["item_id"]: i["train_end"] for i in manifest["items"]}
    for i in picked:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        item_id = list(val_counts)[k]
        first = ends[item_id] + (i - starts[k]) * horizon  # the bar its horizon starts at: at or after train_end
        assert first >= ends[item_id]
        np.testing.assert_array_equal(val[i]["future_target"],
                                      np.nan_to_num(series[item_id][:, first:first + horizon].T))


def test_moirai1_windows_read_the_same_bars_as_moirai2_windows():
    """uni2ts's Moirai 1.x transforms, given the window number span_windows sets: training window w is bars
    [w, w + context + horizon) of the span, the last one ending on its last bar; validation window w's
    horizon starts w horizons after the lead (train_end), never before."""
    from ohlcv.moirai.models import new_module
    from ohlcv.moirai.tuning import moirai_finetune_class

    context, horizon, patch, n = 40, 8, 8, 100
    model = moirai_finetune_class()(
        module=new_module("moirai", d_model=64, num_layers=1, patch_sizes=(8, 16)), min_patches=2,
        min_mask_ratio=0.1, max_mask_ratio=0.2, max_dim=128, num_training_steps=10, num_warmup_steps=1,
        num_samples=8, lr=1e-3, weight_decay=0.1, context_length=context, prediction_length=horizon,
        patch_size=patch, finetune_pattern="full")
    series = np.arange(n, dtype=np.float32)
    entry = {"target": [series, series * 10], "start": np.datetime64("2020-01-01"), "freq": "h", "item_id": "a"}
    train = model.train_transform_map["ohlcv"](distance=1, prediction_length=horizon, context_length=context,
                                               patch_size=patch)
    last = n - context - horizon  # the last of window_count(n, context + horizon, 1) windows
    for w in (0, 17, last):
        bars = train(dict(entry, window=w))["target"][:, :patch]
        np.testing.assert_array_equal(bars[: (context + horizon) // patch].ravel(),
                                      series[w:w + context + horizon])
    val = model.val_transform_map["ohlcv"](offset=context, distance=horizon, prediction_length=horizon,
                                           context_length=context, patch_size=patch)
    tokens = (context + horizon) // patch
    for w in range(0, (n - context) // horizon):  # lead = context bars before the validation span
        out = val(dict(entry, window=w))
        horizon_bars = out["target"][:tokens][out["prediction_mask"][:tokens]][:, :patch].ravel()
        np.testing.assert_array_equal(horizon_bars, series[context + w * horizon:context + (w + 1) * horizon])


def test_drawing_training_windows_never_lists_them_all():
    """1e8 windows: no permutation or index list of that size (it would take gigabytes per process)."""
    import tracemalloc

    from ohlcv.moirai.data import WindowDraws

    tracemalloc.start()
    draws = WindowDraws(100_000_000, 20_000, seed=1, rank=0)
    first = list(draws)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20 and len(first) == 20_000 and max(first) < 100_000_000
    assert list(WindowDraws(100_000_000, 100, seed=1, rank=0)) == first[:100]  # fixed by the seed
    assert set(WindowDraws(100_000_000, 100, seed=1, rank=1)).isdisjoint(first[:100])  # each rank its own
    assert list(draws)[:100] != first[:100]  # a second pass continues the stream


# --- schedule ---------------------------------------------------------------------------------------------------

def _lrs(model, steps: int) -> list[float]:
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_the_learning_rate_warms_up_then_decays_for_every_family(pretrained, tmp_path):
    from ohlcv.config import load_profile
    from ohlcv.moirai.tuning import family_of
    from ohlcv.moirai.models import load_module
    from ohlcv.train.finetune import build_model

    root, start = pretrained
    loaded = load_profile("hourly", [*TINY, "finetune.lr=1e-3", "finetune.warmup_steps=4", "finetune.max_steps=20"])
    manifest = json.loads((root / "ds" / "manifest.json").read_text())
    for folder in (start, tiny_moirai2(tmp_path / "m2")):
        module = load_module(str(folder))
        lrs = _lrs(build_model(loaded.cfg, module, family_of(module), manifest), 20)
        # step 1 already learns (rate / warmup_steps), step 4 reaches the profile's rate
        assert lrs[0] == pytest.approx(0.25e-3) and lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1e-3)
        assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 0.05e-3


# --- Moirai 1.x ---------------------------------------------------------------------------------------------------

def test_fewer_steps_than_one_validation_interval_still_validates_and_saves_a_model(pretrained, cli):
    root, start = pretrained
    result = finetune(cli, root, start, "short", "finetune.max_steps=2", "finetune.val_every_n_steps=50",
                      "finetune.warmup_steps=0")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "short" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert (root / "short" / "model" / "model.safetensors").is_file()


def test_steps_after_the_last_validation_are_validated_and_the_rate_is_logged(pretrained, cli):
    """max_steps 5, validation every 2: validated at 2, 4 and 5; the logged rate warms up from lr / warmup."""
    import csv

    root, start = pretrained
    result = finetune(cli, root, start, "off", "finetune.max_steps=5", "finetune.warmup_steps=2",
                      "finetune.lr=1e-3", "finetune.patience=10", "trainer.logger=csv")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "off" / "run.json").read_text())
    assert summary["steps"] == 5 and summary["best_step"] in (2, 4, 5)
    assert f"(step {summary['best_step']})" in result.stdout
    with open(root / "off" / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    validated = [row for row in rows if row.get("val/PackedNLLLoss")]
    assert len(validated) == 4  # the starting model, then steps 2, 4 and 5
    column = next(k for k in rows[0] if k.startswith("lr-"))
    rates = [float(row[column]) for row in rows if row.get(column)]
    assert rates[0] == pytest.approx(0.5e-3) and rates[1] == pytest.approx(1e-3) and rates[1] > rates[-1] > 0


def test_a_finetune_that_makes_the_model_worse_exports_the_starting_weights(pretrained, cli):
    root, start = pretrained
    result = finetune(cli, root, start, "worse", "finetune.lr=0.3", "finetune.warmup_steps=0",
                      "finetune.max_steps=4", "finetune.patience=5")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "worse" / "run.json").read_text())
    assert summary["improved"] is False and summary["val_loss_after"] > summary["val_loss_before"]
    assert "did not improve on the starting model" in result.stdout
    exported, original = weights(root / "worse" / "model"), weights(start)
    assert exported.keys() == original.keys()
    assert all(np.array_equal(exported[k], original[k]) for k in original)


@pytest.mark.parametrize("pattern", ["freeze_ffn", "head_only", pytest.param("lora", marks=needs_peft)])
def test_each_pattern_trains_only_its_part_and_exports_a_plain_uni2ts_model(pretrained, cli, pattern):
    from uni2ts.model.moirai import MoiraiModule

    root, start = pretrained
    result = finetune(cli, root, start, f"p-{pattern}", f"finetune.pattern={pattern}", "finetune.max_steps=3",
                      "finetune.lr=1e-3", "finetune.lora.rank=2")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / f"p-{pattern}" / "run.json").read_text())
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    assert f"trainable parameters: {summary['trainable_parameters']:,} of {summary['parameters']:,}" in result.stdout
    MoiraiModule.from_pretrained(str(root / f"p-{pattern}" / "model"))  # uni2ts's own loader, no peft
    exported, original = weights(root / f"p-{pattern}" / "model"), weights(start)
    assert exported.keys() == original.keys()  # LoRA: merged, no adapter weights left
    assert summary["parameters"] == sum(v.size for v in exported.values())  # the total is the exported model's
    kept = {"freeze_ffn": [k for k in original if ".ffn." in k],
            "head_only": [k for k in original if not k.startswith("param_proj.")],
            "lora": [k for k in original if "norm" in k or "param_proj" in k or "in_proj" in k]}[pattern]
    assert kept and all(np.array_equal(exported[k], original[k]) for k in kept)
    # the run really trained its part (the last checkpoint), and exported the best of it or the starting model
    import torch

    state = torch.load(root / f"p-{pattern}" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    if pattern == "lora":  # peft starts the B matrices at zero: trained adapters are non-zero
        assert any(float(v.abs().sum()) > 0 for k, v in state.items() if "lora_B" in k)
    else:
        assert any(not np.array_equal(state[f"module.{k}"].numpy(), original[k]) for k in original if k not in kept)
    changed = any(not np.array_equal(exported[k], original[k]) for k in original if k not in kept)
    assert changed == summary["improved"]
    if pattern == "lora":  # the merged export is an ordinary model to `ohlcv evaluate`
        scored = cli("evaluate", "--model", str(root / "p-lora" / "model"), "--out", str(root / "ev-lora"),
                     "--profile", "hourly", "--dataset", str(root / "ds"), *TINY, *FT, "evaluate.windows=1",
                     "evaluate.num_samples=8", "evaluate.variates=[close]")
        assert scored.exit_code == 0, scored.stderr + scored.stdout
        assert "close" in json.loads((root / "ev-lora" / "metrics.json").read_text())["aggregate"]["model"]


@needs_peft
def test_lora_adapters_merge_into_the_same_function_and_load_without_peft(pretrained, tmp_path):
    import torch
    from omegaconf import OmegaConf
    from uni2ts.model.moirai import MoiraiModule

    from ohlcv.config.schema import LoraConfig
    from ohlcv.moirai.lora import add_adapters, merged
    from ohlcv.moirai.tuning import parameter_counts

    _, start = pretrained
    adapted = add_adapters(MoiraiModule.from_pretrained(str(start)), OmegaConf.structured(LoraConfig(rank=2)))
    counts = parameter_counts(adapted)
    assert 0 < counts["trainable_parameters"] < counts["parameters"] * 0.2
    assert all("lora_" in n for n, p in adapted.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # adapters that change the function (peft starts them at zero)
    batch = _moirai1_batch()
    adapted.eval()
    with torch.no_grad():
        expected = adapted(**batch).mean
    plain = merged(adapted)
    plain.save_pretrained(str(tmp_path / "merged"))
    reloaded = MoiraiModule.from_pretrained(str(tmp_path / "merged")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).mean, expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(MoiraiModule.from_pretrained(str(start)).eval()(**batch).mean, expected)


def _moirai1_batch():
    import torch

    torch.manual_seed(1)
    n, patch = 8, 16
    return {"target": torch.randn(1, n, 64), "observed_mask": torch.ones(1, n, 64, dtype=torch.bool),
            "sample_id": torch.ones(1, n, dtype=torch.long), "time_id": torch.arange(n).unsqueeze(0),
            "variate_id": torch.zeros(1, n, dtype=torch.long),
            "prediction_mask": torch.tensor([[False] * 6 + [True] * 2]),
            "patch_size": torch.full((1, n), patch, dtype=torch.long)}


def test_lora_without_peft_says_how_to_install_it_in_one_line(pretrained, cli, monkeypatch):
    import sys

    root, start = pretrained
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` meets where it is not installed
    result = finetune(cli, root, start, "no-peft", "finetune.pattern=lora", "finetune.max_steps=2")
    assert result.exit_code == 2
    assert 'finetune.pattern lora needs peft: pip install "ohlcv[lora]"' in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (root / "no-peft").exists()  # no run folder left behind


@needs_peft
def test_lora_targets_are_checked_before_any_dataset_work(pretrained, cli):
    root, start = pretrained
    result = cli("finetune", "--from", str(start), "--out", str(root / "bad-target"), "--profile", "hourly",
                 "--dataset", str(root / "nowhere"), *TINY, *FT, f"data.lake={root / 'no-lake'}",
                 "finetune.pattern=lora", "finetune.lora.target_modules=[self_attn.qq_proj]")
    assert result.exit_code == 2, result.stderr + result.stdout
    assert "no layer of this model is named self_attn.qq_proj" in result.stderr  # not the missing lake
    assert not (root / "nowhere").exists() and not (root / "bad-target").exists()


def test_patterns_are_checked_against_the_one_family_table():
    from ohlcv.errors import ConfigError
    from ohlcv.moirai.sources import FAMILIES

    for family in ("moirai", "moirai2"):
        assert set(FAMILIES[family].finetune) == {"full", "freeze_ffn", "head_only", "lora"}
    with pytest.raises(ConfigError, match="is a Moirai-MoE model: ohlcv does not fine-tune Moirai-MoE"):
        FAMILIES["moirai_moe"].check_finetune("x", "full")
    with pytest.raises(ConfigError, match=r"'everything' is not supported for Moirai 2.0 models \(supported: full, "
                                          r"freeze_ffn, head_only, lora\)"):
        FAMILIES["moirai2"].check_finetune("x", "everything")


# --- Moirai 2.0 ---------------------------------------------------------------------------------------------------

def test_moirai2_validation_loss_is_the_pinball_loss_of_its_own_forecast(tmp_path):
    """What the guardrail compares is what Moirai2Forecast predicts, scored in the module's scaled units."""
    import torch
    from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module

    from ohlcv.moirai.moirai2 import layout_for, pinball, quantile_loss

    module = Moirai2Module.from_pretrained(str(tiny_moirai2(tmp_path / "m2", patch=8, steps=2))).eval()
    context, horizon, n = 40, 12, 3
    torch.manual_seed(2)
    x = torch.randn(n, context + horizon, 1).cumsum(1) + 5
    batch = {"past_target": x[:, :context], "past_observed_target": torch.ones(n, context, 1, dtype=torch.bool),
             "future_target": x[:, context:], "future_observed_target": torch.ones(n, horizon, 1, dtype=torch.bool)}
    layout = layout_for(module, context, horizon, 1, 0)
    module.eval()
    forecast = Moirai2Forecast(prediction_length=horizon, target_dim=1, feat_dynamic_real_dim=0,
                               past_feat_dynamic_real_dim=0, context_length=context, module=module)
    with torch.no_grad():
        loss = quantile_loss(module, layout, batch, forecast_only=True)
        quantiles = forecast(x[:, :context], batch["past_observed_target"], torch.zeros(n, context, dtype=torch.bool))
        past = x[:, :context, 0]
        loc, scale = past.mean(1, keepdim=True), past.std(1, keepdim=True)  # the module's instance scaling
        expected, count = pinball((quantiles - loc.unsqueeze(1)) / scale.unsqueeze(1), (x[:, context:, 0] - loc) / scale,
                                  torch.ones(n, horizon, dtype=torch.bool), torch.tensor(module.quantile_levels))
    torch.testing.assert_close(loss, expected / count, rtol=1e-3, atol=1e-4)
    # past covariates (data.layout: covariates) are inputs: the loss sees them, and stays about the targets
    with_cov = layout_for(module, context, horizon, 1, 2)
    module.eval()
    losses = []
    for seed in (3, 4):
        draw = torch.randn(n, context, 2, generator=torch.Generator().manual_seed(seed)).cumsum(1)
        cov = {"past_feat_dynamic_real": draw,
               "past_observed_feat_dynamic_real": torch.ones(n, context, 2, dtype=torch.bool)}
        with torch.no_grad():
            losses.append(float(quantile_loss(module, with_cov, {**batch, **cov}, forecast_only=True)))
    assert all(np.isfinite(losses)) and abs(losses[0] - losses[1]) > 1e-4


def test_moirai2_training_scores_only_horizon_patches_and_long_horizons_validate_on_the_forecast(tmp_path):
    """The scaler is fitted on the context, so scoring context patches would let their own bars set the
    scaling they are scored in; horizons longer than one decoding step are validated on Moirai2Forecast itself."""
    import torch
    from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module

    from ohlcv.moirai.moirai2 import decodes_recursively, forecast_loss, layout_for, pinball, quantile_loss

    module = Moirai2Module.from_pretrained(str(tiny_moirai2(tmp_path / "m2", patch=8, steps=1))).eval()
    context, horizon, n, targets = 40, 24, 3, 2
    torch.manual_seed(5)
    x = torch.randn(n, context + horizon, targets).cumsum(1) + 5
    batch = {"past_target": x[:, :context], "past_observed_target": torch.ones(n, context, targets, dtype=torch.bool),
             "future_target": x[:, context:],
             "future_observed_target": torch.ones(n, horizon, targets, dtype=torch.bool)}
    layout = layout_for(module, context, horizon, targets, 0)
    module.eval()

    def poisoned(first: int, last: int):  # the module, with the scaled targets of tokens [first, last) made absurd
        def call(*seq, training_mode):
            preds, scaled = module(*seq, training_mode=training_mode)
            scaled = scaled.clone()
            scaled[:, first:last] = 1e6
            return preds, scaled
        call.patch_size, call.num_predict_token, call.quantile_levels = (
            module.patch_size, module.num_predict_token, module.quantile_levels)
        return call

    with torch.no_grad():
        clean = quantile_loss(module, layout, batch, forecast_only=False)
        context_tokens = targets * (context // 8)  # every target variate's context patches come first
        assert quantile_loss(poisoned(0, context_tokens), layout, batch, forecast_only=False) == clean
        assert quantile_loss(poisoned(context_tokens, context_tokens + 1), layout, batch, forecast_only=False) > clean
        # one target, 3 horizon patches, one predicted per step: the forecast feeds its quantiles back
        one = {k: v[..., :1] for k, v in batch.items()}
        single = layout_for(module, context, horizon, 1, 0)
        module.eval()
        assert decodes_recursively(module, horizon)
        forecast = Moirai2Forecast(prediction_length=horizon, target_dim=1, feat_dynamic_real_dim=0,
                                   past_feat_dynamic_real_dim=0, context_length=context, module=module)
        quantiles = forecast(x[:, :context, :1], one["past_observed_target"], torch.zeros(n, context, dtype=torch.bool))
        past = x[:, :context, 0]
        loc, scale = past.mean(1, keepdim=True), past.std(1, keepdim=True)
        expected, count = pinball((quantiles - loc.unsqueeze(1)) / scale.unsqueeze(1), (x[:, context:, 0] - loc) / scale,
                                  torch.ones(n, horizon, dtype=torch.bool), torch.tensor(module.quantile_levels))
        scored = forecast_loss(module, single, one)
        torch.testing.assert_close(scored, expected / count, rtol=1e-3, atol=1e-4)
        assert abs(float(scored) - float(quantile_loss(module, single, one, forecast_only=True))) > 1e-4


@pytest.mark.parametrize("pattern", ["full", "head_only", pytest.param("lora", marks=needs_peft)])
def test_moirai2_fine_tunes_and_exports_a_model_uni2ts_forecasts_with(pretrained, cli, tmp_path, pattern):
    import torch
    from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module

    root, _ = pretrained
    start = tiny_moirai2(tmp_path / "start")
    result = finetune(cli, root, start, f"m2-{pattern}", f"finetune.pattern={pattern}", "finetune.max_steps=3",
                      "finetune.lr=1e-3")
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "Moirai 2.0" in result.stdout
    summary = json.loads((root / f"m2-{pattern}" / "run.json").read_text())
    assert summary["family"] == "Moirai 2.0" and summary["val_loss_before"] > 0
    assert (summary["trainable_parameters"] < summary["parameters"]) == (pattern != "full")
    module = Moirai2Module.from_pretrained(str(root / f"m2-{pattern}" / "model"))
    exported, original = weights(root / f"m2-{pattern}" / "model"), weights(start)
    assert exported.keys() == original.keys()
    if pattern == "head_only":
        assert all(np.array_equal(exported[k], original[k]) for k in original if not k.startswith("out_proj."))
    changed = any(not np.array_equal(exported[k], original[k]) for k in original)
    assert changed == summary["improved"]
    forecast = Moirai2Forecast(prediction_length=24, target_dim=1, feat_dynamic_real_dim=0,
                               past_feat_dynamic_real_dim=0, context_length=168, module=module)
    with torch.no_grad():
        quantiles = forecast(torch.randn(2, 168, 1).cumsum(1), torch.ones(2, 168, 1, dtype=torch.bool),
                             torch.zeros(2, 168, dtype=torch.bool))
    assert quantiles.shape == (2, 9, 24) and torch.isfinite(quantiles).all()
    # the run's export is an ordinary model to `ohlcv evaluate`, scored as a Moirai 2.0
    scored = cli("evaluate", "--model", str(root / f"m2-{pattern}" / "model"), "--out", str(root / f"ev-m2-{pattern}"),
                 "--profile", "hourly", "--dataset", str(root / "ds"), *TINY, *FT, "evaluate.windows=1",
                 "evaluate.variates=[close]")
    assert scored.exit_code == 0, scored.stderr + scored.stdout
    metrics = json.loads((root / f"ev-m2-{pattern}" / "metrics.json").read_text())
    assert "close" in metrics["aggregate"]["model"]


def test_moirai2_fine_tunes_from_a_hub_id_offline(pretrained, cli, tmp_path, monkeypatch):
    from tests.hubcache import STAND_INS, warm_cache

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    warm_cache(tmp_path / "hf" / "hub", families=("moirai2",), scratch=tmp_path / "stand-ins")
    root, _ = pretrained
    result = finetune(cli, root, STAND_INS["moirai2"], "m2-hub", "finetune.max_steps=2")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "m2-hub" / "run.json").read_text())
    assert summary["family"] == "Moirai 2.0" and summary["start"] == STAND_INS["moirai2"]
    assert summary["start_model"]["source"].startswith(f"hub {STAND_INS['moirai2']}")
    assert (root / "m2-hub" / "model" / "model.safetensors").is_file()


def test_moirai2_guardrail_exports_the_starting_weights_when_fine_tuning_makes_it_worse(pretrained, cli, tmp_path):
    root, _ = pretrained
    start = tiny_moirai2(tmp_path / "start")
    result = finetune(cli, root, start, "m2-worse", "finetune.lr=0.3", "finetune.warmup_steps=0",
                      "finetune.max_steps=4")
    assert result.exit_code == 0, result.stderr + result.stdout
    summary = json.loads((root / "m2-worse" / "run.json").read_text())
    assert summary["improved"] is False and summary["val_loss_after"] > summary["val_loss_before"]
    assert "did not improve on the starting model" in result.stdout
    exported, original = weights(root / "m2-worse" / "model"), weights(start)
    assert all(np.array_equal(exported[k], original[k]) for k in original)


@pytest.mark.parametrize("pattern", ["head_only", pytest.param("lora", marks=needs_peft)])
def test_a_finetune_resumes_from_its_last_checkpoint(pretrained, cli, pattern):
    """--resume restores the trained part (LoRA: the adapters) and goes on to max_steps; the export is a plain
    model. It used to stop at once: early stopping looked for a validation loss before any validation ran."""
    import torch

    root, start = pretrained
    out = f"resume-{pattern}"
    options = [f"finetune.pattern={pattern}", "finetune.lora.rank=2", "finetune.lr=1e-3", "finetune.val_every_n_steps=2"]
    first = finetune(cli, root, start, out, *options, "finetune.max_steps=2")
    assert first.exit_code == 0, first.stderr + first.stdout
    before = torch.load(root / out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    again = ["finetune", "--from", str(start), "--out", str(root / out), "--resume", "--profile", "hourly",
             "--dataset", str(root / "ds"), *TINY, *FT, *options]
    # resumed at its own max_steps: nothing left to train (a restart would train two more steps)
    done = cli(*again, "finetune.max_steps=2")
    assert done.exit_code == 0, done.stderr + done.stdout
    same = torch.load(root / out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert same["global_step"] == 2
    assert all(torch.equal(before["state_dict"][k], v) for k, v in same["state_dict"].items())
    resumed = cli(*again, "finetune.max_steps=4")
    assert resumed.exit_code == 0, resumed.stderr + resumed.stdout
    after = torch.load(root / out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert before["global_step"] == 2 and after["global_step"] == 4
    trained = [k for k in after["state_dict"] if ("lora_" in k if pattern == "lora" else "param_proj" in k)]
    assert trained and any(not torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in trained)
    assert json.loads((root / out / "run.json").read_text())["steps"] == 4
    assert weights(root / out / "model").keys() == weights(start).keys()  # LoRA: merged, no adapter weights
