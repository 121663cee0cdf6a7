"""``ohlcv finetune``: adapt a MOIRAI checkpoint with uni2ts's ``MoiraiFinetune``, with a guardrail.

Training windows are drawn at random over every series' whole training span;
validation uses a fixed, capped set spread over every series' validation span.
The starting checkpoint is validated first; training stops early when the
validation loss stops improving; the best checkpoint is kept and exported in
Hugging Face format; the summary says plainly whether fine-tuning improved on
the starting model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ohlcv.config.loader import atomic_write_text, json_text, write_resolved_profile
from ohlcv.errors import ConfigError
from ohlcv.train.distributed import (
    check_launch,
    is_rank_zero,
    on_rank_zero,
    seed_data_for_rank,
    shard_sampler,
    share_run_dir,
)
from ohlcv.train.pretrain import ensure_dataset, export_hf, manifest_hash
from ohlcv.train.runtime import (
    OWNER_MARK,
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
)

VAL_KEYS = {"moirai": "val/PackedNLLLoss", "moirai2": "val/PinballLoss"}  # the loss the guardrail compares


@dataclass
class FinetuneResult:
    run_dir: Path
    model_dir: Path
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "model_dir": str(self.model_dir), **self.summary}


def check_start(module, cfg, variates: int) -> int:
    """The starting checkpoint must have the profile's patch size and room for its windows; the patch size used.

    Tokens are counted as ``ohlcv budget`` counts them (:func:`ohlcv.budget.finetune_fit`), against the
    checkpoint's own max_seq_len. Moirai 2.0 has one patch size, its own.
    """
    from ohlcv.moirai.models import patch_sizes
    from ohlcv.moirai.tuning import family_of

    return check_fit(family_of(module), patch_sizes(module), int(module.max_seq_len), cfg, variates)


def check_source(source, cfg, variates: int) -> int:
    """:func:`check_start` from a resolved ``--from``'s configuration alone: before any dataset work."""
    return check_fit(source.family.key, source.patch_sizes, int(source.config["max_seq_len"]), cfg, variates)


def check_before_dataset(cfg, source, dataset: Path, rebuild: bool) -> None:
    """All that can be checked of a fine-tune's start before any dataset work: its family's support for
    ``finetune.pattern``, its patch sizes and token fit for the variates the build gives (or the built dataset's)."""
    from ohlcv.budget import profile_variates, read_dataset_variates

    source.family.check_finetune(source.spec, cfg.finetune.pattern.value)
    if cfg.finetune.pattern.value == "lora":  # peft and the adapters' targets, before any dataset work
        from ohlcv.moirai.lora import check_before_data

        check_before_data(source, cfg.finetune.lora)
    built = None if rebuild else read_dataset_variates(Path(dataset).expanduser())
    check_source(source, cfg, len(built if built is not None else profile_variates(cfg)))


def check_fit(family: str, sizes: list[int], max_seq_len: int, cfg, variates: int) -> int:
    """The patch fine-tuning trains at, or one line saying why the starting model cannot (as ``ohlcv budget``
    judges it: :func:`ohlcv.budget.starting_fit`)."""
    from ohlcv.budget import starting_fit

    fit = starting_fit(family, sizes, max_seq_len, variates, int(cfg.data.context_length),
                       int(cfg.data.prediction_length), int(cfg.finetune.patch_size))
    if not fit["fits"]:
        raise ConfigError(fit["why"], key="finetune.patch_size")
    return fit["patch_size"]


def adapt(cfg, module, family: str):
    """``module`` with ``finetune.pattern`` applied: LoRA adapters added, or the untrained part frozen."""
    from ohlcv.moirai.tuning import apply_pattern

    pattern = cfg.finetune.pattern.value  # supported by the family: checked by run_finetune before any dataset work
    if pattern == "lora":
        from ohlcv.moirai.lora import add_adapters

        return add_adapters(module, cfg.finetune.lora)
    apply_pattern(module, family, pattern)
    return module


def build_model(cfg, module, family: str, manifest: dict[str, Any]):
    f = cfg.finetune
    context, horizon = int(cfg.data.context_length), int(cfg.data.prediction_length)
    if family == "moirai2":
        from ohlcv.moirai.moirai2 import finetune_model

        return finetune_model(module, context=context, horizon=horizon, targets=len(manifest["targets"]),
                              covariates=len(manifest["covariates"]), lr=float(f.lr),
                              weight_decay=float(f.weight_decay), warmup_steps=int(f.warmup_steps),
                              max_steps=int(f.max_steps))
    from ohlcv.moirai.tuning import moirai_finetune_class

    model = moirai_finetune_class()(
        module=module,
        min_patches=int(cfg.pretrain.min_patches),
        min_mask_ratio=float(cfg.pretrain.mask_ratio_min),
        max_mask_ratio=float(cfg.pretrain.mask_ratio_max),
        max_dim=int(cfg.pretrain.max_dim),
        num_training_steps=int(f.max_steps),
        num_warmup_steps=int(f.warmup_steps),
        num_samples=int(f.num_samples),
        lr=float(f.lr),
        weight_decay=float(f.weight_decay),
        context_length=context,
        prediction_length=horizon,
        patch_size=int(f.patch_size),
        # uni2ts freezes by its own pattern names; LoRA's freezing is peft's
        finetune_pattern="full" if f.pattern.value == "lora" else f.pattern.value,
    )
    # without sequence packing, uni2ts needs "sample_id" among the sequence fields (else KeyError in validation)
    model.seq_fields = tuple(model.seq_fields) + ("sample_id",)
    return model


def spread(counts: dict[str, int]) -> dict[str, int]:
    """Windows per series: how many series, and the fewest, median and most windows of one."""
    values = sorted(counts.values())
    return {"series": len(values), "min": values[0], "median": values[len(values) // 2], "max": values[-1]}


def make_datamodule(cfg, dataset: Path, manifest: dict[str, Any], model, family: str, patch: int):
    """Training windows every bar over each series' whole training span, drawn uniformly with replacement;
    validation windows every horizon over its whole validation span (with the context before it), at most
    ``finetune.val_windows`` of them, a fixed set spread evenly over every series."""
    import lightning as L
    from torch.utils.data import Subset

    from ohlcv.moirai.data import WindowDraws, loader, span_windows, spread_windows

    context, horizon = int(cfg.data.context_length), int(cfg.data.prediction_length)
    need = context + horizon
    if family == "moirai2":
        from ohlcv.moirai.moirai2 import WindowArrays

        train_transform, val_transform = WindowArrays(context, horizon, 1), WindowArrays(context, horizon, horizon)
    else:
        train_transform = model.train_transform_map["ohlcv"](distance=1, prediction_length=horizon,
                                                             context_length=context, patch_size=patch)
        val_transform = model.val_transform_map["ohlcv"](offset=context, distance=horizon, prediction_length=horizon,
                                                         context_length=context, patch_size=patch)
    # series whose span cannot hold one window (with a common date split: symbols that start late) are left out
    train, train_counts = span_windows(dataset, manifest, train_transform, span="train", need=need, distance=1)
    val_all, val_counts = span_windows(dataset, manifest, val_transform, span="validation", need=need,
                                       distance=horizon, lead=context)
    if not train_counts or not val_counts:
        raise ConfigError(
            f"no series has a training and a validation span of context + horizon ({need} bars); shorten "
            "data.context_length or rebuild with longer series / validation span",
            key="data.split",
        )
    f = cfg.finetune
    val = Subset(val_all, spread_windows(list(val_counts.values()), int(f.val_windows)))
    # an "epoch" is the steps between validations; never longer than the run, so that it validates at least once
    epoch = min(int(f.val_every_n_steps), int(f.max_steps))

    class FinetuneData(L.LightningDataModule):
        def _loader(self, data, train: bool):
            world = self.trainer.world_size if self.trainer is not None else 1
            rank = self.trainer.global_rank if self.trainer is not None else 0
            batch = max(1, int(f.batch_size) // world)
            if train:  # each process its own stream of draws, enough for the whole run
                sampler = WindowDraws(len(data), int(f.max_steps) * batch, seed=int(cfg.trainer.seed), rank=rank)
            else:  # every window exactly once over all processes, so the reduced loss is the full set's
                sampler = None if world <= 1 else shard_sampler(data, self.trainer, shuffle=False,
                                                                seed=int(cfg.trainer.seed), pad=False)
            worker_init = seed_data_for_rank(self.trainer, int(cfg.trainer.seed)) if train and world > 1 else None
            return loader(
                data,
                batch_size=batch,
                cycle=train,
                num_batches_per_epoch=epoch if train else None,
                shuffle=False,
                sampler=sampler,
                num_workers=int(cfg.pretrain.num_workers),
                drop_last=train,
                worker_init_fn=worker_init,
            )

        def train_dataloader(self):
            return self._loader(train, True)

        def val_dataloader(self):
            return self._loader(val, False)

    val_ids = set(val_counts)
    sizes = {"train_windows": sum(train_counts.values()), "val_windows": len(val),
             "val_windows_available": sum(val_counts.values()),
             "windows_per_series": {"train": spread(train_counts), "validation": spread(val_counts)},
             "series_left_out": len(manifest["items"]) - len(train_counts),
             "series_left_out_of_validation": sum(1 for i in train_counts if i not in val_ids)}
    return FinetuneData(), sizes


def after_divergence(run_dir: Path, start: str) -> str:
    """What a diverged fine-tuning leaves to go back to, and what to change."""
    kept = Path(run_dir) / "checkpoints"
    return (f"the best checkpoint so far is {kept / 'best.ckpt'} (--resume goes on from {kept / 'last.ckpt'})"
            if (kept / "best.ckpt").is_file() else
            f"no checkpoint was written before it; the starting model ({start}) is unchanged") + ". Lower finetune.lr"


def run_finetune(
    loaded,
    start: str,
    *,
    dataset: Path,
    out: Path | None = None,
    resume: bool = False,
    on_build: Callable[[Any, bool], Any] | None = None,
    rebuild: bool = False,
    lake: Path | None = None,
    progress=None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``start`` (anything :func:`ohlcv.moirai.sources.resolve_model` accepts).

    ``start`` is resolved, and its family's support for ``finetune.pattern`` checked, before any
    run folder or dataset is made: a wrong ``--from`` fails in a second, not after a build.
    """
    from ohlcv.moirai.sources import ModelSource, resolve_model

    source = start if isinstance(start, ModelSource) else resolve_model(start)
    check_before_dataset(loaded.cfg, source, dataset, rebuild)
    run_dir = run_folder(loaded.cfg, "finetune", out, resume)
    with discard_on_failure(run_dir):
        result = _run_finetune(loaded, source, run_dir, dataset=dataset, resume=resume, on_build=on_build,
                               rebuild=rebuild, lake=lake, progress=progress, on_start=on_start)
    if out is None and is_rank_zero():
        point_latest(loaded.cfg, "finetune", run_dir)
    return result


def _run_finetune(loaded, source, run_dir: Path, *, dataset: Path, resume: bool, on_build, rebuild: bool,
                  lake: Path | None, progress, on_start) -> FinetuneResult:
    import copy

    import lightning as L
    import torch
    from omegaconf import OmegaConf

    from ohlcv.moirai.models import describe, load_module
    from ohlcv.moirai.tuning import family_of, parameter_counts

    cfg = loaded.cfg
    start = source.spec
    dataset = Path(dataset).expanduser()
    check_writable(run_dir)
    manifest = ensure_dataset(loaded, dataset, rebuild=rebuild, lake=lake, on_build=on_build)
    context, horizon = int(cfg.data.context_length), int(cfg.data.prediction_length)
    if context < 5 * horizon:
        raise ConfigError(f"context {context} is shorter than 5 x horizon {horizon}", key="data.context_length")
    module = load_module(source)
    model_info = describe(module)
    family = family_of(module)
    patch = check_start(module, cfg, len(manifest["variates"]))
    L.seed_everything(int(cfg.trainer.seed), workers=True, verbose=False)
    start_state = copy.deepcopy(module.state_dict())  # the model to fall back on if fine-tuning does not help
    module = adapt(cfg, module, family)
    model = build_model(cfg, module, family, manifest)
    compile_module(cfg, model)
    datamodule, sizes = make_datamodule(cfg, dataset, manifest, model, family, patch)
    counts = parameter_counts(module)
    hardware = resolve_hardware(cfg.trainer)
    if on_start is not None:
        on_start({"run_dir": run_dir, "start": start, "hardware": hardware, **model_info,
                  "pattern": cfg.finetune.pattern.value, **counts, **sizes})
    val_key = VAL_KEYS[family]
    val_note = None
    if family == "moirai2":
        from ohlcv.moirai.moirai2 import validation_note

        val_note = validation_note(module, int(cfg.data.prediction_length), len(manifest["targets"]))

    guard = loss_guard(lambda: after_divergence(run_dir, start))
    # both act when a validation ends (where the loss is logged), not when a training epoch ends: a run resumed
    # from a checkpoint written at an epoch's end starts by ending that epoch, before any validation has run
    best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=val_key, mode="min", save_top_k=1, save_last=True,
        save_on_train_epoch_end=False,
    )
    stopper = L.pytorch.callbacks.EarlyStopping(monitor=val_key, mode="min", patience=int(cfg.finetune.patience),
                                                check_on_train_epoch_end=False)
    monitor = [L.pytorch.callbacks.LearningRateMonitor("step")] if cfg.trainer.logger.value != "none" else []
    trainer = make_trainer(cfg, hardware, run_dir, max_steps=int(cfg.finetune.max_steps),
                           callbacks=[guard, best, stopper, *monitor], progress=progress, phase="fine-tuning")
    check_launch(trainer)
    if sizes["val_windows"] < trainer.world_size:
        raise ConfigError(
            f"{sizes['val_windows']} validation windows cannot be shared by {trainer.world_size} processes; "
            "use fewer devices or a longer validation span",
            key="trainer.devices",
        )
    summary: dict[str, Any] = {"kind": OWNER_MARK, "command": "finetune", "status": "running", "start": start,
                               "start_model": model_info}
    if is_rank_zero():
        write_resolved_profile(loaded, run_dir)
        atomic_write_text(run_dir / "run.json", json_text(summary, indent=2) + "\n")
    share_run_dir(trainer, run_dir)
    # under DDP both losses are means over every validation window, reduced over the processes (see
    # moirai.compat.reduced_across_processes); rank zero's copy is the one every process acts on
    with interrupted_as_such(trainer, run_dir):
        before = float(trainer.validate(model, datamodule=datamodule, verbose=False)[0][val_key])
    model.train()  # validate() leaves the modules in eval mode
    started = time.perf_counter()
    ckpt = str(run_dir / "checkpoints" / "last.ckpt") if resume else None
    with interrupted_as_such(trainer, run_dir):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False if ckpt else None)
    wall = time.perf_counter() - started
    after = float(best.best_model_score) if best.best_model_score is not None else before
    # the steps after the last validation (max_steps off a validation boundary) are validated too
    last_state, best_step = None, None
    if trainer.global_step % min(int(cfg.finetune.val_every_n_steps), int(cfg.finetune.max_steps)):
        with interrupted_as_such(trainer, run_dir):
            last = float(trainer.validate(model, datamodule=datamodule, verbose=False)[0][val_key])
        last = trainer.strategy.broadcast(last, src=0)
        if best.best_model_score is None or last < after:
            after, best_step = last, int(trainer.global_step)
            last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    before, after = trainer.strategy.broadcast((before, after), src=0)
    improved = after < before

    def finish() -> dict[str, Any]:
        from ohlcv.moirai.lora import merged, unadapted

        nonlocal best_step
        saved = (torch.load(best.best_model_path, map_location="cpu", weights_only=False)
                 if last_state is None and best.best_model_path else None)
        if saved is not None:
            best_step = int(saved["global_step"])
        if improved and (last_state is not None or saved is not None):
            model.load_state_dict(last_state if last_state is not None else saved["state_dict"])
            final = merged(model.module)  # LoRA: the adapters folded into the weights
        else:
            final = unadapted(model.module)
            final.load_state_dict(start_state)
        export_hf(final, run_dir / "model")
        summary.update(
            status="finished",
            steps=int(trainer.global_step),
            stopped_early=bool(stopper.stopped_epoch),
            val_loss_before=before,
            val_loss_after=after,
            best_step=best_step,
            val_note=val_note,
            improved=improved,
            exported="fine-tuned (best validation loss)" if improved
            else "the starting model (fine-tuning did not improve it)",
            processes=int(trainer.world_size),
            wall_seconds=round(wall, 2),
            family=model_info["family"],
            pattern=cfg.finetune.pattern.value,
            lora=OmegaConf.to_container(cfg.finetune.lora) if cfg.finetune.pattern.value == "lora" else None,
            warmup_steps=int(cfg.finetune.warmup_steps),
            schedule="linear warm-up, cosine decay to 0 at max_steps",
            patch_size=patch,
            **counts,
            dataset=str(dataset),
            dataset_manifest_hash=manifest_hash(dataset),
            packages=package_versions(),
            git_revision=git_revision(),
            **sizes,
        )
        atomic_write_text(run_dir / "run.json", json_text(summary, indent=2) + "\n")
        return summary

    return FinetuneResult(run_dir=run_dir, model_dir=run_dir / "model",
                          summary=on_rank_zero(trainer, finish, "model and run.json"))
