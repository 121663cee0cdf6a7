"""Tables stay readable at 80 columns: numbers are never cut; columns that do not fit go to a second table."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from ohlcv.render import print_fitted_table, render_evaluation


def _console(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, highlight=False, soft_wrap=True, color_system=None), out


def test_a_wide_table_is_split_and_no_cell_is_cut():
    columns = ["forecaster", *(f"metric number {i}" for i in range(9))]
    rows = [["zero_shot", *(f"{1234.56789 * (i + 1):.6f}" for i in range(9))],
            ["random_walk", *(f"{0.000123 * (i + 1):.6f}" for i in range(9))]]
    console, out = _console(80)
    print_fitted_table(console, "a title", columns, rows)
    printed = out.getvalue()
    assert "…" not in printed and "(continued)" in printed
    assert all(len(line) <= 80 for line in printed.splitlines())
    assert all(cell in printed for row in rows for cell in row)
    assert printed.count("zero_shot") > 1  # the row's name is repeated in every part


def test_a_narrow_table_stays_one_table():
    console, out = _console(80)
    print_fitted_table(console, "t", ["a", "b"], [["x", "1.000"]])
    assert "(continued)" not in out.getvalue()


def test_evaluation_at_80_columns_prints_every_number_whole():
    metrics = {"crps": 0.012345, "mase": 1.234, "msis": 12.345, "coverage_50": 0.5, "coverage_80": 0.8,
               "coverage_95": 0.95, "directional_accuracy": 0.51, "direction_window_accuracy": 0.52,
               "direction_p": 0.34}
    dm = {"crps": {"p_value": 0.0123}, "abs_error": {"p_value": 0.456}}
    result = SimpleNamespace(
        variates={"close": {"yardstick": "random_walk", "windows_removed": 0, "kind": "price", "units": "log price",
                            "windows": 4}},
        aggregate={"model": {"close": metrics}, "random_walk": {"close": metrics}},
        relative={"model": {"close": {"crps": 0.987, "mae": 1.012}}, "random_walk": {"close": {"crps": 1.0, "mae": 1.0}}},
        significance={"model": {"close": {"random_walk": dm}}},
        models=["model"], notes=[], plots=[], out="runs/x",
        ic={"model": {"close": {"ic": {"mean": 0.206, "t": float("nan")}, "rank_ic": {"mean": 0.1, "t": 1.5},
                                "origins": 1}}},
        model_info={"model": {"family": "Moirai 1.x", "size": "small", "parameters": 13_827_528, "patch_size": 32,
                              "output": "samples", "source": "hub Salesforce/moirai-1.1-R-small"}},
        verdict=lambda variate, model: "verdict", flags=lambda: [],
    )
    console, out = _console(80)
    render_evaluation(console, result)
    printed = out.getvalue()
    assert "…" not in printed
    assert all(len(line) <= 80 for line in printed.splitlines())
    assert "Moirai 1.x, small, 13.8M parameters" in printed  # which model, before its numbers
    for number in ("0.01235", "1.234", "12.345", "0.50/0.80/0.95", "0.51/0.52 (0.340)", "0.987", "1.012", "0.012",
                   "0.456"):
        assert number in printed, number
    assert "IC 0.206, rank IC 0.100 (t 1.50) over 1 origins" in printed and "nan" not in printed  # no undefined t


def test_count_progress_draws_items_done_of_the_total_on_a_terminal_only():
    from ohlcv.render import count_progress

    def run(terminal: bool) -> str:
        out = io.StringIO()
        console = Console(file=out, width=100, force_terminal=terminal, color_system=None)
        with count_progress(console) as progress:
            progress.on_start("checking", 3, "features")
            for name in ("rsi", "macd", "drawdown"):
                progress.on_next(name)
        return out.getvalue()

    drawn = run(terminal=True)
    assert "0/3 features" in drawn and "3/3 features" in drawn
    assert run(terminal=False) == ""


def test_plugins_and_profiles_lists_break_no_word_at_80_columns():
    from ohlcv.config import list_profiles
    from ohlcv.plugins import load_plugins
    from ohlcv.render import render_plugins, render_profiles

    plugins = load_plugins()
    console, out = _console(80)
    render_plugins(console, plugins)
    infos = list_profiles()
    render_profiles(console, infos)
    printed = out.getvalue()
    assert all(len(line) <= 80 for line in printed.splitlines())
    words = set(printed.split())
    for entry in plugins.describe():
        assert entry["feature"] in words and entry["distribution"] in words
        assert all(name in words for name in entry["outputs"])
    for info in infos:
        assert str(info.path) in words and info.name in words
