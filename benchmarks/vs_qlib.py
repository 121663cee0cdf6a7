"""`ohlcv build --profile daily` against Qlib's own data pipeline, on the same daily lake, both from cold.

The shape of Qlib's published data benchmark (README, "Data Server performance"): 800 stocks x 14 years
of daily bars. Qlib's figures for it: 147 s without caches, 7.4 s with its expression and dataset caches
warm, 4.2 s with caches on 64 CPUs. This script measures, on this machine and in one run:

* **ohlcv**: ``IterativeFinancialDatasetBuilder`` with the ``daily`` profile (every feature of the profile,
  the learned regime included) from the Parquet lake to the finished Hugging Face dataset, from each
  lake layout (below), twice: the layouts in turn, Qlib, then the layouts in the reverse order.
* **Qlib**: what a Qlib user runs to get the same features from the same bars: Qlib's own CSV-to-binary
  converter (``scripts/dump_bin.py`` ``DumpDataAll``, all CPU cores, from one CSV per symbol written from
  the lake beforehand and not timed), then ``qlib.init`` on the converted folder with the expression and
  dataset caches off, and ``D.features`` computing the daily profile's indicators and regimes as Qlib
  expressions (list below). Qlib's expression engine is per instrument; the cross-asset features
  (leave-one-out class return, dispersion, relative strength, rolling beta and correlation) are computed
  from its output with a pandas groupby over the date, as a Qlib user would. The learned regime (a Gaussian
  mixture) has no Qlib expression and is left out of Qlib's side, which favours Qlib.

Both sides start cold: fresh output folders, Qlib's caches disabled, each side in its own process.
Prints both times, two ratios (from cold with Qlib's conversion; features only, Qlib from its converted
data), and Qlib's published figures (which leave the conversion out); asserts nothing. Target: ohlcv >= 5x faster.

Install: Qlib is a benchmark-only dependency, in a virtual environment of its own (pyqlib pins pandas and
numpy its own way; ohlcv's environments are never touched). The script runs with ohlcv's Python and
starts Qlib's side with ``--qlib-python``::

    python3.11 -m venv ~/venv-qlib
    ~/venv-qlib/bin/pip install pyqlib==0.9.7          # brings fire, loguru and tqdm, which dump_bin.py imports
    git clone --branch v0.9.7 --depth 1 https://github.com/microsoft/qlib ~/qlib   # dump_bin.py is not in the wheel

Usage: python benchmarks/vs_qlib.py --qlib-python ~/venv-qlib/bin/python --dump-bin ~/qlib/scripts/dump_bin.py
       [--symbols 800] [--years 14] [--workdir DIR] [--layouts year,month]

The same bars are built from two lakes: one file per symbol and year (``year=YYYY/part.parquet``, what
``ohlcv lake ingest`` writes for daily bars) and one per symbol and month (``year=YYYY/month=MM/``, the
intraday layout: ~21 daily bars a file). Every build must give the same content hash and split (else the
script stops with an error).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the daily profile's features as Qlib expressions (windows of profiles/daily.yaml); Qlib's EMA takes
# alpha itself when given a float below 1 (Wilder's smoothing: 1/14), a span otherwise
R1 = "Log($close/Ref($close,1))"
TR = "Greater(Greater($high-$low,Abs($high-Ref($close,1))),Abs($low-Ref($close,1)))"
LV = "Log($volume+1)"
SLOPE = "Log(Mean($close,50)/Ref(Mean($close,50),5))"
MACD = "(EMA($close,12)-EMA($close,26))"
QLIB_FIELDS = {
    "log_return_1": R1,
    "log_return_5": "Log($close/Ref($close,5))",
    "log_return_21": "Log($close/Ref($close,21))",
    "rsi": "100-100/(1+EMA(Greater($close-Ref($close,1),0),0.0714285714)/EMA(Greater(Ref($close,1)-$close,0),0.0714285714))",
    "macd": MACD,
    "macd_signal": f"EMA({MACD},9)",
    "macd_hist": f"{MACD}-EMA({MACD},9)",
    "atr": f"EMA({TR},0.0714285714)",
    "natr": f"EMA({TR},0.0714285714)/$close*100",
    "bb_width": "4*Std($close,20)/Mean($close,20)",
    "bb_percent_b": "($close-Mean($close,20)+2*Std($close,20))/(4*Std($close,20))",
    "rv_21": f"Std({R1},21)",
    "rv_63": f"Std({R1},63)",
    "volume_z": f"({LV}-Mean({LV},63))/Std({LV},63)",
    "r1": R1,  # for the cross-asset features
    "vol_q1": f"Quantile(Std({R1},21),252,0.3333333)",
    "vol_q2": f"Quantile(Std({R1},21),252,0.6666667)",
    "trend_slope": SLOPE,
    "trend_up": f"Gt({SLOPE},0)",
    "drawdown": "$close/Max($close,0)-1",  # Qlib's rolling window 0 is expanding: the running maximum
}


LAKE_SEED = 7


def make_lake(root: Path, symbols: int, years: int, partition: str) -> Path:
    """The same bars by month (``year=YYYY/month=MM/part.parquet``) or by year (``year=YYYY/part.parquet``,
    what ``ohlcv lake ingest`` writes for daily bars)."""
    from ohlcv.lake.sample import generate_sample_lake

    if not root.exists():  # equities on the NYSE calendar: about 252 sessions a year
        generate_sample_lake(root, symbols_per_class=symbols, asset_classes=["equity"], freq="1D", bars=252 * years,
                             start="2010-01-04", seed=LAKE_SEED, partition=partition)
    return root


def write_csvs(lake: Path, out: Path) -> int:
    """One CSV per symbol (date, symbol, OHLCV): what Qlib's converter reads. Not timed."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for symbol_dir in sorted(lake.glob("asset_class=*/freq=*/symbol=*")):
        symbol = symbol_dir.name.split("=", 1)[1]
        frame = pl.read_parquet(sorted(symbol_dir.rglob("*.parquet"))).sort("ts")
        frame = frame.select(pl.col("ts").dt.date().alias("date"), pl.lit(symbol).alias("symbol"),
                             "open", "high", "low", "close", "volume")
        frame.write_csv(out / f"{symbol}.csv")
        rows += frame.height
    return rows


def run_ohlcv(lake: Path, out: Path) -> dict:
    start = time.perf_counter()  # imports inside the timer, as on Qlib's side
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    cfg = load_profile("daily", [f"data.lake={lake}", f"data.dataset={out}"]).cfg
    result = IterativeFinancialDatasetBuilder(cfg).run(force=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "variates": len(result.manifest["variates"]),
            "content_hash": result.manifest["content_hash"], "split": result.manifest["split"]}


def run_qlib(csv_dir: Path, qlib_dir: Path, dump_bin: Path) -> dict:
    start = time.perf_counter()  # imports inside the timer, as on ohlcv's side
    import importlib

    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(dump_bin.resolve().parent))  # imported by name: its worker processes unpickle it
    dump = importlib.import_module(dump_bin.stem)
    dump.DumpDataAll(data_path=str(csv_dir), qlib_dir=str(qlib_dir), freq="day", max_workers=os.cpu_count() or 1,
                     date_field_name="date", symbol_field_name="symbol",
                     include_fields="open,high,low,close,volume").dump()
    dumped = time.perf_counter()

    import qlib
    from qlib.data import D

    # no expression cache, no dataset cache: Qlib's "-E -D" (its 147 s row)
    qlib.init(provider_uri=str(qlib_dir), region="us", expression_cache=None, dataset_cache=None,
              kernels=os.cpu_count() or 1)
    names = list(QLIB_FIELDS)
    frame = D.features(D.instruments("all"), [QLIB_FIELDS[n] for n in names], freq="day")
    frame.columns = names
    # the volatility regime's one-hots from the rolling terciles
    rv = frame["rv_21"]
    known = rv.notna() & frame["vol_q1"].notna()
    frame["vol_regime_low"] = np.where(known, (rv <= frame["vol_q1"]).astype(float), np.nan)
    frame["vol_regime_high"] = np.where(known, (rv > frame["vol_q2"]).astype(float), np.nan)
    frame["vol_regime_mid"] = np.where(known, 1 - frame["vol_regime_low"] - frame["vol_regime_high"], np.nan)
    # the cross-asset features: per date, the class (every instrument here) leaving the asset out
    r1 = frame["r1"]
    by_date = r1.groupby(level="datetime")
    n, total, sumsq = by_date.transform("count"), by_date.transform("sum"), (r1 * r1).groupby(level="datetime").transform("sum")
    others = n - r1.notna()
    market = (total - r1.fillna(0)) / others.where(others > 0)
    frame["class_return"] = market.where(r1.notna())
    mean = total / n
    dispersion = np.sqrt((sumsq / n - mean**2).clip(lower=0)).where(n > 1)
    frame["class_dispersion"] = dispersion.where(r1.notna())
    z = (r1 - market) / dispersion
    frame["relative_strength"] = 1 / (1 + np.exp(-1.702 * z))
    both = pd.DataFrame({"x": r1, "y": market}).dropna()
    grouped = both.groupby(level="instrument", group_keys=False)
    cov = grouped.apply(lambda g: g["x"].rolling(63, min_periods=51).cov(g["y"]))
    var = grouped.apply(lambda g: g["y"].rolling(63, min_periods=51).var())
    std_x = grouped.apply(lambda g: g["x"].rolling(63, min_periods=51).std())
    frame["class_beta_63"] = cov / var
    frame["class_corr_63"] = cov / (np.sqrt(var) * std_x)
    finished = time.perf_counter()
    return {"seconds": finished - start, "dump_s": dumped - start, "features_s": finished - dumped,
            "rows": int(len(frame)), "columns": int(frame.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump-bin", type=Path, required=True, help="Qlib's scripts/dump_bin.py (same version as pyqlib)")
    parser.add_argument("--qlib-python", default=sys.executable, help="the Python of the environment holding pyqlib")
    parser.add_argument("--symbols", type=int, default=800)
    parser.add_argument("--years", type=int, default=14)
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the generated lake between runs")
    parser.add_argument("--layouts", default="year,month",
                        help="the daily lake's layouts to build from: year files, month files or both (default)")
    parser.add_argument("--side", choices=["year", "month", "qlib"], help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ohlcv-vs-qlib-"))
    # kept between runs under --workdir: keyed by what it holds, so another shape never reuses it
    key = f"{args.symbols}x{args.years}y-seed{LAKE_SEED}"
    lakes = {"year": work / f"lake-{key}-year", "month": work / f"lake-{key}"}
    csvs = work / f"csv-{key}"
    if args.side in lakes:
        print(json.dumps(run_ohlcv(lakes[args.side], args.out)))
        return
    if args.side == "qlib":
        print(json.dumps(run_qlib(csvs, args.out, args.dump_bin)))
        return

    import polars as pl

    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    if not layouts or set(layouts) - set(lakes):
        raise SystemExit(f"--layouts: a comma-separated list of {', '.join(lakes)}")
    for layout in layouts:
        make_lake(lakes[layout], args.symbols, args.years, layout)
    if not csvs.exists():
        write_csvs(lakes[layouts[0]], csvs)
    rows = int(pl.scan_parquet(str(lakes[layouts[0]] / "**" / "*.parquet"), hive_partitioning=False)
               .select(pl.len()).collect().item())
    files = {layout: sum(1 for _ in lakes[layout].rglob("*.parquet")) for layout in layouts}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"lake: {args.symbols} symbols x {args.years} years of NYSE sessions, {rows:,} daily bars; "
          + ", ".join(f"{files[layout]:,} {layout} files" for layout in layouts))

    def side(name: str) -> dict:  # each side from cold, in a fresh process
        out = work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        python = args.qlib_python if name == "qlib" else sys.executable
        done = subprocess.run([python, __file__, "--side", name, "--out", str(out), "--workdir", str(work),
                               "--dump-bin", str(args.dump_bin), "--symbols", str(args.symbols),
                               "--years", str(args.years)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    # the layouts in turn, Qlib between, then the layouts in the reverse order: a machine getting busier or
    # quieter during the run favours neither layout; each layout's time is the mean of its two builds
    runs = {layout: [side(layout)] for layout in layouts}
    theirs = side("qlib")
    for layout in reversed(layouts):
        runs[layout].append(side(layout))
    ours = {layout: dict(results[0], seconds=sum(r["seconds"] for r in results) / len(results),
                         builds=[round(r["seconds"], 2) for r in results]) for layout, results in runs.items()}
    print(f"Qlib: {theirs['seconds']:.1f} s (dump_bin {theirs['dump_s']:.1f} s + D.features and the cross-section "
          f"{theirs['features_s']:.1f} s; {theirs['columns']} columns)")
    for layout, result in ours.items():
        print(f"ohlcv build --profile daily, {files[layout]:,} {layout} files: {result['seconds']:.1f} s "
              f"({rows / result['seconds']:,.0f} rows/s, {result['variates']} variates; builds "
              f"{', '.join(f'{b:.1f}' for b in result['builds'])} s)")
        print(f"  -> from cold, Qlib's CSV-to-binary conversion included: ohlcv is "
              f"{theirs['seconds'] / result['seconds']:.2f}x as fast as Qlib (target >= 5x)")
        print(f"  -> features only (Qlib on its converted binary data, ohlcv's whole build from Parquet): ohlcv is "
              f"{theirs['features_s'] / result['seconds']:.2f}x as fast as Qlib (below 1: slower)")
    if len(layouts) > 1:
        print(f"-> year files against month files: {ours['month']['seconds'] / ours['year']['seconds']:.2f}x as fast")
    built = {(r["content_hash"], json.dumps(r["split"], sort_keys=True)) for results in runs.values() for r in results}
    if len(built) != 1:
        raise SystemExit(f"the ohlcv builds differ (content hash, split): {sorted(built)}")
    print(f"every ohlcv build: the same content hash ({next(iter(built))[0]}) and split")
    print("Qlib's published figures for 800 stocks x 14 years (conversion not included): 147 s without caches, "
          "7.4 s with caches, 4.2 s with caches on 64 CPUs")
    print(json.dumps({"rows": rows, "files": files, "ohlcv": {k: {**v, "split": None} for k, v in ours.items()},
                      "qlib": theirs}))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
