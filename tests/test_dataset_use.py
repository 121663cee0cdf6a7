"""A dataset the user names is used as built, refused in one line when it cannot serve the command,
and rebuilt only when missing or with --rebuild, then from the lake its manifest records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ohlcv.config import load_profile
from ohlcv.errors import OhlcvError
from ohlcv.lake.sample import generate_sample_lake
from ohlcv.train.pretrain import ensure_dataset
from tests.conftest import FT, TINY


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A dataset D built from lake L (the profile's own data.lake points elsewhere)."""
    root = tmp_path_factory.mktemp("use")
    lake = generate_sample_lake(root / "L", symbols_per_class=2, asset_classes=["equity", "fx"], bars=1000, seed=6)
    loaded = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={root / 'D'}", *TINY])
    manifest = ensure_dataset(loaded, root / "D")
    return root, lake.root, manifest


def _without_lake(root: Path, *extra: str):
    # data.lake is the profile's default (data/lake), which does not exist here
    return load_profile("hourly", [f"data.dataset={root / 'D'}", *TINY, *extra])


def test_the_manifest_records_the_lake_it_was_built_from(built):
    root, lake, manifest = built
    assert manifest["lake"] == str(Path(lake).resolve())
    assert manifest["spec"]["features.enabled"] == ["log_return"]


def test_a_named_dataset_is_used_as_built_without_its_lake(built):
    root, lake, manifest = built
    before = (root / "D" / "manifest.json").stat().st_mtime_ns
    again = ensure_dataset(_without_lake(root, "data.cleaning.min_length=400"), root / "D",
                           on_build=lambda cfg, force: pytest.fail("rebuilt a dataset the user named"))
    assert again["content_hash"] == manifest["content_hash"]
    assert (root / "D" / "manifest.json").stat().st_mtime_ns == before


def test_an_incompatible_dataset_is_refused_in_one_line_with_the_rebuild_command(built):
    root, lake, manifest = built
    with pytest.raises(OhlcvError) as caught:
        ensure_dataset(_without_lake(root, "features.enabled=[log_return,rsi]"), root / "D",
                       on_build=lambda cfg, force: pytest.fail("rebuilt a dataset the user named"))
    message = str(caught.value)
    assert "\n" not in message
    assert "features.enabled" in message and '["log_return","rsi"]' in message
    assert f"ohlcv build --profile hourly --lake {Path(lake).resolve()} --out {root / 'D'} --force" in message
    assert json.loads((root / "D" / "manifest.json").read_text())["content_hash"] == manifest["content_hash"]


def test_rebuild_uses_the_lake_the_manifest_records(built):
    root, lake, manifest = built
    seen = {}

    def build(cfg, force):
        seen.update(lake=str(cfg.data.lake), force=force)
        from ohlcv.builder.builder import IterativeFinancialDatasetBuilder

        IterativeFinancialDatasetBuilder(cfg).run(force=force)

    again = ensure_dataset(_without_lake(root), root / "D", rebuild=True, on_build=build)
    assert seen == {"lake": str(Path(lake).resolve()), "force": True}
    assert again["lake"] == str(Path(lake).resolve())
    assert again["content_hash"] == manifest["content_hash"]


def test_the_cli_refuses_an_incompatible_dataset_in_one_line(built, cli, tmp_path):
    root, lake, manifest = built
    result = cli("pretrain", "--profile", "hourly", "--dataset", str(root / "D"), "--out", str(tmp_path / "run"),
                 *TINY, "features.enabled=[log_return,rsi]")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--force" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_pretrain_with_lake_then_finetune_and_evaluate_with_only_the_dataset(tmp_path, cli):
    lake = generate_sample_lake(tmp_path / "L", symbols_per_class=2, asset_classes=["equity", "fx"], bars=1000, seed=6)
    dataset = tmp_path / "D"
    first = cli("pretrain", "--profile", "hourly", "--lake", str(lake.root), "--dataset", str(dataset),
                "--out", str(tmp_path / "pt"), *TINY, "pretrain.max_steps=2")
    assert first.exit_code == 0, first.stderr + first.stdout
    built = json.loads((dataset / "manifest.json").read_text())
    assert built["lake"] == str(Path(lake.root).resolve())
    tuned = cli("finetune", "--profile", "hourly", "--from", str(tmp_path / "pt" / "model"), "--dataset", str(dataset),
                "--out", str(tmp_path / "ft"), *TINY, *FT, "finetune.max_steps=2")
    assert tuned.exit_code == 0, tuned.stderr + tuned.stdout
    scored = cli("evaluate", "--profile", "hourly", "--model", str(tmp_path / "ft" / "model"), "--dataset", str(dataset),
                 "--out", str(tmp_path / "eval"), *TINY, "evaluate.windows=2", "evaluate.num_samples=8",
                 "evaluate.variates=[close]")
    assert scored.exit_code == 0, scored.stderr + scored.stdout
    after = json.loads((dataset / "manifest.json").read_text())
    assert after["content_hash"] == built["content_hash"] and after["lake"] == built["lake"]
    assert "building the dataset" not in tuned.stdout + scored.stdout
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["dataset_manifest_hash"] == \
        json.loads((tmp_path / "pt" / "run.json").read_text())["dataset_manifest_hash"]
