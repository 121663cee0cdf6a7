"""GPU pre-training benchmark: tokens/s, step time, peak memory and MFU for MOIRAI small and base.

Runs on one GPU with a generated sample lake, batch 32. Called by benchmarks/gpu/pretrain.sh, which
gives this script 450 s; every section has a time budget (``BUDGET_S``) and the results file is
rewritten after every row, so a run cut short keeps all it measured. In order of importance:

1. small and base in bf16-mixed, then small 32-bit with TF32 (the precision comparison; base in 32-bit
   was dropped to fit the cap: it tells nothing the small pair does not);
2. whether the GPU waits on the data loader: the training loader alone with 0, 4 and 8 workers, in
   samples/s against the fastest trainer samples/s above;
3. ``trainer.compile=true`` (torch.compile, inductor) for small and base in bf16-mixed: the warm-up
   holds the compilation and its recompiles, and its seconds are reported;
4. ``run_pretrain`` for small under strategy ddp on one device (what ``trainer.devices: auto`` gives a
   one-GPU box with ddp: Lightning, NCCL, checkpoint, export, run.json); it must export a loadable model.

MFU = (6 x parameters x tokens/s + attention FLOPs) / the GPU's peak FLOP/s.

Estimated on an H100 (not yet measured in this form): set-up (imports, a 24-symbol x 4,000-bar lake
and its build) ~30 s; each eager row 10-25 s (35 steps; base ~0.3 s/step); loader ~40 s; each compiled
row 60-110 s, mostly inductor's compile; the whole command ~40 s: ~330 s in all, under the 450 s cap
with the budgets below as the backstop; then fine-tuning at moirai-1.1-R-base shapes (random weights),
full against LoRA (~2 x 13 steps, ~20 s).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

PEAK_TFLOPS = {  # dense, per GPU: (bf16, tf32)
    "H100": (989.0, 494.0),
    "H200": (989.0, 494.0),
    "A100": (312.0, 156.0),
}


def peak(name: str, bf16: bool) -> float:
    for key, (b, t) in PEAK_TFLOPS.items():
        if key in name:
            return (b if bf16 else t) * 1e12
    return float("nan")


# seconds per section; a timed section stops early (after at least 3 timed steps) when its budget is spent
BUDGET_S = {"eager": 40, "loader": 45, "compile": 110, "command": 60}


def main(out: Path, steps: int = 30, warmup: int = 5) -> None:
    import torch

    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake

    work = Path(tempfile.mkdtemp(prefix="ohlcv-gpu-"))
    generate_sample_lake(work / "lake", symbols_per_class=8, bars=4000, seed=0)
    base = [f"data.lake={work / 'lake'}", f"data.dataset={work / 'ds'}", "pretrain.num_workers=8"]
    IterativeFinancialDatasetBuilder(load_profile("hourly", base).cfg).run()
    name = torch.cuda.get_device_name(0)
    results: list[dict] = []

    def record(row: dict) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps(results, indent=2))  # after every row: a run cut short keeps what it measured

    for size, precision in (("small", "bf16-mixed"), ("base", "bf16-mixed"), ("small", "32-true")):
        cfg = load_profile("hourly", [*base, f"model.size={size}", "pretrain.batch_size=32"]).cfg
        record(timed_steps(cfg, work, name, precision, steps, warmup, budget=BUDGET_S["eager"]))
    loader_rows(work, base, results, record, budget=BUDGET_S["loader"])
    for row in finetune_rows(work, base):  # full against LoRA at base shapes
        record(row)
    for size in ("small", "base"):
        cfg = load_profile("hourly", [*base, f"model.size={size}", "pretrain.batch_size=32",
                                      "trainer.compile=true"]).cfg
        record(timed_steps(cfg, work, name, "bf16-mixed", steps, 4 * warmup, label="trainer.compile",
                           budget=BUDGET_S["compile"]))
    record(whole_command(work, base))


def timed_steps(cfg, work: Path, name: str, precision: str, steps: int, warmup: int, label: str = "",
                budget: float = float("inf")) -> dict:
    """Optimizer steps of ``cfg``'s model on one GPU, timed after ``warmup`` steps: tokens/s, step time,
    peak memory, MFU (and the warm-up's seconds, where a compiled module pays its compilation). Stops
    after ``budget`` seconds (with at least 3 timed steps)."""
    import torch

    from ohlcv.dataset.read import read_manifest
    from ohlcv.train.pretrain import build_model, make_datamodule
    from ohlcv.train.runtime import compile_module

    torch.backends.cuda.matmul.allow_tf32 = precision == "32-true"
    model = build_model(cfg).cuda()
    compile_module(cfg, model)
    params = sum(p.numel() for p in model.module.parameters())
    loader = iter(make_datamodule(cfg, work / "ds", read_manifest(work / "ds"), model).train_dataloader())
    optim = model.configure_optimizers()["optimizer"]
    torch.cuda.reset_peak_memory_stats()
    tokens, times, attn, warm = 0, [], 0.0, 0.0
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    began = time.perf_counter()
    for step in range(steps + warmup):
        if len(times) >= 3 and time.perf_counter() - began > budget:
            break
        batch = {k: v.cuda(non_blocking=True) for k, v in next(loader).items()}
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=precision == "bf16-mixed"):
            distr = model(**{f: batch[f] for f in list(model.seq_fields) + ["sample_id"]})
            loss = model.hparams.loss_func(pred=distr, **{f: batch[f] for f in (
                "target", "prediction_mask", "observed_mask", "sample_id", "variate_id")})
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        torch.cuda.synchronize()
        if step < warmup:
            warm += time.perf_counter() - start
            continue
        times.append(time.perf_counter() - start)
        tokens += int((batch["sample_id"] > 0).sum())
        seq = batch["sample_id"].shape[1]
        layers, width = model.module.num_layers, model.module.d_model
        attn += 12 * layers * width * seq * seq * batch["sample_id"].shape[0]  # fwd+bwd QK^T and AV
    seconds = sum(times)
    rate = tokens / seconds
    mfu = (6 * params * rate + attn / seconds) / peak(name, precision == "bf16-mixed")
    size = str(getattr(cfg.model.size, "value", cfg.model.size))
    row = {"gpu": name, "size": size, "precision": precision, "parameters": params,
           "tokens_per_s": round(rate), "step_ms": round(1000 * seconds / len(times), 1),
           "samples_per_s": round(int(cfg.pretrain.batch_size) * len(times) / seconds, 1),
           "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "mfu": round(mfu, 4),
           "warmup_s": round(warm, 1), "timed_steps": len(times)}
    if label:
        row["variant"] = label
    del model, optim, loader
    torch.cuda.empty_cache()
    return row


def loader_rows(work: Path, base: list[str], measured: list[dict], record, batches: int = 60,
                workers_tried: tuple[int, ...] = (0, 4, 8), budget: float = float("inf")) -> None:
    """Does the GPU wait on the data loader? Batches/s of the training loader alone (no model step), for
    several worker counts, against the fastest trainer samples/s measured above; each worker count gets
    its share of ``budget``."""
    from ohlcv.config import load_profile
    from ohlcv.dataset.read import read_manifest
    from ohlcv.train.pretrain import build_model, make_datamodule

    fastest = max(r["samples_per_s"] for r in measured if "samples_per_s" in r)
    share = budget / len(workers_tried)
    for workers in workers_tried:
        cfg = load_profile("hourly", [*base, "model.size=small", "pretrain.batch_size=32",
                                      f"pretrain.num_workers={workers}"]).cfg
        model = build_model(cfg)  # the loader's transform asks the model for its patch sizes and limits
        loader = iter(make_datamodule(cfg, work / "ds", read_manifest(work / "ds"), model).train_dataloader())
        for _ in range(5):  # workers start and fill their prefetch queues
            next(loader)
        start, done = time.perf_counter(), 0
        while done < batches and (done < 5 or time.perf_counter() - start < share):
            next(loader)
            done += 1
        rate = 32 * done / (time.perf_counter() - start)
        record({"path": "data loader", "num_workers": workers, "loader_samples_per_s": round(rate, 1),
                "batches": done, "trainer_samples_per_s": fastest, "gpu_waits_on_loader": rate < fastest})
        del loader, model


def whole_command(work: Path, base: list[str], steps: int = 30) -> dict:
    """``run_pretrain`` for small on one GPU under strategy ddp (one device); it must export a loadable model.
    (Strategy auto, the simpler path, was dropped to fit the cap.)"""
    from ohlcv.config import load_profile
    from ohlcv.train.pretrain import run_pretrain
    from uni2ts.model.moirai import MoiraiModule

    loaded = load_profile("hourly", [*base, "model.size=small", "pretrain.batch_size=32",
                                     f"pretrain.max_steps={steps}", "pretrain.warmup_steps=5",
                                     f"pretrain.checkpoint_every_n_steps={steps}", "trainer.accelerator=gpu",
                                     "trainer.devices=1", "trainer.strategy=ddp"])
    run = work / "run-ddp"
    summary = run_pretrain(loaded, dataset=work / "ds", out=run).summary
    MoiraiModule.from_pretrained(str(run / "model"))  # the exported model loads
    return {"path": "ohlcv pretrain", "strategy": "ddp", "devices": 1, "status": summary["status"],
            "steps": summary["steps"], "tokens_per_s": summary["tokens_per_second"],
            "precision": summary["precision"], "device": summary["device"],
            "last_ckpt": (run / "checkpoints" / "last.ckpt").is_file()}


def finetune_rows(work: Path, base: list[str], steps: int = 10, warmup: int = 3) -> list[dict]:
    """Full and LoRA fine-tuning of a moirai-1.1-R-base-shaped module: ms/step, peak memory, trainable share."""
    import importlib.util

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from finetune_cpu import make_module

    from ohlcv.dataset.read import read_manifest
    from ohlcv.moirai.tuning import family_of, parameter_counts
    from ohlcv.train.finetune import adapt, build_model, check_start, make_datamodule

    rows = []
    for pattern in ("full", "lora"):
        if pattern == "lora" and importlib.util.find_spec("peft") is None:
            rows.append({"path": "finetune", "shape": "moirai-1.1-R-base", "pattern": pattern,
                         "status": "skipped: peft not in .whl/"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        cfg = load_profile_for(base, pattern)
        manifest = read_manifest(work / "ds")
        module = make_module("moirai-1.1-R-base")
        family = family_of(module)
        patch = check_start(module, cfg, len(manifest["variates"]))
        module = adapt(cfg, module, family)
        model = build_model(cfg, module, family, manifest).cuda()

        class _Trainer:
            world_size = 1

        data, _ = make_datamodule(cfg, work / "ds", manifest, model, family, patch)
        data.trainer = _Trainer()
        loader = iter(data.train_dataloader())
        optim = model.configure_optimizers()["optimizer"]
        params = [p for p in model.parameters() if p.requires_grad]
        torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(steps + warmup):
            batch = {k: v.cuda(non_blocking=True) for k, v in next(loader).items()}
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model.training_step(batch, step)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - start)
        rows.append({"path": "finetune", "shape": "moirai-1.1-R-base", "pattern": pattern, "batch": 32,
                     "precision": "bf16-mixed", "step_ms": round(1000 * sum(times) / len(times), 1),
                     "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                     **parameter_counts(module)})
        print(json.dumps(rows[-1]), flush=True)
        del model, optim, loader, module
        torch.cuda.empty_cache()
    return rows


def load_profile_for(base: list[str], pattern: str):
    from ohlcv.config import load_profile

    return load_profile("hourly", [*base, "finetune.batch_size=32", f"finetune.pattern={pattern}",
                                   "finetune.max_steps=100", "finetune.warmup_steps=5"]).cfg


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("gpu_pretrain.json"))
