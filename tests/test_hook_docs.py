"""docs/plugin-hooks.md documents every hook, with its exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from ohlcv import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugin-hooks.md"


def _hookspecs():
    return {
        name: fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("ohlcv_") and hasattr(fn, "ohlcv_spec")
    }


def test_every_hook_is_documented_with_its_signature():
    text = DOC.read_text()
    specs = _hookspecs()
    assert specs, "no hookspecs found"
    for name, fn in specs.items():
        params = ", ".join(inspect.signature(fn).parameters)
        heading = f"### `{name}({params})`"
        assert heading in text, f"{DOC.name} lacks the heading {heading!r}"
        assert fn.__doc__, f"{name} has no docstring"


def test_no_documented_hook_is_missing_from_the_specs():
    documented = set(re.findall(r"^### `(ohlcv_\w+)\(", DOC.read_text(), flags=re.M))
    assert documented == set(_hookspecs())
