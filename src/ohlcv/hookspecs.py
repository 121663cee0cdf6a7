"""The hooks an ohlcv plugin can implement.

A plugin is a module (or object) registered under the ``ohlcv`` entry-point
group. Built-in plugins are registered exactly like third-party ones. Every
hook here is documented in ``docs/plugin-hooks.md``; a test keeps the two in
step.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("ohlcv")
hookimpl = pluggy.HookimplMarker("ohlcv")


@hookspec
def ohlcv_register_features(register: Callable[..., None]) -> None:
    """Register feature definitions by calling ``register(Feature(...))`` once per feature."""
