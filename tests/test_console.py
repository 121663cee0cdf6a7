"""What a training run prints: none of the libraries' known noise, a progress display in steps."""

from __future__ import annotations

import re

import pytest

from tests.conftest import TINY, run_ohlcv_subprocess

NOISE = ("💡 Tip", "litlogger", "LeafSpec", "but have no `val_dataloader`", "`weights_only` was not set",
         "GPU available", "`Trainer.fit` stopped")

EMIT = """
import logging, warnings
from ohlcv.train.runtime import quiet_libraries
logging.basicConfig(level=logging.INFO, format="%(message)s")
quiet_libraries()
logging.getLogger("lightning.pytorch.utilities.rank_zero").info("💡 Tip: try litlogger")
logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False, used: False")
logging.getLogger("lightning.pytorch.utilities.rank_zero").info("`Trainer.fit` stopped: `max_steps=2` reached.")
logging.getLogger("lightning.pytorch.utilities.rank_zero").info("Restoring states from the checkpoint path")
logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").info("`weights_only` was not set, defaulting to `False`.")
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use something else", FutureWarning)
warnings.warn("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.", UserWarning)
warnings.warn("another library's warning", UserWarning)
"""


def test_the_known_library_messages_are_silenced_and_nothing_else():
    result = run_ohlcv_subprocess(python_code=EMIT)
    assert result.returncode == 0, result.stderr
    assert not [word for word in NOISE if word in result.stderr + result.stdout], result.stderr
    assert "Restoring states" in result.stderr and "another library's warning" in result.stderr


def test_debug_shows_the_library_messages():
    result = run_ohlcv_subprocess(python_code=EMIT, env={"OHLCV_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert all(word in result.stderr for word in NOISE), result.stderr


@pytest.mark.slow
def test_a_tiny_pretraining_prints_no_library_noise_and_no_negative_totals(tmp_path):
    from ohlcv.lake.sample import generate_sample_lake

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto", "fx"], bars=900, seed=2)
    result = run_ohlcv_subprocess("pretrain", "--profile", "hourly", "--lake", str(lake.root), "--dataset",
                                  str(tmp_path / "ds"), "--out", str(tmp_path / "run"), *TINY, "pretrain.max_steps=2",
                                  env={"TTY_COMPATIBLE": "1"}, timeout=300)  # Rich draws as on a terminal
    assert result.returncode == 0, result.stderr + result.stdout
    printed = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout + result.stderr)  # the terminal's control codes
    assert not [word for word in NOISE if word in printed], printed
    totals = {int(total) for total in re.findall(r"\b\d+/(-?\d+) steps", printed)}
    assert totals == {2}, printed  # the progress display was drawn, and its total is max_steps, never negative
    assert "/-" not in printed and "Epoch" not in printed
    assert "loss, last step" in result.stdout


PRINTS = """
from ohlcv.moirai.models import without_known_prints
with without_known_prints():
    print("Loading weights from local directory")
    print("a line of another library")
"""


@pytest.mark.parametrize("debug", ["", "1"])
def test_the_model_loading_announcement_is_silenced_unless_debugging(debug):
    result = run_ohlcv_subprocess(python_code=PRINTS, env={"OHLCV_DEBUG": debug})
    assert result.returncode == 0, result.stderr
    assert ("Loading weights from local directory" in result.stdout) == bool(debug)
    assert "a line of another library" in result.stdout


@pytest.mark.parametrize("columns", [None, "120"])
def test_prose_wraps_at_word_boundaries_to_80_columns_in_a_log_or_to_columns(columns, monkeypatch, capsys):
    """Piped, a long note is wrapped between words at 80 columns (or COLUMNS); an error stays one line."""
    from ohlcv.cli import _console

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    words = [f"word{i:03d}" for i in range(60)]
    _console().print("note: " + " ".join(words))
    _console(stderr=True).print("error: " + " ".join(words))
    out, err = capsys.readouterr()
    width = int(columns or 80)
    assert all(len(line) <= width for line in out.splitlines()) and len(out.splitlines()) > 1
    assert out.split() == ["note:", *words]  # no word cut in two
    assert len(err.strip().splitlines()) == 1
