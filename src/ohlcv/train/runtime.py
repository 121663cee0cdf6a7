"""Hardware, precision, run folders and the facts recorded with every run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ohlcv.errors import ConfigError, OhlcvError

OWNER_MARK = "ohlcv-run"  # run.json's "kind": a run folder this tool wrote


@dataclass(frozen=True)
class Hardware:
    accelerator: str  # cpu | gpu
    devices: Any
    precision: str
    device_name: str
    tf32: bool


def compile_module(cfg, model) -> None:
    """``trainer.compile``: compile the MOIRAI module's forward with torch.compile, in place
    (``nn.Module.compile``), so its parameters, checkpoints and export keep their names."""
    if bool(cfg.trainer.compile):
        model.module.compile(backend=str(cfg.trainer.compile_backend))


def resolve_hardware(trainer_cfg) -> Hardware:
    """Accelerator and precision: bf16-mixed on GPUs that support it, else 16-mixed; 32-bit on CPU."""
    import torch

    wanted = str(trainer_cfg.accelerator)
    has_gpu = torch.cuda.is_available()
    if wanted in ("gpu", "cuda") and not has_gpu:
        raise ConfigError("no CUDA GPU is visible; use trainer.accelerator=auto or cpu", key="trainer.accelerator")
    accelerator = "gpu" if (wanted in ("auto", "gpu", "cuda") and has_gpu) else "cpu"
    precision = str(trainer_cfg.precision)
    if precision == "auto":
        if accelerator == "gpu":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32-true"
    elif precision == "32":
        precision = "32-true"
    tf32 = False
    if accelerator == "gpu":
        name = torch.cuda.get_device_name(0)
        major, _ = torch.cuda.get_device_capability(0)
        if bool(trainer_cfg.tf32) and major >= 8:  # Ampere and newer
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision("high")
            tf32 = True
    else:
        name = f"CPU ({os.cpu_count()} cores)"
    devices = trainer_cfg.devices
    if accelerator == "cpu" and devices == "auto":
        devices = 1
    return Hardware(accelerator, devices, precision, name, tf32)


def new_run_dir(cfg, kind: str, out: Path | None) -> Path:
    if out is not None:
        return Path(out).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(str(cfg.output.runs_dir)).expanduser() / f"{cfg.name}-{kind}-{stamp}"


def latest_run(cfg, kind: str) -> Path | None:
    root = Path(str(cfg.output.runs_dir)).expanduser()
    if not root.is_dir():
        return None
    runs = sorted(p for p in root.glob(f"{cfg.name}-{kind}-*")
                  if not p.is_symlink() and (p / "checkpoints" / "last.ckpt").is_file())
    return runs[-1] if runs else None


@contextlib.contextmanager
def discard_on_failure(run_dir: Path):
    """A command that fails leaves no run folder of its own behind, or a clearly marked one.

    A folder this command created that holds no checkpoint and no verdict is removed; one that holds a
    checkpoint (an interrupted run: it can be resumed) or says why it stopped (``diverged``) is kept, its
    run.json marked failed with the error unless it already says why."""
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    try:
        yield
    except BaseException as exc:
        from ohlcv.train.distributed import is_rank_zero

        if is_rank_zero() and run_dir.is_dir():
            if not existed and not any(run_dir.glob("checkpoints/*.ckpt")) and _status(run_dir) in (None, "running"):
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                _mark_failed(run_dir, exc)
        raise


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _mark_failed(run_dir: Path, exc: BaseException) -> None:
    marker = run_dir / "run.json"
    try:
        summary = json.loads(marker.read_text())
    except (OSError, ValueError):
        return
    if summary.get("status") != "running":  # finished, diverged: it already says
        return
    from ohlcv.config.loader import atomic_write_text, json_text

    if isinstance(exc, KeyboardInterrupt):
        summary.update(status="interrupted", error="interrupted (Ctrl-C)")
    else:
        summary.update(status=getattr(exc, "run_status", "failed"), error=f"{type(exc).__name__}: {exc}")
    atomic_write_text(marker, json_text(summary, indent=2) + "\n")


def point_latest(cfg, kind: str, run_dir: Path) -> Path | None:
    """``<runs_dir>/<profile>-<kind>-latest``: a relative symbolic link to the newest finished run of that
    kind, so that ``--from runs/demo-pretrain-latest/model`` names it whatever its time stamp. Replaced
    atomically; None where the file system has no symbolic links."""
    link = Path(str(cfg.output.runs_dir)).expanduser() / f"{cfg.name}-{kind}-latest"
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        target = os.path.relpath(Path(run_dir).resolve(), link.parent.resolve())
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        return None
    return link


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ohlcv-write-test-{os.getpid()}"  # one per process: ranks probe the same folder
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{folder} is not writable: {exc.strerror}", key="--out") from None


def assert_own_run(run_dir: Path) -> None:
    """Lightning checkpoints are pickles: load only those that this tool wrote (see docs/pretrain.md)."""
    marker = run_dir / "run.json"
    try:
        kind = json.loads(marker.read_text()).get("kind")
    except (OSError, ValueError):
        kind = None
    if kind != OWNER_MARK:
        raise OhlcvError(
            f"{run_dir} is not a run folder written by ohlcv (no run.json); refusing to unpickle its checkpoint"
        )


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("ohlcv", "uni2ts", "torch", "lightning", "numpy", "pandas", "polars", "pyarrow", "datasets", "gluonts"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def wait_for(path: Path, *, ready: Callable[[], Any] | None = None, timeout: float = 6 * 3600,
             poll: float = 5.0) -> Any:
    """Other ranks wait for rank 0 to finish building the dataset: until ``path`` exists and ``ready()`` is not None."""
    deadline = time.monotonic() + timeout
    while True:
        if path.is_file():
            result = ready() if ready is not None else True
            if result is not None:
                return result
        if time.monotonic() > deadline:
            raise OhlcvError(f"gave up waiting for {path}: build the dataset first with `ohlcv build`")
        time.sleep(poll)


def run_folder(cfg, kind: str, out: Path | None, resume: bool) -> Path:
    """The run folder of a training command: the one to resume, or a new one that holds no run yet.

    Every process of a multi-process run must name the same folder: the processes that
    Lightning's launcher starts get it from rank zero (:func:`ohlcv.train.distributed.share_run_dir`);
    under torchrun or srun, where all start at once, ``--out`` is required.
    """
    from ohlcv.train.distributed import process_rank, shared_run_dir

    shared = shared_run_dir()
    if shared is not None:  # started by rank zero, which has already checked the folder
        return shared
    if out is None and process_rank()[1] > 1:
        raise ConfigError("a multi-process run needs one run folder for every rank: pass --out RUN_DIR", key="--out")
    if resume:
        run_dir = Path(out).expanduser() if out is not None else latest_run(cfg, kind)
        if run_dir is None or not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise OhlcvError(f"nothing to resume: no checkpoints/last.ckpt in {run_dir or cfg.output.runs_dir}")
        assert_own_run(run_dir)
        return run_dir
    run_dir = new_run_dir(cfg, kind, out)
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or another --out", key="--out")
    return run_dir


@contextlib.contextmanager
def interrupted_as_such(trainer, run_dir: Path):
    """A Ctrl-C or a SIGTERM inside ``trainer.fit`` / ``validate`` raised again as what it was.

    Lightning turns a Ctrl-C into ``sys.exit(1)`` (raised while handling the KeyboardInterrupt), after its
    own graceful shutdown, and a SIGTERM into ``SIGTERMException``, an exit with status 0: the command
    said nothing, and its run said ``failed``. A Ctrl-C now ends with ``interrupted`` and status 130, as
    anywhere else; a SIGTERM (``kill``, ``docker stop``, a preemption) with one line and status 143; the
    run folder says ``interrupted`` or ``terminated``."""
    try:
        yield
    except SystemExit as exc:
        if isinstance(exc.__context__, KeyboardInterrupt) and getattr(trainer, "interrupted", False):
            raise KeyboardInterrupt from None
        if type(exc).__name__ == "SIGTERMException":
            from ohlcv.errors import TerminatedError

            last = Path(run_dir) / "checkpoints" / "last.ckpt"
            raise TerminatedError(f"terminated (SIGTERM) at step {trainer.global_step}; " + (
                f"--resume goes on from {last}" if last.is_file() else "no checkpoint was written before it"
            )) from None
        raise


def loss_guard(advice: Callable[[], str]):
    """A Lightning callback that stops on a NaN/inf loss before the optimizer step (no bad weights saved);
    ``advice()`` ends its message (what is left to go back to, what to change), asked when it stops."""
    import lightning as L
    import torch

    from ohlcv.errors import DivergenceError

    class Guard(L.Callback):
        def on_before_backward(self, trainer, pl_module, loss):
            here = bool(torch.isfinite(loss.detach()).all())
            # every process stops at the same step, whichever saw the bad loss (else the others hang in backward)
            everywhere = trainer.strategy.reduce_boolean_decision(here, all=True) if trainer.world_size > 1 else here
            if not everywhere:
                value = loss.detach().float().item() if not here else "NaN or infinite in another process"
                raise DivergenceError(f"the loss became {value} at step {trainer.global_step}; {advice()}")

    return Guard()


# trainer.logger -> (the package it needs, the pip extra that installs it)
LOGGER_PACKAGES = {"mlflow": ("mlflow", "ohlcv[mlflow]"), "wandb": ("wandb", "ohlcv[wandb]")}


def _keep_earlier_metrics(metrics: Path) -> None:
    """Move a resumed run's metrics.csv to the first free ``metrics.N.csv`` beside it (rank zero, which
    writes the logs), before Lightning's CSV logger deletes it."""
    from ohlcv.train.distributed import is_rank_zero

    if not is_rank_zero() or not metrics.is_file():
        return
    number = 1
    while metrics.with_name(f"metrics.{number}.csv").exists():
        number += 1
    os.replace(metrics, metrics.with_name(f"metrics.{number}.csv"))


def make_logger(cfg, run_dir: Path):
    """Lightning's own logger for ``trainer.logger``, writing where docs/pretrain.md says.

    tensorboard: RUN/logs/; csv: RUN/logs/metrics.csv (a resumed run's earlier rows kept in
    RUN/logs/metrics.1.csv, .2, ...: Lightning deletes the file it finds); mlflow: the tracking URI of the profile
    (``trainer.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else a local file store
    ``<output.runs_dir>/mlruns``, experiment ``trainer.experiment`` (default: the profile's name), run
    named after the run folder; wandb: offline (``RUN/wandb/``) unless ``WANDB_MODE`` says otherwise;
    none: no logger.
    """
    import importlib.util

    import lightning as L

    kind = cfg.trainer.logger.value
    loggers = L.pytorch.loggers
    if kind in LOGGER_PACKAGES:
        package, extra = LOGGER_PACKAGES[kind]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"the {kind} logger needs {package}: pip install \"{extra}\" (or {package})",
                              key="trainer.logger")
    experiment = str(cfg.trainer.experiment or cfg.name)
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(save_dir=str(run_dir), name="logs", version="")
    if kind == "csv":
        _keep_earlier_metrics(Path(run_dir) / "logs" / "metrics.csv")
        return loggers.CSVLogger(save_dir=str(run_dir), name="logs", version="")
    if kind == "mlflow":
        uri = str(cfg.trainer.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                  or (Path(str(cfg.output.runs_dir)).expanduser().resolve() / "mlruns").as_uri())
        if uri.startswith("file:") or "://" not in uri:
            # a local file store: MLflow 3 wants a database unless told the file store is meant (the setting
            # stays for this process, so that the logger's later calls find it too)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return loggers.MLFlowLogger(experiment_name=experiment, run_name=run_dir.name, tracking_uri=uri)
    if kind == "wandb":
        offline = os.environ.get("WANDB_MODE", "offline") == "offline"
        return loggers.WandbLogger(project=experiment, name=run_dir.name, save_dir=str(run_dir), offline=offline)
    return False  # none


# Library messages that say nothing to a user of this tool, each matched by where it comes from and its
# words (never all warnings): (logger name, message start) for Lightning's log lines,
# (warning category, message pattern) for warnings. OHLCV_DEBUG=1 shows them all.
# Lightning's rank-zero messages go through whichever of these loggers was set up last
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                      "lightning_utilities.core.rank_zero")
_RANK_ZERO_LINES = (
    "💡 Tip:",  # advertisements for Lightning's cloud services, printed by every Trainer
    # the accelerator inventory of every Trainer; the run's own first lines name the device it uses
    "GPU available:", "TPU available:", "HPU available:", "IPU available:",
    "`Trainer.fit` stopped: `max_steps=",  # the normal end of a run; the summary says how many steps ran
)
QUIET_LOG_LINES = (
    *((name, start) for name in _RANK_ZERO_LOGGERS for start in _RANK_ZERO_LINES),
    # save_checkpoint's default; this tool's checkpoints are its own (see assert_own_run)
    ("lightning.pytorch.trainer.connectors.checkpoint_connector", "`weights_only` was not set"),
)
QUIET_WARNINGS = (
    # Lightning's own pytree helper on torch >= 2.10; nothing a user can change
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # pre-training has no validation split by design (MoiraiPretrain defines a validation_step)
    (UserWarning, r"You defined a `validation_step` but have no `val_dataloader`"),
)


class _DropLines:
    def __init__(self, start: str):
        self.start = start

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(self.start)


_quieted = False


def quiet_libraries() -> None:
    """Silence the known harmless library messages of a training run (once per process; not with OHLCV_DEBUG=1)."""
    global _quieted
    from ohlcv.errors import debug_enabled

    if _quieted or debug_enabled():
        return
    import logging
    import warnings

    for name, start in QUIET_LOG_LINES:
        logging.getLogger(name).addFilter(_DropLines(start))
    for category, pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    _quieted = True


def progress_callback(progress, phase: str):
    """A Lightning callback that reports steps, loss and validation batches to ``progress`` (rank zero only).

    ``progress`` has ``on_start(phase, total, done)``, ``on_step(step, loss)``,
    ``on_validation(done, total)`` and ``on_end()`` (see ``ohlcv.render.training_progress``)."""
    import math

    import lightning as L

    def batches(trainer) -> int | None:
        total = sum(trainer.num_val_batches)
        return int(total) if math.isfinite(total) else None  # an iterable loader: length unknown

    class Progress(L.Callback):
        def on_train_start(self, trainer, pl_module):
            if trainer.is_global_zero:
                progress.on_start(phase, int(trainer.max_steps), int(trainer.global_step))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.is_global_zero:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                progress.on_step(int(trainer.global_step), None if loss is None else float(loss.detach()))

        def on_validation_start(self, trainer, pl_module):
            if trainer.is_global_zero:
                progress.on_validation(0, batches(trainer))

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            if trainer.is_global_zero:
                progress.on_validation(batch_idx + 1, batches(trainer))

        def on_validation_end(self, trainer, pl_module):
            if trainer.is_global_zero:
                progress.on_validation(None, None)

        def on_train_end(self, trainer, pl_module):
            if trainer.is_global_zero:
                progress.on_end()

    return Progress()


def make_trainer(cfg, hardware: Hardware, run_dir: Path, *, max_steps: int, callbacks: list, progress=None,
                 phase: str = "training", **extra):
    """A Lightning Trainer with the profile's devices, precision, clipping and logger (``trainer.logger``).

    Lightning's own progress bar is off (its epoch totals are meaningless for step-based runs);
    ``progress`` (see :func:`progress_callback`) shows steps of ``max_steps`` and the loss instead."""
    import lightning as L

    from ohlcv.moirai.compat import keep_ctrl_c

    quiet_libraries()
    keep_ctrl_c()
    if progress is not None:
        callbacks = [*callbacks, progress_callback(progress, phase)]
    return L.Trainer(
        accelerator=hardware.accelerator,
        devices=hardware.devices,
        num_nodes=int(cfg.trainer.num_nodes),
        strategy=str(cfg.trainer.strategy),
        precision=hardware.precision,
        max_steps=max_steps,
        max_epochs=-1,
        gradient_clip_val=float(cfg.trainer.gradient_clip_val),
        gradient_clip_algorithm="norm",
        logger=make_logger(cfg, run_dir),
        callbacks=callbacks,
        log_every_n_steps=int(cfg.trainer.log_every_n_steps),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=str(run_dir),
        **extra,
    )
