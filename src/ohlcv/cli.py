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
from ohlcv.errors import OhlcvError


def _flags_without_a_type() -> None:
    """Show boolean options as flags in --help: typer's help table gives every option a type column, so a
    flag read ``--json <bool>`` and invited ``--json true``. Flags take no value: no type."""
    option = getattr(typer.core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "ohlcv_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.ohlcv_flags = True
    option.display_type_rich = display_type_rich


_flags_without_a_type()

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
lake_app = typer.Typer(help="Create and fill a Parquet lake.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
app.add_typer(lake_app, name="lake")

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
    """The console; on every process but global rank zero of a multi-process run, stdout stays quiet.

    Prose on stdout wraps at word boundaries to the terminal's width, or, piped, to 80 columns unless
    ``COLUMNS`` says otherwise (Rich's rule); stderr is left unwrapped, so an error stays one line to grep."""
    from rich.console import Console

    from ohlcv.train.distributed import is_rank_zero

    return Console(stderr=stderr, highlight=False, soft_wrap=stderr, quiet=not stderr and not is_rank_zero())


def _load(profile: str, overrides: Optional[List[str]], extra: Optional[List[str]] = None):
    from ohlcv.config import load_profile

    return load_profile(profile, list(extra or []) + list(overrides or []))


def _stdout_to_stderr(active: bool):
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if active else contextlib.nullcontext()


def _version_callback(value: bool) -> None:
    if value:
        _plain(f"ohlcv {__version__}")
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
    start: Optional[str] = typer.Option(None, "--from", help="Judge fine-tuning from this model (as `finetune --from`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Token budget for pre-training and fine-tuning at every patch size, against the model's limit.

    Exit 0 when pre-training and fine-tuning both fit and context >= 5 x horizon, 1 otherwise.
    """
    from ohlcv.budget import inputs_from_profile, plan
    from ohlcv.render import render_budget

    loaded = _load(profile, overrides)
    source = None
    if start is not None:
        from ohlcv.moirai.sources import resolve_model

        source = resolve_model(start)
    report = plan(inputs_from_profile(loaded.cfg, dataset=dataset, variates=variates, start=source))
    if as_json:
        _plain(report.to_json())
    else:
        render_budget(_console(), report, loaded)
    raise typer.Exit(0 if report.ok else 1)


class _BuildGroup(typer.core.TyperGroup):
    """``ohlcv build [OPTIONS] [KEY=VALUE]...`` builds; ``ohlcv build merge ...`` is a sub-command.

    The words before the first sub-command name are the build's own options and overrides (a plain
    group would take ``data.freq=1h`` for an unknown sub-command); from that name on, every word,
    ``--help`` included, is the sub-command's.
    """

    def parse_args(self, ctx, args):
        valued = {opt for param in self.params if not getattr(param, "is_flag", True) for opt in param.opts}
        split, i = None, 0
        while i < len(args):
            if args[i] in valued:  # an option's value is never a sub-command
                i += 2
                continue
            if args[i] in self.commands:
                split = i
                break
            i += 1
        head, tail = (args, []) if split is None else (args[:split], args[split:])
        # the option parsing of a plain command (the class after TyperGroup: click's Command or Group)
        super(typer.core.TyperGroup, self).parse_args(ctx, head)
        rest = [*_protected(ctx), *ctx.args]
        if tail and rest:
            raise typer.BadParameter(f"{' '.join(rest)}: overrides belong to `ohlcv build`, not to `ohlcv build {tail[0]}`")
        _set_protected(ctx, tail[:1])
        ctx.args = tail[1:] if tail else rest
        return ctx.args


def _protected(ctx) -> list:
    """The context's sub-command words (click 8.2+ keeps them in ``_protected_args``, earlier ones in ``protected_args``)."""
    return list(ctx.__dict__.get("_protected_args", ctx.__dict__.get("protected_args", [])) or [])


def _set_protected(ctx, words: list) -> None:
    ctx.__dict__["_protected_args" if "_protected_args" in ctx.__dict__ else "protected_args"] = list(words)


build_app = typer.Typer(
    cls=_BuildGroup,
    invoke_without_command=True,
    subcommand_metavar="[KEY=VALUE]... | merge SHARD_DIR... --out DIR",
    context_settings={"allow_extra_args": True, "allow_interspersed_args": True},
    rich_markup_mode="rich",
)
app.add_typer(build_app, name="build")


@build_app.callback()
def build(
    ctx: typer.Context,
    profile: str = ProfileOption,
    lake: Optional[str] = typer.Option(
        None, "--lake", help="The Parquet lake: a folder or s3:// gs:// az:// URL (sets data.lake)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the dataset goes (sets data.dataset)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Build a deterministic 1/N of the symbols: K/N."),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="local (threads) or ray (RAY_ADDRESS's cluster, else a local one; sets build.executor)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the dataset is up to date."),
    check: bool = typer.Option(False, "--check", help="Afterwards, verify the dataset through uni2ts."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; a one-line summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the build's summary (and --check's report) as JSON."),
) -> None:
    """Build a uni2ts dataset from the Parquet lake: clean, add features, split, normalize.

    Trailing [bold]KEY=VALUE[/] words are profile overrides (e.g. data.context_length=336).
    [bold]ohlcv build merge SHARD_DIR... --out DIR[/] combines the outputs of --shard jobs.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ohlcv.render import render_build

    args = list(ctx.args)
    extra = []
    if lake is not None:
        extra.append(f"data.lake={lake}")
    if out is not None:
        extra.append(f"data.dataset={out}")
    if executor is not None:
        extra.append(f"build.executor={executor}")
    loaded = _load(profile, args, extra)
    result = _run_build(loaded.cfg, shard=shard, force=force, quiet=quiet or as_json)
    if as_json:
        summary = result.to_json()
        if check:
            from ohlcv.builder.check import check_dataset

            report = check_dataset(Path(str(loaded.cfg.data.dataset)).expanduser(), loaded.cfg)
            summary["check"] = report.to_dict()
        _plain(_json_text(summary))
        if check and not report.ok:
            raise typer.Exit(1)
        return
    render_build(_console(), result, quiet=quiet)
    if check:
        _check(loaded, Path(str(loaded.cfg.data.dataset)).expanduser(), as_json=False)


def _run_build(cfg, *, shard: Optional[str], force: bool, quiet: bool):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder, Shard
    from ohlcv.render import build_progress

    with build_progress(_console(stderr=True), quiet=quiet) as progress:
        builder = IterativeFinancialDatasetBuilder(
            cfg, shard=Shard.parse(shard) if shard else None, progress=progress
        )
        return builder.run(force=force)


@build_app.command("merge")
def build_merge(
    ctx: typer.Context,
    shards: List[Path] = typer.Argument(..., help="The output folders of `ohlcv build --shard K/N` jobs, all N."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the merged dataset goes."),
) -> None:
    """Merge the outputs of --shard K/N builds into one dataset (the same content as one unsharded build)."""
    from ohlcv.builder.merge import merge_shards
    from ohlcv.errors import ConfigError
    from ohlcv.render import render_merge

    if out is None:
        raise ConfigError("say where the merged dataset goes", key="--out")
    render_merge(_console(), merge_shards(list(shards), out), len(shards), out)


def _check(loaded, dataset: Path, *, as_json: bool) -> None:
    from ohlcv.builder.check import check_dataset
    from ohlcv.render import render_check

    report = check_dataset(dataset, loaded.cfg)
    if as_json:
        _plain(_json_text(report.to_dict()))
    else:
        render_check(_console(), report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def check(
    dataset: Optional[Path] = typer.Argument(None, help="A built dataset (default: the profile's data.dataset)."),
    profile: Optional[str] = typer.Option(
        None, "--profile", "-p",
        help="Profile name or YAML path (default: the profile the dataset was built with, else hourly).",
    ),
    overrides: Optional[List[str]] = OverridesArgument,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    dataset_option: Optional[Path] = typer.Option(None, "--dataset", help="The built dataset (as the positional)."),
) -> None:
    """Verify a built dataset the way uni2ts reads it: indexer, pre-training transform, lengths, budget.

    Exit 1 on any hard problem.
    """
    extra = list(overrides or [])
    if dataset is not None and "=" in str(dataset):  # `ohlcv check key=value`: an override, not a folder
        extra.insert(0, str(dataset))
        dataset = None
    if dataset is not None and dataset_option is not None and dataset != dataset_option:
        raise typer.BadParameter(f"two datasets: {dataset} and --dataset {dataset_option}; name one")
    dataset = dataset or dataset_option
    if profile is None:  # the dataset's own resolved profile: a daily dataset is checked as daily
        built = Path(dataset).expanduser() / "profile.yaml" if dataset is not None else None
        profile = str(built) if built is not None and built.is_file() else "hourly"
    loaded = _load(profile, extra)
    _check(loaded, dataset or Path(str(loaded.cfg.data.dataset)).expanduser(), as_json=as_json)


@app.command()
def pretrain(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
    lake: Optional[str] = typer.Option(None, "--lake", help="The Parquet lake: a folder or s3:// gs:// az:// URL (sets data.lake)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="The built dataset (sets data.dataset)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/NAME-pretrain-TIME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoints/last.ckpt."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the dataset first (from the lake its manifest records, or --lake)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (what else is said goes to stderr)."),
) -> None:
    """Pre-train a MOIRAI model; builds the dataset first if it is missing (an existing one is used as built)."""
    from ohlcv.render import render_preflight, render_pretrain_result, training_progress
    from ohlcv.train.pretrain import run_pretrain

    loaded = _load(profile, overrides, _data_options(lake, dataset))
    build_first = _build_first(loaded, to_stderr=as_json)
    with _stdout_to_stderr(as_json), training_progress(_console(stderr=True)) as progress:
        result = run_pretrain(
            loaded,
            dataset=Path(str(loaded.cfg.data.dataset)).expanduser(),
            out=out,
            resume=resume,
            rebuild=rebuild,
            lake=lake,
            progress=progress,
            on_preflight=lambda check, run_dir: render_preflight(_console(stderr=as_json), check, run_dir, loaded),
            on_build=build_first,
        )
    if as_json:
        _plain(_json_text(result.to_json()))
    else:
        render_pretrain_result(_console(), result)


def _data_options(lake: Optional[str], dataset: Optional[Path]) -> List[str]:
    extra = []
    if lake is not None:
        extra.append(f"data.lake={lake}")
    if dataset is not None:
        extra.append(f"data.dataset={dataset}")
    return extra


def _build_first(loaded, *, to_stderr: bool = False):
    """What a training command does when its dataset is missing (or --rebuild): build it, with the report
    (on stderr with ``to_stderr``: the command's stdout is JSON).

    The library passes the profile to build with (its lake may be the one the old manifest records)."""

    def build(cfg, force: bool) -> None:
        from ohlcv.render import render_build, render_line

        _ensure_sample_lake(cfg, loaded.name, to_stderr=to_stderr)
        render_line(_console(stderr=to_stderr), f"{'rebuilding' if force else 'building'} the dataset "
                                                f"{cfg.data.dataset} from {os.path.expanduser(str(cfg.data.lake))} first")
        render_build(_console(stderr=to_stderr), _run_build(cfg, shard=None, force=force, quiet=False))

    return build


def _ensure_sample_lake(cfg, name: str, *, to_stderr: bool = False) -> None:
    """Profiles with data.sample_if_missing (the demo) generate their sample lake on first use."""
    from ohlcv.train.distributed import is_rank_zero

    lake = Path(str(cfg.data.lake)).expanduser()
    if not bool(cfg.data.sample_if_missing) or lake.exists() or not is_rank_zero():  # rank zero builds for all
        return
    from ohlcv.lake.sample import generate_sample_lake
    from ohlcv.render import render_line

    render_line(_console(stderr=to_stderr), f"no lake at {lake}: generating the sample lake for profile '{name}'")
    generate_sample_lake(lake, symbols_per_class=3, freq=str(cfg.data.freq), bars=1200, seed=int(cfg.trainer.seed))


@app.command()
def finetune(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
    start: str = typer.Option(..., "--from", help="Starting model: a hub id (org/name[@revision]), a model folder, "
                                                   "a run folder or a Lightning .ckpt."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="The built dataset (sets data.dataset)."),
    lake: Optional[str] = typer.Option(None, "--lake", help="The Parquet lake: a folder or s3:// gs:// az:// URL (sets data.lake)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/NAME-finetune-TIME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoints/last.ckpt."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the dataset first (from the lake its manifest records, or --lake)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (what else is said goes to stderr)."),
) -> None:
    """Fine-tune a MOIRAI checkpoint with early stopping on validation loss; says whether it helped."""
    from ohlcv.render import render_finetune_result, render_finetune_start, training_progress
    from ohlcv.train.finetune import run_finetune

    loaded = _load(profile, overrides, _data_options(lake, dataset))
    build_first = _build_first(loaded, to_stderr=as_json)
    with _stdout_to_stderr(as_json), training_progress(_console(stderr=True)) as progress:
        result = run_finetune(loaded, start, dataset=Path(str(loaded.cfg.data.dataset)).expanduser(), out=out,
                              resume=resume, on_build=build_first, rebuild=rebuild, lake=lake, progress=progress,
                              on_start=lambda info: render_finetune_start(_console(stderr=as_json), info))
    if as_json:
        _plain(_json_text(result.to_json()))
    else:
        render_finetune_result(_console(), result)


@app.command()
def evaluate(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
    model: str = typer.Option(..., "--model", help="A hub id (org/name[@revision]), a model folder, a run folder "
                                                   "or a Lightning .ckpt."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="The built dataset (sets data.dataset)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where metrics, plots and report.md go."),
    zero_shot: Optional[str] = typer.Option(None, "--zero-shot", help="A second model (any family, same forms as "
                                                                        "--model) to compare in the same table."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (files are written too)."),
) -> None:
    """Rolling-origin forecasts on the test span against the baselines of each variate's kind, on the same windows.

    Diebold-Mariano p-values, calibration (PIT, coverage; conformal with evaluate.calibrate=conformal), plots, report.md.
    """
    import time as _time

    from ohlcv.evaluate.run import evaluate as run_evaluate
    from ohlcv.render import count_progress, render_evaluation, render_notes
    from ohlcv.train.distributed import is_rank_zero, one_process_note

    extra = [f"data.dataset={dataset}"] if dataset is not None else []
    loaded = _load(profile, overrides, extra)
    render_notes(_console(), [one_process_note(loaded.cfg, "evaluate")])
    if not is_rank_zero():  # started by torchrun / srun beside rank zero, which evaluates everything
        return
    target = out or Path(str(loaded.cfg.output.runs_dir)) / f"{loaded.name}-evaluate-{_time.strftime('%Y%m%d-%H%M%S')}"
    with _stdout_to_stderr(as_json), count_progress(_console(stderr=True)) as progress:
        # (libraries may print while loading models: stdout goes to stderr, so --json output stays parseable)
        result = run_evaluate(loaded, model, dataset=Path(str(loaded.cfg.data.dataset)).expanduser(), out=target,
                              zero_shot=zero_shot, progress=progress)
    if as_json:
        _plain(_json_text({"out": str(result.out), **result.to_json()}))
    else:
        render_evaluation(_console(), result)


@app.command()
def backtest(
    profile: str = ProfileOption,
    overrides: Optional[List[str]] = OverridesArgument,
    start: str = typer.Option(..., "--from", help="The model: a hub id (org/name[@revision]), a model folder, a run "
                                                   "folder or a Lightning .ckpt."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Walk-forward folds (sets backtest.folds)."),
    refit: Optional[str] = typer.Option(None, "--refit", help="finetune: fine-tune before each fold; none: the same model (sets backtest.refit)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="The built dataset (sets data.dataset)."),
    lake: Optional[str] = typer.Option(None, "--lake", help="The Parquet lake: a folder or s3:// gs:// az:// URL (sets data.lake)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where folds, plots and report.md go."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the dataset first (from the lake its manifest records, or --lake)."),
) -> None:
    """Walk-forward backtest: K folds ending with the test span; optionally fine-tune up to each fold (less an embargo)."""
    import time as _time

    from ohlcv.evaluate.backtest import run_backtest
    from ohlcv.render import count_progress, render_backtest, render_line, render_notes
    from ohlcv.train.distributed import is_rank_zero, one_process_note

    extra = _data_options(lake, dataset)
    if folds is not None:
        extra.append(f"backtest.folds={folds}")
    if refit is not None:
        extra.append(f"backtest.refit={refit}")
    loaded = _load(profile, overrides, extra)
    render_notes(_console(), [one_process_note(loaded.cfg, "backtest")])
    # its fine-tuning folds too run in this one process on one device, whatever trainer.devices says
    # (devices=auto on a multi-GPU box would otherwise start DDP from inside a fold)
    loaded = _load(profile, overrides, [*extra, "trainer.devices=1", "trainer.num_nodes=1", "trainer.strategy=auto"])
    if not is_rank_zero():  # started by torchrun / srun beside rank zero, which runs every fold
        return
    target = out or Path(str(loaded.cfg.output.runs_dir)) / f"{loaded.name}-backtest-{_time.strftime('%Y%m%d-%H%M%S')}"
    with _stdout_to_stderr(as_json), count_progress(_console(stderr=True)) as progress:
        result = run_backtest(loaded, start, dataset=Path(str(loaded.cfg.data.dataset)).expanduser(), out=target,
                              on_build=_build_first(loaded, to_stderr=as_json), rebuild=rebuild, lake=lake, progress=progress,
                              on_fold=lambda fold, total: render_line(_console(stderr=as_json), f"fold {fold + 1}/{total}"))
    if as_json:
        _plain(_json_text(result.to_json()))
    else:
        render_backtest(_console(), result)


@profiles_app.command("list")
def profiles_list(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """Profiles reachable by name: ./profiles first, then the packaged ones."""
    from ohlcv.config import list_profiles
    from ohlcv.render import render_profiles

    if as_json:
        _plain(_json_text([info.to_dict() for info in list_profiles()]))
    else:
        render_profiles(_console(), list_profiles())


@profiles_app.command("show")
def profiles_show(
    name: str = typer.Argument(..., help="Profile name or path."),
    overrides: Optional[List[str]] = OverridesArgument,
) -> None:
    """Print a profile fully resolved (its base merged in, overrides applied) as YAML."""
    from ohlcv.config import to_yaml

    loaded = _load(name, overrides)
    _plain(f"# {loaded.path}" + (f" + {' '.join(loaded.overrides)}" if loaded.overrides else ""))
    _plain(to_yaml(loaded.cfg), end="")


@plugins_app.command("list")
def plugins_list(
    as_json: bool = typer.Option(False, "--json", help="Print the features as JSON (warnings go to stderr)."),
) -> None:
    """Registered features with their family, plugin, distribution and version."""
    from ohlcv.plugins import load_plugins
    from ohlcv.render import render_plugins, render_warnings

    plugins = load_plugins()
    if as_json:
        _plain(_json_text(plugins.describe()))
        render_warnings(_console(stderr=True), plugins.warnings)
    else:
        render_plugins(_console(), plugins, warnings_to=_console(stderr=True))


PARTITION_HELP = ("year: year=YYYY/part.parquet; month: year=YYYY/month=MM/part.parquet; auto: year files for "
                  "daily and slower bars, month files for intraday bars.")


@lake_app.command("sample")
def lake_sample(
    directory: str = typer.Argument(..., help="Where to write the lake (a local folder)."),
    symbols: int = typer.Option(4, "--symbols", help="Symbols per asset class."),
    asset_classes: str = typer.Option("crypto,equity,fx", "--asset-classes", help="Comma-separated asset classes."),
    freq: str = typer.Option("1h", "--freq", help="Bar frequency (1min, 5min, 1h, 1D…)."),
    bars: int = typer.Option(2000, "--bars", help="Bars per symbol of the sparsest calendar (every class covers the same period)."),
    start: str = typer.Option("2023-01-01", "--start", help="First bar (UTC)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    dirt: Optional[str] = typer.Option(
        None, "--dirt", help="Inject defects, one kind per symbol: 'all' or a comma-separated list."
    ),
    partition: str = typer.Option("auto", "--partition", help=PARTITION_HELP),
) -> None:
    """Write a realistic synthetic lake (GBM, stochastic volatility, regimes, correlated classes)."""
    from ohlcv.lake.sample import DIRT_KINDS, generate_sample_lake

    kinds = list(DIRT_KINDS) if dirt == "all" else [k.strip() for k in (dirt or "").split(",") if k.strip()]
    lake = generate_sample_lake(
        directory,
        symbols_per_class=symbols,
        asset_classes=[a.strip() for a in asset_classes.split(",") if a.strip()],
        freq=freq,
        bars=bars,
        start=start,
        seed=seed,
        dirt=kinds,
        partition=partition,
    )
    from ohlcv.render import render_sample_lake

    render_sample_lake(_console(), lake, bars=bars, freq=freq, directory=directory)


@lake_app.command("ingest")
def lake_ingest(
    source: Path = typer.Argument(..., help="A folder of per-symbol CSV/Parquet files, or one file."),
    lake: str = typer.Argument(..., help="The lake to write into (a local folder)."),
    asset_class: str = typer.Option(..., "--asset-class", help="Asset class of these symbols."),
    freq: str = typer.Option(..., "--freq", help="Bar frequency of these files."),
    symbol: Optional[str] = typer.Option(None, "--symbol", help="Symbol of a single file (default: file name)."),
    partition: str = typer.Option(
        "auto", "--partition", help=PARTITION_HELP + " A symbol already in the lake keeps its years' layout."),
) -> None:
    """Convert vendor exports into the lake layout, appending without duplicating bars."""
    from ohlcv.lake.ingest import ingest
    from ohlcv.render import render_ingest

    result = ingest(source, lake, asset_class=asset_class, freq=freq, symbol=symbol, partition=partition)
    render_ingest(_console(), result, problems_to=_console(stderr=True))
    if not result.symbols:
        raise typer.Exit(1)


@lake_app.command("repartition")
def lake_repartition(
    lake: str = typer.Argument(..., help="The lake to rewrite (a local folder)."),
    partition: str = typer.Option(..., "--partition", help=PARTITION_HELP),
    freq: Optional[str] = typer.Option(None, "--freq", help="Only the symbols of this frequency."),
    asset_classes: Optional[List[str]] = typer.Option(None, "--asset-class", help="Only these asset classes (repeatable)."),
) -> None:
    """Rewrite symbols as year files or month files; the bars stay the same (a build gives the same dataset)."""
    from ohlcv.lake.ingest import repartition
    from ohlcv.render import render_repartition

    result = repartition(lake, partition=partition, freq=freq, asset_classes=tuple(asset_classes or ()))
    render_repartition(_console(), result, problems_to=_console(stderr=True))
    if result.problems and not result.symbols:
        raise typer.Exit(1)


@plugins_app.command("check")
def plugins_check(
    names: Optional[List[str]] = typer.Argument(None, help="Feature names (default: every registered feature)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check features for look-ahead: change every bar after t, recompute, and compare bars <= t.

    Also checks that outputs are missing (not zero) inside each feature's declared warm-up, and that
    a feature declared bounded gives the same values in a batch of series as series by series.
    Exit 1 if any feature fails.
    """
    from ohlcv.lookahead import check_plugins
    from ohlcv.render import count_progress, render_plugin_checks

    with count_progress(_console(stderr=True)) as progress:
        checks = check_plugins(names, progress=progress)
    if as_json:
        _plain(_json_text([check.to_dict() for check in checks]))
    else:
        render_plugin_checks(_console(), checks)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


def _debug() -> bool:
    from ohlcv.errors import debug_enabled

    return debug_enabled()


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: one readable line per error, tracebacks only with OHLCV_DEBUG=1.

    A process of a multi-process (DDP) run leaves through :func:`ohlcv.train.distributed.leave_process`,
    which skips the process group's teardown at interpreter exit (an abort on gloo)."""
    try:
        _main(argv)
    except SystemExit as exc:
        if argv is None:  # the command itself, never a caller such as a test running it in-process
            from ohlcv.train.distributed import leave_process

            leave_process(exc.code)
        raise
    except BaseException:  # OHLCV_DEBUG=1 lets an error through, with its traceback
        if argv is None:
            from ohlcv.train.distributed import leave_process, live_group

            if live_group():
                sys.excepthook(*sys.exc_info())
                leave_process(1)  # (a Ctrl-C is an exit 130 by now, debug or not)
        raise


def _main(argv: Optional[List[str]]) -> None:
    try:
        app(args=argv, prog_name="ohlcv")
    except OhlcvError as exc:
        if _debug():
            raise
        from ohlcv.errors import TerminatedError

        _error(str(exc), once=isinstance(exc, TerminatedError))  # a SIGTERM reaches every rank
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted", plain=True, once=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130 and _after_ctrl_c(exc):  # Typer turns a Ctrl-C in a command into a silent exit 130
            _error("interrupted", plain=True, once=True)
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: still one line
        if _debug():
            raise
        from ohlcv.errors import stack_conflict

        _error(stack_conflict() or f"unexpected {type(exc).__name__}: {exc} (set OHLCV_DEBUG=1 for the traceback)")
        sys.exit(1)


def _after_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling a KeyboardInterrupt (its chain of causes holds one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _json_text(data) -> str:
    """JSON for --json: numpy numbers as numbers, paths and time stamps as strings, NaN as null."""
    from ohlcv.config.loader import json_text

    def other(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return str(value)

    return json_text(data, indent=2, default=other)


def _plain(text: str, *, end: str = "\n") -> None:
    """Machine-readable output (JSON, YAML, the version) to stdout, untouched by Rich; from global rank
    zero only, as the console's prose (one document, however many processes share the run)."""
    from ohlcv.render import render_plain
    from ohlcv.train.distributed import is_rank_zero

    if is_rank_zero():
        render_plain(text, end=end)


def _error(text: str, *, plain: bool = False, once: bool = False) -> None:
    """The error line, prefixed with the rank under DDP; ``once``: what every process of a multi-process run
    was told at the same time (a Ctrl-C, a SIGTERM), said by rank zero alone."""
    from ohlcv.render import render_error
    from ohlcv.train.distributed import is_rank_zero, rank_label

    if not once or is_rank_zero():
        render_error(_console(stderr=True), text, rank=rank_label(), plain=plain)
