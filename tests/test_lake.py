"""The lake: discovery and pruning by partition names, the sample generator, ingest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ohlcv.errors import ConfigError, OhlcvError
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
    assert first.symbols["equity/AAPL"] == {"rows": len(ts), "added": len(ts), "replaced": 0, "files": 2,
                                            "by": "month"}
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


def test_daily_bars_by_year_files_are_discovered_by_year_and_pruned_by_year(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["equity"], freq="1D",
                                bars=600, start="2021-03-01").root
    found = discover(lake, freq="1D")
    files = found.sources[0].files
    assert [f.relative_to(files[0].parents[2]).as_posix() for f in files] == [
        "symbol=EQU000/year=2021/part.parquet", "symbol=EQU000/year=2022/part.parquet",
        "symbol=EQU000/year=2023/part.parquet"]
    pruned = discover(lake, freq="1D", start="2022-06-30", end="2022-07-01").sources[0].files
    assert [f.parent.name for f in pruned] == ["year=2022"]
    # an offset counts: 2022-12-31T23:00-05:00 is 2023-01-01T04:00 UTC, in the 2023 file
    shifted = discover(lake, freq="1D", start="2022-12-31T23:00-05:00", end="2023-01-01T09:00+05:00").sources[0]
    assert [f.parent.name for f in shifted.files] == ["year=2023"]
    assert discover(lake, freq="1D", end="2021-12-31T23:00-05:00").sources[0].files[-1].parent.name == "year=2022"
    # a symbol may mix both: a year's own file comes before that year's month folders
    month = lake / "asset_class=equity/freq=1D/symbol=EQU000/year=2023/month=12"
    month.mkdir()
    pl.read_parquet(files[-1]).tail(3).write_parquet(month / "part.parquet")
    mixed = discover(lake, freq="1D")
    assert [f.parent.name for f in mixed.sources[0].files][-2:] == ["year=2023", "month=12"]
    assert mixed.skipped == []


def test_a_symbol_mixing_year_and_month_files_has_the_same_split_and_dataset(tmp_path):
    """The split's edge probes read both kinds of file of an edge year: a month folder that ends before
    the year file (a copy of March), or a year file that starts after a month folder, moves nothing."""
    import shutil

    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    pure = generate_sample_lake(tmp_path / "pure", symbols_per_class=2, asset_classes=["crypto"], freq="1D",
                                bars=900, start="2021-03-01", seed=2).root
    mixed = tmp_path / "mixed"
    shutil.copytree(pure, mixed)
    symbol = mixed / "asset_class=crypto/freq=1D/symbol=CRY000"
    last = pl.read_parquet(symbol / "year=2023/part.parquet")
    march = last.filter(pl.col("ts").dt.month() == 3)
    (symbol / "year=2023/month=03").mkdir()
    march.write_parquet(symbol / "year=2023/month=03/part.parquet")  # the same bars, stored twice
    first = pl.read_parquet(symbol / "year=2021/part.parquet")
    (symbol / "year=2021/month=03").mkdir()
    first.filter(pl.col("ts").dt.month() == 3).write_parquet(symbol / "year=2021/month=03/part.parquet")
    first.filter(pl.col("ts").dt.month() > 3).write_parquet(symbol / "year=2021/part.parquet")  # moved, not copied
    built = {}
    for name, lake in (("pure", pure), ("mixed", mixed)):
        cfg = load_profile("daily", [f"data.lake={lake}", f"data.dataset={tmp_path / ('ds-' + name)}",
                                     "features.enabled=[log_return]"]).cfg
        built[name] = IterativeFinancialDatasetBuilder(cfg).run()
    assert built["mixed"].manifest["split"] == built["pure"].manifest["split"]
    assert built["mixed"].manifest["content_hash"] == built["pure"].manifest["content_hash"]
    counts = built["mixed"].report["per_symbol"]["crypto/CRY000"]["counts"]
    assert counts["duplicate_ts"] == march.height


def test_an_offset_in_data_start_builds_as_its_utc_instant(tmp_path):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], freq="1D",
                                bars=1000, start="2021-06-01", seed=3).root
    hashes = []
    for start in ("2022-01-01T04:00:00+05:00", "2021-12-31T23:00:00Z"):
        cfg = load_profile("daily", [f"data.lake={lake}", f"data.dataset={tmp_path / str(len(hashes))}",
                                     f"data.start='{start}'", "features.enabled=[log_return]"]).cfg
        hashes.append(IterativeFinancialDatasetBuilder(cfg).run().manifest["content_hash"])
    assert hashes[0] == hashes[1]


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
    assert built["year"].manifest["split"] == built["month"].manifest["split"]
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
    assert refused.symbols == {} and "year=2023 is stored by year" in refused.problems[0]
    assert "--partition year" in refused.problems[0] and "ohlcv lake repartition" in refused.problems[0]
    # a symbol already stored by month keeps month files
    month_lake = tmp_path / "months"
    ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D", partition="month")
    bars.write_csv(tmp_path / "SPY.csv")
    ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D")
    assert {p.parent.name for p in month_lake.rglob("*.parquet")} == {"month=12", "month=01"}
    # a symbol mixing both: each year is written as it is stored, a new year as asked
    spy_months = month_lake / "asset_class=equity/freq=1D/symbol=SPY"
    later_years = bars.with_columns(pl.col("date").dt.offset_by("2y"))
    later_years.write_csv(tmp_path / "SPY.csv")
    mixed = ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D", partition="year")
    assert mixed.problems == [] and mixed.symbols["equity/SPY"]["by"] == "year"
    assert sorted(p.relative_to(spy_months).as_posix() for p in spy_months.rglob("*.parquet")) == [
        "year=2022/month=12/part.parquet", "year=2023/month=01/part.parquet", "year=2024/part.parquet",
        "year=2025/part.parquet"]
    again = ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D")  # auto: as stored
    assert again.symbols["equity/SPY"]["replaced"] == len(later_years) and again.symbols["equity/SPY"]["by"] == "year"
    # a year stored both ways is refused: a bar written to one kind could be hidden by the other
    (spy_months / "year=2024/month=12").mkdir()
    pl.read_parquet(spy_months / "year=2024/part.parquet").tail(2).write_parquet(spy_months / "year=2024/month=12/part.parquet")
    both = ingest(tmp_path / "SPY.csv", month_lake, asset_class="equity", freq="1D")
    assert both.symbols == {} and "year=2024 holds both a year file and month=MM folders" in both.problems[0]
    # stray entries the build ignores do not count: a file named like a year, an empty or invalid month folder
    (lake / "asset_class=equity/freq=1D/symbol=SPY/year=2019").write_text("")
    (lake / "asset_class=equity/freq=1D/symbol=SPY/year=2023/month=13").mkdir()
    (lake / "asset_class=equity/freq=1D/symbol=SPY/year=2023/month=02").mkdir()
    assert ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D").problems == []
    with pytest.raises(ConfigError):
        ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D", partition="week")
    # intraday bars keep month files
    hourly = ingest(tmp_path / "SPY.csv", tmp_path / "h", asset_class="equity", freq="1h")
    assert hourly.symbols["equity/SPY"]["files"] == 2
    assert {p.parent.name for p in (tmp_path / "h").rglob("*.parquet")} == {"month=12", "month=01"}


def test_a_corrupt_lake_file_is_named_and_the_rest_ingested(tmp_path):
    ts = pl.datetime_range(pl.datetime(2022, 12, 1), pl.datetime(2023, 1, 31), "1d", eager=True)
    pl.DataFrame({"date": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 3.0}).write_csv(tmp_path / "SPY.csv")
    lake = tmp_path / "lake"
    ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D")
    broken = lake / "asset_class=equity/freq=1D/symbol=SPY/year=2022/part.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    result = ingest(tmp_path / "SPY.csv", lake, asset_class="equity", freq="1D")
    assert result.symbols["equity/SPY"]["files"] == 1 and len(result.problems) == 1
    assert str(broken) in result.problems[0] and "left as it is" in result.problems[0]
    assert broken.read_bytes() == b"PAR1 not parquet"


def test_repartition_rewrites_a_lake_and_the_build_gives_the_same_dataset(tmp_path, cli):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["equity", "crypto"],
                                freq="1D", bars=500, start="2021-03-01", seed=4, partition="month").root
    hourly = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=600, seed=4).root
    assert hourly == lake

    def build(out):
        cfg = load_profile("daily", [f"data.lake={lake}", f"data.dataset={tmp_path / out}",
                                     "features.enabled=[log_return,class_return]"]).cfg
        return IterativeFinancialDatasetBuilder(cfg).run()

    before = build("before")
    months = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet") if "freq=1D" in p.as_posix())
    result = cli("lake", "repartition", str(lake), "--partition", "auto")
    assert result.exit_code == 0, result.stderr
    assert "4 symbol folders rewritten, 1 already laid out so" in result.stdout
    daily = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet") if "freq=1D" in p.as_posix())
    assert len(daily) < len(months) / 6 and all(p.endswith("/part.parquet") and "month=" not in p for p in daily)
    assert not any(p.name.startswith("month=") for p in lake.rglob("*") if "freq=1D" in p.as_posix())
    assert all("month=" in p.as_posix() for p in lake.rglob("*.parquet") if "freq=1h" in p.as_posix())
    after = build("after")
    assert after.manifest["content_hash"] == before.manifest["content_hash"]
    assert after.manifest["split"] == before.manifest["split"]
    # and back: month files again, the same dataset
    assert cli("lake", "repartition", str(lake), "--partition", "month", "--freq", "1D").exit_code == 0
    assert sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet") if "freq=1D" in p.as_posix()) == months
    assert build("back").manifest["content_hash"] == before.manifest["content_hash"]


def test_a_symbol_folder_with_a_file_the_build_skips_is_left_as_it_is(tmp_path):
    from ohlcv.lake.ingest import repartition

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=3, asset_classes=["equity"], freq="1D",
                                bars=300, start="2022-01-03", partition="month").root
    unreadable = sorted((lake / "asset_class=equity/freq=1D/symbol=EQU001").rglob("*.parquet"))[3]
    unreadable.write_bytes(b"PAR1 not parquet")
    no_close = sorted((lake / "asset_class=equity/freq=1D/symbol=EQU002").rglob("*.parquet"))[2]
    pl.read_parquet(no_close).drop("close").write_parquet(no_close)  # the build skips it: files_missing_columns
    # what the build repairs is repaired: a capitalised column name, text prices
    capitalised = sorted((lake / "asset_class=equity/freq=1D/symbol=EQU000").rglob("*.parquet"))[1]
    bars = pl.read_parquet(capitalised)
    bars.rename({"close": "Close"}).with_columns(pl.col("open").cast(pl.String)).write_parquet(capitalised)
    before = {s: sorted((lake / f"asset_class=equity/freq=1D/symbol={s}").rglob("*")) for s in ("EQU001", "EQU002")}
    result = repartition(lake, partition="year")
    assert list(result.symbols) == ["equity/EQU000 (1D)"] and result.symbols["equity/EQU000 (1D)"]["rows"] == 300
    rewritten = pl.read_parquet(sorted((lake / "asset_class=equity/freq=1D/symbol=EQU000").rglob("*.parquet")))
    assert rewritten.filter(pl.col("ts").is_in(bars["ts"].implode()))["close"].to_list() == bars["close"].to_list()
    assert len(result.problems) == 2
    assert "equity/EQU001 (1D)" in result.problems[0] and str(unreadable) in result.problems[0]
    assert "equity/EQU002 (1D)" in result.problems[1] and "missing column(s) close" in result.problems[1]
    assert {s: sorted((lake / f"asset_class=equity/freq=1D/symbol={s}").rglob("*")) for s in before} == before


def test_repartition_keeps_each_frequency_of_a_symbol_in_its_own_folder(tmp_path):
    """Without --freq, a symbol's daily and hourly folders are two series: neither is merged into the other."""
    from ohlcv.lake.ingest import repartition

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], freq="1D", bars=400,
                                start="2022-01-03", partition="month").root
    generate_sample_lake(lake, symbols_per_class=1, asset_classes=["fx"], bars=2000, start="2022-01-03")
    rows = {f: pl.read_parquet(sorted((lake / f"asset_class=fx/freq={f}").rglob("*.parquet"))).height
            for f in ("1D", "1h")}
    result = repartition(lake, partition="year")
    assert set(result.symbols) == {"fx/FX000 (1D)", "fx/FX000 (1h)"}
    for f, n in rows.items():
        files = sorted((lake / f"asset_class=fx/freq={f}").rglob("*.parquet"))
        assert files and all(p.parent.name.startswith("year=") for p in files)
        assert pl.read_parquet(files).height == n
    # a run killed between removing a folder's last file and the folder leaves it empty: the next run removes it
    empty = lake / "asset_class=fx/freq=1D/symbol=FX000/year=2022/month=05"
    empty.mkdir()
    assert repartition(lake, partition="year").unchanged == 2 and not empty.exists()
    with pytest.raises(OhlcvError, match="no symbols match"):
        repartition(lake, partition="year", freq="5min")


@pytest.mark.parametrize("command", [["lake", "ingest", "SRC"], ["lake", "sample"], ["lake", "repartition"]])
def test_lake_writers_refuse_an_object_store_url_in_one_line(cli, tmp_path, command):
    (tmp_path / "SRC").write_text("date,open,high,low,close\n2024-01-02,1,1,1,1\n")
    args = [str(tmp_path / a) if a == "SRC" else a for a in command] + ["s3://bucket/lake"]
    args += {"ingest": ["--asset-class", "equity", "--freq", "1D"], "repartition": ["--partition", "year"]}.get(command[1], [])
    result = cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and "s3://bucket/lake" in lines[0] and "aws s3 sync" in lines[0]
    assert not any(tmp_path.glob("s3*")) and not (Path.cwd() / "s3:").exists()


def test_a_sample_lake_over_another_layout_is_refused(tmp_path):
    generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["equity"], freq="1D", bars=100,
                         partition="month")
    with pytest.raises(ConfigError) as refused:
        generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["equity"], freq="1D", bars=100)
    assert "is stored by month" in str(refused.value) and "--partition month" in str(refused.value)
    assert all("month=" in p.as_posix() for p in (tmp_path / "lake").rglob("*.parquet"))


def _litter(root: Path) -> None:
    """What lakes collect besides bars: hidden and underscore names (Spark's markers, checksums, macOS
    resource forks, notebook checkpoints), notes, and Parquet files put where no reader looks."""
    symbol = root / "asset_class=fx" / "freq=1h" / "symbol=FX000"
    month = symbol / "year=2023" / "month=01"
    (root / "_SUCCESS").write_text("")
    (root / ".ipynb_checkpoints" / "asset_class=fx").mkdir(parents=True)
    for folder in (month, month.parent):  # macOS resource forks, beside a month's and a year's bars
        (folder / "._part.parquet").write_bytes(b"\x00\x05\x16\x07 not parquet")
    (month / ".part.parquet.crc").write_bytes(b"crc")
    (month / "_common_metadata").write_bytes(b"meta")
    (symbol / "year=2023" / "notes.txt").write_text("rolled over on the 3rd")
    shutil.copy(month / "part.parquet", month / "bars.pq")  # Parquet, but not named so: counted, not read
    shutil.copy(month / "part.parquet", symbol / "bars.parquet")  # beside the year folders: read by nobody
    (month / "extra").mkdir()
    shutil.copy(month / "part.parquet", month / "extra" / "part.parquet")


def test_hidden_names_and_other_files_are_ignored_and_misplaced_parquet_is_reported(tmp_path):
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=1500, seed=3)
    before = discover(lake.root, freq="1h")
    _litter(lake.root)
    after = discover(lake.root, freq="1h")
    assert after.sources == before.sources  # the same files read: no resource fork, no stray copy
    where = lake.root / "asset_class=fx" / "freq=1h" / "symbol=FX000"
    assert after.skipped == [f"{where / 'bars.parquet'}: not in a year=YYYY folder",
                             f"{where / 'year=2023' / 'month=01' / 'extra'}: not read (a month's files go directly "
                             "in month=MM)",
                             f"{where}: 2 file(s) not named *.parquet passed over (e.g. year=2023/notes.txt)"]
    # out of the selected dates, a month's files are not listed, and not counted either
    from ohlcv.lake.layout import stored_layout

    assert stored_layout(where) == {2023: {"month"}}  # what ingest checks before writing: no "year file" seen
    pruned = discover(lake.root, freq="1h", start="2023-02-01")
    assert pruned.skipped == [f"{where / 'bars.parquet'}: not in a year=YYYY folder",
                              f"{where}: 1 file(s) not named *.parquet passed over (e.g. year=2023/notes.txt)"]
