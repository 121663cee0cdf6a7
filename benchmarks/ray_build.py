"""Benchmark `ohlcv build --executor ray` against the local threaded build, in the same run.

Prints, never asserts. On one machine Ray can only add overhead (tasks, pickling the cleaned batches into
its object store, returning each batch's files to the driver): the point of the executor is more machines.
What it measures:

1. the local threaded build (``build.executor=local``) of a generated lake;
2. the same build as Ray tasks on a local Ray runtime of ``--cpus`` workers, started before the clock
   (as a cluster would be), then its start-up time on its own;
3. that both datasets have the same content hash.

Target: Ray / local <= 1.5x with two workers on a 2-core box.

Usage: python benchmarks/ray_build.py [--symbols 90] [--bars 5000] [--profile hourly] [--cpus 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def build(lake: Path, out: Path, profile: str, *extra: str) -> tuple[float, dict]:
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile

    shutil.rmtree(out, ignore_errors=True)
    cfg = load_profile(profile, [f"data.lake={lake}", f"data.dataset={out}", *extra]).cfg
    started = time.perf_counter()
    result = IterativeFinancialDatasetBuilder(cfg).run(force=True)
    return time.perf_counter() - started, {**result.manifest, "rows_read": result.report["rows_read"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=90)
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--profile", default="hourly")
    parser.add_argument("--cpus", type=int, default=2, help="workers of the local Ray runtime")
    parser.add_argument("--repeat", type=int, default=2, help="builds of each kind; the fastest counts")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from ohlcv.lake.sample import generate_sample_lake

    root = args.workdir or Path(tempfile.mkdtemp(prefix="ohlcv-ray-bench-"))
    lake = root / "lake"
    if not lake.exists():
        classes = ["crypto", "equity", "fx"]
        generate_sample_lake(lake, symbols_per_class=-(-args.symbols // len(classes)), asset_classes=classes,
                             bars=args.bars, seed=1)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"Ray {ray.__version__}; lake {args.symbols} symbols x {args.bars} bars; profile {args.profile}")

    local_times, ray_times = [], []
    for _ in range(args.repeat):
        seconds, local = build(lake, root / "local", args.profile)
        local_times.append(seconds)
    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    start_up = time.perf_counter() - started
    try:
        for _ in range(args.repeat):
            seconds, on_ray = build(lake, root / "ray", args.profile, "build.executor=ray")
            ray_times.append(seconds)
    finally:
        ray.shutdown()
    bars = local["rows_read"]
    same = local["content_hash"] == on_ray["content_hash"]
    print(f"local threaded build: {min(local_times):.2f} s ({bars / min(local_times):,.0f} rows/s)  "
          f"[{', '.join(f'{t:.2f}' for t in local_times)}]")
    print(f"Ray build, {args.cpus} workers: {min(ray_times):.2f} s ({bars / min(ray_times):,.0f} rows/s)  "
          f"[{', '.join(f'{t:.2f}' for t in ray_times)}]; runtime start-up {start_up:.1f} s (not in the build time)")
    print(f"Ray / local: {min(ray_times) / min(local_times):.2f}x (target <= 1.5x)")
    print(f"content hash identical: {same} ({local['content_hash'][:16]})")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
