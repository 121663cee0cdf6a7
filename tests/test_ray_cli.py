"""``ohlcv build --executor ray`` with no Ray runtime running: the CLI starts a local one and stops it.

A module of its own: ``tests/test_ray_build.py`` keeps a runtime running for all its tests, and pytest
stops it at the end of that module.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from ohlcv.lake.sample import generate_sample_lake

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray: pip install 'ohlcv[ray]'")


def test_build_with_ray_starts_a_local_runtime_of_build_cpus_and_stops_it(cli, tmp_path, monkeypatch):
    import ray

    assert not ray.is_initialized(), "a Ray runtime is already running in this process"
    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["crypto"], bars=600, seed=8).root
    started = []
    real_init = ray.init
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: started.append(kwargs) or real_init(*args, **kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    result = cli("build", "--lake", str(lake), "--out", str(tmp_path / "ds"), "--executor", "ray", "-q",
                 "build.cpus=2", "features.enabled=[log_return]", "data.cleaning.min_length=100")
    assert result.exit_code == 0, result.stderr
    assert len(started) == 1 and started[0]["num_cpus"] == 2 and started[0]["address"] is None
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"  # no usage report from a runtime the CLI started
    assert not ray.is_initialized()  # stopped at the end of the build
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert report["executor"] == {"name": "ray", "ray_tasks": 1} and report["built"] == 2
