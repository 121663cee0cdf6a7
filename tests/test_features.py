"""Feature plugins: no look-ahead (every registered feature), warm-ups, parity, cross-asset, regimes."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ohlcv.builder.pipeline import FeaturePipeline
from ohlcv.errors import PluginError
from ohlcv.features import Feature
from ohlcv.lookahead import check_bounded, check_feature, check_warmup, synthetic_class
from ohlcv.plugins import load_plugins
from tests.conftest import run_ohlcv_subprocess

REPO = Path(__file__).resolve().parents[1]
SYMBOLS, BARS = 10, 3000  # the full-profile hash test (float32 hides most rounding: the float64 test above is the sharp one)
REGISTERED = sorted(entry.feature.name for entry in load_plugins().features)


@pytest.fixture(scope="module")
def features():
    return load_plugins().features


def test_the_three_families_are_registered(features):
    families = {entry.feature.family.value for entry in features}
    assert families == {"indicator", "cross_asset", "regime"}
    assert {"sma", "ema", "rsi", "macd", "atr", "bollinger", "adx", "stoch", "obv", "mfi", "cci", "roc"} <= set(REGISTERED)
    assert {"realized_vol", "parkinson_vol", "garman_klass_vol", "hl_range", "close_location", "volume_z",
            "vwap_distance", "log_return", "simple_return"} <= set(REGISTERED)
    assert {"class_return", "class_beta", "relative_strength", "class_dispersion"} <= set(REGISTERED)
    assert {"vol_regime", "trend_regime", "drawdown", "gmm_regime"} <= set(REGISTERED)


@pytest.mark.parametrize("name", REGISTERED)
def test_no_registered_feature_looks_ahead(features, name):
    result = check_feature(features.get(name))
    assert result.ok, result.detail


@pytest.mark.parametrize("name", REGISTERED)
def test_values_inside_the_warm_up_are_missing_not_zero(features, name):
    assert check_warmup(features.get(name)) is None


@pytest.mark.parametrize("name", REGISTERED)
def test_a_batch_of_series_gives_the_values_of_each_series_alone(features, name):
    # bounded features are evaluated over the whole batch at once; the others series by series
    assert check_bounded(features.get(name)) is None


def test_only_point_wise_and_shift_only_features_are_evaluated_over_the_whole_batch(features):
    bounded = {entry.feature.name for entry in features if entry.feature.bounded}
    assert {"log_return", "simple_return", "hl_range", "close_location", "class_return", "relative_strength",
            "class_dispersion"} <= bounded
    # rolling windows are evaluated per series: a rolling sum over the whole column carries rounding
    # from one series into the next
    assert not bounded & {"realized_vol", "parkinson_vol", "garman_klass_vol", "volume_z", "vwap_distance",
                          "class_beta", "trend_regime", "vol_regime"}


def test_every_hourly_feature_of_a_symbol_is_bit_identical_alone_and_in_a_batch_of_ten(features):
    from ohlcv.config import load_profile
    from ohlcv.plugins import enabled_features

    cfg = load_profile("hourly", []).cfg
    specs = [(feature, params) for feature, params, _ in enabled_features(cfg, features)]
    pipeline = FeaturePipeline(specs)
    assert pipeline.needs_reference and any(f.fit is not None for f, _ in specs)  # cross-asset and regime
    frame = synthetic_class(n_assets=10, bars=3000, seed=7)
    reference = pipeline.contributions(frame)  # the class's reference: the same for the symbol alone
    ends = {item_id: 1800 for item_id in frame["item_id"].unique()}
    batch = pipeline.apply(frame, reference=reference, train_end=ends)
    outputs = [c for c in batch.columns if c not in frame.columns]
    assert len(outputs) >= 25
    for item_id in ("test/A0", "test/A5", "test/A9"):
        alone = pipeline.apply(frame.filter(pl.col("item_id") == item_id), reference=reference, train_end=ends)
        together = batch.filter(pl.col("item_id") == item_id)
        for column in outputs:
            a, b = alone[column].to_numpy(), together[column].to_numpy()
            assert a.dtype == np.float64 and b.dtype == np.float64
            differ = ~((np.isnan(a) & np.isnan(b)) | (a == b))
            assert not differ.any(), f"{column} of {item_id}: {int(differ.sum())} values differ in the batch"


def test_a_feature_wrongly_declared_bounded_is_caught():
    ema = Feature(
        name="ema_claimed_bounded", family="indicator", inputs=("close",), outputs=["ema_cb"], warmup=10, bounded=True,
        exprs=lambda p: [pl.col("close").ewm_mean(span=10, adjust=False).alias("ema_cb")],
    )
    problem = check_bounded(ema)
    assert problem is not None and "declared bounded" in problem and "ema_cb" in problem
    honest = Feature(
        name="ema_series_by_series", family="indicator", inputs=("close",), outputs=["ema_sbs"], warmup=10,
        exprs=lambda p: [pl.col("close").ewm_mean(span=10, adjust=False).alias("ema_sbs")],
    )
    assert check_bounded(honest) is None  # not declared bounded: evaluated per series, nothing to check
    assert check_bounded(dataclasses.replace(honest, bounded=True)) is not None


def test_a_rolling_window_evaluated_over_the_whole_batch_fails_both_checks_on_the_last_symbol(features):
    # a rolling sum over the whole column carries rounding from the symbols before into the last one:
    # its values at bars <= t change when only later bars change, and differ from the symbol alone
    batch_wide = dataclasses.replace(features.get("realized_vol"), bounded=True)
    result = check_feature(batch_wide)
    assert not result.ok and "of test/A3" in result.detail
    problem = check_bounded(batch_wide)
    assert problem is not None and "declared bounded" in problem
    assert check_feature(features.get("realized_vol")).ok and check_bounded(features.get("realized_vol")) is None


def test_an_unknown_regime_covariance_is_one_line_naming_the_profile_key_before_any_build(features):
    from ohlcv.config import load_profile
    from ohlcv.errors import ConfigError
    from ohlcv.plugins import enabled_features

    with pytest.raises(PluginError, match=r"covariance 'ful' is not 'diag' or 'full'; fix features\.params\.gmm_regime\.covariance"):
        features.get("gmm_regime").output_names({"covariance": "ful"})
    cfg = load_profile("hourly", ["features.params.gmm_regime.covariance=ful"]).cfg
    with pytest.raises(ConfigError, match=r"features\.params\.gmm_regime\.covariance") as caught:
        enabled_features(cfg, features)
    assert "\n" not in str(caught.value)


def test_intermediate_columns_are_computed_once_named_per_feature_and_dropped(features):
    frame = synthetic_class(n_assets=2, bars=400)
    specs = [(features.get(n), features.get(n).resolve_params()) for n in ("volume_z", "realized_vol")]
    out = FeaturePipeline(specs).apply(frame)
    assert not [c for c in out.columns if c.startswith("_")]
    lv = np.log1p(frame.filter(pl.col("item_id") == "test/A1")["volume"].to_numpy())
    z = out.filter(pl.col("item_id") == "test/A1")["volume_z"].to_numpy()
    window = lv[400 - 168:]
    np.testing.assert_allclose(z[-1], (lv[-1] - window.mean()) / window.std(ddof=1), rtol=1e-9)
    badly_named = Feature(
        name="badly_named", family="indicator", inputs=("close",), outputs=["x"], warmup=0,
        intermediates=lambda p: [[pl.col("close").alias("_tmp")]], exprs=lambda p: [pl.col("_tmp").alias("x")],
    )
    with pytest.raises(PluginError, match="_badly_named_"):
        FeaturePipeline([(badly_named, {})]).apply(frame)


def test_each_output_waits_its_own_warm_up_not_the_longest(features):
    """log_return_1 has a value from bar 1 and rv_24 from bar 24, though their features also make
    log_return_24 and rv_168: a series' first bars are not thrown away for the longest window."""
    frame = synthetic_class(n_assets=2, bars=400)
    specs = [(features.get("log_return"), {"horizons": [1, 24]}), (features.get("realized_vol"), {"windows": [24, 168]})]
    out = FeaturePipeline(specs).apply(frame).filter(pl.col("item_id") == "test/A1")
    first = {c: int(np.argmax(out[c].is_not_null().to_numpy())) for c in ("log_return_1", "log_return_24", "rv_24", "rv_168")}
    assert first == {"log_return_1": 1, "log_return_24": 24, "rv_24": 24, "rv_168": 168}
    assert features.get("realized_vol").warmup_bars({"windows": [24, 168]}) == 168  # the longest, for the tables
    wrong = Feature(name="wrong", family="indicator", inputs=("close",), outputs=lambda p: ["a", "b"],
                    warmup=lambda p: {"a": 3}, exprs=lambda p: [pl.col("close").alias("a"), pl.col("close").alias("b")])
    with pytest.raises(PluginError, match="give every output, and only them, a warm-up"):
        wrong.output_warmups()  # (computed from the parameters: checked when asked, at the build's start)


def test_a_warm_up_declared_shorter_than_the_output_needs_fails_the_warm_up_check():
    def mean_50(p):
        return [pl.col("close").rolling_mean(window_size=50).alias("mean_50")]

    short = Feature(name="short_warmup", family="indicator", inputs=("close",), outputs=["mean_50"], warmup=1,
                    exprs=mean_50)
    problem = check_warmup(short)
    assert problem is not None and "first value at bar 49" in problem and "declared warm-up of 1" in problem
    assert check_warmup(Feature(name="right_warmup", family="indicator", inputs=("close",), outputs=["mean_50"],
                                warmup=49, exprs=mean_50)) is None


def test_a_fitted_frame_features_intermediates_are_computed_over_the_batch_and_seen_by_fit_on_training_rows():
    seen = []

    def fit(train, params):
        seen.append((train.height, "_probe_mean" in train.columns))
        mean = train["_probe_mean"] if "_probe_mean" in train.columns else None
        assert mean is not None, "the stage is computed before fit by the pipeline and by Feature.compute's caller"
        return float(mean.drop_nulls().mean())

    def frame_fn(frame, params):
        return frame.select((pl.col("_probe_mean") - params["fitted"]).alias("probe"))

    probe = Feature(name="probe", family="regime", inputs=("close",), outputs=["probe"], warmup=5, fit=fit,
                    frame=frame_fn,
                    intermediates=lambda p: [[pl.col("close").rolling_mean(window_size=5).alias("_probe_mean")]])
    frame = synthetic_class(n_assets=3, bars=300, seed=3)
    ends = {item_id: 200 for item_id in frame["item_id"].unique()}
    out = FeaturePipeline([(probe, {})]).apply(frame, train_end=ends)
    assert seen == [(200, True)] * 3  # the training rows only, with the batch-computed column
    assert not [c for c in out.columns if c.startswith("_")]
    for item_id in ("test/A0", "test/A2"):
        bars = frame.filter(pl.col("item_id") == item_id)
        together = out.filter(pl.col("item_id") == item_id)["probe"].to_numpy()
        alone = FeaturePipeline([(probe, {})]).apply(bars, train_end=ends)["probe"].to_numpy()
        np.testing.assert_array_equal(alone, together)
        # by hand on bare bars (Feature.compute computes the stage itself); Polars' rolling kernels
        # differ in the last bits between a column with missing values and one without
        state = fit(bars.head(200).with_columns(pl.col("close").rolling_mean(window_size=5).alias("_probe_mean")), {})
        np.testing.assert_allclose(probe.compute(bars, {"fitted": state})["probe"].to_numpy()[5:], together[5:],
                                   rtol=1e-12, atol=1e-10)


def test_non_finite_feature_values_become_missing_when_asked_even_with_no_lake_column_named(features):
    frame = synthetic_class(n_assets=2, bars=200)
    ragged = Feature(name="ragged", family="indicator", inputs=("close",), outputs=["ragged"], warmup=0,
                     exprs=lambda p: [pl.when(pl.int_range(pl.len()) % 10 == 0).then(float("inf"))
                                      .otherwise(pl.col("close")).alias("ragged")])
    pipeline = FeaturePipeline([(ragged, {})])
    masked = pipeline.apply(frame, finite=())["ragged"]  # no lake column to mask: the features still are
    assert masked.is_infinite().sum() == 0 and masked.null_count() >= 40
    assert pipeline.apply(frame)["ragged"].is_infinite().sum() >= 40  # not asked: values as computed


def test_a_fitted_bounded_features_intermediates_are_per_series_so_its_fit_does_not_see_the_previous_symbol():
    def fit(train, params):
        return float(train["_lagged_fit_prev"].drop_nulls().drop_nans().sum())

    lagged = Feature(name="lagged_fit", family="indicator", inputs=("close",), outputs=["lagged_fit"], warmup=1,
                     bounded=True, fit=fit,
                     intermediates=lambda p: [[pl.col("close").shift(1).alias("_lagged_fit_prev")]],
                     exprs=lambda p: [(pl.col("close") - p["fitted"] * 0).alias("lagged_fit")])
    frame = synthetic_class(n_assets=3, bars=300, seed=5)
    ends = {item_id: 200 for item_id in frame["item_id"].unique()}
    states = []
    original = lagged.fit
    object.__setattr__(lagged, "fit", lambda train, params: states.append(original(train, params)) or states[-1])
    FeaturePipeline([(lagged, {})]).apply(frame, train_end=ends)
    batch_states = list(states)
    states.clear()
    for item_id in frame["item_id"].unique(maintain_order=True):
        FeaturePipeline([(lagged, {})]).apply(frame.filter(pl.col("item_id") == item_id), train_end=ends)
    assert batch_states == states  # the second and third symbols' fits read no bar of the symbol before


def _centered_average():
    return Feature(
        name="centered_ma",
        family="indicator",
        inputs=("close",),
        outputs=["centered_ma"],
        warmup=2,
        exprs=lambda p: [pl.col("close").rolling_mean(window_size=5, center=True).alias("centered_ma")],
    )


def test_a_leaky_feature_is_caught_with_its_first_offending_bar():
    result = check_feature(_centered_average())
    assert not result.ok
    # a centred 5-bar mean at bar t reads bars t+1 and t+2: the two bars before the cut change
    assert result.first_bad_bar == result.cut - 1
    assert "centered_ma" in result.detail


def test_plugins_check_cli_catches_a_leaky_or_wrongly_bounded_third_party_plugin(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "leaky_plugin.py").write_text(textwrap.dedent("""
        import polars as pl
        from ohlcv.features import Feature
        from ohlcv.hookspecs import hookimpl

        @hookimpl
        def ohlcv_register_features(register):
            register(Feature(name="centered_ma", family="indicator", inputs=("close",), outputs=["centered_ma"],
                             warmup=2, exprs=lambda p: [pl.col("close").rolling_mean(5, center=True).alias("centered_ma")]))
            register(Feature(name="ema_bounded", family="indicator", inputs=("close",), outputs=["ema_b"], warmup=10,
                             bounded=True, exprs=lambda p: [pl.col("close").ewm_mean(span=10, adjust=False).alias("ema_b")]))
    """))
    info = site / "leaky_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ohlcv]\nleaky = leaky_plugin\n")
    env = {"PYTHONPATH": str(site)}
    # wide enough that each feature's row, detail included, is one line
    result = run_ohlcv_subprocess("plugins", "check", "centered_ma", "ema_bounded", "log_return", env={**env, "COLUMNS": "300"})
    assert result.returncode == 1, result.stderr
    line = next(line for line in result.stdout.splitlines() if "centered_ma" in line)
    assert "FAIL" in line
    assert re.search(r"│\s+\d+\s+│", line), line  # the first offending bar is printed
    bounded_line = next(line for line in result.stdout.splitlines() if "ema_bounded" in line)
    # an EMA declared bounded carries one series into the next: the next series' early bars change when the
    # previous series' later bars do (caught as look-ahead on the batch's last symbol) and the bounded check fails
    assert "FAIL" in bounded_line and "bounded" in bounded_line.split("FAIL", 1)[1]
    assert "1 passed, 2 failed" in result.stdout
    listed = run_ohlcv_subprocess("plugins", "list", env=env)
    assert "leaky-plugin 0.1" in listed.stdout


def _series(bars=1500, seed=4):
    return synthetic_class(n_assets=1, bars=bars, seed=seed).filter(pl.col("item_id") == "test/A0")


@pytest.mark.parametrize("name, columns, settle", [
    ("sma", ["sma_10", "sma_20", "sma_50"], 60),
    ("ema", ["ema_10", "ema_20", "ema_50"], 600),
    ("rsi", ["rsi"], 300),
    ("atr", ["atr", "natr"], 300),
])
def test_talib_and_polars_engines_agree_after_warm_up(features, name, columns, settle):
    feature = features.get(name)
    frame = _series().drop("item_id")
    talib = feature.compute(frame, {"engine": "talib"})
    polars = feature.compute(frame, {"engine": "polars"})
    start = 212 + settle  # after the missing stretch (bars 200-211) and a settling period
    for column in columns:
        a = talib[column].to_numpy()[start:]
        b = polars[column].to_numpy()[start:]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=column)


def test_talib_features_accept_float32_columns(features):
    frame = _series().drop("item_id").with_columns([pl.col(c).cast(pl.Float32) for c in ("open", "high", "low", "close", "volume")])
    out = features.get("macd").compute(frame)
    assert out["macd"].dtype == pl.Float64 and out["macd"].drop_nulls().len() > 1000


def test_missing_bars_stay_missing_and_do_not_poison_recursive_indicators(features):
    frame = _series().drop("item_id")
    out = features.get("ema").compute(frame)
    ema = out["ema_20"].to_numpy()
    assert np.isnan(ema[200:212]).all()  # the missing stretch
    assert np.isfinite(ema[212:]).all()  # TA-Lib would otherwise return NaN for the rest of the series


def test_leave_one_out_class_return_by_hand():
    ts = pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1, 3), "1h", eager=True, time_zone="UTC")
    closes = {"c/A": [100.0, 110.0, 99.0, 99.0], "c/B": [50.0, 55.0, 60.5, 60.5], "c/C": [10.0, 9.0, 9.0, 9.9]}
    frame = pl.concat([
        pl.DataFrame({"item_id": k, "ts": ts, "open": v, "high": v, "low": v, "close": v, "volume": 1.0})
        for k, v in closes.items()
    ])
    feature = load_plugins().features.get("class_return")
    pipeline = FeaturePipeline([(feature, feature.resolve_params())])
    reference = pipeline.contributions(frame)
    assert reference.height == 4  # one row per (asset class, bar): bounded by bars, not by symbols
    out = pipeline.apply(frame, reference=reference).filter(pl.col("item_id") == "c/A")["class_return"].to_list()
    r = {k: np.diff(np.log(v)) for k, v in closes.items()}
    expected = [None] + [(r["c/B"][i] + r["c/C"][i]) / 2 for i in range(3)]
    assert out[0] is None
    np.testing.assert_allclose(out[1:], expected[1:], rtol=1e-12)


def test_gmm_regime_is_fitted_on_the_training_span_and_ordered_calm_to_turbulent(features):
    feature = features.get("gmm_regime")
    params = feature.resolve_params()
    frame = _series(bars=2000).drop("item_id")
    state = feature.fit(frame.head(1200), params)
    changed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) >= 1200).then(pl.col("close") * 3).otherwise(pl.col("close")).alias("close")
    )
    again = feature.fit(changed.head(1200), params)
    assert np.allclose(state["model"]["means"], again["model"]["means"])
    out = feature.compute(frame, {**params, "fitted": state}).to_numpy()
    known = np.isfinite(out).all(axis=1)
    np.testing.assert_allclose(out[known].sum(axis=1), 1.0, rtol=1e-9)
    vol = frame.select((pl.col("close").log().diff()).rolling_std(24)).to_series().to_numpy()
    calm, wild = out[:, 0] > 0.5, out[:, -1] > 0.5
    assert np.nanmean(vol[calm & known]) < np.nanmean(vol[wild & known])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_numpy_regime_mixture_is_what_scikit_learn_fits_from_the_same_start(seed):
    from sklearn.mixture import GaussianMixture

    from ohlcv_plugins.regime import _diag_log_resp, diag_gmm_em

    rng = np.random.default_rng(seed)  # three clusters of unequal size and spread, as calm / normal / wild markets
    z = np.concatenate([rng.normal([-1.2, 0.1], [0.3, 0.5], (900, 2)), rng.normal([0.2, -0.2], [0.5, 1.0], (700, 2)),
                        rng.normal([1.8, 0.0], [0.4, 2.0], (400, 2))])
    start = {"weights_init": np.full(3, 1 / 3), "means_init": np.array([[-1.0, 0], [0, 0], [1.0, 0]]),
             "precisions_init": np.ones((3, 2))}
    ours = diag_gmm_em(z, start["weights_init"], start["means_init"], start["precisions_init"])
    theirs = GaussianMixture(3, covariance_type="diag", init_params="random_from_data", **start).fit(z)
    assert ours[3] == theirs.n_iter_
    np.testing.assert_allclose(ours[0], theirs.weights_, rtol=1e-9)
    np.testing.assert_allclose(ours[1], theirs.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours[2], theirs.precisions_cholesky_, rtol=1e-9)
    np.testing.assert_allclose(np.exp(_diag_log_resp(z, *ours[:3], z * z)[1]).T, theirs.predict_proba(z), rtol=1e-9,
                               atol=1e-12)


def test_hourly_build_has_the_documented_variates_of_all_three_families(tmp_path):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.budget import inputs_from_profile, plan
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto", "fx"], bars=1500)
    cfg = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}"]).cfg
    result = IterativeFinancialDatasetBuilder(cfg).run()
    variates = result.manifest["variates"]
    documented = (REPO / "docs" / "features.md").read_text()
    for name in variates[5:]:
        assert f"`{name}`" in documented, name
    assert {"rsi", "class_return", "relative_strength", "vol_regime_high", "regime_p0", "drawdown"} <= set(variates)
    assert len(variates) == 32
    report = plan(inputs_from_profile(cfg))
    assert report.inputs["variates"] == 32 and report.ok
    row = {row.patch_size: row for row in report.rows}[16]
    assert (row.pretrain_tokens, row.tokens) == (384, 416)  # the brief's count; what uni2ts packs (13 patches each)


def test_the_plugin_in_the_writing_plugins_guide_passes_the_check():
    guide = (REPO / "docs" / "writing-plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    module = types.ModuleType("guide_plugin")
    exec(compile(blocks[0], "writing-plugins.md", "exec"), module.__dict__)
    plugins = load_plugins(extra=[("guide", module)])
    registered = [e.feature for e in plugins.features if e.plugin.name == "guide"]
    assert registered
    for feature in registered:
        assert check_feature(feature).ok
        assert check_warmup(feature) is None
        assert check_bounded(feature) is None
        # its rolling window is rightly not declared bounded: over a whole batch it would differ
        assert not feature.bounded and check_bounded(dataclasses.replace(feature, bounded=True)) is not None


def test_every_output_declares_a_kind_and_the_declaration_is_checked():
    from ohlcv.features import Feature, Kind
    from ohlcv.plugins import load_plugins

    registry = load_plugins().features
    kinds = {name: kind for entry in registry for name, kind in entry.feature.output_kinds().items()}
    assert kinds["log_return_1"] is Kind.return_ and kinds["rv_24"] is Kind.volatility and kinds["rsi"] is Kind.oscillator
    assert kinds["sma_10"] is Kind.price and kinds["macd"] is Kind.indicator

    def make(kinds):
        return Feature(name="two", family="indicator", inputs=("close",), outputs=["a", "b"], warmup=0,
                       exprs=lambda p: [], kinds=kinds)

    assert make(["return", "volatility"]).output_kinds() == {"a": Kind.return_, "b": Kind.volatility}
    assert make("volume").output_kinds() == {"a": Kind.volume, "b": Kind.volume}
    assert make(Kind.indicator).output_kinds()["b"] is Kind.indicator
    with pytest.raises(PluginError, match="kinds 'prices' must be among price, return"):
        make("prices")
    with pytest.raises(PluginError, match="declares 1 kinds for 2 outputs"):
        make(["price"]).output_kinds()


def test_class_beta_and_correlation_equal_a_straightforward_computation(features):
    # evaluated over the whole batch at once (bounded); the reference: numpy over each window by hand
    frame = synthetic_class(n_assets=3, bars=500, seed=4)
    feature = features.get("class_beta")
    pipeline = FeaturePipeline([(feature, feature.resolve_params({"window": 50}))])
    out = pipeline.apply(frame, reference=pipeline.contributions(frame))
    closes = {k[0]: part["close"].to_numpy() for k, part in frame.group_by("item_id", maintain_order=True)}
    returns = {k: np.concatenate([[np.nan], np.diff(np.log(v))]) for k, v in closes.items()}
    item = "test/A2"
    others = np.stack([r for k, r in returns.items() if k != item])
    with np.errstate(invalid="ignore"):
        market = np.nansum(others, axis=0) / np.isfinite(others).sum(axis=0)  # leave-one-out class mean
    ours = out.filter(pl.col("item_id") == item)
    for t in (60, 250, 499):
        x, y = returns[item][t - 49 : t + 1], market[t - 49 : t + 1]
        both = np.isfinite(x) & np.isfinite(y)
        x, y = x[both], y[both]
        cov = np.mean(x * y) - x.mean() * y.mean()
        np.testing.assert_allclose(ours["class_beta_50"][t], cov / y.var(), rtol=1e-7)
        np.testing.assert_allclose(ours["class_corr_50"][t], cov / (x.std() * y.std()), rtol=1e-7)


def test_the_reference_folded_batch_by_batch_is_the_sum_of_all_batches_at_once(features):
    pipeline = FeaturePipeline([(features.get("class_return"), features.get("class_return").resolve_params())])
    frame = synthetic_class(n_assets=4, bars=300, seed=3)
    ids = sorted(frame["item_id"].unique())
    # batches that cover different bars: some bars are in one batch only, some in several
    batches = [frame.filter(pl.col("item_id") == ids[0]).head(120), frame.filter(pl.col("item_id").is_in(ids[1:3])),
               frame.filter(pl.col("item_id") == ids[3]).tail(200)]
    parts = [pipeline.contributions(b) for b in batches]
    folded = None
    for part in parts:
        folded = FeaturePipeline.add(folded, part)
    assert folded.equals(FeaturePipeline.combine(parts))  # the same sums to the last bit
    assert FeaturePipeline.add(None, None) is None and FeaturePipeline.add(parts[0], None).equals(parts[0])


def test_the_learned_regime_of_a_symbol_does_not_depend_on_the_other_symbols_of_its_batch(features):
    frame = synthetic_class(n_assets=3, bars=900, seed=2)
    feature = features.get("gmm_regime")
    pipeline = FeaturePipeline([(feature, feature.resolve_params())])
    ends = {item_id: 600 for item_id in frame["item_id"].unique()}
    together = pipeline.apply(frame, train_end=ends).filter(pl.col("item_id") == "test/A1")
    alone = pipeline.apply(frame.filter(pl.col("item_id") == "test/A1"), train_end={"test/A1": 600})
    assert together["regime_p0"].drop_nulls().len() > 500
    assert together.equals(alone)


def test_the_full_hourly_dataset_is_the_same_for_any_batch_size_worker_count_or_sharding(tmp_path, monkeypatch):
    import concurrent.futures

    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder, Shard
    from ohlcv.builder.merge import merge_shards
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=SYMBOLS, asset_classes=["crypto", "fx"],
                                bars=BARS, seed=5)
    pool = concurrent.futures.ThreadPoolExecutor

    def build(name, batch_size, threads, shard=None):
        monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", lambda max_workers, _t=threads, **kw: pool(max_workers=_t, **kw))
        cfg = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / name}",
                                      f"data.batch_size={batch_size}", "data.cleaning.min_length=300"]).cfg
        return IterativeFinancialDatasetBuilder(cfg, shard=shard).run()

    whole = build("whole", 2 * SYMBOLS, 2)
    assert len(whole.manifest["variates"]) == 32 and len(whole.manifest["items"]) == 2 * SYMBOLS
    one_by_one = build("one", 1, 1)
    shards = [build(f"shard{k}", 3, 2, Shard(k, 3)).out for k in (1, 2, 3)]
    merged = merge_shards(shards, tmp_path / "merged")
    assert one_by_one.manifest["content_hash"] == whole.manifest["content_hash"]
    assert merged["content_hash"] == whole.manifest["content_hash"]


@pytest.mark.parametrize("warmup", [-1, 2.5, {"a": 3}, {"a": 3, "b": 1, "c": 0}, True])
def test_a_fixed_warm_up_that_is_not_whole_bars_for_every_output_is_refused_at_registration(warmup):
    with pytest.raises(PluginError, match="feature 'bad'"):
        Feature(name="bad", family="indicator", inputs=("close",), outputs=["a", "b"], warmup=warmup,
                exprs=lambda p: [pl.col("close").alias("a"), pl.col("close").alias("b")])
