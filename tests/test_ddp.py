"""Several processes, one run: DDP on the CPU (gloo) behaves as one process would, and finishes cleanly.

Two processes on the CPU take the code path of two GPUs. Every multi-process run is a
subprocess: Lightning's launcher starts the other ranks by re-running the command line,
which must be `ohlcv`, never pytest. Each run must exit 0, leave exactly one exported
model that uni2ts loads, print one summary, and (fine-tuning) take the guardrail decision
that one process takes on the same data and seed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FT, TINY, pretrain_tiny, run_ohlcv_subprocess

TWO_CPUS = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
TIMEOUT = 240


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A built dataset and a 2-step tiny model (one process), shared by every test here.

    3 series x 3 validation windows: 9, which two processes cannot share evenly.
    """
    root = tmp_path_factory.mktemp("ddp")
    return root, pretrain_tiny(root, asset_classes=["fx"], bars=800, seed=6, symbols_per_class=3)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]


def _only_model(root: Path, expected: Path) -> None:
    """Exactly one exported model under ``root`` (no half-written copies), and uni2ts loads it."""
    from uni2ts.model.moirai import MoiraiModule

    exported = sorted(p.parent for p in root.rglob("model.safetensors"))
    assert exported == [expected]
    assert MoiraiModule.from_pretrained(str(expected)).d_model == 64


def _checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.slow
def test_two_processes_pretrain_to_one_model_and_resume_at_the_same_step_on_every_rank(pretrained, tmp_path):
    root, _ = pretrained
    # no --out: the processes Lightning starts must find the run folder that rank zero chose
    args = ["pretrain", "--profile", "hourly", "--dataset", str(root / "ds"), *TINY, *TWO_CPUS,
            f"output.runs_dir={tmp_path / 'runs'}"]
    first = run_ohlcv_subprocess(*args, "pretrain.max_steps=3", timeout=TIMEOUT)
    _ok(first)
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]
    assert len(runs) == 1
    run = runs[0]
    assert (tmp_path / "runs" / "hourly-pretrain-latest").resolve() == run.resolve()  # rank zero alone points it
    assert first.stdout.count("Pre-training finished") == 1 and first.stdout.count("pre-training profile") == 1
    assert (run / "checkpoints" / "last.ckpt").is_file() and _checkpoint_step(run / "checkpoints" / "last.ckpt") == 3
    _only_model(tmp_path, run / "model")
    summary = json.loads((run / "run.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert [(p["rank"], p["first_step"], p["last_step"]) for p in summary["processes"]] == [(0, 0, 3), (1, 0, 3)]

    again = run_ohlcv_subprocess(*args, "pretrain.max_steps=5", "--resume", timeout=TIMEOUT)
    _ok(again)
    assert again.stdout.count("Pre-training finished") == 1
    resumed = json.loads((run / "run.json").read_text())
    assert [(p["rank"], p["first_step"], p["last_step"]) for p in resumed["processes"]] == [(0, 3, 5), (1, 3, 5)]
    assert resumed["steps"] == 5 and resumed["resumed_from_step"] == 3
    assert resumed["tokens_seen"] > summary["tokens_seen"]
    assert _checkpoint_step(run / "checkpoints" / "last.ckpt") == 5
    _only_model(tmp_path, run / "model")


@pytest.mark.slow
def test_torchrun_one_node_two_processes(pretrained, tmp_path):
    root, _ = pretrained
    torchrun = ("-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}")
    result = run_ohlcv_subprocess(
        "pretrain", "--profile", "hourly", "--dataset", str(root / "ds"), "--out", str(tmp_path / "run"), *TINY,
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=1", "trainer.strategy=ddp",
        "pretrain.max_steps=2", launcher=torchrun, timeout=TIMEOUT,
    )
    _ok(result)
    assert result.stdout.count("Pre-training finished") == 1
    _only_model(tmp_path, tmp_path / "run" / "model")
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["steps"] == 2 and [p["rank"] for p in summary["processes"]] == [0, 1]


@pytest.mark.slow
def test_srun_environment_two_tasks_and_rank_one_stays_quiet(pretrained, tmp_path):
    """What `srun --ntasks-per-node=2 ohlcv pretrain ...` gives each task, without SLURM itself."""
    root, _ = pretrained
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "ohlcv-test", "SLURM_NODELIST": "127.0.0.1",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _free_port()}
    command = [sys.executable, "-m", "ohlcv", "pretrain", "--profile", "hourly", "--dataset", str(root / "ds"),
               "--out", str(tmp_path / "run"), *TINY, "trainer.accelerator=cpu", "trainer.devices=2",
               "trainer.num_nodes=1", "trainer.strategy=ddp", "pretrain.max_steps=2"]
    tasks = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                              "COLUMNS": "200"})
        for rank in (0, 1)
    ]
    try:
        outputs = [task.communicate(timeout=TIMEOUT) for task in tasks]
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
    for task, (out, err) in zip(tasks, outputs):
        assert task.returncode == 0, err[-4000:] + out[-2000:]
    assert outputs[0][0].count("Pre-training finished") == 1
    assert "Pre-training finished" not in outputs[1][0] and "pre-training profile" not in outputs[1][0]
    _only_model(tmp_path, tmp_path / "run" / "model")
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [p["rank"] for p in summary["processes"]] == [0, 1]


def _finetune_alone_and_in_two(pretrained, tmp_path, *settings: str):
    """The same fine-tune in one process (in-process) and in two (a subprocess); both summaries and outputs."""
    from ohlcv.config import load_profile
    from ohlcv.train.finetune import run_finetune

    root, start = pretrained
    common = [f"data.dataset={root / 'ds'}", *TINY, *FT, "trainer.accelerator=cpu", *settings]
    alone = run_finetune(load_profile("hourly", common), str(start), dataset=root / "ds", out=tmp_path / "one")
    two = run_ohlcv_subprocess("finetune", "--from", str(start), "--out", str(tmp_path / "two"),
                               "--profile", "hourly", *common, "trainer.devices=2", "trainer.strategy=ddp",
                               timeout=TIMEOUT)
    _ok(two)
    assert two.stdout.count("validation loss: starting model") == 1
    assert two.stdout.count("saved model (Hugging Face format)") == 1
    _only_model(tmp_path / "two", tmp_path / "two" / "model")
    return alone.summary, json.loads((tmp_path / "two" / "run.json").read_text()), two.stdout


@pytest.mark.slow
def test_two_process_finetune_decides_on_the_full_validation_set_like_one_process(pretrained, tmp_path):
    alone, two, out = _finetune_alone_and_in_two(pretrained, tmp_path, "finetune.max_steps=4", "finetune.patience=2")
    assert two["processes"] == 2 and alone["processes"] == 1
    assert two["val_windows"] == alone["val_windows"] and two["val_windows"] % 2 == 1  # uneven shares
    # the starting model's loss over every validation window: the same number, whatever the process count
    assert two["val_loss_before"] == pytest.approx(alone["val_loss_before"], rel=1e-5)
    assert two["improved"] is alone["improved"] is True
    assert "improved the validation loss" in out


@pytest.mark.slow
def test_a_harmful_finetune_falls_back_to_the_starting_model_in_two_processes(pretrained, tmp_path):
    from safetensors.numpy import load_file

    _, start = pretrained
    alone, two, out = _finetune_alone_and_in_two(pretrained, tmp_path, "finetune.max_steps=2", "finetune.lr=0.5",
                                                 "finetune.warmup_steps=0")
    assert two["val_loss_before"] == pytest.approx(alone["val_loss_before"], rel=1e-5)
    assert two["val_loss_after"] > two["val_loss_before"]  # really harmful, not merely unchanged
    assert two["improved"] is alone["improved"] is False
    assert out.count("did not improve on the starting model") == 1
    exported = load_file(tmp_path / "two" / "model" / "model.safetensors")
    original = load_file(start / "model.safetensors")
    assert exported.keys() == original.keys() and all(np.array_equal(exported[k], original[k]) for k in original)


_MARKS = """
import atexit, os
from pathlib import Path

_marks = Path(os.environ["OHLCV_TEST_MARKS"])
atexit.register(lambda: (_marks / f"atexit-{os.getpid()}").write_text("ran"))


class _Teardown:
    def __init__(self, path, write):  # kept on the instance: module globals are None by the time __del__ runs
        self.path, self.write = path, write

    def __del__(self):  # runs while the interpreter finalizes: only if the process left the ordinary way
        self.write(self.path)


_kept = _Teardown(str(_marks / f"teardown-{os.getpid()}"), lambda path, opened=open: opened(path, "w").close())
"""


def _exit_marks(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment that makes every Python started with it leave a mark of how it exited, and where:
    ``atexit-PID`` from its exit work, ``teardown-PID`` only if it finalized the interpreter."""
    hooks, marks = tmp_path / "hooks", tmp_path / "marks"
    hooks.mkdir(), marks.mkdir()
    (hooks / "sitecustomize.py").write_text(_MARKS)  # imported at start-up by every interpreter
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "OHLCV_TEST_MARKS": str(marks)}, marks


def _how_they_left(marks: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in marks.iterdir())


@pytest.mark.slow
def test_json_in_two_processes_is_one_document_from_rank_zero_and_both_ranks_skip_the_teardown(pretrained, tmp_path):
    """The rank Lightning's launcher starts (re-running the command line) leaves as rank zero does: its exit
    work done, the interpreter's teardown skipped (see the test below)."""
    root, _ = pretrained
    env, marks = _exit_marks(tmp_path)
    result = run_ohlcv_subprocess("pretrain", "--profile", "hourly", "--dataset", str(root / "ds"), "--json",
                                  "--out", str(tmp_path / "run"), *TINY, *TWO_CPUS, "pretrain.max_steps=2",
                                  env=env, timeout=TIMEOUT)
    _ok(result)
    summary = json.loads(result.stdout)  # rank one prints nothing: one document, complete after the fast exit
    assert summary["steps"] == 2 and [p["rank"] for p in summary["processes"]] == [0, 1]
    assert _how_they_left(marks) == ["atexit", "atexit"]  # two processes, neither finalized the interpreter


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                    reason='LoRA needs peft: pip install "ohlcv[lora]" (modern stack, torch >= 2.5)')
def test_a_lora_finetune_in_two_processes_resumes_and_exports_one_merged_model(pretrained, tmp_path):
    import torch
    from safetensors.numpy import load_file

    root, start = pretrained
    args = ["finetune", "--from", str(start), "--out", str(tmp_path / "lora"), "--profile", "hourly",
            f"data.dataset={root / 'ds'}", *TINY, *FT, *TWO_CPUS, "finetune.pattern=lora", "finetune.lora.rank=2",
            "finetune.lr=1e-3"]
    first = run_ohlcv_subprocess(*args, "finetune.max_steps=2", timeout=TIMEOUT)
    _ok(first)
    again = run_ohlcv_subprocess(*args, "finetune.max_steps=4", "--resume", "--json", timeout=TIMEOUT)
    _ok(again)
    summary = json.loads(again.stdout)  # one document: rank one prints nothing
    assert summary["steps"] == 4 and summary["processes"] == 2 and "could not find the monitored" not in again.stderr
    assert _checkpoint_step(tmp_path / "lora" / "checkpoints" / "last.ckpt") == 4
    state = torch.load(tmp_path / "lora" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert any("lora_B" in k for k in state["state_dict"])
    _only_model(tmp_path, tmp_path / "lora" / "model")
    assert load_file(tmp_path / "lora" / "model" / "model.safetensors").keys() == load_file(start / "model.safetensors").keys()


class _Trainer:
    """What the samplers read from a Lightning trainer."""

    def __init__(self, rank: int, world: int):
        self.global_rank, self.world_size = rank, world


def test_validation_shares_cover_every_window_once_and_training_shares_reshuffle_each_pass():
    from ohlcv.train.distributed import shard_sampler

    data = list(range(45))
    validation = [shard_sampler(data, _Trainer(rank, 2), shuffle=False, seed=0, pad=False) for rank in (0, 1)]
    shares = [list(sampler) for sampler in validation]
    assert sorted(shares[0] + shares[1]) == data  # 45 windows: 23 + 22, none twice
    assert [len(sampler) for sampler in validation] == [len(share) for share in shares] == [23, 22]
    assert shard_sampler(data, _Trainer(0, 1), shuffle=True, seed=0, pad=True) is None
    samplers = [shard_sampler(data, _Trainer(rank, 2), shuffle=True, seed=0, pad=True) for rank in (0, 1)]
    first = [list(s) for s in samplers]
    second = [list(s) for s in samplers]
    assert set(first[0]) | set(first[1]) == set(data) and first != second
    assert set(second[0]) | set(second[1]) == set(data)


def test_each_rank_draws_its_own_crops_patch_sizes_and_masks_and_one_process_is_left_alone():
    from ohlcv.train.distributed import seed_data_for_rank

    draws = []
    for rank in (0, 1):
        np.random.seed(0)  # what seed_everything leaves in every process
        assert callable(seed_data_for_rank(_Trainer(rank, 2), seed=0))
        draws.append(np.random.rand(4).tolist())
    assert draws[0] != draws[1]
    np.random.seed(0)
    expected = np.random.rand(4).tolist()
    np.random.seed(0)
    assert seed_data_for_rank(_Trainer(0, 1), seed=0) is None and np.random.rand(4).tolist() == expected


def test_every_launcher_names_rank_zero_and_only_rank_zeros_children_take_its_run_folder(monkeypatch, tmp_path):
    from ohlcv.errors import ConfigError
    from ohlcv.train import distributed
    from ohlcv.train.runtime import run_folder

    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK", "NODE_RANK",
                 "GROUP_RANK", distributed.RUN_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    assert distributed.process_rank() == (0, 1) and distributed.rank_label() == ""
    for env, expected in (({"RANK": "3", "WORLD_SIZE": "8"}, (3, 8)),
                          ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (1, 2)),
                          ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, (1, 2)),
                          # Lightning's launcher inside an interactive SLURM allocation: SLURM's ids are the shell's
                          ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "interactive",
                            "LOCAL_RANK": "1", "WORLD_SIZE": "2"}, (1, 2))):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            assert distributed.process_rank() == expected and not distributed.is_rank_zero()
    with monkeypatch.context() as m:  # the first process of another node under Lightning's launcher
        m.setenv("NODE_RANK", "1")
        assert not distributed.is_rank_zero()

    from ohlcv.config import load_profile

    cfg = load_profile("hourly", [f"output.runs_dir={tmp_path}"]).cfg
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(distributed.RUN_DIR_ENV, f"{os.getppid()}:{tmp_path / 'chosen'}")
    assert run_folder(cfg, "pretrain", None, False) == tmp_path / "chosen"
    monkeypatch.setenv(distributed.RUN_DIR_ENV, f"{os.getppid() + 1}:{tmp_path / 'chosen'}")  # inherited, not ours
    with pytest.raises(ConfigError, match="--out"):
        run_folder(cfg, "pretrain", None, False)


def test_multi_device_training_called_from_python_is_refused_instead_of_relaunching_it(pretrained, tmp_path,
                                                                                      monkeypatch):
    from lightning.fabric.strategies.launchers import subprocess_script

    from ohlcv.config import load_profile
    from ohlcv.errors import ConfigError
    from ohlcv.train.pretrain import run_pretrain

    def relaunch(*args, **kwargs):
        raise AssertionError(f"Lightning tried to start {args[0]!r}")

    monkeypatch.setattr(subprocess_script.subprocess, "Popen", relaunch)
    root, _ = pretrained
    loaded = load_profile("hourly", [f"data.dataset={root / 'ds'}", *TINY, *TWO_CPUS, "pretrain.max_steps=1"])
    with pytest.raises(ConfigError, match="through the `ohlcv` command"):
        run_pretrain(loaded, dataset=root / "ds", out=tmp_path / "run")


def test_errors_on_other_ranks_name_the_rank_and_their_summaries_stay_quiet(cli, tmp_path):
    result = cli("pretrain", "--profile", "hourly", f"output.runs_dir={tmp_path}", env={"RANK": "1", "WORLD_SIZE": "2"})
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("rank 1/2: error:") and "--out" in result.stderr


def test_evaluate_says_it_runs_in_one_process_and_other_ranks_leave_at_once(cli, tmp_path):
    noted = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "ev"),
                f"data.dataset={tmp_path / 'ds'}", "trainer.devices=2")
    assert noted.stdout.count("ohlcv evaluate runs in one process on one device") == 1
    # then it goes on, alone (here: to find that there is no such model, which is checked before the dataset)
    assert noted.exit_code == 2 and "none" in noted.stderr
    other = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "ev"),
                f"data.dataset={tmp_path / 'ds'}", env={"RANK": "1", "WORLD_SIZE": "2"})
    assert other.exit_code == 0 and other.stdout == "" and other.stderr == "" and not (tmp_path / "ev").exists()


_LEAVE = r"""
import sys
import torch, torch.distributed as dist

rank, world, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
work = dist.all_reduce(torch.ones(4), async_op=True)  # the group's threads have held tensors
work.wait()
print(f"rank {rank} said this", end="")  # no newline, into a pipe: still in Python's buffer
from ohlcv.cli import main

sys.argv = ["ohlcv", "--version"] if rank == 0 else ["ohlcv", "pretrain", "--profile", "hourly"]
main()
"""


def _leave(tmp_path: Path, world: int, env: dict[str, str], debug: int) -> list[tuple[int, str, str]]:
    """Run the script above as ``world`` ranks of one gloo group (rank ``debug`` with OHLCV_DEBUG=1);
    (status, stdout, stderr) per rank."""
    tasks = [subprocess.Popen([sys.executable, "-c", _LEAVE, str(rank), str(world), str(tmp_path / "store")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, **env, "RANK": str(rank), "WORLD_SIZE": str(world), "COLUMNS": "200",
                                   **({"OHLCV_DEBUG": "1"} if rank == debug else {})})
             for rank in range(world)]
    try:
        said = [task.communicate(timeout=TIMEOUT) for task in tasks]
        return [(task.returncode, out, err) for task, (out, err) in zip(tasks, said)]
    finally:
        for task in tasks:
            task.kill()


def test_a_process_of_a_multi_process_run_leaves_after_its_exit_work_without_the_teardown_that_aborts(tmp_path):
    """Every rank of a live gloo group leaves through ``os._exit`` once its output is flushed and its
    ``atexit`` handlers ran, with the command's status: a success, a one-line error, and an error let
    through with its traceback (OHLCV_DEBUG=1). The interpreter's teardown (where gloo aborted finished
    runs with status -6) never starts."""
    env, marks = _exit_marks(tmp_path)
    results = _leave(tmp_path, 3, env, debug=2)
    (_, out0, err0), (_, out1, err1), (_, out2, err2) = results
    assert [status for status, _, _ in results] == [0, 2, 1], [err for _, _, err in results]
    assert out0.startswith("rank 0 said this") and out0.rstrip().endswith(__import__("ohlcv").__version__), err0
    assert out1 == "rank 1 said this" and err1.startswith("rank 1/3: error:") and "--out" in err1  # quiet prose
    assert out2 == "rank 2 said this" and "Traceback" in err2 and "ConfigError" in err2 and "--out" in err2
    assert _how_they_left(marks) == ["atexit"] * 3  # no teardown


def test_one_process_leaves_the_ordinary_way(tmp_path):
    """A group of one (or none) is left to the ordinary exit: ``leave_process`` returns."""
    code = ("import sys, torch.distributed as dist\n"
            "from ohlcv.train.distributed import leave_process\n"
            "leave_process(0); print('none', end=' ')\n"
            f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)\n"
            "leave_process(0); print('one')\n")
    result = run_ohlcv_subprocess(python_code=code)
    assert result.returncode == 0 and result.stdout == "none one\n", result.stderr


def test_a_sigterm_is_said_once_by_rank_zero_and_every_rank_exits_143(cli, tmp_path, monkeypatch):
    """A scheduler's SIGTERM reaches every process: rank zero says where to resume, the others only leave."""
    from ohlcv.errors import TerminatedError
    from ohlcv.train import pretrain

    def terminated(*args, **kwargs):
        raise TerminatedError("terminated (SIGTERM) at step 3; --resume goes on from RUN/checkpoints/last.ckpt")

    monkeypatch.setattr(pretrain, "run_pretrain", terminated)
    args = ("pretrain", "--profile", "hourly", "--out", str(tmp_path / "run"), f"data.dataset={tmp_path / 'ds'}",
            "data.sample_if_missing=false")
    zero = cli(*args, env={"RANK": "0", "WORLD_SIZE": "2"})
    one = cli(*args, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert zero.exit_code == one.exit_code == 143
    assert zero.stderr.strip() == "error: terminated (SIGTERM) at step 3; --resume goes on from RUN/checkpoints/last.ckpt"
    assert one.stderr == "" and one.stdout == ""
