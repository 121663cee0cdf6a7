"""`ohlcv pretrain` on CPU: a tiny model, a few steps, both checkpoint formats, resume, patch 16, pre-flight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ohlcv.config import load_profile
from ohlcv.errors import ConfigError
from ohlcv.lake.sample import generate_sample_lake
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # every test here trains or forecasts with a model

@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return generate_sample_lake(tmp_path_factory.mktemp("pt") / "lake", symbols_per_class=2,
                                asset_classes=["crypto", "fx"], bars=900, seed=2)


def _loaded(lake, root: Path, *extra: str):
    return load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={root / 'ds'}",
                                   f"output.runs_dir={root / 'runs'}", *TINY, *extra])


def test_pretrain_saves_both_formats_and_resumes_to_more_steps(lake, tmp_path, cli):
    from uni2ts.model.moirai import MoiraiModule

    run = tmp_path / "run"
    args = ["pretrain", "--profile", "hourly", "--lake", str(lake.root), "--dataset", str(tmp_path / "ds"),
            "--out", str(run), *TINY]
    first = cli(*args, "pretrain.max_steps=3")
    assert first.exit_code == 0, first.stderr + first.stdout
    assert "building the dataset" in first.stdout  # the dataset did not exist: built first
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "model" / "config.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert (run / "profile.yaml").is_file() and (run / "logs").is_dir()
    summary = json.loads((run / "run.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["tokens_seen"] > 0 and summary["best_loss"] <= summary["final_loss"] + 1e-9
    assert summary["dataset_manifest_hash"] and summary["packages"]["uni2ts"] == "2.0.0"
    assert 16 in summary["patch_sizes_seen"]  # the profile's constraint reaches every GetPatchSize
    module = MoiraiModule.from_pretrained(str(run / "model"))
    assert module.d_model == 64 and tuple(module.patch_sizes) == (16, 32, 64)

    again = cli(*args, "pretrain.max_steps=5", "--resume")
    assert again.exit_code == 0, again.stderr + again.stdout
    resumed = json.loads((run / "run.json").read_text())
    assert resumed["steps"] == 5 and resumed["tokens_seen"] > summary["tokens_seen"]
    refused = cli(*args, "pretrain.max_steps=5")
    assert refused.exit_code == 2 and "--resume" in refused.stderr


def test_hourly_batches_really_use_patch_16(lake, tmp_path):
    import numpy as np

    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.dataset.read import read_manifest
    from ohlcv.train.pretrain import build_model, make_datamodule

    loaded = _loaded(lake, tmp_path)
    IterativeFinancialDatasetBuilder(loaded.cfg).run()
    dataset = tmp_path / "ds"
    model = build_model(loaded.cfg)
    loader = make_datamodule(loaded.cfg, dataset, read_manifest(dataset), model).train_dataloader()
    seen = set()
    for _, batch in zip(range(6), loader):
        sizes = batch["patch_size"][batch["sample_id"] > 0]
        seen.update(int(s) for s in np.unique(sizes.numpy()))
    assert 16 in seen and seen <= {16, 32, 64}


def test_preflight_refuses_an_impossible_budget_before_building_a_model(lake, tmp_path, monkeypatch):
    from ohlcv.train import pretrain

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(pretrain, "build_model", no_model)
    monkeypatch.setattr(pretrain, "count_parameters", no_model)
    loaded = _loaded(lake, tmp_path, "model.max_seq_len=8", "pretrain.allow_crop=false")
    with pytest.raises(ConfigError, match="no patch size fits .* pretrain.allow_crop is off: .*variates"):
        pretrain.run_pretrain(loaded, dataset=tmp_path / "ds", out=tmp_path / "run")
    five = _loaded(lake, tmp_path, "data.prediction_length=48")
    with pytest.raises(ConfigError, match="5 x horizon"):
        pretrain.run_pretrain(five, dataset=tmp_path / "ds", out=tmp_path / "run2")


def test_a_diverging_loss_stops_with_a_clear_message(lake, tmp_path):
    from ohlcv.train.pretrain import DivergenceError, run_pretrain

    loaded = _loaded(lake, tmp_path, "pretrain.max_steps=4", "pretrain.lr=1e30", "pretrain.warmup_steps=1",
                     "trainer.gradient_clip_val=1e30", "pretrain.checkpoint_every_n_steps=50")
    with pytest.raises(DivergenceError, match="the loss became .* at step") as stopped:
        run_pretrain(loaded, dataset=tmp_path / "ds", out=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "diverged"
    # nothing to go back to yet: it says so instead of naming a checkpoint that does not exist
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert "no checkpoint was written before it (one every 50 steps" in str(stopped.value)
    assert "last.ckpt" not in str(stopped.value)


def test_what_a_divergence_leaves_is_named_only_when_it_is_there(tmp_path):
    from ohlcv.train.finetune import after_divergence as finetune_advice
    from ohlcv.train.pretrain import after_divergence

    cfg = load_profile("hourly", ["pretrain.checkpoint_every_n_steps=7"]).cfg
    kept = tmp_path / "checkpoints"
    assert after_divergence(tmp_path, cfg).startswith("no checkpoint was written before it (one every 7 steps")
    assert finetune_advice(tmp_path, "org/model").startswith(
        "no checkpoint was written before it; the starting model (org/model) is unchanged")
    kept.mkdir()
    (kept / "last.ckpt").write_bytes(b"")
    (kept / "best.ckpt").write_bytes(b"")
    assert after_divergence(tmp_path, cfg).startswith(f"the last good checkpoint is {kept / 'last.ckpt'}. Lower")
    assert finetune_advice(tmp_path, "org/model").startswith(
        f"the best checkpoint so far is {kept / 'best.ckpt'} (--resume goes on from {kept / 'last.ckpt'})")


@pytest.mark.parametrize("signal_name, status, said, marked", [
    ("SIGINT", 130, "interrupted", "interrupted"),
    ("SIGTERM", 143, "error: terminated (SIGTERM) at step 3; --resume goes on from", "terminated"),
])
def test_ctrl_c_or_sigterm_during_training_is_said_with_its_status_and_marked_in_the_run(
        lake, tmp_path, cli, monkeypatch, signal_name, status, said, marked):
    import signal

    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ohlcv.train import pretrain

    class Stop(L.Callback):  # what Python (SIGINT) or Lightning's loop (SIGTERM) raises, at a known step
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:  # after the checkpoint of step 2
                raise KeyboardInterrupt if signal_name == "SIGINT" else SIGTERMException

    made = pretrain._callbacks
    monkeypatch.setattr(pretrain, "_callbacks", lambda *a, **k: [*made(*a, **k), Stop()])
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-Cs while it shuts down
    try:
        result = cli("pretrain", "--profile", "hourly", "--lake", str(lake.root), "--dataset", str(tmp_path / "ds"),
                     "--out", str(tmp_path / "run"), *TINY, "pretrain.max_steps=6")
    finally:
        signal.signal(signal.SIGINT, handler)
    # before: a Ctrl-C exited 1 in silence, a SIGTERM 0, and run.json said "failed"
    assert result.exit_code == status and said in result.stderr.splitlines()[-1], result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == marked
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # kept: --resume goes on from it


def test_resume_refuses_folders_this_tool_did_not_write(tmp_path, lake):
    from ohlcv.errors import OhlcvError
    from ohlcv.train.pretrain import run_pretrain

    stranger = tmp_path / "stranger"
    (stranger / "checkpoints").mkdir(parents=True)
    (stranger / "checkpoints" / "last.ckpt").write_bytes(b"not ours")
    with pytest.raises(OhlcvError, match="not a run folder written by ohlcv"):
        run_pretrain(_loaded(lake, tmp_path), dataset=tmp_path / "ds", out=stranger, resume=True)


def test_a_training_process_drops_jaxs_gc_hook_where_a_ctrl_c_would_be_swallowed():
    """uni2ts imports jax, whose garbage-collection hook swallowed Ctrl-Cs ("Exception ignored in
    _xla_gc_callback"): training went on to its last step. Trainers are made without it."""
    from tests.conftest import run_ohlcv_subprocess

    code = ("import gc, uni2ts.model.moirai\n"
            "hooked = lambda: any(getattr(c, '__module__', '') == 'jax._src.lib' for c in gc.callbacks)\n"
            "before = hooked()\n"
            "from ohlcv.config import load_profile\n"
            "from ohlcv.train.runtime import make_trainer, resolve_hardware\n"
            "cfg = load_profile('hourly', ['trainer.accelerator=cpu', 'trainer.logger=none']).cfg\n"
            "import tempfile, pathlib\n"
            "make_trainer(cfg, resolve_hardware(cfg.trainer), pathlib.Path(tempfile.mkdtemp()), max_steps=1, callbacks=[])\n"
            "print(before, hooked())\n")
    result = run_ohlcv_subprocess(python_code=code)
    assert result.returncode == 0 and result.stdout.split() == ["True", "False"], result.stderr[-2000:]
