"""``ohlcv pretrain``: MOIRAI pre-training on a built dataset, wrapped in Lightning.

The model is uni2ts's ``MoiraiPretrain`` (no Hydra entry point, no copied
uni2ts code); data is uni2ts's ``TimeSeriesDataset`` over the training span of
every series, through uni2ts's ``DataLoader`` with ``PackCollate``; the
profile's patch-size constraint replaces uni2ts's default in every
``GetPatchSize`` (see :mod:`ohlcv.moirai.compat`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ohlcv.config.loader import atomic_write_text, json_text, write_resolved_profile
from ohlcv.errors import ConfigError, DivergenceError, OhlcvError
from ohlcv.moirai.models import count_parameters
from ohlcv.train.distributed import (
    check_launch,
    gather,
    is_rank_zero,
    on_rank_zero,
    process_rank,
    seed_data_for_rank,
    shard_sampler,
    share_run_dir,
)
from ohlcv.train.runtime import (
    OWNER_MARK,
    Hardware,
    check_writable,
    compile_module,
    discard_on_failure,
    git_revision,
    interrupted_as_such,
    loss_guard,
    make_trainer,
    package_versions,
    point_latest,
    resolve_hardware,
    run_folder,
    wait_for,
)


@dataclass
class Preflight:
    variates: int
    usable_patch_sizes: list[int]
    tokens_per_sample: int
    parameters: int
    hardware: Hardware
    steps: int
    warnings: list[str] = field(default_factory=list)
    min_train_bars: int = 1  # series with a shorter training span are left out of pre-training


@dataclass
class PretrainResult:
    run_dir: Path
    model_dir: Path
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "model_dir": str(self.model_dir), **self.summary}


def manifest_hash(dataset: Path) -> str:
    return hashlib.sha256((Path(dataset) / "manifest.json").read_bytes()).hexdigest()[:16]


def dataset_problem(cfg, manifest: dict[str, Any]) -> str | None:
    """Why a built dataset cannot serve a command of this profile (what differs), or None when it can."""
    from ohlcv.dataset.format import dataset_spec, profile_hash, spec_differences
    from ohlcv.dataset.read import datasets_version, same_datasets_major

    if not same_datasets_major(manifest):
        return (f"it was written by datasets {manifest.get('datasets_version', '?')}, another major version than "
                f"this stack's {datasets_version()}")
    if "spec" in manifest:
        differences = spec_differences(manifest["spec"], dataset_spec(cfg))
        if differences:
            return "; ".join(differences)
    elif manifest.get("profile_hash") != profile_hash(cfg):  # built before manifests recorded their spec
        return "it was built by an older ohlcv from other data or features settings"
    need = int(cfg.data.context_length) + int(cfg.data.prediction_length)
    longest = max((int(item.get("length", 0)) for item in manifest.get("items", [])), default=0)
    if longest < need:
        return f"its longest series has {longest} bars, fewer than context + horizon = {need}"
    return None


def rebuild_command(loaded, dataset: Path, lake: str | None) -> str:
    """The ``ohlcv build`` command that rebuilds ``dataset`` for this profile (from ``lake``)."""
    import shlex

    words = ["ohlcv", "build", "--profile", str(loaded.path if loaded.path.parent.name != "profiles" else loaded.name)]
    if lake:
        words += ["--lake", lake]
    words += ["--out", str(dataset), "--force"]
    words += [o for o in loaded.overrides if o.split("=", 1)[0] not in ("data.lake", "data.dataset")
              and o.split("=", 1)[0].split(".")[0] in ("data", "features")]
    return " ".join(shlex.quote(w) for w in words)


def ensure_dataset(loaded, dataset: Path, *, rebuild: bool = False, lake: Path | None = None,
                   on_build: Callable[[Any, bool], Any] | None = None) -> dict[str, Any]:
    """The manifest of the dataset a training command uses; a dataset the user named is never replaced implicitly.

    An existing dataset is used as built when it can serve this profile (same frequency and variates,
    series long enough for its windows) and refused in one line, naming what differs and the command
    that rebuilds it, when it cannot. It is built only when missing, or rebuilt when ``rebuild`` says
    so: from ``lake`` when given, else from the lake its manifest records, else the profile's.
    ``on_build(cfg, force)`` does the build (the CLI's shows the report); the default builds quietly.
    Under several processes rank 0 builds and the others wait for a manifest that can serve them.
    """
    cfg = loaded.cfg
    dataset = Path(dataset).expanduser()
    manifest_file = dataset / "manifest.json"

    def read() -> dict[str, Any] | None:
        try:
            return json.loads(manifest_file.read_text())
        except (OSError, ValueError):
            return None

    rank, world = process_rank()
    if rank > 0:  # several processes: rank 0 builds; the others wait for a manifest that serves them
        return wait_for(manifest_file, ready=lambda: (m if (m := read()) is not None and dataset_problem(cfg, m) is None
                                                      else None))
    manifest = read()
    recorded = (manifest or {}).get("lake")
    if manifest is not None and not rebuild:
        problem = dataset_problem(cfg, manifest)
        if problem is None:
            return manifest
        raise OhlcvError(
            f"{dataset} does not fit this command ({problem}); name another --dataset, or rebuild this one "
            f"with: {rebuild_command(loaded, dataset, str(lake) if lake is not None else recorded)}"
        )
    if rebuild and world > 1:
        from ohlcv.train.distributed import shared_run_dir

        if shared_run_dir() is None:  # torchrun / srun: every rank starts at once; build before launching
            raise ConfigError(f"rebuild the dataset before a multi-process launch: "
                              f"{rebuild_command(loaded, dataset, str(lake) if lake is not None else recorded)}",
                              key="--rebuild")
    build_cfg = cfg
    if lake is None and recorded:
        import copy

        from omegaconf import read_write

        build_cfg = copy.deepcopy(cfg)
        with read_write(build_cfg):
            build_cfg.data.lake = recorded
    if on_build is None:
        from ohlcv.builder.builder import IterativeFinancialDatasetBuilder

        IterativeFinancialDatasetBuilder(build_cfg).run(force=rebuild)
    else:
        on_build(build_cfg, rebuild)
    return json.loads(manifest_file.read_text())


def build_model(cfg):
    from ohlcv.moirai.compat import pretrain_model

    return pretrain_model(cfg)


def preflight(cfg, dataset: Path, manifest: dict[str, Any], run_dir: Path) -> Preflight:
    """Everything that can be known before a model is built: refuse early, with what to change."""
    from ohlcv.budget import inputs_from_profile, plan

    report = plan(inputs_from_profile(cfg, dataset=dataset))
    if not report.context_rule_ok:
        raise ConfigError(report.suggestions[0], key="data.context_length")
    usable = [row.patch_size for row in report.rows if row.usable]
    allowed = [row for row in report.rows if row.allowed]
    warnings = []
    if not usable:
        advice = "; ".join(report.suggestions) or "see `ohlcv budget`"
        if not (bool(cfg.pretrain.allow_crop) and allowed):
            raise ConfigError(
                f"no patch size fits {report.inputs['variates']} variates in {report.inputs['max_seq_len']} tokens "
                f"and pretrain.allow_crop is off: {advice}",
                key="model.patch_sizes",
            )
        warnings.append(f"no patch size fits the whole window; uni2ts will crop samples ({advice})")
    from ohlcv.dataset.read import trainable_items

    smallest = min(usable or [row.patch_size for row in allowed] or [int(min(cfg.model.patch_sizes))])
    need = int(cfg.pretrain.min_patches) * smallest
    trainable = trainable_items(manifest, "train", need)
    short = len(manifest["items"]) - len(trainable)
    if not trainable:
        raise ConfigError(
            f"no series has a training span of pretrain.min_patches x patch = {need} bars; raise "
            "data.cleaning.min_length, move data.split.train_end later, and rebuild",
            key="data.cleaning.min_length",
        )
    if short:  # with a date split common to every series, symbols that start late have short training spans
        warnings.append(f"{short} of {len(manifest['items'])} series have a training span shorter than "
                        f"pretrain.min_patches x patch = {need} bars and are left out of pre-training")
    check_writable(run_dir)
    tokens = max((min(row.pretrain_tokens, report.inputs["max_seq_len"]) for row in report.rows if row.allowed), default=0)
    from ohlcv.moirai.compat import module_kwargs

    parameters = count_parameters(module_kwargs(cfg))
    return Preflight(
        variates=report.inputs["variates"],
        usable_patch_sizes=usable,
        tokens_per_sample=tokens,
        parameters=parameters,
        hardware=resolve_hardware(cfg.trainer),
        steps=int(cfg.pretrain.max_steps),
        warnings=warnings,
        min_train_bars=need,
    )


def _callbacks(run_dir: Path, cfg, stats: dict[str, Any]):
    import lightning as L
    import torch

    class Meter(L.Callback):
        """Tokens seen, losses and throughput for run.json: over every process, the same in each."""

        def on_train_start(self, trainer, pl_module):
            stats["started"] = time.perf_counter()
            stats.setdefault("tokens_seen", 0)
            stats["first_step"] = int(trainer.global_step)
            stats["tokens_at_start"] = stats["tokens_seen"]  # a resumed run's throughput counts its own tokens

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            real = batch["sample_id"] > 0
            both = torch.stack([loss.detach().double(), real.sum().double()])
            if trainer.world_size > 1:  # one 2-number all-reduce per step: the mean loss and all tokens
                both = trainer.strategy.reduce(both, reduce_op="sum")
            total, tokens = both.tolist()
            value = total / trainer.world_size
            stats["final_loss"] = value
            stats["best_loss"] = min(stats.get("best_loss", math.inf), value)
            stats["tokens_seen"] += int(tokens)
            stats["patch_sizes"].update(int(p) for p in torch.unique(batch["patch_size"][real]).tolist())

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            checkpoint["ohlcv"] = {"kind": OWNER_MARK, "tokens_seen": stats["tokens_seen"],
                                   "best_loss": stats.get("best_loss")}

        def on_load_checkpoint(self, trainer, pl_module, checkpoint):
            saved = checkpoint.get("ohlcv", {})
            stats["tokens_seen"] = int(saved.get("tokens_seen", 0))
            if saved.get("best_loss") is not None:
                stats["best_loss"] = float(saved["best_loss"])

    class ExportHF(L.Callback):
        """The module in Hugging Face format (config.json + model.safetensors), next to every checkpoint."""

        def __init__(self, every: int):
            self.every = every

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.every and trainer.global_step % self.every == 0 and trainer.is_global_zero:
                export_hf(pl_module.module, run_dir / "model")

    every = max(1, int(cfg.pretrain.checkpoint_every_n_steps))
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="step={step:06d}", auto_insert_metric_name=False,
        every_n_train_steps=every, save_last=True, save_top_k=1, monitor=None,
    )
    guard = loss_guard(lambda: after_divergence(run_dir, cfg))
    monitor = [L.pytorch.callbacks.LearningRateMonitor("step")] if cfg.trainer.logger.value != "none" else []
    return [guard, Meter(), ExportHF(every), checkpoint, *monitor]


def after_divergence(run_dir: Path, cfg) -> str:
    """What a diverged pre-training leaves to go back to, and what to change."""
    last = run_dir / "checkpoints" / "last.ckpt"
    kept = (f"the last good checkpoint is {last}" if last.is_file() else
            f"no checkpoint was written before it (one every {int(cfg.pretrain.checkpoint_every_n_steps)} steps: "
            "pretrain.checkpoint_every_n_steps)")
    return f"{kept}. Lower pretrain.lr, raise pretrain.warmup_steps, or check the data with `ohlcv check`"


def export_hf(module, target: Path) -> None:
    """Save with ``save_pretrained`` into a temporary folder, then swap it into place."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    module.save_pretrained(str(tmp))
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def make_datamodule(cfg, dataset: Path, manifest: dict[str, Any], model, *, min_train_bars: int = 1):
    import lightning as L

    from ohlcv.moirai.data import loader, pretrain_series

    series = pretrain_series(dataset, manifest, cfg, model, min_length=min_train_bars)
    p = cfg.pretrain

    class PretrainData(L.LightningDataModule):
        def train_dataloader(self):
            world = self.trainer.world_size if self.trainer is not None else 1
            sampler = None if world <= 1 else shard_sampler(series, self.trainer, shuffle=True,
                                                            seed=int(cfg.trainer.seed), pad=True)
            worker_init = None if world <= 1 else seed_data_for_rank(self.trainer, int(cfg.trainer.seed))
            return loader(
                series,
                batch_size=max(1, int(p.batch_size) // world),
                batch_size_factor=2.0,
                cycle=True,
                num_batches_per_epoch=int(p.num_batches_per_epoch),
                shuffle=sampler is None,
                sampler=sampler,
                num_workers=int(p.num_workers),
                pack=(int(cfg.model.max_seq_len), model),
                pin_memory=self.trainer is not None and self.trainer.accelerator.__class__.__name__ != "CPUAccelerator",
                drop_last=True,
                worker_init_fn=worker_init,
                persistent_workers=int(p.num_workers) > 0,
            )

    return PretrainData()


def run_pretrain(
    loaded,
    *,
    dataset: Path,
    out: Path | None = None,
    resume: bool = False,
    on_preflight: Callable[[Preflight, Path], None] | None = None,
    on_build: Callable[[Any, bool], Any] | None = None,
    rebuild: bool = False,
    lake: Path | None = None,
    progress=None,
) -> PretrainResult:
    run_dir = run_folder(loaded.cfg, "pretrain", out, resume)
    with discard_on_failure(run_dir):
        result = _run_pretrain(loaded, run_dir, dataset=dataset, resume=resume, on_preflight=on_preflight,
                               on_build=on_build, rebuild=rebuild, lake=lake, progress=progress)
    if out is None and is_rank_zero():
        point_latest(loaded.cfg, "pretrain", run_dir)
    return result


def _run_pretrain(loaded, run_dir: Path, *, dataset: Path, resume: bool, on_preflight, on_build, rebuild: bool,
                  lake: Path | None, progress) -> PretrainResult:
    cfg = loaded.cfg
    dataset = Path(dataset).expanduser()
    manifest = ensure_dataset(loaded, dataset, rebuild=rebuild, lake=lake, on_build=on_build)
    check = preflight(cfg, dataset, manifest, run_dir)
    if on_preflight is not None:
        on_preflight(check, run_dir)

    import lightning as L
    import torch

    L.seed_everything(int(cfg.trainer.seed), workers=True, verbose=False)
    model = build_model(cfg)
    compile_module(cfg, model)
    datamodule = make_datamodule(cfg, dataset, manifest, model, min_train_bars=check.min_train_bars)
    stats: dict[str, Any] = {"patch_sizes": set()}
    hardware = check.hardware
    trainer = make_trainer(cfg, hardware, run_dir, max_steps=int(cfg.pretrain.max_steps),
                           callbacks=_callbacks(run_dir, cfg, stats), limit_val_batches=0,
                           progress=progress, phase="pre-training")
    check_launch(trainer)
    # the processes of one node share its cores (CPU runs; on GPUs this only bounds the loader's threads)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, trainer.num_devices)))
    leader = is_rank_zero()
    if leader:
        write_resolved_profile(loaded, run_dir)
        _write_run_json(run_dir, cfg, dataset, manifest, check, stats, status="running")
    share_run_dir(trainer, run_dir)
    started = time.perf_counter()
    ckpt = str(run_dir / "checkpoints" / "last.ckpt") if resume else None
    try:
        with interrupted_as_such(trainer, run_dir):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False if ckpt else None)
    except ValueError as exc:  # a parameter went NaN/inf inside a distribution outside a training step
        from ohlcv.moirai.compat import non_finite_distribution

        if not non_finite_distribution(exc):
            raise
        if leader:
            _write_run_json(run_dir, cfg, dataset, manifest, check, stats, status="diverged",
                            wall=time.perf_counter() - started)
        import re

        found = re.search(r"of distribution (\w+)", str(exc))
        raise DivergenceError(
            f"the loss became NaN at step {trainer.global_step}: a parameter of the "
            f"{found.group(1) if found else 'forecast'} distribution is NaN or infinite; {after_divergence(run_dir, cfg)}"
        ) from None
    except DivergenceError:
        if leader:
            _write_run_json(run_dir, cfg, dataset, manifest, check, stats, status="diverged",
                            wall=time.perf_counter() - started)
        raise
    wall = time.perf_counter() - started
    # collective: every process takes part, Lightning writes the file on rank zero
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    processes = agree_on_steps(trainer, stats)

    def finish() -> dict[str, Any]:
        export_hf(model.module, run_dir / "model")
        return _write_run_json(run_dir, cfg, dataset, manifest, check, stats, status="finished", wall=wall,
                               step=int(trainer.global_step), processes=processes)

    summary = on_rank_zero(trainer, finish, "model and run.json")
    return PretrainResult(run_dir=run_dir, model_dir=run_dir / "model", summary=summary)


def agree_on_steps(trainer, stats: dict[str, Any]) -> list[dict[str, Any]]:
    """What every process did (collective): the step it started at and ended at, and the patch sizes it drew.

    The patch sizes of all processes are merged into ``stats``. Processes that disagree on
    the step count mean a broken resume or launch: an error, not a model.
    """
    mine = {"rank": int(trainer.global_rank), "first_step": int(stats.get("first_step", 0)),
            "last_step": int(trainer.global_step), "patch_sizes": sorted(stats.get("patch_sizes", []))}
    everyone = gather(trainer, mine)
    for other in everyone:
        stats["patch_sizes"].update(other.pop("patch_sizes"))
    ends = sorted({(p["first_step"], p["last_step"]) for p in everyone})
    if len(ends) > 1:
        raise OhlcvError(f"the {len(everyone)} processes disagree on the steps they trained (first, last): {ends}")
    return everyone


def _write_run_json(run_dir, cfg, dataset, manifest, check: Preflight, stats, *, status, wall=None, step=None,
                    processes=None):
    from ohlcv.plugins import load_plugins

    tokens = int(stats.get("tokens_seen", 0))
    summary = {
        "kind": OWNER_MARK,
        "command": "pretrain",
        "status": status,
        "profile": str(cfg.name),
        "steps": step,
        "max_steps": int(cfg.pretrain.max_steps),
        "resumed_from_step": stats.get("first_step") or None,
        "processes": processes or [],
        "final_loss": stats.get("final_loss"),
        "best_loss": None if stats.get("best_loss") in (None, math.inf) else stats["best_loss"],
        "tokens_seen": tokens,
        "wall_seconds": None if wall is None else round(wall, 2),
        "tokens_per_second": None if not wall else round((tokens - int(stats.get("tokens_at_start", 0))) / wall, 1),
        "patch_sizes_seen": sorted(stats.get("patch_sizes", [])),
        "parameters": check.parameters,
        "variates": check.variates,
        "tokens_per_sample": check.tokens_per_sample,
        "precision": check.hardware.precision,
        "device": check.hardware.device_name,
        "dataset": str(dataset),
        "dataset_manifest_hash": manifest_hash(dataset),
        "dataset_content_hash": manifest.get("content_hash"),
        "plugins": load_plugins().versions(),
        "packages": package_versions(),
        "git_revision": git_revision(),
    }
    atomic_write_text(run_dir / "run.json", json_text(summary, indent=2) + "\n")
    return summary
