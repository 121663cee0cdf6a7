"""Several processes, one run: who this process is, what it shares, and what only rank zero does.

Multi-GPU and multi-node runs go through Lightning's strategies (DDP). Processes
come from one of three launchers, and each says who a process is in its own
environment variables:

- torchrun: ``RANK`` / ``WORLD_SIZE`` (with ``LOCAL_RANK``, ``GROUP_RANK``);
- SLURM's ``srun``: ``SLURM_PROCID`` / ``SLURM_NTASKS``;
- Lightning's own launcher (``trainer.devices=N`` on one node): the first
  process runs the command as the user typed it and, at the first
  ``fit``/``validate``, starts the command again once per other device with
  ``LOCAL_RANK``, ``NODE_RANK`` and ``WORLD_SIZE`` set.

Everything before the trainer starts (building the dataset, pre-flight, the
console) therefore needs the rank from the environment; everything after it
asks the trainer. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from ohlcv.errors import ConfigError, OhlcvError

RUN_DIR_ENV = "OHLCV_RUN_DIR"  # "<pid of rank zero>:<run folder>", read by the processes that rank zero starts


def process_rank() -> tuple[int, int]:
    """(global rank, world size) of this process from its launcher's environment; (0, 1) when alone.

    SLURM's variables count as Lightning counts them: for a step of several tasks, unless the
    job is named ``bash`` or ``interactive`` (then Lightning's own launcher starts the processes).
    Under Lightning's launcher on a node other than the first, the exact global rank needs
    ``trainer.num_nodes``; the value returned is then only guaranteed to be non-zero.
    """
    env = os.environ
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return int(env["RANK"]), int(env["WORLD_SIZE"])
        slurm_tasks = int(env.get("SLURM_NTASKS", "1") or 1)
        if slurm_tasks > 1 and "SLURM_PROCID" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
            return int(env["SLURM_PROCID"]), slurm_tasks
        local = int(env.get("LOCAL_RANK", "0") or 0)
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")) or 0)
        world = int(env.get("WORLD_SIZE", "1") or 1)
        if node > 0:  # another node: not rank zero, whatever the exact rank (which needs trainer.num_nodes)
            return node * max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1)) + local, max(world, 2)
    except ValueError:
        return 0, 1
    return local, max(world, local + 1)


def is_rank_zero() -> bool:
    """True in the one process that writes, prints and decides (global rank zero)."""
    return process_rank()[0] == 0


def rank_label() -> str:
    """How this process is named in its error messages: '' for rank zero, else 'rank N: '."""
    rank, world = process_rank()
    return "" if rank == 0 else f"rank {rank}/{world}: "


def share_run_dir(trainer, run_dir: Path) -> None:
    """Tell the processes that Lightning's launcher will start from this one which run folder is theirs.

    They re-run the command line from the start, so a timestamped default folder would
    differ by a second; the variable carries this process's id so that an unrelated
    process that merely inherited it (e.g. under torchrun) ignores it.
    """
    if trainer.world_size > 1 and not trainer.strategy.cluster_environment.creates_processes_externally:
        os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{Path(run_dir).resolve()}"


def shared_run_dir() -> Path | None:
    """The run folder chosen by rank zero, when rank zero started this process; else None."""
    value = os.environ.get(RUN_DIR_ENV, "")
    pid, _, folder = value.partition(":")
    if folder and pid.isdigit() and int(pid) == os.getppid() and not is_rank_zero():
        return Path(folder)
    return None


def check_launch(trainer) -> None:
    """Refuse, before any process starts, a multi-process run that Lightning would start by re-running Python.

    Lightning's launcher starts the other processes by running ``sys.argv`` again, which is
    right for the ``ohlcv`` command and wrong for a notebook, a script or pytest calling
    the library: those must use one device, or be started by torchrun / srun.
    """
    if trainer.world_size <= 1 or trainer.strategy.cluster_environment.creates_processes_externally:
        return
    # only Lightning's script launcher re-runs sys.argv; fork / spawn launchers (ddp_fork, ddp_spawn, a
    # notebook's ddp_notebook) start their processes from this one
    launcher = getattr(trainer.strategy, "launcher", None)
    if type(launcher).__name__ != "_SubprocessScriptLauncher" or os.environ.get("OHLCV_ALLOW_RELAUNCH") == "1":
        return
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None) or Path(sys.argv[0]).name
    if name not in ("ohlcv", "ohlcv.__main__"):
        raise ConfigError(
            f"{trainer.world_size} processes would be started by re-running '{Path(sys.argv[0]).name}'; run "
            "multi-device training through the `ohlcv` command (or torchrun / srun), use trainer.strategy=ddp_spawn, "
            "set trainer.devices=1, or OHLCV_ALLOW_RELAUNCH=1 if this script runs ohlcv's CLI itself",
            key="trainer.devices",
        )


def reduce_sum(trainer, values: list[float], device=None) -> list[float]:
    """Element-wise sum of ``values`` over every process (collective: every rank must call it)."""
    import torch

    if trainer.world_size <= 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device or trainer.strategy.root_device)
    return [float(v) for v in trainer.strategy.reduce(tensor, reduce_op="sum").tolist()]


def gather(trainer, obj: Any) -> list[Any]:
    """``obj`` from every process, in rank order (collective)."""
    import torch.distributed as dist

    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    items: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(items, obj)
    return items


def on_rank_zero(trainer, work: Callable[[], Any], what: str) -> Any:
    """Run ``work`` once, on global rank zero, after every rank got here; every rank gets its result.

    The ranks wait for each other twice (before, so that rank zero sees the others'
    checkpoints and counts; after, so that no process reports success before the run
    folder is complete). When rank zero fails, it re-raises and the others stop with a
    one-line error instead of waiting for a reply that never comes.
    """
    trainer.strategy.barrier(f"ohlcv-before-{what}")
    result, failed = None, None
    if trainer.is_global_zero:
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the others
            failed = exc
    shared = trainer.strategy.broadcast((result, failed is not None), src=0)
    if failed is not None:
        raise failed
    result, rank_zero_failed = shared
    if rank_zero_failed:
        raise OhlcvError(f"rank 0 failed while writing the {what}; see its error")
    return result


def shard_sampler(dataset, trainer, *, shuffle: bool, seed: int, pad: bool):
    """This process's share of ``dataset``, or None when it is alone.

    ``pad=True`` (training): torch's ``DistributedSampler``, equal shares, reshuffled at every
    pass over the data (uni2ts's loader cycles through it without telling Lightning of a new
    epoch). ``pad=False`` (validation): every window exactly once over all ranks, so that the
    reduced loss is the loss over the full validation set; shares may differ by one window.
    """
    from torch.utils.data import DistributedSampler

    world, rank = trainer.world_size, trainer.global_rank
    if world <= 1:
        return None

    class EveryPass(DistributedSampler):
        """A new permutation at every pass, the same on every rank (so the shares stay disjoint)."""

        def __iter__(self):
            indices = super().__iter__()
            self.set_epoch(self.epoch + 1)
            return indices

    class Unpadded(DistributedSampler):
        """Windows rank, rank + world, rank + 2 x world, ...: nothing repeated, nothing dropped."""

        def __iter__(self):
            return iter(range(self.rank, len(self.dataset), self.num_replicas))

        def __len__(self):
            return len(range(self.rank, len(self.dataset), self.num_replicas))

    kind = EveryPass if pad else Unpadded
    return kind(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)


def one_process_note(cfg, command: str) -> str | None:
    """A line saying that ``command`` runs in one process, when the profile or the launcher asks for several.

    ``ohlcv evaluate`` forecasts a few thousand windows; sharding them would save little and
    make the report depend on the launch. Under torchrun / srun the other ranks exit at once.
    """
    devices, nodes = cfg.trainer.devices, int(cfg.trainer.num_nodes)
    try:
        many = len(list(devices)) > 1 if not isinstance(devices, (str, int)) else int(devices) > 1
    except (TypeError, ValueError):  # "auto": whatever the machine has, not a request for several
        many = False
    if not (many or nodes > 1 or process_rank()[1] > 1):
        return None
    return (f"ohlcv {command} runs in one process on one device; trainer.devices={devices} and "
            f"trainer.num_nodes={nodes} apply to pretrain and finetune only")


def seed_data_for_rank(trainer, seed: int):
    """Give this process its own stream of random crops, patch sizes and mask ratios; a worker_init_fn.

    uni2ts's transforms draw from numpy's global generator, which ``seed_everything`` seeds alike
    in every process, and uni2ts's loader is not a torch DataLoader, so Lightning cannot add its
    rank-aware worker seeding: without this, rank r's k-th window gets the same crop, patch size
    and mask ratio on every rank. Alone (one process) nothing changes; returns None.
    """
    if trainer.world_size <= 1:
        return None
    import random

    import numpy as np
    import torch

    mine = (int(seed) * 1_000_003 + int(trainer.global_rank) + 1) % 2**32
    random.seed(mine)
    np.random.seed(mine)

    def worker_init(worker_id: int) -> None:
        theirs = (mine * 1_009 + worker_id + 1) % 2**32
        random.seed(theirs)
        np.random.seed(theirs)
        torch.manual_seed(theirs)

    return worker_init


def _exit_status(code: Any) -> int:
    """The status a ``SystemExit(code)`` would give the shell: None is 0, an int itself, anything else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1


def live_group() -> bool:
    """Whether this process belongs to a live process group of two or more (without importing torch)."""
    dist = sys.modules.get("torch.distributed")
    try:
        return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    except Exception:  # noqa: BLE001 - a half-torn-down group: not live
        return False


def leave_process(code: Any) -> None:
    """Exit a process that took part in a multi-process run the moment its own exit work is done.

    Ended the ordinary way, such a process finalizes the interpreter while the process group's
    native threads are still alive. A few runs in a hundred (gloo on the CPU, torch 2.4 and 2.13
    alike) then ended, after finishing and writing everything, with ``terminate called without an
    active exception`` and status -6: most likely one of those threads needed the GIL (to release
    a tensor's Python object) after finalization began, and CPython (before 3.14) ends such a
    thread where it stands, inside a C++ destructor. Tearing the group down first
    (``destroy_process_group``) hung two processes of four on torch 2.4. So this does what the
    interpreter's exit does before it finalizes (waits for Python's non-daemon threads, runs the
    ``atexit`` handlers: logging, MLflow, temporary folders, and Lightning's own teardown of an
    NCCL group), flushes Python's and C's standard streams, and leaves with ``os._exit``: only the
    interpreter's finalization and the native libraries' destructors are skipped. Everything
    ohlcv writes is complete, and renamed into place, before a command returns.

    Returns (the caller exits the ordinary way) when no process group of two or more is live:
    one process, or a command that never started a group.
    """
    if not live_group():
        return
    import atexit
    import threading

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit would have printed
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more can be said
            pass
    try:  # what native code printed through C's stdio (NCCL_DEBUG, for one): buffered when piped
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - no C library to ask (not POSIX): nothing buffered there
        pass
    os._exit(_exit_status(code))
