"""Benchmark fine-tuning on the CPU: full against LoRA, for every family ohlcv fine-tunes, at the same batch.

Each (model, pattern) runs in its own interpreter, so that its peak memory is its own: the starting
module (random weights of the named shape), ohlcv's pattern (``adapt``), its Lightning module and
its training windows (``build_model``, ``make_datamodule``), then a plain loop of optimizer steps
with gradient clipping. Printed per row: steps/s, the process's peak RSS, the growth of RSS during
training (peak minus the RSS before the first step: gradients, optimizer state, activations) and
the trainable parameters against the total. Ratios are LoRA over full of the same model.

Shapes: ``moirai-tiny`` and ``moirai2-tiny`` (2 layers, d_model 64), ``moirai-1.1-R-base`` (the
released configuration: 12 layers, d_model 768) and ``moirai-2.0-R-small`` (6 layers, d_model 384;
num_predict_token assumed 4), all with random weights: no hub access needed.

Usage: python benchmarks/finetune_cpu.py [--steps 10] [--batch 8] [--shapes moirai-tiny,moirai2-tiny,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "moirai-tiny": ("moirai", dict(d_model=64, num_layers=2)),
    "moirai2-tiny": ("moirai2", dict(d_model=64, d_ff=128, num_layers=2, num_predict_token=2)),
    "moirai-1.1-R-base": ("moirai", dict(d_model=768, num_layers=12)),
    "moirai-2.0-R-small": ("moirai2", dict(d_model=384, d_ff=1024, num_layers=6, num_predict_token=4)),
}
OVERRIDES = ["features.enabled=[log_return]", "features.params.log_return.horizons=[1]", "finetune.patch_size=32",
             "finetune.num_samples=8", "pretrain.num_workers=0"]


def make_module(shape: str):
    import torch

    torch.manual_seed(0)
    family, kwargs = SHAPES[shape]
    if family == "moirai2":
        from uni2ts.model.moirai2 import Moirai2Module

        return Moirai2Module(patch_size=16, max_seq_len=512, attn_dropout_p=0.0, dropout_p=0.0, **kwargs)
    from uni2ts.model.moirai import MoiraiModule

    from ohlcv.moirai.compat import distribution_output

    return MoiraiModule(distr_output=distribution_output(["student_t", "normal_fixed_scale", "negative_binomial",
                                                          "log_normal"]),
                        patch_sizes=(8, 16, 32, 64, 128), max_seq_len=512, attn_dropout_p=0.0, dropout_p=0.0,
                        scaling=True, **kwargs)


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(shape: str, pattern: str, dataset: Path, steps: int, batch: int) -> dict:
    """One measurement, in this process: setup, then ``steps`` timed optimizer steps after 2 untimed ones."""
    import lightning as L
    import torch

    from ohlcv.config import load_profile
    from ohlcv.dataset.read import read_manifest
    from ohlcv.moirai.tuning import family_of, parameter_counts
    from ohlcv.train.finetune import adapt, build_model, check_start, make_datamodule

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    loaded = load_profile("hourly", [*OVERRIDES, f"data.dataset={dataset}", f"finetune.batch_size={batch}",
                                     f"finetune.pattern={pattern}", f"finetune.max_steps={steps + 2}",
                                     "finetune.warmup_steps=1"])
    cfg, manifest = loaded.cfg, read_manifest(dataset)
    L.seed_everything(0, verbose=False)
    module = make_module(shape)
    family = family_of(module)
    patch = check_start(module, cfg, len(manifest["variates"]))
    module = adapt(cfg, module, family)
    model = build_model(cfg, module, family, manifest)
    data, _ = make_datamodule(cfg, dataset, manifest, model, family, patch)

    class _Trainer:  # what the data module's loader reads
        world_size = 1

    data.trainer = _Trainer()
    loader = iter(data.train_dataloader())
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    before = rss_mb("VmRSS")
    start = None
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        loss = model.training_step(next(loader), step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
    rate = steps / (time.perf_counter() - start)
    return {"shape": shape, "pattern": pattern, "steps_per_s": round(rate, 3), "peak_rss_mb": round(rss_mb("VmHWM")),
            "training_rss_growth_mb": round(rss_mb("VmHWM") - before), **parameter_counts(module)}


def build(root: Path) -> Path:
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake

    sample = generate_sample_lake(root / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=1500, seed=0)
    loaded = load_profile("hourly", [*OVERRIDES, f"data.lake={sample.root}", f"data.dataset={root / 'ds'}"])
    IterativeFinancialDatasetBuilder(loaded.cfg).run()
    return root / "ds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shapes", default="moirai-tiny,moirai2-tiny,moirai-1.1-R-base")
    parser.add_argument("--child", nargs=3, metavar=("SHAPE", "PATTERN", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], Path(args.child[2]), args.steps, args.batch)))
        return
    with tempfile.TemporaryDirectory(prefix="ohlcv-ft-bench-") as tmp:
        dataset = build(Path(tmp))
        print(f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; batch {args.batch}, {args.steps} timed steps")
        print(f"{'shape':20} {'pattern':8} {'steps/s':>8} {'peak RSS MB':>12} {'train +MB':>10} "
              f"{'trainable':>12} {'total':>12} {'%':>7}")
        for shape in args.shapes.split(","):
            rows = {}
            for pattern in ("full", "lora"):
                out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch),
                                      "--child", shape, pattern, str(dataset)], capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{shape:20} {pattern:8} failed: {out.stderr.strip().splitlines()[-1]}")
                    continue
                r = rows[pattern] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{shape:20} {pattern:8} {r['steps_per_s']:8.3f} {r['peak_rss_mb']:12,} "
                      f"{r['training_rss_growth_mb']:10,} {r['trainable_parameters']:12,} {r['parameters']:12,} "
                      f"{r['trainable_percent']:7.2f}")
            if len(rows) == 2:
                full, lora = rows["full"], rows["lora"]
                print(f"{shape:20} lora/full: speed x{lora['steps_per_s'] / full['steps_per_s']:.2f}, "
                      f"peak RSS x{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}, training growth "
                      f"x{lora['training_rss_growth_mb'] / max(full['training_rss_growth_mb'], 1):.2f}")


if __name__ == "__main__":
    main()
