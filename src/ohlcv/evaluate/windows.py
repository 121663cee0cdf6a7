"""Rolling-origin windows over the test span (the baselines that forecast them are in :mod:`.baselines`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    origins: np.ndarray  # index of the first forecast bar of each window
    context: np.ndarray  # (windows, variates, context_length): bars origin-context .. origin-1
    label: np.ndarray  # (windows, variates, horizon): bars origin .. origin+horizon-1


def rolling_origins(length: int, test_start: int, context: int, horizon: int, windows: int, stride: int) -> np.ndarray:
    """Up to ``windows`` origins from the start of the test span, ``stride`` bars apart.

    Each window forecasts bars [origin, origin + horizon) from the ``context``
    bars before the origin: the context may reach back into the training and
    validation spans, never into the window it forecasts.
    """
    first = max(test_start, context)
    origins = np.arange(first, length - horizon + 1, max(1, stride))
    return origins[:windows]


def cut_windows(values: np.ndarray, origins: np.ndarray, context: int, horizon: int) -> Windows:
    """``values`` (variates, time) cut into context/label pairs at each origin."""
    ctx = np.stack([values[:, o - context : o] for o in origins]) if len(origins) else np.empty((0, values.shape[0], context))
    lab = np.stack([values[:, o : o + horizon] for o in origins]) if len(origins) else np.empty((0, values.shape[0], horizon))
    return Windows(origins=origins, context=ctx, label=lab)
