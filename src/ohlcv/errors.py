"""Typed errors. Library code raises these; the CLI turns them into one line.

Every message says what was wrong and, where there is one, what to do about it.
"""

from __future__ import annotations

import os


def stack_conflict() -> str | None:
    """A known broken combination of installed packages, as one line with the fix (None when there is none).

    pyarrow 26 is built for numpy 2 and does not say so in its metadata: beside numpy 1.26 (uni2ts's pin)
    `import datasets` fails. Read from the installed versions only: nothing heavy is imported."""
    from importlib import metadata

    try:
        numpy, pyarrow = metadata.version("numpy"), metadata.version("pyarrow")
    except metadata.PackageNotFoundError:
        return None
    if int(numpy.split(".")[0]) < 2 and int(pyarrow.split(".")[0]) >= 26:
        return (f"pyarrow {pyarrow} needs numpy 2, and this environment has numpy {numpy} (uni2ts's pin): "
                "pip install 'pyarrow<26' or use the modern stack")
    return None


def debug_enabled() -> bool:
    """``OHLCV_DEBUG`` set (and not 0/false/no): tracebacks, and the library messages otherwise silenced."""
    return os.environ.get("OHLCV_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class OhlcvError(Exception):
    """Base class of every error meant for a person rather than a traceback."""

    exit_code = 1
    run_status = "failed"  # what a training run's run.json says when this error stops it


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

    run_status = "diverged"


class TerminatedError(OhlcvError):
    """Training stopped on SIGTERM (``kill``, ``docker stop``, a scheduler's preemption): status 143, as a
    shell reports a process ended by that signal."""

    exit_code = 143
    run_status = "terminated"
