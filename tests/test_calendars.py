"""Real markets: venue calendars, causal gaps, a common split, and no look-ahead on uneven data.

The real bars are public sample data shipped inside the `backtesting` package (a test dependency):
a US stock's daily bars (GOOG, 2004-2013) and an FX pair's hourly bars (EURUSD, 2017-2018), turned
into a hive lake at test time with `ohlcv lake ingest`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
from ohlcv.calendars import Calendar, WeekdaysRule, resolve
from ohlcv.config import load_profile
from ohlcv.errors import ConfigError, OhlcvError
from ohlcv.freq import parse_freq
from ohlcv.lake.sample import generate_sample_lake


def us(text: str) -> int:
    return int(np.datetime64(text, "us").astype(np.int64))


def dates(labels) -> list[str]:
    return [str(x)[:16] for x in np.asarray(labels).astype("datetime64[us]")]


# -- calendars ---------------------------------------------------------------------------------------
def test_nyse_daily_bars_are_its_sessions_with_holidays():
    labels = resolve({"equity": "XNYS"}, "equity").labels(us("2024-07-01"), us("2024-07-31"), parse_freq("1D"))
    assert len(labels) == 22 and "2024-07-04T00:00" not in dates(labels)  # Independence Day


def test_nyse_hourly_bars_start_at_the_open_and_the_early_close_ends_the_session():
    calendar = resolve({"equity": "XNYS"}, "equity")
    labels, ends = calendar.grid(us("2024-07-01"), us("2024-07-05T23:00"), parse_freq("1h"))
    first_day = dates(labels)[:7]
    assert first_day[0] == "2024-07-01T13:30" and first_day[-1] == "2024-07-01T19:30"  # 9:30 ... 15:30 New York
    july3 = [d for d in dates(labels) if d.startswith("2024-07-03")]
    assert july3 == ["2024-07-03T13:30", "2024-07-03T14:30", "2024-07-03T15:30", "2024-07-03T16:30"]  # closes 13:00 NY
    assert int(ends[list(dates(labels)).index("2024-07-03T16:30")]) == us("2024-07-03T17:00")


def test_the_fx_week_closes_from_friday_to_sunday_five_pm_new_york():
    labels = Calendar("weekdays", WeekdaysRule()).labels(us("2024-07-05T18:00"), us("2024-07-07T23:00"), parse_freq("1h"))
    # summer: 17:00 New York is 21:00 UTC
    assert dates(labels) == ["2024-07-05T18:00", "2024-07-05T19:00", "2024-07-05T20:00",
                             "2024-07-07T21:00", "2024-07-07T22:00", "2024-07-07T23:00"]


def test_an_unknown_calendar_or_uncovered_years_get_one_clear_line(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["equity"], bars=900)
    cfg = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}",
                                  "data.calendars.equity=XNOPE"]).cfg
    with pytest.raises(ConfigError, match=r"unknown calendar 'XNOPE'; use continuous, weekdays or an exchange code .*XNYS"):
        IterativeFinancialDatasetBuilder(cfg).run()
    with pytest.raises(ConfigError, match=r"calendar 'XNYS' cannot cover 2300-01-05 to 2300-02-01 .*narrow data.start"):
        resolve({"equity": "XNYS"}, "equity").labels(us("2300-01-05"), us("2300-02-01"), parse_freq("1D"))
    with pytest.raises(ConfigError, match="data.weekdays.timezone"):
        load_profile("hourly", ["data.weekdays.timezone=Mars/Olympus"])


# -- the builder on session calendars -----------------------------------------------------------------
def _cfg(lake: Path, out: Path, *extra: str, profile: str = "hourly"):
    return load_profile(profile, [f"data.lake={lake}", f"data.dataset={out}", *extra]).cfg


def test_a_symbol_whose_bars_fall_outside_its_sessions_is_quarantined_with_the_likely_cause(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["equity"], bars=900)
    # one symbol's files written in New York time but labelled UTC: every bar 4-5 hours early
    for path in (lake.root / "asset_class=equity").rglob("symbol=EQU001/**/*.parquet"):
        frame = pl.read_parquet(path)
        frame.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone("UTC")).write_parquet(path)
    result = IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds", "features.enabled=[log_return]",
                                                   "data.cleaning.min_length=300")).run()
    report = result.report["per_symbol"]
    assert report["equity/EQU000"]["quarantined"] is None
    reason = report["equity/EQU001"]["quarantined"]
    assert "fall outside the XNYS sessions" in reason and "time zone" in reason and "data.calendars.equity" in reason
    assert report["equity/EQU001"]["counts"]["off_session"] > 0


def test_gap_filling_is_causal_the_first_bars_of_any_gap_are_filled(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["crypto"], bars=900,
                                calendars={})
    path = sorted((lake.root / "asset_class=crypto").rglob("*.parquet"))[0]
    frame = pl.read_parquet(path)
    frame.filter(~pl.int_range(pl.len()).is_between(300, 309)).write_parquet(path)  # a 10-bar hole
    result = IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds", "features.enabled=[]",
                                                   "data.cleaning.min_length=300")).run()
    counts = result.report["per_symbol"]["crypto/CRY000"]["counts"]
    assert counts["gap_bars_filled"] == 3 and counts["gap_bars_missing"] == 7  # max_ffill_gap = 3


def test_the_default_split_cuts_every_series_at_the_same_instants(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=1500,
                                calendars={})
    young = lake.root / "asset_class=crypto" / "freq=1h" / "symbol=CRY001"
    for path in sorted(young.rglob("*.parquet"))[:1]:  # a younger symbol: its first month is not there
        path.unlink()
    result = IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds", "features.enabled=[class_return]",
                                                   "data.cleaning.min_length=300")).run()
    split = result.manifest["split"]
    assert split["common"] and split["train_end"] and split["validation_end"]
    items = {item["item_id"]: item for item in result.manifest["items"]}
    assert items["crypto/CRY000"]["length"] > items["crypto/CRY001"]["length"]
    for item in items.values():  # same instants, whatever the symbol's age
        assert item["train_end_ts"] == split["train_end"] and item["validation_end_ts"] == split["validation_end"]
    fraction = IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds2", "features.enabled=[log_return]",
                                                     "data.split.method=fraction", "data.cleaning.min_length=300")).run()
    assert any("leak" in note for note in fraction.report["notes"])


def test_instruments_without_volume_build_without_the_volume_variate(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=900)
    for path in lake.root.rglob("*.parquet"):
        pl.read_parquet(path).drop("volume").write_parquet(path)
    result = IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds", "data.columns=[open,high,low,close]",
                                                   "features.enabled=[log_return,volume_z]",
                                                   "data.cleaning.min_length=300")).run()
    assert result.manifest["variates"] == ["open", "high", "low", "close", "log_return_1", "log_return_24"]
    assert result.report["quarantined"] == []
    assert any("volume_z" in note for note in result.report["notes"])


def test_when_every_symbol_is_quarantined_the_error_lists_each_reason(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=200, calendars={})
    with pytest.raises(OhlcvError, match=r"every selected symbol was quarantined \(2\): crypto/CRY000: only 200 clean "
                                         r"bars .*; crypto/CRY001: only 200"):
        IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds", "features.enabled=[]")).run()


# -- real public bars ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_lake(tmp_path_factory):
    backtesting = pytest.importorskip("backtesting")
    from ohlcv.lake.ingest import ingest

    data = Path(backtesting.__file__).parent / "test"
    root = tmp_path_factory.mktemp("real") / "lake"
    ingest(data / "GOOG.csv", root, asset_class="equity", freq="1D", symbol="GOOG")
    ingest(data / "EURUSD.csv", root, asset_class="fx", freq="1h", symbol="EURUSD")
    return root


@pytest.mark.parametrize("profile, item_id, bars", [("daily", "equity/GOOG", 2148), ("hourly", "fx/EURUSD", 5000)])
def test_real_equity_dailies_and_fx_hourlies_build_ready_with_the_shipped_profiles(real_lake, tmp_path, profile, item_id,
                                                                                   bars):
    from ohlcv.builder.check import check_dataset

    cfg = _cfg(real_lake, tmp_path / "ds", profile=profile)
    result = IterativeFinancialDatasetBuilder(cfg).run()
    report = result.report["per_symbol"][item_id]
    assert report["quarantined"] is None and report["rows_read"] == bars
    missing_on_calendar = report["counts"].get("gap_bars_filled", 0) + report["counts"].get("gap_bars_missing", 0)
    assert missing_on_calendar < 0.01 * report["bars"], report["counts"]  # closed-market time is not a gap
    assert report["counts"]["closed_market_bars"] > 0.25 * report["bars"]
    check = check_dataset(result.out, cfg)
    assert check.ok, check.problems
    assert max(check.missing_share.values()) <= 0.10, check.missing_share  # every variate in >= 90% of bars
    stamps = __import__("ohlcv.dataset.read", fromlist=["read_timestamps"]).read_timestamps(result.out, result.manifest)
    assert len(stamps[item_id]) == report["bars"]
    if profile == "daily":  # the model's bars are the trading days: the dataset maps back to the lake exactly
        lake_days = pl.read_parquet(sorted(real_lake.rglob("symbol=GOOG/**/*.parquet"))).sort("ts")["ts"]
        assert np.array_equal(stamps[item_id], lake_days.dt.replace_time_zone(None).to_numpy().astype("datetime64[us]"))
        assert {"log_return_21", "rv_63"} <= set(result.manifest["variates"])  # daily windows, not hourly ones
    if profile == "daily":
        assert result.manifest["calendars"] == {"equity": "XNYS"}
    else:
        assert result.manifest["calendars"] == {"fx": "weekdays (Friday 17:00 to Sunday 17:00 America/New_York)"}
    assert result.manifest["split"]["span"]["first_set_by"] == item_id


# -- look-ahead on uneven data ---------------------------------------------------------------------------
def test_a_plugin_that_back_fills_across_a_gap_fails_the_lookahead_check():
    from ohlcv.features import Feature
    from ohlcv.lookahead import check_feature

    def backfilled(params):
        import polars as pl

        return [pl.col("close").fill_null(strategy="backward").alias("close_bfill")]

    feature = Feature(name="close_bfill", family="indicator", inputs=("close",), outputs=["close_bfill"], warmup=0,
                      exprs=backfilled)
    result = check_feature(feature)
    assert not result.ok and result.column == "close_bfill"


def _gap_length_fill(bars, grid, max_ffill_gap):
    """The old rule: fill a gap only if the whole gap turns out to be short (depends on the future)."""
    import polars as pl

    from ohlcv.builder.clean import KEY, PRICES

    ids = bars.select(KEY, "item_id").unique(KEY)
    missing = pl.col("close").is_null()
    run_id = (missing != missing.shift(1)).fill_null(True).cum_sum().over(KEY)
    carried = pl.col("close").forward_fill().over(KEY)
    return (
        grid.lazy().join(ids, on=KEY, how="left").join(bars.drop("item_id"), on=[KEY, "ts"], how="left")
        .with_columns(run_id.alias("_run"))
        .with_columns((missing & (pl.len().over(KEY, "_run") <= max_ffill_gap)).alias("_fill"), missing.alias("_missing"))
        .with_columns([pl.when(pl.col("_fill")).then(carried).otherwise(pl.col(c)).alias(c) for c in PRICES]
                      + [pl.when(pl.col("_fill")).then(0.0).otherwise(pl.col("volume")).alias("volume")])
        .drop("_run").sort([KEY, "ts"])
    )


@pytest.fixture(scope="module")
def session_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    return generate_sample_lake(root / "lake", symbols_per_class=2, asset_classes=["crypto", "equity", "fx"],
                                bars=1500, seed=7)


@pytest.mark.slow
def test_the_whole_pipeline_sees_nothing_after_t_for_the_shipped_hourly_profile(session_lake, tmp_path):
    from ohlcv.lookahead import check_pipeline

    cfg = _cfg(session_lake.root, tmp_path / "ds", "data.cleaning.min_length=500")
    results = check_pipeline(cfg, tmp_path / "work")
    assert len(results) == 2 and all(r.compared > 100_000 for r in results)
    assert all(r.ok for r in results), [r.detail for r in results]


@pytest.mark.slow
def test_the_whole_pipeline_sees_nothing_after_t_for_the_shipped_daily_profile(tmp_path):
    from ohlcv.lookahead import check_pipeline

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["equity", "fx"], freq="1D",
                                bars=900, seed=3)
    results = check_pipeline(_cfg(lake.root, tmp_path / "ds", profile="daily"), tmp_path / "work")
    assert len(results) == 2 and all(r.compared > 10_000 for r in results)
    assert all(r.ok for r in results), [r.detail for r in results]


def test_a_gap_length_dependent_fill_fails_the_whole_pipeline_check(session_lake, tmp_path, monkeypatch):
    from ohlcv.builder import clean
    from ohlcv.lookahead import check_pipeline

    monkeypatch.setattr(clean, "_to_grid", _gap_length_fill)
    cfg = _cfg(session_lake.root, tmp_path / "ds", "data.cleaning.min_length=500", "features.enabled=[log_return]")
    results = check_pipeline(cfg, tmp_path / "work")
    assert not all(r.ok for r in results)
    assert any("changed when bars after" in r.detail for r in results)


def test_evaluation_dates_are_the_real_bar_times_across_a_weekend(real_lake, tmp_path):
    from ohlcv.evaluate.run import _rows

    result = IterativeFinancialDatasetBuilder(_cfg(real_lake, tmp_path / "ds", "features.enabled=[log_return]")).run()
    row = next(r for r in _rows(result.out, result.manifest) if r.item_id == "fx/EURUSD")
    from ohlcv.evaluate.run import bar_times

    stamps = row.item["times"]
    friday = int(np.flatnonzero(np.diff(stamps) > np.timedelta64(24, "h"))[0])  # the last bar before a weekend
    times = bar_times(row.item, result.manifest["freq"], np.array([friday, friday + 1]))
    assert times[0][:10] != times[1][:10] and np.datetime64(times[1][:19]) - np.datetime64(times[0][:19]) > np.timedelta64(40, "h")
    assert times[1].endswith("+00:00")  # real time stamps, in UTC; not start + i hours


# -- conventions and awkward lakes ------------------------------------------------------------------------
def _hourly_equity_lake(root: Path, *, shift_minutes: int) -> Path:
    """A vendor-style NYSE hourly lake: sample bars re-stamped ``shift_minutes`` after the session-open grid."""
    lake = generate_sample_lake(root, symbols_per_class=2, asset_classes=["equity"], bars=900)
    for path in lake.root.rglob("*.parquet"):
        frame = pl.read_parquet(path)
        frame.with_columns(pl.col("ts") + pl.duration(minutes=shift_minutes)).write_parquet(path)
    return lake.root


@pytest.mark.parametrize("shift, settings", [(30, ["data.bar_label=end", "data.session_alignment=clock"]),
                                             (-30, ["data.session_alignment=clock"])])
def test_clock_hour_bars_stamped_at_their_start_or_end_build_with_the_matching_convention(tmp_path, shift, settings):
    """9:30 .. 15:30 New York bars re-stamped on the clock: at their end (10:00 .. 16:00) or their start (9:00 .. 15:00)."""
    lake = _hourly_equity_lake(tmp_path / "lake", shift_minutes=shift)
    common = ["features.enabled=[log_return]", "data.cleaning.min_length=300"]
    # the default (bars from the open) finds one bar a day outside the session (14%): quarantined, the
    # conventions named as likely causes
    with pytest.raises(OhlcvError, match=r"fall outside the XNYS sessions .*data.bar_label=end.*data.session_alignment=clock"):
        IterativeFinancialDatasetBuilder(_cfg(lake, tmp_path / "ds0", *common)).run()
    result = IterativeFinancialDatasetBuilder(_cfg(lake, tmp_path / "ds", *common, *settings)).run()
    report = result.report["per_symbol"]["equity/EQU000"]
    assert report["quarantined"] is None
    assert set(report["counts"]) <= {"closed_market_bars"}, report["counts"]  # every bar on the grid, none moved
    assert report["bars"] == report["rows_read"] == 900


def test_a_weekday_close_written_without_quotes_is_read_as_the_time_it_says(tmp_path):
    cfg = load_profile("hourly", ["data.weekdays.close=18:00"]).cfg  # YAML 1.1 reads 18:00 as 1080
    from ohlcv.calendars import weekdays_rule

    assert weekdays_rule(cfg.data.weekdays).close == "18:00"
    with pytest.raises(ConfigError, match=r"'25:00' is not a time of day"):
        load_profile("hourly", ["data.weekdays.close=25:00"])


def test_a_lake_without_volume_from_ingest_builds_without_the_volume_variate(tmp_path):
    from ohlcv.lake.ingest import ingest

    source = tmp_path / "EURGBP.csv"
    clock = np.datetime64("2024-01-01T00:00") + np.arange(2000 * 2) * np.timedelta64(1, "h")
    stamps = clock[(clock.astype("datetime64[D]").view("int64") - 4) % 7 < 5][:2000]  # weekdays only
    close = 0.86 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-3, len(stamps))))
    pl.DataFrame({"Date": stamps.astype("datetime64[us]"), "Open": close, "High": close * 1.001, "Low": close * 0.999,
                  "Close": close}).write_csv(source)
    assert ingest(source, tmp_path / "lake", asset_class="fx", freq="1h").symbols["fx/EURGBP"]["rows"] == 2000
    result = IterativeFinancialDatasetBuilder(_cfg(tmp_path / "lake", tmp_path / "ds",
                                                   "features.enabled=[log_return,volume_z]")).run()
    assert "volume" not in result.manifest["variates"] and "volume_z" not in result.manifest["variates"]
    assert any("no volume column" in note for note in result.report["notes"])


def test_a_young_symbol_without_training_bars_is_left_out_of_a_per_symbol_scaler_with_the_reason(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=3000,
                                calendars={})
    from datetime import datetime, timezone

    young = datetime(2023, 4, 15, tzinfo=timezone.utc)  # CRY001 starts after the training cut (2023-04-10)
    for path in sorted((lake.root / "asset_class=crypto" / "freq=1h" / "symbol=CRY001").rglob("*.parquet")):
        frame = pl.read_parquet(path).filter(pl.col("ts") >= young)
        frame.write_parquet(path) if frame.height else path.unlink()
    result = IterativeFinancialDatasetBuilder(_cfg(lake.root, tmp_path / "ds", "features.enabled=[log_return]",
                                                   "data.cleaning.min_length=300",
                                                   "data.normalization.scaler=standard")).run()
    assert [item["item_id"] for item in result.manifest["items"]] == ["crypto/CRY000"]
    assert "no bars before the common training cut" in result.report["per_symbol"]["crypto/CRY001"]["quarantined"]


def test_a_lake_of_another_frequency_is_named_in_the_error(real_lake, tmp_path):
    with pytest.raises(OhlcvError, match=r"no symbols match \(freq 1min.*the lake holds freq 1D, 1h"):
        IterativeFinancialDatasetBuilder(_cfg(real_lake, tmp_path / "ds", profile="minute")).run()


@pytest.mark.slow
def test_a_symbol_that_starts_after_the_training_cut_is_left_out_of_training_not_in_its_way(tmp_path):
    from datetime import datetime, timezone

    from ohlcv.train.finetune import run_finetune
    from ohlcv.train.pretrain import run_pretrain
    from tests.conftest import FT, TINY

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=3, asset_classes=["crypto"], bars=3000,
                                calendars={})
    young = datetime(2023, 4, 15, tzinfo=timezone.utc)  # after the common training cut (2023-04-10)
    for path in sorted((lake.root / "asset_class=crypto" / "freq=1h" / "symbol=CRY002").rglob("*.parquet")):
        frame = pl.read_parquet(path).filter(pl.col("ts") >= young)
        frame.write_parquet(path) if frame.height else path.unlink()
    loaded = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}",
                                     "data.cleaning.min_length=300", *TINY, "pretrain.max_steps=2", *FT,
                                     "finetune.max_steps=2"])
    result = run_pretrain(loaded, dataset=tmp_path / "ds", out=tmp_path / "pt")
    assert result.summary["status"] == "finished"
    items = {i["item_id"]: i for i in json.loads((tmp_path / "ds" / "manifest.json").read_text())["items"]}
    assert items["crypto/CRY002"]["train_end"] == 0  # in the dataset, for evaluation; not trained on
    tuned = run_finetune(loaded, str(result.model_dir), dataset=tmp_path / "ds", out=tmp_path / "ft")
    assert tuned.summary["status"] == "finished" and tuned.summary["series_left_out"] == 1


def test_weekly_bars_on_an_exchange_calendar_are_refused_before_the_build_and_build_continuous(tmp_path, cli):
    """A week spans several sessions: no exchange calendar lays it out. Said once, up front (it used to
    quarantine every symbol, or fail inside exchange_calendars); the sample lake writes weekly bars."""
    made = cli("lake", "sample", str(tmp_path / "lake"), "--freq", "1W", "--asset-classes", "equity",
               "--symbols", "2", "--bars", "300")
    assert made.exit_code == 0, made.stderr
    refused = cli("build", "--profile", "daily", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "ds"),
                  "data.freq=1W", "data.calendars={equity: XNYS}")
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code == 2 and len(lines) == 1 and "data.freq" in lines[0] and "XNYS" in lines[0], refused.stderr
    assert not (tmp_path / "ds").exists() and not any(tmp_path.glob(".ds*"))
    built = cli("build", "--profile", "daily", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "ds"), "-q",
                "data.freq=1W", "data.calendars={equity: continuous}", "features.enabled=[log_return]", "data.cleaning.min_length=100")
    assert built.exit_code == 0, built.stderr
