"""Benchmark `ohlcv pretrain` on the CPU against a bare uni2ts loop, and the loader's headroom.

1. Steps/s of ``ohlcv pretrain`` (Lightning, callbacks, checkpointing off the
   measured steps) against a bare loop that calls uni2ts directly with the same
   model, data and batch: target, the wrapper costs <= 5%.
2. Samples/s of the data loader alone against the samples/s the trainer
   consumes: the headroom must be > 1, so that the model, not the data, is the limit.

Usage: python benchmarks/pretrain_cpu.py [--steps 30] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def profile(lake: Path, dataset: Path, runs: Path, steps: int, batch: int):
    from ohlcv.config import load_profile

    return load_profile("demo", [
        f"data.lake={lake}", f"data.dataset={dataset}", f"output.runs_dir={runs}",
        f"pretrain.max_steps={steps}", f"pretrain.batch_size={batch}", "pretrain.warmup_steps=2",
        f"pretrain.num_batches_per_epoch={4 * steps}", f"pretrain.checkpoint_every_n_steps={10 * steps}",
    ])


def bare_loop(cfg, dataset: Path, steps: int, warmup: int) -> float:
    """uni2ts directly: the same model, transform, loader and optimizer, no Lightning."""
    import lightning as L
    import torch

    from ohlcv.dataset.read import read_manifest
    from ohlcv.train.pretrain import build_model, make_datamodule

    L.seed_everything(0, verbose=False)
    model = build_model(cfg)
    loader = make_datamodule(cfg, dataset, read_manifest(dataset), model).train_dataloader()
    optim = model.configure_optimizers()
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    model.train()
    iterator = iter(loader)
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        batch = next(iterator)
        loss = _loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.trainer.gradient_clip_val))
        optimizer.step()
        scheduler.step()
    return steps / (time.perf_counter() - start)


def _loss(model, batch):
    distr = model(**{f: batch[f] for f in list(model.seq_fields) + ["sample_id"]})
    return model.hparams.loss_func(
        pred=distr, **{f: batch[f] for f in ("target", "prediction_mask", "observed_mask", "sample_id", "variate_id")}
    )


def loader_rate(cfg, dataset: Path, batches: int) -> float:
    from ohlcv.dataset.read import read_manifest
    from ohlcv.train.pretrain import build_model, make_datamodule

    model = build_model(cfg)
    loader = make_datamodule(cfg, dataset, read_manifest(dataset), model).train_dataloader()
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    samples = 0
    for _ in range(batches):
        batch = next(iterator)
        samples += int(batch["sample_id"].max(dim=1).values.sum())
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ohlcv-bench-pt-"))
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.lake.sample import generate_sample_lake
    from ohlcv.train.pretrain import run_pretrain

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"steps {args.steps}, batch {args.batch}, model: the demo profile (d_model 64, 2 layers)")
    generate_sample_lake(work / "lake", symbols_per_class=3, bars=1200, seed=0)
    loaded = profile(work / "lake", work / "ds", work / "runs", args.steps, args.batch)
    IterativeFinancialDatasetBuilder(loaded.cfg).run()

    warmup = 3
    import statistics

    import lightning as L

    from ohlcv.train import pretrain as pt

    def wrapped_rate(round_: int) -> float:
        timings: list[float] = []

        class Clock(L.Callback):
            def on_train_batch_end(self, trainer, *a):
                timings.append(time.perf_counter())

        original = pt._callbacks
        pt._callbacks = lambda run_dir, cfg, stats: [*original(run_dir, cfg, stats), Clock()]
        try:
            run_pretrain(loaded, dataset=work / "ds", out=work / f"run{round_}")
        finally:
            pt._callbacks = original
        # steps after the first `warmup` ones, as in the bare loop
        return (len(timings) - warmup) / (timings[-1] - timings[warmup - 1])

    bares, wraps = [], []
    for round_ in range(args.rounds):  # interleaved, so that drift hits both sides alike
        bares.append(bare_loop(loaded.cfg, work / "ds", args.steps, warmup))
        wraps.append(wrapped_rate(round_))
    bare, wrapped = statistics.median(bares), statistics.median(wraps)
    print(f"steps/s (median of {args.rounds} interleaved rounds): bare uni2ts loop {bare:.2f} "
          f"{[round(b, 2) for b in bares]}, ohlcv pretrain {wrapped:.2f} {[round(w, 2) for w in wraps]} "
          f"-> wrapper cost {(bare / wrapped - 1) * 100:+.1f}% (target <= 5%)")
    supply = loader_rate(loaded.cfg, work / "ds", 2 * args.steps)
    demand = wrapped * args.batch
    print(f"loader {supply:,.0f} samples/s vs trainer {demand:,.0f} samples/s -> headroom {supply / demand:.1f}x (target > 1)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
