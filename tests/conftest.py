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
