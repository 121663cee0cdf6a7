"""GPU pre-training benchmark: tokens/s, step time, peak memory and MFU for MOIRAI small and base.

Runs on one GPU with a generated sample lake: for each size, batch 32, once
with bf16-mixed and once 32-bit with TF32. Called by benchmarks/gpu/pretrain.sh.
MFU = (6 x parameters x tokens/s + attention FLOPs) / the GPU's peak FLOP/s.

Then the whole command path on that GPU: ``run_pretrain`` (Lightning, checkpoint,
export, run.json) for MOIRAI small, once with Lightning's single-device strategy and
once under DDP with one device -- what ``trainer.devices: auto`` gives a one-GPU box
with strategy ddp: a process group of one, NCCL collectives, the checkpoint after fit.
Each must finish with its model exported; tokens/s of the two are printed side by side.

Whether the GPU waits on the data loader: the training loader alone, for 0, 4, 8 and 16 workers,
in samples/s against the fastest trainer samples/s measured above. Then fine-tuning at
moirai-1.1-R-base shapes (its released configuration, random weights: the machine has no hub access),
full against LoRA at batch 32, bf16-mixed: step time, peak GPU memory and trainable parameters
(``finetune_rows``; the module comes from benchmarks/finetune_cpu.py; LoRA needs peft and transformers
in .whl/, without them that row says so and the rest stands). Last (compiling takes the longest),
``trainer.compile=true`` for small and base in bf16-mixed. Results are saved after each section, so a
run cut short by its time limit keeps what it measured.
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
    results = []
    for size in ("small", "base"):
        for precision in ("bf16-mixed", "32-true"):
            cfg = load_profile("hourly", [*base, f"model.size={size}", "pretrain.batch_size=32"]).cfg
            results.append(timed_steps(cfg, work, name, precision, steps, warmup))
            print(json.dumps(results[-1]), flush=True)
            save(out, results)
    results.extend(loader_rows(work, base, results))
    save(out, results)
    results.extend(whole_command(work, base))
    save(out, results)
    results.extend(finetune_rows(work, base))
    save(out, results)
    results.extend(compiled_rows(work, base, name, steps, warmup))  # last: compiling takes the longest
    save(out, results)


def save(out: Path, results: list[dict]) -> None:
    """Written after every section: a run cut short by its time limit keeps what it measured."""
    out.write_text(json.dumps(results, indent=2))


def timed_steps(cfg, work: Path, name: str, precision: str, steps: int, warmup: int, label: str = "") -> dict:
    """Optimizer steps of ``cfg``'s model on one GPU, timed after ``warmup`` steps: tokens/s, step time,
    peak memory, MFU (and the warm-up's seconds, where a compiled module pays its compilation)."""
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
    for step in range(steps + warmup):
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
           "warmup_s": round(warm, 1)}
    if label:
        row["variant"] = label
    del model, optim, loader
    torch.cuda.empty_cache()
    return row


def loader_rows(work: Path, base: list[str], measured: list[dict], batches: int = 60,
                workers_tried: tuple[int, ...] = (0, 4, 8, 16)) -> list[dict]:
    """Does the GPU wait on the data loader? Batches/s of the training loader alone (no model step), for
    several worker counts, against the fastest trainer samples/s measured above (small, bf16-mixed)."""
    from ohlcv.config import load_profile
    from ohlcv.dataset.read import read_manifest
    from ohlcv.train.pretrain import build_model, make_datamodule

    fastest = max(r["samples_per_s"] for r in measured if "samples_per_s" in r)
    rows = []
    for workers in workers_tried:
        cfg = load_profile("hourly", [*base, "model.size=small", "pretrain.batch_size=32",
                                      f"pretrain.num_workers={workers}"]).cfg
        model = build_model(cfg)  # the loader's transform asks the model for its patch sizes and limits
        loader = iter(make_datamodule(cfg, work / "ds", read_manifest(work / "ds"), model).train_dataloader())
        for _ in range(5):  # workers start and fill their prefetch queues
            next(loader)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        rate = 32 * batches / (time.perf_counter() - start)
        rows.append({"path": "data loader", "num_workers": workers, "loader_samples_per_s": round(rate, 1),
                     "trainer_samples_per_s": fastest, "gpu_waits_on_loader": rate < fastest})
        print(json.dumps(rows[-1]), flush=True)
        del loader, model
    return rows


def compiled_rows(work: Path, base: list[str], name: str, steps: int, warmup: int) -> list[dict]:
    """``trainer.compile=true`` (torch.compile, inductor) for small and base in bf16-mixed, against the
    rows above; the warm-up is longer so the compilation (and recompiles per patch size) stays out of
    the timed steps, and its seconds are reported."""
    from ohlcv.config import load_profile

    rows = []
    for size in ("small", "base"):
        cfg = load_profile("hourly", [*base, f"model.size={size}", "pretrain.batch_size=32",
                                      "trainer.compile=true"]).cfg
        rows.append(timed_steps(cfg, work, name, "bf16-mixed", steps, 4 * warmup, label="trainer.compile"))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def whole_command(work: Path, base: list[str], steps: int = 40) -> list[dict]:
    """``run_pretrain`` on one GPU with strategy auto and with strategy ddp (one device); both must export."""
    from ohlcv.config import load_profile
    from ohlcv.train.pretrain import run_pretrain
    from uni2ts.model.moirai import MoiraiModule

    rows = []
    for strategy in ("auto", "ddp"):
        loaded = load_profile("hourly", [*base, "model.size=small", "pretrain.batch_size=32",
                                         f"pretrain.max_steps={steps}", "pretrain.warmup_steps=5",
                                         f"pretrain.checkpoint_every_n_steps={steps}", "trainer.accelerator=gpu",
                                         "trainer.devices=1", f"trainer.strategy={strategy}"])
        run = work / f"run-{strategy}"
        summary = run_pretrain(loaded, dataset=work / "ds", out=run).summary
        MoiraiModule.from_pretrained(str(run / "model"))  # the exported model loads
        rows.append({"path": "ohlcv pretrain", "strategy": strategy, "devices": 1, "status": summary["status"],
                     "steps": summary["steps"], "tokens_per_s": summary["tokens_per_second"],
                     "precision": summary["precision"], "device": summary["device"],
                     "last_ckpt": (run / "checkpoints" / "last.ckpt").is_file()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


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
