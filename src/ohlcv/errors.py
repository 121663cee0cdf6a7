"""Typed errors. Library code raises these; the CLI turns them into one line.

Every message says what was wrong and, where there is one, what to do about it.
"""

from __future__ import annotations

import os


def debug_enabled() -> bool:
    """``OHLCV_DEBUG`` set (and not 0/false/no): tracebacks, and the library messages otherwise silenced."""
    return os.environ.get("OHLCV_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class OhlcvError(Exception):
    """Base class of every error meant for a person rather than a traceback."""

    exit_code = 1


class ConfigError(OhlcvError):
    """A profile, an override or a command-line value is wrong (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.key = key
        self.source = source
        parts = []
        if source:
            parts.append(source)
        if key:
            parts.append(key)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class PluginError(OhlcvError):
    """A plugin could not be loaded or registered something invalid."""


class DivergenceError(OhlcvError):
    """Training stopped: the loss became NaN or infinite."""
