from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``ohlcv ARGS`` in-process through the real entry point (error handling included)."""
    from ohlcv.cli import main

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("COLUMNS", "200")
        capsys.readouterr()
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def run_ohlcv_subprocess(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                         python_code: str | None = None, launcher: tuple[str, ...] = (), timeout: float = 120):
    """Run the CLI in a fresh interpreter (import checks, entry points, and multi-process runs, which
    re-run their own command line and so must never run inside pytest).

    ``launcher``: interpreter arguments before ``-m ohlcv``, e.g. ``("-m", "torch.distributed.run", ...)``.
    """
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    command = [sys.executable, "-c", python_code] if python_code else [sys.executable, *launcher, "-m", "ohlcv", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


# Shared by the tests that train: a tiny MOIRAI (2 layers, d_model 64) for a few steps on small batches.
TINY = [
    "model.size=custom", "model.d_model=64", "model.num_layers=2",
    "pretrain.batch_size=4", "pretrain.num_batches_per_epoch=3", "pretrain.warmup_steps=1",
    "pretrain.checkpoint_every_n_steps=2", "pretrain.num_workers=0", "trainer.log_every_n_steps=1",
    "features.enabled=[log_return]", "features.params.log_return.horizons=[1]",
]


def pretrain_tiny(root: Path, *, asset_classes, bars: int, seed: int, symbols_per_class: int = 2) -> Path:
    """A sample lake, its dataset and a 2-step tiny pre-training under ``root``; returns the model folder."""
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake
    from ohlcv.train.pretrain import run_pretrain

    sample = generate_sample_lake(root / "lake", symbols_per_class=symbols_per_class, asset_classes=asset_classes,
                                  bars=bars, seed=seed)
    loaded = load_profile("hourly", [f"data.lake={sample.root}", f"data.dataset={root / 'ds'}",
                                     f"output.runs_dir={root / 'runs'}", *TINY, "pretrain.max_steps=2"])
    return run_pretrain(loaded, dataset=root / "ds", out=root / "pt").model_dir


FT = ["finetune.batch_size=4", "finetune.val_every_n_steps=2", "finetune.warmup_steps=1", "finetune.patch_size=32",
      "finetune.num_samples=8"]
