"""``trainer.compile``: pre-training with the MOIRAI module compiled by torch.compile, on the CPU."""

from __future__ import annotations

import json

import pytest

from ohlcv.config import load_profile
from ohlcv.lake.sample import generate_sample_lake
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # compiles and trains a model

# Dynamo traces the module (its graph breaks and guards) as for any backend; the eager backend then runs
# the captured graphs without code generation: with inductor this test took 4.5 minutes on two cores,
# with eager about 1.5 (Dynamo's tracing of MOIRAI dominates) on both stacks (torch 2.4 and 2.13); one
# patch size keeps recompiles few
BACKEND = "eager"


def test_compiled_module_trains_and_exports_under_its_own_names(tmp_path):
    from safetensors import safe_open

    from ohlcv.train.pretrain import run_pretrain

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=900, seed=3)
    loaded = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}",
                                     f"output.runs_dir={tmp_path / 'runs'}", *TINY, "pretrain.max_steps=2",
                                     "trainer.compile=true", f"trainer.compile_backend={BACKEND}",
                                     "model.patch_sizes=[32]"])
    run = run_pretrain(loaded, dataset=tmp_path / "ds", out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert summary["final_loss"] == summary["final_loss"]  # a number, not NaN
    with safe_open(str(run.model_dir / "model.safetensors"), "pt") as exported:
        names = list(exported.keys())
    assert names and not any("_orig_mod" in name for name in names)  # loads as an ordinary MoiraiModule


def test_compile_is_off_by_default():
    assert load_profile("hourly").cfg.trainer.compile is False
