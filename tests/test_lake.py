"""The lake: discovery and pruning by partition names, the sample generator, ingest."""

from __future__ import annotations


import numpy as np
import polars as pl
import pytest

from ohlcv.errors import ConfigError
from ohlcv.lake.ingest import ingest, partition_value
from ohlcv.lake.layout import discover
from ohlcv.lake.sample import generate_sample_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    # every class around the clock: these tests are about the layout, 95 days of hourly bars each
    return generate_sample_lake(tmp_path_factory.mktemp("lake") / "lake", symbols_per_class=3, bars=24 * 95, seed=1,
                                calendars={})


def test_discovery_finds_every_symbol_from_names_alone(lake):
    found = discover(lake.root, freq="1h")
    assert [s.item_id for s in found.sources] == sorted(lake.symbols)
    months = {f.parent.name for s in found.sources for f in s.files}
    assert months == {"month=01", "month=02", "month=03", "month=04"}


def test_selection_prunes_partitions_without_reading(lake, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("discovery must not read data")

    monkeypatch.setattr(pl, "read_parquet", no_reading)
    monkeypatch.setattr(pl, "scan_parquet", no_reading)
    found = discover(lake.root, freq="1h", asset_classes=["equity"], symbols=["EQU001", "fx/FX002"],
                     start="2023-02-10", end="2023-03-05")
    assert [s.item_id for s in found.sources] == ["equity/EQU001"]
    assert [f.parent.name for f in found.sources[0].files] == ["month=02", "month=03"]
    assert discover(lake.root, freq="1D").sources == []


def test_frequency_spellings_in_partitions_map_to_one_form(tmp_path):
    base = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=100)
    folder = base.root / "asset_class=crypto"
    (folder / "freq=1h").rename(folder / "freq=H")
    other = generate_sample_lake(tmp_path / "other", symbols_per_class=1, asset_classes=["fx"], bars=100)
    (other.root / "asset_class=fx" / "freq=1h").rename(other.root / "asset_class=fx" / "freq=60min")
    (other.root / "asset_class=fx").rename(base.root / "asset_class=fx")
    found = discover(base.root, freq="1h")
    assert [s.item_id for s in found.sources] == ["crypto/CRY000", "crypto/CRY001", "fx/FX000"]
    assert found.freq_spellings == {"H": "1h", "60min": "1h"}
    assert {s.freq.canonical for s in found.sources} == {"1h"}


def test_folders_outside_the_layout_are_reported_not_fatal(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=50)
    (lake.root / "notes").mkdir()
    (lake.root / "asset_class=fx" / "freq=fortnightly").mkdir()
    found = discover(lake.root, freq="1h")
    assert len(found.sources) == 1
    assert any("notes" in s for s in found.skipped) and any("fortnightly" in s for s in found.skipped)


def test_sample_lake_is_realistic(lake):
    frame = pl.concat(
        [pl.read_parquet(p) for p in sorted((lake.root / "asset_class=crypto" / "freq=1h").rglob("part.parquet"))]
    )
    assert frame.columns == ["ts", "open", "high", "low", "close", "volume"]
    assert (frame["high"] >= frame[["open", "close"]].max_horizontal()).all()
    assert (frame["low"] <= frame[["open", "close"]].min_horizontal()).all()
    assert (frame["volume"] > 0).all()
    closes = {}
    for symbol in ("CRY000", "CRY001"):
        path = lake.root / "asset_class=crypto" / "freq=1h" / f"symbol={symbol}"
        closes[symbol] = pl.concat([pl.read_parquet(p) for p in sorted(path.rglob("part.parquet"))])["close"].to_numpy()
    returns = {k: np.diff(np.log(v)) for k, v in closes.items()}
    assert np.corrcoef(returns["CRY000"], returns["CRY001"])[0, 1] > 0.1  # one asset class moves together
    r = returns["CRY000"]
    kurtosis = np.mean((r - r.mean()) ** 4) / np.var(r) ** 2
    assert kurtosis > 3.5  # fat tails from stochastic volatility and regimes


def test_ingest_vendor_files_then_append_without_duplicates(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    ts = pl.datetime_range(pl.datetime(2024, 1, 30), pl.datetime(2024, 2, 2), "1h", eager=True)
    prices = np.linspace(100, 110, len(ts))
    vendor = pl.DataFrame({"Date": ts.dt.strftime("%Y-%m-%d %H:%M:%S"), "Open": prices, "HIGH": prices + 1,
                           "low": prices - 1, "Close": prices, "Vol": np.full(len(ts), 10.0)})
    vendor.write_csv(exports / "AAPL.csv")
    vendor.write_parquet(exports / "MSFT.parquet")
    lake = tmp_path / "lake"
    first = ingest(exports, lake, asset_class="equity", freq="H")
    assert first.problems == []
    assert first.symbols["equity/AAPL"] == {"rows": len(ts), "added": len(ts), "replaced": 0, "files": 2}
    assert (lake / "asset_class=equity" / "freq=1h" / "symbol=MSFT" / "year=2024" / "month=02" / "part.parquet").is_file()
    # a later export overlapping the first one by a day
    later_ts = pl.datetime_range(pl.datetime(2024, 2, 1), pl.datetime(2024, 2, 3), "1h", eager=True)
    later = pl.DataFrame({"timestamp": later_ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0})
    later.write_csv(tmp_path / "AAPL.csv")
    second = ingest(tmp_path / "AAPL.csv", lake, asset_class="equity", freq="1h")
    overlap = int((ts >= later_ts[0]).sum())
    assert second.symbols["equity/AAPL"]["replaced"] == overlap
    assert second.symbols["equity/AAPL"]["added"] == len(later_ts) - overlap
    stored = pl.concat([pl.read_parquet(p) for p in sorted((lake / "asset_class=equity" / "freq=1h" / "symbol=AAPL").rglob("*.parquet"))])
    assert stored["ts"].is_unique().all() and stored.height == len(ts) + len(later_ts) - overlap
    first_late = pl.lit(later_ts[0]).dt.replace_time_zone("UTC")
    assert stored.filter(pl.col("ts") == first_late)["close"][0] == 1.5  # the newer bar wins
    found = discover(lake, freq="1h")
    assert [s.item_id for s in found.sources] == ["equity/AAPL", "equity/MSFT"]


def test_ingest_reports_bad_files_and_keeps_going(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "BROKEN.csv").write_text("Date,Open\n2024-01-01,1\n")
    from datetime import datetime

    pl.DataFrame({"ts": [datetime(2024, 1, 1)], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0],
                  "volume": [1.0]}).write_parquet(exports / "GOOD.parquet")
    result = ingest(exports, tmp_path / "lake", asset_class="equity", freq="1D")
    assert list(result.symbols) == ["equity/GOOD"]
    assert len(result.problems) == 1 and "BROKEN.csv" in result.problems[0] and "'high'" in result.problems[0]


@pytest.mark.parametrize("name, encoded", [("BTC-USD", "BTC-USD"), ("a/b", "a%2Fb"), ("with space", "with%20space"),
                                           ("..x", "..x")])
def test_partition_values_are_single_safe_path_components(name, encoded):
    assert partition_value(name, key="symbol") == encoded


@pytest.mark.parametrize("name", ["..", ".", "", "   "])
def test_partition_values_that_are_path_tricks_are_refused(name):
    with pytest.raises(ConfigError):
        partition_value(name, key="symbol")


def test_lake_commands(cli, tmp_path):
    result = cli("lake", "sample", str(tmp_path / "lake"), "--symbols", "2", "--asset-classes", "fx",
                 "--bars", "500", "--dirt", "duplicates")
    assert result.exit_code == 0, result.stderr
    assert "dirt in fx/FX000: duplicate_ts=5" in result.stdout
    assert len(list((tmp_path / "lake").rglob("part.parquet"))) == 2 * 1  # 500 hourly bars: one month each
    bad = cli("lake", "sample", str(tmp_path / "x"), "--dirt", "volcanoes")
    assert bad.exit_code == 2 and "volcanoes" in bad.stderr
    short = cli("lake", "sample", str(tmp_path / "y"), "--bars", "60", "--dirt", "all")
    assert short.exit_code == 2 and "400 bars" in short.stderr


def test_daily_bars_by_year_files_are_discovered_in_time_order_and_pruned_by_year(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["equity"], freq="1D",
                                bars=600, start="2021-03-01", partition="auto").root
    found = discover(lake, freq="1D")
    files = found.sources[0].files
    assert [f.relative_to(files[0].parents[2]).as_posix() for f in files] == [
        "symbol=EQU000/year=2021/part.parquet", "symbol=EQU000/year=2022/part.parquet",
        "symbol=EQU000/year=2023/part.parquet"]
    pruned = discover(lake, freq="1D", start="2022-06-30", end="2022-07-01").sources[0].files
    assert [f.parent.name for f in pruned] == ["year=2022"]
    # a symbol may mix both: a year's own file comes before that year's month folders
    month = lake / "asset_class=equity/freq=1D/symbol=EQU000/year=2023/month=12"
    month.mkdir()
    pl.read_parquet(files[-1]).tail(3).write_parquet(month / "part.parquet")
    mixed = discover(lake, freq="1D").sources[0].files
    assert [f.parent.name for f in mixed][-2:] == ["year=2023", "month=12"]
    assert found.skipped == []


def test_a_daily_lake_by_year_builds_the_same_dataset_as_by_month(tmp_path):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    built = {}
    for partition in ("month", "year"):
        lake = generate_sample_lake(tmp_path / partition, symbols_per_class=2, asset_classes=["equity", "fx"],
                                    freq="1D", bars=700, seed=5, partition=partition).root
        cfg = load_profile("daily", [f"data.lake={lake}", f"data.dataset={tmp_path / ('ds-' + partition)}",
                                     "features.enabled=[log_return,class_return]"]).cfg
        built[partition] = IterativeFinancialDatasetBuilder(cfg).run()
    files = {p: sum(r["files"] for r in b.report["per_symbol"].values()) for p, b in built.items()}
    assert files["year"] * 6 < files["month"]
    assert built["year"].manifest["content_hash"] == built["month"].manifest["content_hash"]
    assert built["year"].report["rows_read"] == built["month"].report["rows_read"] > 4 * 700


def test_ingest_writes_year_files_for_daily_bars_and_keeps_a_symbols_layout(tmp_path):
    ts = pl.datetime_range(pl.datetime(2022, 12, 20), pl.datetime(2023, 1, 10), "1d", eager=True)
    bars = pl.DataFrame({"date": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0})
    bars.write_csv(tmp_path / "SPY.csv")
    lake = tmp_path / "lake"
    first = ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D")
    spy = lake / "asset_class=equity/freq=1D/symbol=SPY"
    assert sorted(p.relative_to(spy).as_posix() for p in spy.rglob("*.parquet")) == [
        "year=2022/part.parquet", "year=2023/part.parquet"]
    assert first.symbols["equity/SPY"]["files"] == 2
    # more bars, overlapping: appended into the year files, the newer bar wins
    later = bars.tail(5).with_columns(pl.col("close") * 2)
    later.write_csv(tmp_path / "SPY.csv")
    second = ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D")
    assert second.symbols["equity/SPY"]["replaced"] == 5 and second.symbols["equity/SPY"]["added"] == 0
    stored = pl.read_parquet(spy / "year=2023" / "part.parquet")
    assert stored["ts"].is_unique().all() and stored["close"].to_list()[-5:] == [3.0] * 5
    # asked for month files, a symbol stored by year is left alone and named
    refused = ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D", partition="month")
    assert refused.symbols == {} and "stored by year" in refused.problems[0] and "--partition year" in refused.problems[0]
    # a symbol already stored by month keeps month files
    month_lake = tmp_path / "months"
    ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D", partition="month")
    bars.write_csv(tmp_path / "SPY.csv")
    ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D")
    assert {p.parent.name for p in month_lake.rglob("*.parquet")} == {"month=12", "month=01"}
    with pytest.raises(ConfigError):
        ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D", partition="week")
    # intraday bars keep month files
    hourly = ingest(tmp_path / "SPY.csv", tmp_path / "h", asset_class="equity", freq="1h")
    assert hourly.symbols["equity/SPY"]["files"] == 2
    assert {p.parent.name for p in (tmp_path / "h").rglob("*.parquet")} == {"month=12", "month=01"}
