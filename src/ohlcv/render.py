"""Rich rendering of library results. Nothing here computes anything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from ohlcv.budget import BudgetReport
    from ohlcv.config import ProfileInfo
    from ohlcv.config.loader import LoadedProfile
    from ohlcv.plugins import Plugins


def _mark(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


def render_budget(console: "Console", report: "BudgetReport", loaded: "LoadedProfile") -> None:
    inputs, constraint = report.inputs, report.constraint
    console.print(
        f"[bold]Token budget[/] — profile [bold]{escape(loaded.name)}[/] ({escape(str(loaded.path))})\n"
        f"context {inputs['context_length']} + horizon {inputs['prediction_length']} at {inputs['freq']}, "
        f"{inputs['variates']} variates (from {escape(inputs['variates_source'])}), "
        f"max_seq_len {inputs['max_seq_len']}"
    )
    default = constraint["uni2ts_default"]
    title = (
        f"patch-size constraint: {constraint['source']} [{constraint['min']}, {constraint['max']}]"
        f" (uni2ts default for '{default['code']}': [{default['min']}, {default['max']}])"
    )
    table = Table(title=escape(title), title_justify="left")
    table.add_column("patch", justify="right", no_wrap=True)
    table.add_column("patches", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column(f"≤ {inputs['max_seq_len']}", justify="center", no_wrap=True)
    table.add_column("allowed", justify="center", no_wrap=True)
    table.add_column("uni2ts default", justify="center", no_wrap=True)
    table.add_column("usable", justify="center", no_wrap=True)
    for row in report.rows:
        table.add_row(
            str(row.patch_size),
            str(row.patches),
            f"{row.tokens:,}",
            _mark(row.fits),
            _mark(row.allowed),
            _mark(row.uni2ts_default_allows),
            "[bold green]yes[/]" if row.usable else "[red]no[/]",
        )
    console.print(table)
    rule = f"context {inputs['context_length']} >= 5 x horizon {inputs['prediction_length']}"
    console.print(f"{rule}: {_mark(report.context_rule_ok)}")
    for line in report.suggestions:
        console.print(f"[yellow]→[/] {escape(line)}")
    for line in report.notes:
        console.print(f"[dim]note:[/] {escape(line)}")
    verdict = "[bold green]fits[/]" if report.ok else "[bold red]does not fit[/]"
    console.print(f"verdict: {verdict}")


def render_profiles(console: "Console", infos: Iterable["ProfileInfo"]) -> None:
    table = Table(title="Profiles", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("origin", no_wrap=True)
    table.add_column("extends", no_wrap=True)
    table.add_column("description")
    table.add_column("path", style="dim", overflow="fold")
    for info in infos:
        table.add_row(
            escape(info.name), info.origin, escape(info.extends or ""), escape(info.description), escape(str(info.path))
        )
    console.print(table)


def render_plugins(console: "Console", plugins: "Plugins") -> None:
    table = Table(title="Registered features", title_justify="left")
    table.add_column("feature", style="bold", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("outputs", overflow="fold")
    table.add_column("warm-up", justify="right", no_wrap=True)
    table.add_column("plugin", no_wrap=True)
    table.add_column("distribution", overflow="fold")
    for entry in plugins.features:
        feature, info = entry.feature, entry.plugin
        try:
            outputs = ", ".join(feature.output_names())
            warmup = str(feature.warmup_bars())
        except Exception as exc:  # noqa: BLE001 - show, don't crash
            outputs, warmup = f"(error: {exc})", "?"
        table.add_row(
            escape(feature.name),
            feature.family.value,
            escape(outputs),
            warmup,
            escape(info.name),
            escape(f"{info.distribution} {info.version}"),
        )
    console.print(table)
    if not len(plugins.features):
        console.print("no features registered (is OHLCV_LOAD_PLUGINS set?)")
