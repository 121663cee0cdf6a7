"""Benchmark `ohlcv build` against baselines measured in the same run.

Prints ratios, never asserts. Three questions:

1. Speed against a naive builder in the style of uni2ts's own
   ``SimpleDatasetBuilder`` long-format path: one pandas frame holding every
   symbol, a ``DataFrame.query`` per item, ``Dataset.from_generator``. Measured
   at 100 and at 1,000 symbols so the growth is visible. Target: >= 20x at 1,000.
2. Peak RSS of a build at 1x and 10x the lake size with the same batch size
   (each in a fresh process). Target: 10x <= 1.3 x 1x.
3. Distance to the I/O limit: the build's time against a bare Polars read of
   the same files plus an Arrow write of the same rows. Target: <= 3x.
4. The cost of trading calendars: the same number of bars laid on NYSE
   sessions and the FX week (equities and FX, each on its venue's calendar)
   against the same lake around the clock. Target: <= 1.10x.
5. The full feature set: ``--profile hourly`` and ``--profile daily`` with every
   feature they enable, next to the one-feature build of the same lake (builds
   interleaved, median of ``--repeat``). Target (hourly): >= 200k rows/s and
   <= 1.5x the one-feature build. Then the per-feature cost table: every
   feature of the profile alone through the builder's pipeline over the lake's
   cleaned batches, one thread, in ms of CPU per 1M bars, so that the next slow
   feature is visible. Peak RSS of the full hourly build at 1x and 10x the lake.

Usage: python benchmarks/build.py [--bars 2000] [--symbols 100,1000] [--rss 50] [--calendar 200]
       [--profiles 90] [--profile-bars 5000] [--repeat 3] [--only profiles] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ["crypto", "equity", "fx", "commodity"]


def make_lake(root: Path, symbols: int, bars: int, *, classes=CLASSES, calendars=None, freq: str = "1h",
              start: str = "2023-01-01") -> Path:
    """A sample lake; each class on its venue's calendar (``calendars=None``) or as given ({}: all 24/7).

    Bars after today are not built (the future), so a long daily lake must start early enough."""
    from ohlcv.freq import parse_freq
    from ohlcv.lake.layout import default_partition
    from ohlcv.lake.sample import generate_sample_lake

    # a --workdir is kept between runs: the folder is named by every argument, so a lake is reused only
    # for the same arguments
    venues = "venues" if calendars is None else "-".join(f"{k}={v}" for k, v in sorted(calendars.items())) or "247"
    by = default_partition(parse_freq(freq))  # daily bars in year files, as `ohlcv lake sample` writes them
    root = root.parent / f"{root.name}-{symbols}s-{bars}b-{freq}-{start}-{'-'.join(classes)}-{venues}-by{by}-seed1"
    if root.exists():
        return root
    per_class = -(-symbols // len(classes))
    generate_sample_lake(root, symbols_per_class=per_class, asset_classes=classes, bars=bars, seed=1,
                         calendars=calendars, freq=freq, start=start)
    return root


def row_count(lake: Path) -> int:
    import polars as pl

    return int(pl.scan_parquet(str(lake / "**" / "*.parquet"), hive_partitioning=False).select(pl.len()).collect().item())


def span_hours(lake: Path) -> float:
    import polars as pl

    stamps = pl.scan_parquet(str(lake / "**" / "*.parquet"), hive_partitioning=False).select("ts").collect()["ts"]
    return (stamps.max() - stamps.min()).total_seconds() / 3600


ONE_FEATURE = ["features.enabled=[log_return]", "features.params.log_return.horizons=[1]"]


def ohlcv_build(lake: Path, out: Path, batch_size: int = 10, *extra: str, profile: str = "hourly",
                full: bool = False, merges: list[float] | None = None) -> float:
    """Seconds for one build; one feature (``log_return``) unless ``full`` (every feature of the profile).
    ``merges`` receives the seconds of its merge step (from the builder's merge signal to the end)."""
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    # one feature measures the builder (reading, cleaning, batching, writing); `full` the profile as users build it
    cfg = load_profile(
        profile,
        [f"data.lake={lake}", f"data.dataset={out}", f"data.batch_size={batch_size}", "data.cleaning.min_length=100",
         *([] if full else ONE_FEATURE), *extra],
    ).cfg
    merge_started = []
    class Progress:  # the builder's progress callbacks: only the merge's start is recorded
        on_start = staticmethod(lambda total: None)
        on_symbol = staticmethod(lambda item_id, rows: None)
        on_merge = staticmethod(lambda: merge_started.append(time.perf_counter()))

    progress = Progress()
    start = time.perf_counter()
    IterativeFinancialDatasetBuilder(cfg, progress=progress).run(force=True)
    end = time.perf_counter()
    if merges is not None:
        merges.append(end - merge_started[0])
    return end - start


def feature_costs(lake: Path, out: Path, profile: str, batch_size: int = 10) -> tuple[int, list[tuple[str, float]]]:
    """Each feature of ``profile`` alone through the builder's pipeline over the lake's cleaned batches:
    (bars, [(feature, ms of CPU per 1M bars)]), in one thread."""
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.builder.pipeline import FeaturePipeline
    from ohlcv.config import load_profile

    cfg = load_profile(profile, [f"data.lake={lake}", f"data.dataset={out}", f"data.batch_size={batch_size}",
                                 "data.cleaning.min_length=100"]).cfg
    builder = IterativeFinancialDatasetBuilder(cfg)
    sources, _ = builder.discover()
    builder._resolve_calendars(sources)  # what a build does before its first batch
    builder._split_dates = builder.common_cuts(sources)
    cleaned = [builder.clean_batch(sources[i : i + batch_size])[0] for i in range(0, len(sources), batch_size)]
    cleaned = [c for c in cleaned if c is not None]
    reference = FeaturePipeline.combine([builder.pipeline.contributions(c) for c in cleaned])
    ends = [builder._train_ends(c) for c in cleaned]
    bars = sum(c.height for c in cleaned)
    costs = []
    for spec in builder.pipeline.specs:
        alone = FeaturePipeline([spec])
        start = time.process_time()
        for frame, end in zip(cleaned, ends):
            alone.apply(frame, reference=reference, train_end=end)
        costs.append((spec[0].name, (time.process_time() - start) * 1000 / bars * 1e6))
    return bars, costs


def naive_build(lake: Path, out: Path) -> float:
    """uni2ts's long-format approach: everything in one pandas frame, one query per item.

    Like uni2ts's ``_from_long_dataframe``, it infers the frequency from the
    whole frame's index for every item. It does no cleaning at all, which
    favours it.
    """
    import datasets
    import numpy as np
    import pandas as pd

    start = time.perf_counter()
    frames = []
    for path in sorted(lake.rglob("*.parquet")):
        parts = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in path.parts if "=" in p}
        frame = pd.read_parquet(path)
        frame["item_id"] = f"{parts['asset_class']}/{parts['symbol']}"
        frames.append(frame)
    df = pd.concat(frames).set_index("ts").sort_index()
    items = df.item_id.unique()

    def rows():
        for item_id in items:
            item = df.query(f'item_id == "{item_id}"').drop("item_id", axis=1)
            # as uni2ts's long-format path does: the frequency is inferred from the whole frame's index, per item
            inferred = pd.infer_freq(df.index) if pd.infer_freq(df.index) is not None else "h"
            yield {
                "item_id": item_id,
                "start": item.index[0].tz_localize(None),
                "freq": inferred,
                "target": item.to_numpy(dtype=np.float32).T,
            }

    features = datasets.Features(
        {
            "item_id": datasets.Value("string"),
            "start": datasets.Value("timestamp[s]"),
            "freq": datasets.Value("string"),
            "target": datasets.Sequence(datasets.Sequence(datasets.Value("float32")), length=5),
        }
    )
    dataset = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(out / "cache"))
    dataset.save_to_disk(str(out / "hf"))
    return time.perf_counter() - start


def bare_read_write(lake: Path, out: Path) -> tuple[float, float]:
    """The I/O floor: Polars reads every file (per symbol, and as one scan) and Arrow writes the rows."""
    import polars as pl
    import pyarrow as pa

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    symbols = sorted({p.parent.parent.parent for p in lake.rglob("*.parquet")})
    with pa.OSFile(str(out / "per_symbol.arrow"), "wb") as sink:
        writer = None
        for symbol in symbols:
            table = pl.read_parquet(sorted(symbol.rglob("*.parquet"))).to_arrow()
            writer = writer or pa.ipc.new_stream(sink, table.schema)
            writer.write_table(table)
        writer.close()
    per_symbol = time.perf_counter() - start
    start = time.perf_counter()
    table = pl.scan_parquet(str(lake / "**" / "*.parquet"), hive_partitioning=False).collect().to_arrow()
    with pa.OSFile(str(out / "one_scan.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return per_symbol, time.perf_counter() - start


def peak_rss_of_build(lake: Path, out: Path, batch_size: int, full: bool = False) -> tuple[float, float]:
    """(peak RSS, peak anonymous memory) in MiB of a build in a fresh process.

    Peak RSS (VmHWM) counts file pages too: the merge memory-maps the finished dataset, so it
    grows with the output's size although those pages are the page cache's to reclaim. The
    anonymous memory (the process's own: frames, arrays) is sampled every 20 ms.
    """
    code = (
        "import sys, re, threading, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import build as b\n"
        "from pathlib import Path\n"
        "peak = [0]\n"
        "def sample():\n"
        "    while True:\n"
        "        anon = int(re.search(r'RssAnon:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "        peak[0] = max(peak[0], anon)\n"
        "        time.sleep(0.02)\n"
        "threading.Thread(target=sample, daemon=True).start()\n"
        "b.ohlcv_build(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), full=sys.argv[5] == 'full')\n"
        "time.sleep(0.05)\n"
        "status = open('/proc/self/status').read()\n"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) / 1024\n"
        "print(hwm, peak[0] / 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(lake), str(out), str(batch_size),
         "full" if full else "one"],
        capture_output=True, text=True, check=True,
    )
    hwm, anon = result.stdout.strip().splitlines()[-1].split()
    return float(hwm), float(anon)


def full_profiles(work: Path, args, results: dict) -> None:
    """Question 5: the full hourly and daily profiles against the one-feature build of the same lake."""
    for profile, freq, bars, start in (("hourly", "1h", args.profile_bars, "2023-01-01"),
                                       ("daily", "1D", args.profile_bars // 2, "2012-01-02")):
        lake = make_lake(work / f"profile-{profile}", args.profiles, bars, classes=["crypto", "equity", "fx"], freq=freq,
                         start=start)
        rows = row_count(lake)
        one, full, one_merge, full_merge = [], [], [], []
        for _ in range(args.repeat):  # interleaved, so that both sides see the same machine
            one.append(ohlcv_build(lake, work / f"profile-{profile}-one", args.batch_size, profile=profile,
                                   merges=one_merge))
            full.append(ohlcv_build(lake, work / f"profile-{profile}-full", args.batch_size, profile=profile, full=True,
                                    merges=full_merge))
        one_s, full_s = statistics.median(one), statistics.median(full)
        print(f"--profile {profile}, {args.profiles} symbols, {rows:,} rows: every feature {full_s:.2f} s "
              f"({rows / full_s:,.0f} rows/s) against one feature {one_s:.2f} s ({rows / one_s:,.0f} rows/s) -> "
              f"{full_s / one_s:.2f}x (runs: every feature {', '.join(f'{t:.2f}' for t in full)}; "
              f"one {', '.join(f'{t:.2f}' for t in one)})")
        print(f"  merge step (median): every feature {statistics.median(full_merge):.2f} s, "
              f"one feature {statistics.median(one_merge):.2f} s")
        bars_seen, costs = feature_costs(lake, work / f"profile-{profile}-costs", profile, args.batch_size)
        print(f"  cost per feature ({profile}; alone, one thread, ms of CPU per 1M bars over {bars_seen:,} bars):")
        for name, cost in sorted(costs, key=lambda c: -c[1]):
            print(f"    {name:20s} {cost:7.0f}")
        results[f"profile_{profile}"] = {"rows": rows, "full_s": full, "one_s": one, "full_merge_s": full_merge,
                                         "one_merge_s": one_merge, "costs_ms_per_1m": dict(costs)}
    small = make_lake(work / "rss-full-1", args.rss, args.bars)
    large = make_lake(work / "rss-full-10", args.rss * 10, args.bars)
    (rss1, anon1), (rss10, anon10) = (peak_rss_of_build(lake, work / f"{lake.name}-out", args.batch_size, full=True)
                                      for lake in (small, large))
    print(f"peak memory, --profile hourly with every feature, batch {args.batch_size}: {args.rss} symbols "
          f"RSS {rss1:.0f} MiB (anonymous {anon1:.0f}); {args.rss * 10} symbols RSS {rss10:.0f} MiB (anonymous "
          f"{anon10:.0f}) -> RSS {rss10 / rss1:.2f}x, anonymous {anon10 / anon1:.2f}x for 10x the lake")
    results["rss_full"] = {"1x_mib": rss1, "10x_mib": rss10, "1x_anon_mib": anon1, "10x_anon_mib": anon10}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=2000)
    parser.add_argument("--symbols", default="100,1000")
    parser.add_argument("--rss", type=int, default=50, help="symbols in the 1x lake of the memory test")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--calendar", type=int, default=200, help="symbols of the calendar-cost lakes (0: skip)")
    parser.add_argument("--profiles", type=int, default=90, help="symbols of the full-profile lakes (0: skip)")
    parser.add_argument("--profile-bars", type=int, default=5000, help="hourly bars per symbol (daily: half)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["profiles"], default=None, help="run question 5 only")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ohlcv-bench-"))
    import datasets  # warm imports so that neither side pays for them

    import polars  # noqa: F401

    datasets.disable_progress_bars()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"bars per symbol: {args.bars}")
    results: dict[str, object] = {"bars": args.bars}
    if args.profiles:
        full_profiles(work, args, results)
    if args.only == "profiles":
        print(json.dumps(results))
        return
    for count in [int(s) for s in args.symbols.split(",")]:
        lake = make_lake(work / f"lake{count}", count, args.bars)
        # every class covers the period of `bars` NYSE hours, so venues that trade longer have more bars
        rows = row_count(lake)
        # the median of three builds (the machine's speed varies by ±20% from run to run); the naive
        # baseline, at minutes per run, is measured once
        ours = statistics.median(ohlcv_build(lake, work / f"ours{count}", args.batch_size) for _ in range(3))
        naive = naive_build(lake, work / f"naive{count}")
        per_symbol, one_scan = bare_read_write(lake, work / f"bare{count}")
        print(
            f"{count:>5} symbols, {rows:,} rows: ohlcv build {ours:.2f} s ({rows / ours:,.0f} rows/s); "
            f"naive {naive:.2f} s -> {naive / ours:.1f}x faster; "
            f"bare Polars read + Arrow write {per_symbol:.2f} s per symbol / {one_scan:.2f} s one scan "
            f"-> build is {ours / per_symbol:.1f}x / {ours / one_scan:.1f}x the I/O floor"
        )
        results[str(count)] = {"rows": rows, "ohlcv_s": ours, "naive_s": naive, "bare_per_symbol_s": per_symbol,
                               "bare_one_scan_s": one_scan}
        shutil.rmtree(work / f"naive{count}", ignore_errors=True)
    for asset_class, venue in (("equity", "XNYS"), ("fx", "weekdays")) if args.calendar else ():
        # the same bars per symbol over about the same months (so the same month files): hourly bars on the
        # venue's sessions, and around the clock at a coarser step that spans as long
        sessions = make_lake(work / f"{venue}", args.calendar, args.bars, classes=[asset_class])
        step = max(1, round(span_hours(sessions) / args.bars))
        clock = make_lake(work / f"{venue}-clock", args.calendar, args.bars, classes=[asset_class], calendars={},
                          freq=f"{step}h")
        on_sessions = statistics.median(ohlcv_build(sessions, work / f"{venue}-out", args.batch_size) for _ in range(3))
        continuous = statistics.median(
            ohlcv_build(clock, work / f"{venue}-clock-out", args.batch_size, f"data.calendars.{asset_class}=continuous",
                        f"data.freq={step}h")
            for _ in range(3)
        )
        print(f"calendar {venue}, {args.calendar} symbols x {args.bars} bars: {on_sessions:.2f} s on its sessions "
              f"against {continuous:.2f} s around the clock ({step}h bars, same span) -> {on_sessions / continuous:.2f}x")
        results[f"calendar_{venue}"] = {"sessions_s": on_sessions, "continuous_s": continuous}
    small = make_lake(work / "rss1", args.rss, args.bars)
    large = make_lake(work / "rss10", args.rss * 10, args.bars)
    (rss1, anon1), (rss10, anon10) = (peak_rss_of_build(small, work / "rss1-out", args.batch_size),
                                      peak_rss_of_build(large, work / "rss10-out", args.batch_size))
    print(f"peak RSS, batch {args.batch_size}: {args.rss} symbols {rss1:.0f} MiB; {args.rss * 10} symbols {rss10:.0f} MiB "
          f"-> {rss10 / rss1:.2f}x for 10x the lake (anonymous memory {anon1:.0f} -> {anon10:.0f} MiB, {anon10 / anon1:.2f}x)")
    results["rss"] = {"1x_mib": rss1, "10x_mib": rss10, "1x_anon_mib": anon1, "10x_anon_mib": anon10}
    print(json.dumps(results))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
