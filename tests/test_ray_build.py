"""``ohlcv build --executor ray``: the same dataset as a local build, on a real local Ray runtime."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from ohlcv.builder.builder import IterativeFinancialDatasetBuilder, Shard
from ohlcv.config import load_profile
from ohlcv.lake.sample import generate_sample_lake

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs Ray: pip install 'ohlcv[ray]'")
# cross-asset features: the reference pass runs as Ray tasks too; batches of two symbols: several tasks
EXTRA = ("features.enabled=[log_return,class_return,relative_strength]", "data.batch_size=2",
         "data.cleaning.min_length=100")


def _build(lake: Path, out: Path, *extra: str, shard: Shard | None = None):
    cfg = load_profile("hourly", [f"data.lake={lake}", f"data.dataset={out}", *EXTRA, *extra]).cfg
    return IterativeFinancialDatasetBuilder(cfg, shard=shard).run()


@pytest.fixture(scope="module")
def two_workers():
    """A real local Ray runtime with two worker CPUs, shared by this module's tests."""
    if not HAS_RAY:
        pytest.skip("needs Ray: pip install 'ohlcv[ray]'")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return generate_sample_lake(tmp_path_factory.mktemp("raylake") / "lake", symbols_per_class=3, bars=700, seed=4).root


def _no_local_work(monkeypatch):
    """The driver's own batch and reference code raises: a Ray build that fell back to it fails."""
    def refuse(*args, **kwargs):
        raise AssertionError("the driver prepared a batch itself instead of a Ray task")

    monkeypatch.setattr(IterativeFinancialDatasetBuilder, "_prepare", refuse)
    monkeypatch.setattr(IterativeFinancialDatasetBuilder, "_reference_pass", refuse)
    monkeypatch.setattr(IterativeFinancialDatasetBuilder, "_shared_reference", refuse)


@needs_ray
def test_ray_build_gives_the_local_build_content_hash(two_workers, lake, tmp_path, monkeypatch):
    local = _build(lake, tmp_path / "local")
    with monkeypatch.context() as patched:
        _no_local_work(patched)
        on_ray = _build(lake, tmp_path / "ray", "build.executor=ray")
    # 9 symbols in batches of 2: 5 reference-pass tasks and 5 batch tasks
    assert on_ray.report["executor"] == {"name": "ray", "ray_tasks": 10}
    assert local.report["executor"] == {"name": "local", "ray_tasks": 0}
    assert on_ray.manifest["content_hash"] == local.manifest["content_hash"]
    assert on_ray.manifest["items"] == local.manifest["items"] and on_ray.manifest["series"] == 9
    assert on_ray.report["totals"] == local.report["totals"]
    assert not (tmp_path / ".ray.building").exists()  # the work folder is gone after the merge
    # the executor is how, not what: a local re-run finds the Ray-built dataset up to date
    assert _build(lake, tmp_path / "ray").up_to_date


@needs_ray
def test_ray_shards_merge_into_the_local_build(two_workers, lake, tmp_path, monkeypatch):
    from ohlcv.builder.merge import merge_shards

    local = _build(lake, tmp_path / "local")
    _no_local_work(monkeypatch)
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # as on a cluster (the runtime running here is used as it is)
    shards = [_build(lake, tmp_path / f"shard{k}", "build.executor=ray", "build.cpus=2", shard=Shard(k, 2))
              for k in (1, 2)]
    assert all(shard.report["executor"]["ray_tasks"] > 0 for shard in shards)
    assert any("build.cpus=2 ignored" in note for note in shards[0].report["notes"]), shards[0].report["notes"]
    parts = [shard.out for shard in shards]
    assert len(list(tmp_path.glob(".ohlcv-reference-*.parquet"))) == 1  # the whole selection's reference, once
    assert merge_shards(parts, tmp_path / "merged")["content_hash"] == local.manifest["content_hash"]


@needs_ray
@pytest.mark.parametrize("reference_kept", [True, False], ids=["reference-cached", "reference-on-ray"])
def test_ray_build_resumes_the_batches_a_local_build_finished(two_workers, lake, tmp_path, monkeypatch,
                                                              reference_kept):
    cfg = load_profile("hourly", [f"data.lake={lake}", f"data.dataset={tmp_path / 'ds'}", *EXTRA]).cfg
    local = IterativeFinancialDatasetBuilder(cfg).run()
    shutil.rmtree(tmp_path / "ds")
    # as if a local build had stopped after its first two batches: their markers and files are kept
    partial = IterativeFinancialDatasetBuilder(cfg)
    partial._merge = lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt())  # stop before the merge
    with pytest.raises(KeyboardInterrupt):
        partial.run()
    for marker in sorted((partial.work / "batches").glob("batch-*.json"))[2:]:
        for written in marker.parent.glob(marker.stem + ".*"):  # the marker and the batch's data files
            written.unlink()
    if not reference_kept:
        shutil.rmtree(partial.work / "reference")
    assert len(list((partial.work / "batches").glob("batch-*"))) == 6  # two batches: marker, rows, stamps
    on_ray = load_profile("hourly", [f"data.lake={lake}", f"data.dataset={tmp_path / 'ds'}", *EXTRA,
                                     "build.executor=ray"]).cfg
    _no_local_work(monkeypatch)
    resumed = IterativeFinancialDatasetBuilder(on_ray).run()
    assert resumed.resumed_batches == 2
    # the three unfinished batches, plus the five reference tasks when the cached reference is gone
    assert resumed.report["executor"]["ray_tasks"] == (3 if reference_kept else 8)
    assert resumed.manifest["content_hash"] == local.manifest["content_hash"]


def test_missing_ray_is_one_line_with_the_install_command(cli, lake, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = cli("build", "--lake", str(lake), "--out", str(tmp_path / "ds"), "--executor", "ray", "-q",
                 "features.enabled=[log_return]", "data.cleaning.min_length=100")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'ohlcv[ray]'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # said before a work folder is made


@needs_ray
def test_a_failed_ray_task_is_one_line_naming_the_batch_and_the_cause(two_workers):
    from ohlcv.builder.cluster import task_result
    from ohlcv.errors import OhlcvError

    def fails():
        raise ModuleNotFoundError("No module named 'ohlcv_plugins'")

    with pytest.raises(OhlcvError) as caught:
        task_result(two_workers, two_workers.remote(fails).remote(), "batch 3")
    message = str(caught.value)
    assert "batch 3" in message and "ModuleNotFoundError" in message and "ohlcv_plugins" in message
    assert "same ohlcv and plugins" in message and "\n" not in message

    def refused():
        raise OhlcvError("s3://bucket/lake/x.parquet: cannot fetch (SlowDown); retry the build")

    with pytest.raises(OhlcvError) as caught:  # an ohlcv error from a task is passed on as it is
        task_result(two_workers, two_workers.remote(refused).remote(), "batch 1")
    assert str(caught.value) == "s3://bucket/lake/x.parquet: cannot fetch (SlowDown); retry the build"
