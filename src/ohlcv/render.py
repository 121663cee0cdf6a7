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
    columns = ["patch", "pretrain", "pretrain tokens", "finetune", "finetune tokens", f"pretrain ≤ {inputs['max_seq_len']}", "allowed",
               "uni2ts default", "usable"]
    rows = [[str(row.patch_size), str(row.pretrain_patches), f"{row.pretrain_tokens:,}", str(row.patches), f"{row.tokens:,}",
             _mark(row.fits), _mark(row.allowed), _mark(row.uni2ts_default_allows),
             "[bold green]yes[/]" if row.usable else "[red]no[/]"] for row in report.rows]
    print_fitted_table(console, escape(title), columns, rows, left=0)
    console.print("pretrain: ⌈(context + horizon) / patch⌉ patches per variate, what pre-training's crop packs (its fit "
                  "is judged on pretrain tokens); finetune: ⌈context / patch⌉ + ⌈horizon / patch⌉, what fine-tuning "
                  "and forecasting pack (tokens = variates x patches)")
    tune = report.finetune
    if tune is not None:
        start = f" from {tune['start_model']}" if tune.get("start_model") else ""
        console.print(f"fine-tuning{start} at patch {tune['patch_size']}: {escape(tune['what'])} = {tune['tokens']:,} "
                      f"tokens ≤ {tune['max_seq_len']}: {_mark(tune['fits'])}")
    rule = f"context {inputs['context_length']} >= 5 x horizon {inputs['prediction_length']}"
    console.print(f"{rule}: {_mark(report.context_rule_ok)}")
    for line in report.suggestions:
        console.print(f"[yellow]→[/] {escape(line)}")
    for line in report.notes:
        console.print(f"[dim]note:[/] {escape(line)}")
    def verdict(ok: bool) -> str:
        return "[bold green]fits[/]" if ok else "[bold red]does not fit[/]"

    console.print(f"verdict: pre-training {verdict(report.pretrain_ok)}, fine-tuning {verdict(report.finetune_ok)}")


def render_profiles(console: "Console", infos: Iterable["ProfileInfo"]) -> None:
    """Descriptions wrap at word boundaries; a path is never broken: when it does not fit beside a readable
    description (80 columns, a log), the paths go to a second table."""
    infos = list(infos)
    names = [escape(info.name) for info in infos]
    paths = [escape(str(info.path)) for info in infos]
    fixed = [max([len(text) for text in column] + [len(head)]) for head, column in
             (("name", names), ("origin", [i.origin for i in infos]), ("extends", [i.extends or "" for i in infos]),
              ("path", paths))]
    with_paths = sum(fixed) + 3 * 5 + 1 + 30 <= console.width  # room left for a 30-column description
    table = Table(title="Profiles", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("origin", no_wrap=True)
    table.add_column("extends", no_wrap=True)
    table.add_column("description")
    if with_paths:
        table.add_column("path", style="dim", no_wrap=True)
    for info, name, path in zip(infos, names, paths):
        cells = [name, info.origin, escape(info.extends or ""), escape(info.description)]
        table.add_row(*cells, *([path] if with_paths else []))
    console.print(table)
    if not with_paths:
        print_fitted_table(console, "Profile files", ["name", "path"], [list(pair) for pair in zip(names, paths)],
                           left=2)


def render_plain(text: str, *, end: str = "\n") -> None:
    """Text for other programs (JSON, YAML): written as it is, no markup, no wrapping."""
    import typer

    typer.echo(text, nl=False)
    if end:
        typer.echo(end, nl=False)


def render_error(console: "Console", text: str, *, rank: str = "", plain: bool = False) -> None:
    """The one line every failed command ends with (``rank``: which process said it, under DDP)."""
    console.print(escape(text) if plain else f"{escape(rank)}[bold red]error:[/] {escape(text)}")


def render_line(console: "Console", text: str) -> None:
    """A plain progress line (what a command is about to do)."""
    console.print(escape(text))


def render_sample_lake(console: "Console", lake, *, bars: int, freq: str, directory) -> None:
    console.print(f"wrote {len(lake.symbols)} symbols, {bars} bars of {escape(freq)} on the sparsest calendar "
                  f"(every class covers the same period) to {escape(str(directory))}")
    for item_id, counts in lake.injected.items():
        shown = ", ".join(f"{k}={v}" for k, v in counts.items() if not k.startswith("_"))
        console.print(f"  dirt in {escape(item_id)}: {shown}")


def render_ingest(console: "Console", result, *, problems_to: "Console") -> None:
    for item_id, stats in result.symbols.items():
        console.print(f"{escape(item_id)}: {stats['rows']} rows, {stats['added']} added, "
                      f"{stats['replaced']} replaced, {stats['files']} files written (by {stats['by']})")
    for problem in result.problems:
        problems_to.print(f"[yellow]skipped:[/] {escape(problem)}")


def render_repartition(console: "Console", result, *, problems_to: "Console") -> None:
    for item_id, stats in result.symbols.items():
        dropped = f", {stats['duplicates']:,} bars stored twice kept once" if stats["duplicates"] else ""
        console.print(f"{escape(item_id)}: {stats['rows']:,} bars, {stats['files_before']} files -> "
                      f"{stats['files']}{dropped}")
    console.print(f"{len(result.symbols)} symbol folders rewritten, {result.unchanged} already laid out so")
    for problem in result.problems:
        problems_to.print(f"[yellow]skipped:[/] {escape(problem)}")


def render_plugin_checks(console: "Console", checks) -> None:
    table = Table(title="Look-ahead check", title_justify="left")
    for column in ("feature", "family", "plugin", "result", "first offending bar", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(escape(check.feature.name), check.feature.family.value, escape(check.plugin),
                      "[green]pass[/]" if check.ok else "[bold red]FAIL[/]",
                      "" if check.first_bad_bar is None else str(check.first_bad_bar), escape(check.detail))
    console.print(table)
    failed = sum(not check.ok for check in checks)
    console.print(f"{len(checks) - failed} passed, {failed} failed")


def render_plugins(console: "Console", plugins: "Plugins", *, warnings_to: "Console | None" = None) -> None:
    """One output per line, no cell broken mid-word: columns that do not fit go to a continued table."""
    columns = ["feature", "family", "outputs (kind)", "warm-up", "plugin", "distribution"]
    rows = []
    for entry in plugins.describe():
        outputs = "\n".join(f"{name} ({kind})" for name, kind in entry["outputs"].items())
        rows.append([
            f"[bold]{escape(entry['feature'])}[/]",
            entry["family"],
            escape(f"(error: {entry['error']})" if entry["error"] else outputs),
            "?" if entry["warmup_bars"] is None else str(entry["warmup_bars"]),
            escape(entry["plugin"]),
            escape(f"{entry['distribution']} {entry['version']}"),
        ])
    print_fitted_table(console, "Registered features", columns, rows, left=len(columns), right=[3])
    if not len(plugins.features):
        console.print("no features registered (is OHLCV_LOAD_PLUGINS set?)")
    render_warnings(warnings_to or console, plugins.warnings)


def render_warnings(console: "Console", lines) -> None:
    for line in lines:
        console.print(f"[yellow]warning:[/] {escape(line)}")


class _BuildProgress:
    """Rich progress over symbols, with rows/s; silent when quiet or not on a terminal (a log gets not even the
    blank line a finished live display leaves)."""

    def __init__(self, console: "Console", quiet: bool):
        self.console, self.quiet = console, quiet
        self.rows = 0
        self._progress = None
        self._task = None
        self._started = 0.0

    def __enter__(self):
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._started = time.perf_counter()
        if not self.quiet and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]building[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("symbols"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[current]}"),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def on_start(self, total: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task("build", total=total, rate="", current="")

    def on_symbol(self, item_id: str, rows: int) -> None:
        import time

        self.rows += rows
        if self._progress is not None and self._task is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            self._progress.update(
                self._task, advance=1, rate=f"{self.rows / elapsed:,.0f} rows/s", current=escape(item_id)
            )

    def on_merge(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, current="writing the dataset…")


def build_progress(console: "Console", *, quiet: bool) -> _BuildProgress:
    return _BuildProgress(console, quiet)


class _TrainProgress:
    """One progress line per phase: steps done of the run's total, the last step's loss, steps/s;
    a second line while validation batches run. Transient: the summary table follows."""

    def __init__(self, console: "Console"):
        self.console = console
        self._progress = None
        self._task = None
        self._val = None
        self._started = 0.0
        self._first = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.on_end()
        return False

    def _ensure(self):
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TextColumn("{task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        return self._progress

    def on_start(self, phase: str, total: int, done: int) -> None:
        import time

        if not self.console.is_terminal:  # a log: not even the blank line a finished live display leaves
            return
        self._started, self._first = time.perf_counter(), done
        self._task = self._ensure().add_task(phase, total=total, completed=done, unit="steps", loss="", rate="")

    def on_step(self, step: int, loss: "float | None") -> None:
        import time

        if self._task is None:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(self._task, completed=step, loss="" if loss is None else f"loss {loss:.4f}",
                              rate=f"{(step - self._first) / elapsed:.2f} steps/s")

    def on_validation(self, done: "int | None", total: "int | None") -> None:
        if not self.console.is_terminal:
            return
        progress = self._ensure()
        if done is None:
            if self._val is not None:
                progress.remove_task(self._val)
                self._val = None
            return
        if self._val is None:
            self._val = progress.add_task("validating", total=total, unit="batches", loss="", rate="")
        progress.update(self._val, completed=done, total=total)

    def on_end(self) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress, self._task, self._val = None, None, None


def training_progress(console: "Console") -> _TrainProgress:
    return _TrainProgress(console)


class _CountProgress:
    """One transient progress line per phase of a long loop that is not training: items done of the
    phase's total (``12/40 forecasts``), what is being done now, the elapsed time. Like the training
    display it draws only on a terminal; piped or in a log it prints nothing (the result says it all)."""

    def __init__(self, console: "Console"):
        self.console = console
        self._progress = None
        self._task = None
        self._pending = 0  # the units announced by the last on_next: done when the next one starts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.on_end()
        return False

    def on_start(self, phase: str, total: int, unit: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if not self.console.is_terminal:  # a log: not even the blank line a finished live display leaves
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[now]}"),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task, self._pending = self._progress.add_task(escape(phase), total=total, unit=escape(unit), now=""), 0

    def on_next(self, now: str = "", count: int = 1) -> None:
        """``count`` units described by ``now`` start; the ones announced before are done."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=self._pending, now=escape(now))
            self._pending = count

    def on_end(self) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.update(self._task, advance=self._pending, now="")
            self._progress.__exit__(None, None, None)
            self._progress, self._task, self._pending = None, None, 0


def count_progress(console: "Console") -> _CountProgress:
    """Progress for ``evaluate`` (per forecast of a series) and ``plugins check`` (per feature): an object
    with ``on_start(phase, total, unit)``, ``on_next(now, count=1)`` (what starts now) and ``on_end()``."""
    return _CountProgress(console)


def render_build(console: "Console", result, *, quiet: bool = False) -> None:
    report, manifest = result.report, result.manifest
    if result.up_to_date:
        console.print(f"up to date: {escape(str(result.out))} ({manifest['series']} series); --force rebuilds")
        return
    headline = (
        f"built {escape(str(result.out))}: {manifest['series']} series x {len(manifest['variates'])} variates, "
        f"{manifest['bars']:,} bars; {len(report['quarantined'])} quarantined; "
        f"{report['rows_read']:,} rows read in {report['seconds']:.1f} s ({report['rows_per_second'] or 0:,.0f} rows/s)"
    )
    if result.resumed_batches:
        headline += f"; resumed after {result.resumed_batches} finished batches"
    if quiet:
        console.print(headline)
        return
    table = Table(title="Cleaning report (every rule, all symbols)", title_justify="left")
    table.add_column("rule", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("symbols", justify="right")
    table.add_column("outcome", no_wrap=True)
    rows = result.cleaning()
    for row in rows:
        table.add_row(row["rule"], f"{row['count']:,}", str(row["symbols"]), row["outcome"])
    if rows:
        console.print(table)
    else:
        console.print("cleaning: nothing to repair")
    for entry in report["quarantined"]:
        console.print(f"[yellow]quarantined[/] {escape(entry['item_id'])}: {escape(entry['reason'])}")
    problems = [p for r in report.get("per_symbol", {}).values() for p in r.get("file_problems", [])]
    for problem in problems[:10]:  # which file: a count in the table says only how many
        console.print(f"[yellow]file skipped[/] {escape(problem)}")
    if len(problems) > 10:
        console.print(f"[yellow]file skipped[/] ... and {len(problems) - 10} more (report.json: per_symbol.*.file_problems)")
    for path in report["skipped_paths"][:10]:
        console.print(f"[dim]skipped {escape(path)}[/]")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(note)}")
    if manifest.get("calendars"):
        console.print("calendars: " + escape(", ".join(f"{k} {v}" for k, v in manifest["calendars"].items())))
    split = manifest.get("split", {})
    if split.get("common") and split.get("train_end"):
        console.print(f"split (every series): train < {escape(str(split['train_end']))} <= validation < "
                      f"{escape(str(split['validation_end']))} <= test")
    console.print(f"variates: {escape(', '.join(manifest['variates']))}")
    console.print(headline)


def render_merge(console: "Console", manifest: dict, shards: int, out) -> None:
    console.print(f"merged {shards} shards: {manifest['series']} series, {manifest['bars']:,} bars -> {escape(str(out))}")


def render_check(console: "Console", report) -> None:
    console.print(f"[bold]Dataset check[/] — {escape(report.dataset)} (loaded through uni2ts's HuggingFaceDatasetIndexer)")
    console.print(
        f"series {report.series}; variates {len(report.variates)}: {escape(', '.join(report.variates))}"
        + (f" (targets {escape(', '.join(report.targets))})" if report.covariates else "")
    )
    if report.lengths:
        lengths = report.lengths
        console.print(f"length: min {lengths['min']:,}, median {lengths['median']:,.0f}, max {lengths['max']:,}; total {lengths['total']:,} bars")
    if report.missing_share:
        table = Table(title="missing share per variate", title_justify="left")
        table.add_column("variate")
        table.add_column("missing", justify="right")
        for name, share in report.missing_share.items():
            table.add_row(escape(name), f"{share:.2%}")
        console.print(table)
    drawn = ", ".join(f"{size}: {count}" for size, count in sorted(report.patch_sizes_drawn.items()))
    console.print(f"pre-training transform: patch sizes drawn {{{drawn}}}, longest sample {report.max_tokens} tokens")
    rows = report.budget.get("rows", [])
    usable = [str(r["patch_size"]) for r in rows if r["usable"]]
    console.print(f"token budget: usable patch sizes {', '.join(usable) or 'none'} (see `ohlcv budget` for the table)")
    for line in report.too_short[:10]:
        console.print(f"[yellow]short[/] {escape(line)}")
    for line in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}")
    for line in report.problems:
        console.print(f"[bold red]problem:[/] {escape(line)}")
    console.print("verdict: " + ("[bold green]ready for pre-training[/]" if report.ok else "[bold red]not ready[/]"))


def render_preflight(console: "Console", check, run_dir, loaded) -> None:
    hw = check.hardware
    console.print(
        f"[bold]pre-training[/] profile [bold]{escape(loaded.name)}[/] -> {escape(str(run_dir))}\n"
        f"model {check.parameters:,} parameters; {check.variates} variates; up to {check.tokens_per_sample} tokens per sample; "
        f"patch sizes usable {check.usable_patch_sizes}\n"
        f"{check.steps:,} steps; device {escape(hw.device_name)}; precision {hw.precision}"
        + ("; TF32 on" if hw.tf32 else "")
    )
    for warning in check.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def render_notes(console: "Console", lines) -> None:
    for line in lines:
        if line:
            console.print(f"[yellow]note:[/] {escape(line)}")


def render_pretrain_result(console: "Console", result) -> None:
    s = result.summary
    table = Table(title="Pre-training finished", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("steps", f"{s['steps']:,}"),
        ("loss, last step", f"{s['final_loss']:.4f}" if s.get("final_loss") is not None else "-"),
        ("loss, lowest step", f"{s['best_loss']:.4f}" if s.get("best_loss") is not None else "-"),
        ("tokens seen", f"{s['tokens_seen']:,}"),
        ("wall time", f"{s['wall_seconds']:.1f} s"),
        ("throughput", f"{s['tokens_per_second']:,.0f} tokens/s" if s.get("tokens_per_second") else "-"),
        ("patch sizes seen", ", ".join(map(str, s["patch_sizes_seen"]))),
        ("run folder", escape(str(result.run_dir))),
    ]
    if len(s.get("processes") or []) > 1:
        rows.insert(0, ("processes", f"{len(s['processes'])} (one per device, DDP)"))
    if s.get("resumed_from_step"):
        rows.insert(1, ("resumed from step", f"{s['resumed_from_step']:,}"))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    console.print(f"saved model (Hugging Face format): [bold]{escape(str(result.model_dir))}[/]")


def print_fitted_table(console: "Console", title: str, columns: list[str], rows: list[list[str]], *,
                       left: int = 1, continued: str | None = None, right: Iterable[int] = ()) -> None:
    """A table that never cuts a number: when its columns are wider than the console (80 columns, a log),
    it is printed as several tables, each repeating the first column (the row's name) with as many of the
    others as fit. The first ``left`` columns are left-aligned, the rest right-aligned (and those in ``right``);
    a cell may hold several lines."""
    from rich.text import Text

    widths = [max([Text.from_markup(line).cell_len for c in [column, *(row[i] for row in rows)]
                   for line in c.split("\n")] or [1])
              for i, column in enumerate(columns)]
    right = set(right)
    room = max(console.width, 20)

    def width(indexes: list[int]) -> int:  # cells, one space of padding each side, the borders
        return sum(widths[i] for i in indexes) + 3 * len(indexes) + 1

    groups: list[list[int]] = [[0]]
    for i in range(1, len(columns)):
        if width(groups[-1] + [i]) > room and len(groups[-1]) > 1:
            groups.append([0])
        groups[-1].append(i)
    for number, group in enumerate(groups):
        part = title if number == 0 else (continued or f"{title} (continued)")
        table = Table(title=part, title_justify="left")
        for i in group:
            table.add_column(columns[i], justify="left" if i < left and i not in right else "right", no_wrap=True, overflow="fold",
                             min_width=widths[i])
        for row in rows:
            table.add_row(*(row[i] for i in group))
        console.print(table)


def _with_t(stat: dict) -> str:
    """A mean with its t statistic, the t left out where it is undefined (one origin, no spread)."""
    import math

    t = stat.get("t")
    return f"{stat['mean']:.3f}" + (f" (t {t:.2f})" if t is not None and math.isfinite(t) else "")


def render_evaluation(console: "Console", result) -> None:
    import math

    from ohlcv.moirai.sources import model_line

    def p(value: float) -> str:
        return "–" if not math.isfinite(value) else f"{value:.3f}" if value >= 0.001 else f"{value:.0e}"

    for name, info in result.model_info.items():
        console.print(f"[bold]{escape(name)}[/]: {escape(model_line(info))}")
        console.print(f"  from {escape(str(info.get('source', '')))}", overflow="fold")
    for variate, info in result.variates.items():
        yard = info["yardstick"]
        removed = f", {info['windows_removed']} removed for all" if info["windows_removed"] else ""
        title = (f"{variate} ({info['kind']}; {info['units']}): {info['windows']} windows{removed}; "
                 f"the one to beat: {yard}")
        columns = ["forecaster", "CRPS", "MASE", "MSIS", "cov 50/80/95", "dir. steps/windows (p)", f"CRPS/{yard}",
                   f"MAE/{yard}", "DM p CRPS", "DM p |err|"]
        rows = []
        for model, by_variate in result.aggregate.items():
            if variate not in by_variate:
                continue
            m, r = by_variate[variate], result.relative[model][variate]
            dm = result.significance.get(model, {}).get(variate, {}).get(yard)
            better = r["crps"] < 1
            rows.append([
                escape(model), f"{m['crps']:.4g}", f"{m['mase']:.3f}", f"{m['msis']:.3f}",
                f"{m['coverage_50']:.2f}/{m['coverage_80']:.2f}/{m['coverage_95']:.2f}",
                f"{m['directional_accuracy']:.2f}/{m['direction_window_accuracy']:.2f} ({p(m['direction_p'])})",
                f"[{'green' if better else 'red'}]{r['crps']:.3f}[/]", f"{r['mae']:.3f}",
                p(dm["crps"]["p_value"]) if dm else "", p(dm["abs_error"]["p_value"]) if dm else "",
            ])
        print_fitted_table(console, title, columns, rows, continued=f"{variate} (continued)")
        for model in result.models:
            console.print(escape(result.verdict(variate, model)))
            summary = result.ic.get(model, {}).get(variate)
            if summary:
                console.print(f"  IC {_with_t(summary['ic'])}, rank IC {_with_t(summary['rank_ic'])} "
                              f"over {summary['origins']} origins")
    for flag in result.flags():
        console.print(f"[bold yellow]calibration:[/] {escape(flag)}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"metrics.json, metrics.csv, report.md and {len(result.plots)} plots in {escape(str(result.out))}")


def render_backtest(console: "Console", result) -> None:
    import math

    for variate, info in result.overall.items():
        rows = []
        for fold, p in zip(result.folds, info["fold_dm_p"]):
            ratio = fold["relative"]["model"][variate]["crps"]
            m = fold["aggregate"]["model"][variate]
            rows.append([str(fold["fold"]), str(fold["span"]["first_origin"]),
                         f"[{'green' if ratio < 1 else 'red'}]{ratio:.3f}[/]",
                         (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}") if p is not None and math.isfinite(p) else "–",
                         f"{m['coverage_80']:.2f}", f"{m['directional_accuracy']:.2f}"])
        print_fitted_table(console, f"{variate}: model vs {info['yardstick']} per fold (refit: {result.refit})",
                           ["fold", "first origin", "CRPS ratio", "DM p", "cov 80", "direction"], rows, left=2,
                           continued=f"{variate} (continued)")
        console.print(escape(result.verdict(variate)))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"backtest.json, report.md, plots/folds.png and one evaluation per fold in {escape(str(result.out))}")


def render_finetune_start(console: "Console", info: dict) -> None:
    console.print(
        f"[bold]fine-tuning[/] {escape(info['start'])} ({escape(info.get('family', 'MOIRAI'))}"
        f"{', ' + info['size'] if info.get('size') else ''}, {escape(info['pattern'])}) -> "
        f"{escape(str(info['run_dir']))}; {escape(info['hardware'].device_name)}, {info['hardware'].precision}"
    )
    console.print(f"trainable parameters: {info['trainable_parameters']:,} of {info['parameters']:,} "
                  f"({info['trainable_percent']:.2f}%)")
    for span, label in (("train", "training"), ("validation", "validation")):
        w = info["windows_per_series"][span]
        total = (f"{info['train_windows']:,} (drawn at random)" if span == "train" else
                 f"{info['val_windows']:,} used of {info['val_windows_available']:,}")
        console.print(f"{label} windows: {total} over {w['series']} series "
                      f"(available per series min {w['min']:,}, median {w['median']:,}, max {w['max']:,})")
    if info.get("series_left_out_of_validation"):
        console.print(f"[yellow]note:[/] {info['series_left_out_of_validation']} series have no validation window "
                      "(validation span shorter than context + horizon) and are trained on but not validated")


def render_finetune_result(console: "Console", result) -> None:
    s = result.summary
    before, after = s["val_loss_before"], s["val_loss_after"]
    processes = int(s.get("processes") or 1)
    console.print(
        f"validation loss: starting model {before:.4f} -> best fine-tuned {after:.4f} "
        f"(step {s['best_step']:,}) after {s['steps']:,} steps{' (stopped early)' if s['stopped_early'] else ''}"
        + (f"; all {s['val_windows']:,} validation windows over {processes} processes" if processes > 1 else "")
    )
    if s.get("val_note"):
        console.print(f"[yellow]note:[/] {escape(s['val_note'])}")
    if s["improved"]:
        console.print(f"[bold green]fine-tuning improved the validation loss by {before - after:.4f}[/]")
    else:
        console.print(
            "[bold red]fine-tuning did not improve on the starting model[/]: the exported model is the starting one"
        )
    console.print(f"saved model (Hugging Face format): [bold]{escape(str(result.model_dir))}[/]")
