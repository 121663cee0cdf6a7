"""Bar frequencies: parse the usual spellings into one canonical form.

Lakes spell the same frequency many ways (``1h``, ``h``, ``H``, ``60min``,
``1hour``). :func:`parse_freq` maps them all to a :class:`Frequency`, whose
``canonical`` string is what the project stores and prints. This module is
pure Python on purpose: the budget planner uses it without importing pandas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ohlcv.errors import ConfigError

# unit -> seconds per unit (None: calendar units without a fixed length)
_UNITS: dict[str, int | None] = {
    "s": 1,
    "min": 60,
    "h": 3600,
    "D": 86400,
    "B": None,
    "W": 7 * 86400,
    "M": None,
}

_ALIASES: dict[str, str] = {
    "s": "s", "S": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "min": "min", "T": "min", "m": "min", "mins": "min", "minute": "min", "minutes": "min",
    "h": "h", "H": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "D", "D": "D", "day": "D", "days": "D",
    "B": "B", "b": "B", "bday": "B", "bdays": "B",
    "w": "W", "W": "W", "wk": "W", "week": "W", "weeks": "W",
    "M": "M", "ME": "M", "MS": "M", "mo": "M", "month": "M", "months": "M",
}

# uni2ts's DefaultPatchSizeConstraints, keyed by its offset code (uni2ts 2.0.0,
# src/uni2ts/transform/patch.py). Recorded here as facts so that the budget
# planner can say what uni2ts would allow without importing it.
UNI2TS_DEFAULT_PATCH_RANGES: dict[str, tuple[int, int]] = {
    "S": (64, 128),
    "T": (32, 128),
    "H": (32, 64),
    "D": (16, 32),
    "B": (16, 32),
    "W": (16, 32),
    "M": (8, 32),
}

_UNI2TS_CODE = {"s": "S", "min": "T", "h": "H", "D": "D", "B": "B", "W": "W", "M": "M"}

_PATTERN = re.compile(r"^\s*(\d*)\s*([A-Za-z]+)\s*$")


@dataclass(frozen=True)
class Frequency:
    n: int
    unit: str

    @property
    def canonical(self) -> str:
        """The project's spelling: ``1h``, ``5min``, ``1D``…"""
        return f"{self.n}{self.unit}"

    @property
    def seconds(self) -> int | None:
        per_unit = _UNITS[self.unit]
        return None if per_unit is None else per_unit * self.n

    @property
    def uni2ts_code(self) -> str:
        """The offset code uni2ts's default patch-size constraints are keyed by."""
        # pandas normalises 60min to 1h and 24h to 1D; uni2ts sees the normalised name.
        secs = self.seconds
        if secs is not None and self.unit in ("s", "min", "h"):
            if secs % 86400 == 0:
                return "D"
            if secs % 3600 == 0:
                return "H"
            if secs % 60 == 0:
                return "T"
        return _UNI2TS_CODE[self.unit]

    @property
    def uni2ts_patch_range(self) -> tuple[int, int]:
        return UNI2TS_DEFAULT_PATCH_RANGES[self.uni2ts_code]

    @property
    def season_length(self) -> int:
        """Bars per natural season: a day for intraday bars, a week for daily bars."""
        fixed = {"D": 7, "B": 5, "W": 52, "M": 12}
        if self.unit in fixed:
            return max(1, fixed[self.unit] // self.n)
        return max(1, 86400 // (self.seconds or 86400))

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.canonical


def parse_freq(text: str, *, key: str = "data.freq") -> Frequency:
    """Parse a frequency string; a clear :class:`ConfigError` if it is not one."""
    match = _PATTERN.match(str(text))
    if not match:
        raise ConfigError(
            f"'{text}' is not a bar frequency; use e.g. 1min, 5min, 1h, 1D", key=key
        )
    count, word = match.groups()
    unit = _ALIASES.get(word) or _ALIASES.get(word.lower())
    if unit is None:
        raise ConfigError(
            f"unknown frequency unit '{word}' in '{text}'; use s, min, h, D, B, W or M", key=key
        )
    n = int(count) if count else 1
    if n <= 0:
        raise ConfigError(f"frequency '{text}' must be positive", key=key)
    # normalise to the largest whole unit: 60min -> 1h, 24h -> 1D
    if unit in ("s", "min", "h"):
        secs = n * (_UNITS[unit] or 1)
        for bigger in ("D", "h", "min", "s"):
            size = _UNITS[bigger] or 1
            if secs % size == 0:
                return Frequency(secs // size, bigger)
    return Frequency(n, unit)
