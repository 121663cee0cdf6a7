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
