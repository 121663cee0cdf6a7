"""The built wheel carries the profiles, the built-in plugins and their entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("ohlcv-*.whl")
    return found


def test_wheel_contains_profiles_plugins_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for profile in ("hourly", "daily", "minute", "demo"):
            assert f"ohlcv/profiles/{profile}.yaml" in names
        assert "ohlcv_plugins/returns.py" in names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "[ohlcv]" in text and "returns = ohlcv_plugins.returns" in text
    assert "ohlcv = ohlcv.cli:main" in text


def test_installed_wheel_finds_its_packaged_profiles(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import ohlcv.config.loader as l, sys;"
        "assert l.__file__.startswith(sys.argv[1]), l.__file__;"
        "print(l.packaged_profiles_dir());"
        "print(l.load_profile('hourly').path)"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=elsewhere,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    profiles_dir, hourly = result.stdout.split()
    assert Path(profiles_dir) == target / "ohlcv" / "profiles"
    assert Path(hourly) == target / "ohlcv" / "profiles" / "hourly.yaml"


def _satisfied(requirement: str, extra: str = "") -> str | None:
    """What `pip check` would say about one requirement of the wheel's metadata (None: nothing)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        return None
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return None  # not installed: pip check says so for the packages the stack needs; not this test's point
    return None if req.specifier.contains(installed, prereleases=True) else f"{req} but {installed} is installed"


def test_pip_check_finds_nothing_wrong_with_ohlcvs_own_requirements(wheel):
    """ohlcv's own pins fit the stack this runs on (README install or requirements/modern.txt): pip check is clean."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(name).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    from packaging.requirements import Requirement

    caps = [Requirement(r) for r in requires if r.startswith("pyarrow")]
    assert caps and all(c.marker is None and not c.specifier.contains("26.0.0") for c in caps)  # plain `pip install ohlcv` is safe
    assert [problem for r in requires if (problem := _satisfied(r))] == []


def test_pyarrow_26_beside_numpy_1_is_named_with_its_fix(monkeypatch):
    from importlib import metadata

    from ohlcv.errors import stack_conflict

    versions = {"numpy": "1.26.4", "pyarrow": "26.0.1"}
    monkeypatch.setattr(metadata, "version", lambda name: versions[name])
    assert "pip install 'pyarrow<26'" in stack_conflict()
    versions["numpy"] = "2.4.6"
    assert stack_conflict() is None
