"""Trading calendars: which bars a venue produces.

A calendar answers one question for the builder: between two instants, at a
bar frequency, which bar labels should exist? Closed-market time (nights,
weekends, holidays) has no label, so it is never a gap; a label with no bar
is a real hole in the data.

Three kinds:

- ``continuous``: every bar of the clock (crypto, 24/7).
- ``weekdays``: the FX week, closed from Friday at ``data.weekdays.close`` to
  Sunday at the same time, in ``data.weekdays.timezone`` (17:00 New York by
  default: the convention of the FX market), optionally closed on a few
  fixed dates (``data.weekdays.holidays``, e.g. ``12-25``).
- an exchange code (``XNYS``, ``XLON``, ``XTKS``, ``CMES``, …): sessions,
  holidays and early closes from the `exchange-calendars` library. Daily bars
  are the sessions (labelled at midnight UTC of the session date); intraday
  bars start at each session's open and step by the bar length until the
  close (the last one may be shorter), as ``trading_index`` lays them out.

Bar labels are integer microseconds since the epoch (UTC) in a sorted numpy
array; ``bar_end`` gives the end of each bar, so that a lake timestamp can be
aligned to the bar that contains it.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ohlcv.errors import ConfigError
from ohlcv.freq import Frequency

if TYPE_CHECKING:  # numpy is imported by the functions that lay out grids, not at start-up
    import numpy as np

CONTINUOUS = "continuous"
WEEKDAYS = "weekdays"
US_PER_DAY = 86_400_000_000
US_PER_MIN = 60_000_000


@dataclass(frozen=True)
class WeekdaysRule:
    timezone: str = "America/New_York"
    close: str = "17:00"  # Friday's close and Sunday's open, local time
    holidays: tuple[str, ...] = ()  # MM-DD dates closed every year (the whole local day)

    @property
    def close_minutes(self) -> int:
        hours, _, minutes = self.close.partition(":")
        return int(hours) * 60 + int(minutes or 0)


@dataclass(frozen=True)
class Calendar:
    """A venue's trading calendar (see the module docstring for the kinds)."""

    name: str
    weekdays: WeekdaysRule = field(default_factory=WeekdaysRule)
    # intraday exchange bars: "open" starts them at each session's open (9:30, 10:30, ...), "clock" on the
    # clock (9:00, 10:00, ...: every clock bar that overlaps a session); vendors use both
    alignment: str = "open"

    @property
    def continuous(self) -> bool:
        return self.name == CONTINUOUS

    @property
    def exchange(self) -> bool:
        return self.name not in (CONTINUOUS, WEEKDAYS)

    def describe(self) -> str:
        if self.name == WEEKDAYS:
            closed = f", closed {', '.join(self.weekdays.holidays)}" if self.weekdays.holidays else ""
            return f"weekdays (Friday {self.weekdays.close} to Sunday {self.weekdays.close} {self.weekdays.timezone}{closed})"
        return self.name + (" (clock-aligned bars)" if self.exchange and self.alignment == "clock" else "")

    def grid(self, start_us: int, end_us: int, freq: Frequency) -> tuple[np.ndarray, np.ndarray]:
        """(labels, ends): every bar whose interval [label, end) overlaps [start_us, end_us], sorted.

        int64 µs since the epoch, UTC. An exchange's last bar of a session ends at the close.
        """
        import numpy as np

        if end_us < start_us:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        step = step_us(freq)
        if self.continuous:
            first = (start_us // step) * step
            labels = np.arange(first, end_us + 1, step, dtype=np.int64)
            return labels, labels + step
        # the venue's grid is laid out once per whole-year span and sliced: a build asks for the same
        # years symbol after symbol (measured: laying out NYSE hours per symbol made a build 1.8x slower)
        try:
            with _LAYING_OUT:  # the build's worker threads wait for the first to lay a grid out, not all three
                labels, ends = _year_grid(self, freq, _year(start_us - US_PER_DAY), _year(end_us + US_PER_DAY))
        except ConfigError as exc:  # name the span the build asked for, not the widened one
            if "cannot cover" not in str(exc):
                raise
            cause = str(exc).split(" (", 1)[1] if " (" in str(exc) else ""
            raise ConfigError(f"calendar '{self.name}' cannot cover {_day(start_us)} to {_day(end_us)}"
                              + (f" ({cause}" if cause else ""), key="data.calendars") from None
        lo = int(np.searchsorted(ends, start_us, side="right"))
        hi = int(np.searchsorted(labels, end_us, side="right"))
        return labels[lo:hi], ends[lo:hi]

    def labels(self, start_us: int, end_us: int, freq: Frequency) -> np.ndarray:
        return self.grid(start_us, end_us, freq)[0]


def _year(us: int) -> int:
    import numpy as np

    return int(np.datetime64(int(us), "us").astype("datetime64[Y]").astype(np.int64)) + 1970


_LAYING_OUT = threading.Lock()


@functools.lru_cache(maxsize=64)
def _year_grid(calendar: "Calendar", freq: Frequency, first_year: int, last_year: int):
    """Labels and ends of every bar of ``calendar`` from ``first_year``-01-01 to ``last_year``-12-31."""
    import numpy as np

    start = int(np.datetime64(f"{first_year:04d}-01-01", "us").astype(np.int64))
    end = int(np.datetime64(f"{last_year + 1:04d}-01-01", "us").astype(np.int64)) - 1
    step = step_us(freq)
    if calendar.exchange:
        labels, ends = _exchange_grid(calendar.name, start, end, freq, clock=calendar.alignment == "clock")
        keep = (ends > start) & (labels <= end)
        return labels[keep], ends[keep]
    first = (start // step) * step
    labels = np.arange(first, end + 1, step, dtype=np.int64)
    labels = labels[_weekdays_open(labels, step, calendar.weekdays)]
    return labels, labels + step


def step_us(freq: Frequency) -> int:
    """The length of one bar in µs (a day for D/B bars)."""
    if freq.unit in ("D", "B"):
        return freq.n * US_PER_DAY
    if freq.seconds is None:
        raise ConfigError(f"calendars support bars of seconds, minutes, hours or days, not '{freq.canonical}'",
                          key="data.freq")
    return freq.seconds * 1_000_000


def _weekdays_open(grid: np.ndarray, step: int, rule: WeekdaysRule) -> np.ndarray:
    """Which bars of ``grid`` overlap the open FX week (and are not on a listed holiday)."""
    import numpy as np

    import pandas as pd

    if step >= US_PER_DAY:  # daily bars: Monday to Friday (the session that ends on that day)
        days = pd.DatetimeIndex(grid.astype("datetime64[us]"))
        open_ = np.asarray(days.dayofweek < 5)
        if rule.holidays:
            open_ &= ~np.isin(np.asarray(days.strftime("%m-%d")), list(rule.holidays))
        return open_

    def is_open(instants: np.ndarray) -> np.ndarray:
        local = pd.DatetimeIndex(instants.astype("datetime64[us]")).tz_localize("UTC").tz_convert(rule.timezone)
        minute_of_week = (np.asarray(local.dayofweek) * 1440 + np.asarray(local.hour) * 60 + np.asarray(local.minute))
        roll = rule.close_minutes
        closed = (minute_of_week >= 4 * 1440 + roll) & (minute_of_week < 6 * 1440 + roll)
        if rule.holidays:
            closed |= np.isin(np.asarray(local.strftime("%m-%d")), list(rule.holidays))
        return ~closed

    return is_open(grid) | is_open(grid + step - 1)


@functools.lru_cache(maxsize=16)
def exchange_calendar(name: str, first_day: str, last_day: str):
    """An `exchange_calendars` calendar covering [first_day, last_day] (cached), or a clear error."""
    xcals = exchange_module(name)
    try:
        return xcals.get_calendar(name, start=first_day, end=last_day)
    except Exception as exc:  # noqa: BLE001 - e.g. DateOutOfBounds for years the library does not cover
        raise ConfigError(
            f"calendar '{name}' cannot cover {first_day} to {last_day} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}); narrow data.start/data.end or upgrade exchange-calendars",
            key="data.calendars",
        ) from None


def exchange_module(name: str):
    """The `exchange_calendars` module if it knows the calendar ``name``, else a one-line error with
    names it does know (without laying out any calendar: that costs a few hundred ms each)."""
    try:
        import exchange_calendars as xcals
    except ImportError:  # pragma: no cover - a dependency of ohlcv
        raise ConfigError(f"calendar '{name}' needs the exchange-calendars package: pip install exchange-calendars",
                          key="data.calendars") from None
    names = set(xcals.get_calendar_names(include_aliases=True))
    if name not in names:
        raise ConfigError(
            f"unknown calendar '{name}'; use continuous, weekdays or an exchange code such as "
            f"{', '.join(n for n in ('XNYS', 'XNAS', 'XLON', 'XTKS', 'XHKG', 'XFRA', 'CMES') if n in names)} "
            f"({len(names)} known: `python -c \"import exchange_calendars; print(exchange_calendars.get_calendar_names())\"`)",
            key="data.calendars",
        )
    return xcals


def _day(us: int) -> str:
    import numpy as np

    return str(np.datetime64(int(us), "us").astype("datetime64[D]"))


def _exchange_grid(name: str, start_us: int, end_us: int, freq: Frequency, *, clock: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    import pandas as pd

    # one calendar per whole-year span, so that nearby requests share the cached calendar
    first_year, last_year = _day(start_us - US_PER_DAY)[:4], _day(end_us + US_PER_DAY)[:4]
    calendar = exchange_calendar(name, f"{first_year}-01-01", f"{last_year}-12-31")
    lo, hi = _day(start_us - US_PER_DAY), _day(end_us + US_PER_DAY)
    lo = max(pd.Timestamp(lo), calendar.first_session)
    hi = min(pd.Timestamp(hi), calendar.last_session)
    if hi < lo:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    check_exchange_freq(name, freq)
    step = step_us(freq)
    if freq.unit in ("D", "B"):
        days = _as_us(calendar.sessions_in_range(lo, hi))
        return days, days + step
    if clock:  # every clock-aligned bar that overlaps a session: from the open rounded down to the close
        opens, closes = _as_us(calendar.opens.loc[lo:hi]), _as_us(calendar.closes.loc[lo:hi])
        first = opens // step * step
        counts = -(-(closes - first) // step)
        session = np.repeat(np.arange(len(first)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        labels = first[session] + offsets * step
        return labels, labels + step
    period = pd.Timedelta(seconds=int(freq.seconds or 0))
    labels = _as_us(calendar.trading_index(lo, hi, period, intervals=False, closed="left", force_close=False,
                                           force_break_close=False, curtail_overlaps=True))
    # each bar ends one step later, or at its session's close if that comes first
    closes = _as_us(calendar.closes.loc[lo:hi])
    session_close = closes[np.minimum(np.searchsorted(closes, labels, side="right"), len(closes) - 1)]
    return labels, np.minimum(labels + step, session_close)


def check_exchange_freq(name: str, freq: Frequency) -> None:
    """A ConfigError for bars an exchange calendar cannot lay out: several sessions per bar."""
    if freq.unit in ("D", "B") and freq.n > 1:  # "every other session": no anchor a lake and a calendar agree on
        raise ConfigError(f"an exchange calendar lays out one session per daily bar; '{freq.canonical}' bars "
                          f"are not supported on {name} (use 1D, or the continuous calendar)", key="data.freq")
    if freq.unit not in ("D", "B") and (freq.seconds is None or freq.seconds > US_PER_DAY // 1_000_000):
        raise ConfigError(f"an exchange calendar lays out sessions and the bars within them; '{freq.canonical}' bars "
                          f"are not supported on {name}: map this asset class to the continuous calendar in "
                          f"data.calendars, or build daily bars", key="data.freq")


def _as_us(values) -> np.ndarray:
    """A pandas index or series of instants (naive = UTC, or tz-aware) as int64 µs since the epoch."""
    import numpy as np

    import pandas as pd

    index = pd.DatetimeIndex(values)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return np.asarray(index.values.astype("datetime64[us]").astype(np.int64))


def resolve(mapping, asset_class: str, weekdays: WeekdaysRule | None = None, alignment: str = "open") -> Calendar:
    """The calendar of an asset class from ``data.calendars`` (``default`` for classes it does not name)."""
    entries = dict(mapping or {})
    name = entries.get(asset_class, entries.get("default", CONTINUOUS))
    name = str(name).strip()
    lowered = name.lower()
    if lowered in (CONTINUOUS, "24/7", "always"):
        return Calendar(CONTINUOUS)
    if lowered in (WEEKDAYS, "24/5", "fx"):
        return Calendar(WEEKDAYS, weekdays or WeekdaysRule())
    # exchange codes are upper case (XNYS); aliases may not be (us_futures): kept as written unless upper
    return Calendar(name.upper() if name.upper() == name or name.upper().startswith("X") else name,
                    weekdays or WeekdaysRule(), alignment)


def weekdays_rule(cfg_weekdays) -> WeekdaysRule:
    """The profile's ``data.weekdays`` section as a rule, validated."""
    import zoneinfo

    tz = str(cfg_weekdays.timezone)
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone '{tz}' (use an IANA name such as America/New_York)",
                          key="data.weekdays.timezone") from None
    close = str(cfg_weekdays.close).strip()
    if close.isdigit():  # YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080: turn it back
        close = f"{int(close) // 60:02d}:{int(close) % 60:02d}"
    hours, _, minutes = close.partition(":")
    if not (hours.isdigit() and (minutes.isdigit() or not minutes) and int(hours) < 24 and int(minutes or 0) < 60):
        raise ConfigError(f"'{close}' is not a time of day HH:MM (00:00 to 23:59)", key="data.weekdays.close")
    holidays = tuple(str(h) for h in cfg_weekdays.holidays)
    for day in holidays:
        month, _, dom = day.partition("-")
        if not (month.isdigit() and dom.isdigit() and 1 <= int(month) <= 12 and 1 <= int(dom) <= 31):
            raise ConfigError(f"'{day}' is not a month-day MM-DD", key="data.weekdays.holidays")
    return WeekdaysRule(timezone=tz, close=close, holidays=holidays)
