"""Run folders: a failed command leaves none of its own behind; `<profile>-<kind>-latest` names the newest run."""

from __future__ import annotations

import json
import os

import pytest

from ohlcv.config import load_profile
from ohlcv.train.runtime import discard_on_failure, latest_run, point_latest


def test_a_failed_command_removes_the_folder_it_created(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with discard_on_failure(run):
            run.mkdir()
            (run / "run.json").write_text(json.dumps({"status": "running"}))
            raise RuntimeError("boom")
    assert not run.exists()


def test_a_failed_run_with_a_checkpoint_is_kept_and_marked(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with discard_on_failure(run):
            (run / "checkpoints").mkdir(parents=True)
            (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
            (run / "run.json").write_text(json.dumps({"status": "running"}))
            raise RuntimeError("boom")
    summary = json.loads((run / "run.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: boom"


def test_a_folder_that_existed_before_is_never_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RuntimeError):
        with discard_on_failure(run):
            raise RuntimeError("boom")
    assert run.is_dir()


def test_the_cli_leaves_no_run_folder_when_finetuning_cannot_start(cli, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = cli("finetune", "--profile", "hourly", "--from", str(empty), "--out", str(tmp_path / "ft"),
                 f"data.lake={tmp_path / 'lake'}", "--dataset", str(tmp_path / "missing"))
    assert result.exit_code != 0
    assert not (tmp_path / "ft").exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_latest_points_at_the_newest_run_and_moves(tmp_path):
    cfg = load_profile("demo", [f"output.runs_dir={tmp_path / 'runs'}"]).cfg
    first, second = tmp_path / "runs" / "demo-pretrain-20260101-000000", tmp_path / "runs" / "demo-pretrain-20260102-000000"
    for run in (first, second):
        (run / "model").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    link = point_latest(cfg, "pretrain", first)
    assert link == tmp_path / "runs" / "demo-pretrain-latest" and link.resolve() == first.resolve()
    point_latest(cfg, "pretrain", second)
    assert (tmp_path / "runs" / "demo-pretrain-latest" / "model").resolve() == (second / "model").resolve()
    assert not os.path.isabs(os.readlink(link))  # relative: the runs folder can move
    assert latest_run(cfg, "pretrain") == second  # the link itself is not a run
