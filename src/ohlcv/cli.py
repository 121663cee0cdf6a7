"""The ``ohlcv`` command line: thin wiring over the library.

Each command parses options, loads the profile, calls one library function
and renders the result. Errors from the library are typed (:mod:`ohlcv.errors`)
and :func:`main` turns them into one line and an exit code; ``OHLCV_DEBUG=1``
shows the traceback instead. Heavy imports (torch, lightning, uni2ts,
datasets) happen inside the commands that need them, never at start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ohlcv import __version__
from ohlcv.errors import NotAvailableYet, OhlcvError

app = typer.Typer(
    name="ohlcv",
    help="Pre-train, fine-tune and evaluate MOIRAI foundation models on OHLCV market data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
profiles_app = typer.Typer(help="List and show profiles.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect feature plugins.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
app.add_typer(plugins_app, name="plugins")

ProfileOption = typer.Option(
    "hourly",
    "--profile",
    "-p",
    help="Profile name (./profiles/NAME.yaml, then packaged) or path to a YAML file.",
)
OverridesArgument = typer.Argument(
    None,
    metavar="[KEY=VALUE]...",
    help="OmegaConf dotted overrides, e.g. data.context_length=336 model.patch_sizes=[32,64].",
    show_default=False,
)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _load(profile: str, overrides: Optional[List[str]], extra: Optional[List[str]] = None):
    from ohlcv.config import load_profile

    return load_profile(profile, list(extra or []) + list(overrides or []))


def _not_yet(command: str, section: str, loaded) -> None:
    _console().print(f"profile [bold]{loaded.name}[/] ({loaded.path}): section '{section}' is valid.")
    raise NotAvailableYet(
        f"`ohlcv {command}` is not available in ohlcv {__version__} yet; "
        "`ohlcv budget` and `ohlcv profiles` work today"
    )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"ohlcv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Pre-train, fine-tune and evaluate MOIRAI foundation models on OHLCV market data."""


@app.command()
def budget(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
    dataset: Optional[Path] = typer.Option(
        None, "--dataset", help="Count variates from this built dataset (default: the profile's, if built)."
    ),
    variates: Optional[int] = typer.Option(None, "--variates", help="Plan for this many variates instead."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Token budget: variates x ceil((context + horizon) / patch) for every patch size, against the model's limit.

    Exit 0 when at least one patch size fits and context >= 5 x horizon, 1 otherwise.
    """
    from ohlcv.budget import inputs_from_profile, plan
    from ohlcv.render import render_budget

    loaded = _load(profile, overrides)
    report = plan(inputs_from_profile(loaded.cfg, dataset=dataset, variates=variates))
    if as_json:
        typer.echo(report.to_json())
    else:
        render_budget(_console(), report, loaded)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def build(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
    lake: Optional[Path] = typer.Option(None, "--lake", help="The Parquet lake (data.lake)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the dataset goes (data.dataset)."),
) -> None:
    """Build a uni2ts dataset from the Parquet lake."""
    extra = []
    if lake is not None:
        extra.append(f"data.lake={lake}")
    if out is not None:
        extra.append(f"data.dataset={out}")
    _not_yet("build", "data", _load(profile, overrides, extra))


@app.command()
def pretrain(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
) -> None:
    """Pre-train a MOIRAI model on a built dataset."""
    _not_yet("pretrain", "pretrain", _load(profile, overrides))


@app.command()
def finetune(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
) -> None:
    """Fine-tune a MOIRAI checkpoint (local folder or hub id)."""
    _not_yet("finetune", "finetune", _load(profile, overrides))


@app.command()
def evaluate(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
) -> None:
    """Rolling-origin evaluation against naive baselines, with plots."""
    _not_yet("evaluate", "evaluate", _load(profile, overrides))


@profiles_app.command("list")
def profiles_list() -> None:
    """Profiles reachable by name: ./profiles first, then the packaged ones."""
    from ohlcv.config import list_profiles
    from ohlcv.render import render_profiles

    render_profiles(_console(), list_profiles())


@profiles_app.command("show")
def profiles_show(
    name: str = typer.Argument(..., help="Profile name or path."),
    overrides: Optional[List[str]] = OverridesArgument,
) -> None:
    """Print a profile fully resolved (its base merged in, overrides applied) as YAML."""
    from ohlcv.config import to_yaml

    loaded = _load(name, overrides)
    typer.echo(f"# {loaded.path}" + (f" + {' '.join(loaded.overrides)}" if loaded.overrides else ""))
    typer.echo(to_yaml(loaded.cfg), nl=False)


@plugins_app.command("list")
def plugins_list() -> None:
    """Registered features with their family, plugin, distribution and version."""
    from ohlcv.plugins import load_plugins
    from ohlcv.render import render_plugins

    plugins = load_plugins()
    render_plugins(_console(), plugins)
    for warning in plugins.warnings:
        from rich.markup import escape

        _console(stderr=True).print(f"[yellow]warning:[/] {escape(warning)}")


def _debug() -> bool:
    return os.environ.get("OHLCV_DEBUG", "").strip() not in ("", "0", "false", "no")


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: one readable line per error, tracebacks only with OHLCV_DEBUG=1."""
    try:
        app(args=argv, prog_name="ohlcv")
    except OhlcvError as exc:
        if _debug():
            raise
        from rich.markup import escape

        _console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last resort: still one line
        if _debug():
            raise
        from rich.markup import escape

        _console(stderr=True).print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))} "
            "(set OHLCV_DEBUG=1 for the traceback)"
        )
        sys.exit(1)
