"""The `matching` command line: each command parses options, calls the core, shows the result."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from matching_cli import __version__
from matching_cli.choices import DEVICE_HELP, BlockingMethod, OnMissing, PairFeatures, Source
from matching_cli.errors import MatchingError
from matching_cli.progress import rich_reporter
from matching_cli.settings import Settings, load_settings

app = typer.Typer(
    name="matching",
    help="Learn whether two marketplace listings are the same product, from their embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [section.key] literally
)
stdout = Console()
stderr = Console(stderr=True)
log = logging.getLogger("matching_cli")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    config: Path | None = None
    verbose: bool = False
    quiet: bool = False

    def settings(self, **sections: dict[str, Any]) -> Settings:
        return load_settings(self.config, sections)

    def reporter(self):  # type: ignore[no-untyped-def]
        return rich_reporter(stderr, enabled=not self.quiet)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"matching {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A TOML file over settings.toml.", dir_okay=False),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logs and tracebacks.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Warnings and results only.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Learn whether two marketplace listings are the same product, from their embeddings."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs and CI: one plain line per record, never wrapped
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("matching_cli").setLevel(level)
    # MLflow's INFO lines are about its store's migrations, not our work; --verbose shows them.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = State(config=config, verbose=verbose, quiet=quiet)


def handled(command: F) -> F:
    """Turn the core's errors into one red line and a non-zero exit (a traceback with --verbose)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        state: State = (ctx.obj if ctx is not None else None) or State()
        try:
            return command(*args, **kwargs)
        except MatchingError as e:
            if state.verbose:
                stderr.print_exception()
            stderr.print(f"[red]Error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]Interrupted.[/yellow]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder of the raw parquet files [data.dir].")
]


@app.command()
@handled
def download(
    ctx: typer.Context,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Write the demo data set instead of downloading.")
    ] = False,
    pairs: Annotated[
        int | None,
        typer.Option(
            "--pairs", min=20, help="Demo data: labelled pairs [download.synthetic_pairs]."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Demo data: random seed.")] = None,
    source: Annotated[
        Source, typer.Option("--source", help="The public link, or `dvc pull data.dvc`.")
    ] = Source.yandex,
    force: Annotated[
        bool, typer.Option("--force", help="Replace data that is already there.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Get the raw data: the competition files, a DVC remote's copy, or the demo data set."""
    from matching_cli.data import download as dl

    if synthetic and source != Source.yandex:
        raise typer.BadParameter(
            "--synthetic writes the demo data set; it comes from no source", param_hint="--source"
        )
    state: State = ctx.obj
    settings = state.settings(
        data={"dir": data_dir}, download={"synthetic_pairs": pairs, "synthetic_seed": seed}
    )
    target = settings.data.dir
    if source == Source.dvc:
        dl.pull_dvc(target, Path.cwd())
        stdout.print(f"Pulled {target} from the DVC remote.")
        return
    already = f"{target} already holds the data; --force replaces it."
    with state.reporter() as reporter:
        if synthetic:
            from matching_cli.data.synthetic import generate

            if dl.data_present(target) and not force:
                stdout.print(already)
                return

            with dl.atomic_data_dir(target, force) as staging:
                summary = generate(
                    staging,
                    settings.download.synthetic_pairs,
                    settings.download.synthetic_seed,
                    reporter,
                )
            stdout.print(
                f"Wrote the demo data set to {target}: {summary.pairs:,} labelled pairs "
                f"({summary.positive_share:.1%} positive), {summary.test_pairs:,} test pairs, "
                f"{summary.listings:,} listings."
            )
        else:
            result = dl.download_yandex(settings.download, target, force=force, reporter=reporter)
            if result.skipped:
                stdout.print(already)
                return
            stdout.print(
                f"Downloaded {result.bytes / 2**20:,.1f} MiB into {target}: {', '.join(result.files)}"
            )
    if dl.track_with_dvc(target, Path.cwd()):
        stdout.print(f"Tracked {target} with DVC: commit {target}.dvc, then `dvc push`.")


@app.command()
@handled
def prepare(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Validate the raw files and write training-ready arrays and splits (reused until they change)."""
    from matching_cli.data.prepare import prepare as run_prepare

    state: State = ctx.obj
    settings = state.settings(data={"dir": data_dir})
    with state.reporter() as reporter:
        prepared, report = run_prepare(settings.data, reporter)
    table = Table(title=f"Prepared data in {settings.data.prepared_dir}")
    for column in ("", "pairs", "positive share"):
        table.add_column(column, justify="right" if column else "left")
    for name, size in report.sizes.items():
        table.add_row(name, f"{size:,}", f"{report.positive_share[name]:.1%}")
    stdout.print(table)
    missing = ", ".join(f"{k}: {v:,}" for k, v in prepared.manifest["missing"].items())
    stdout.print(
        f"{len(prepared.items.ids):,} listings; missing embeddings (zero vectors) {missing}; "
        f"split {report.method} (largest pair-graph component {report.largest_component_share:.2%} of pairs); "
        f"{len(prepared.category_names)} level-2 categories."
    )
    if left_out := prepared.manifest.get("pairs_left_out"):
        shown = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in left_out.items())
        stdout.print(f"Labelled pairs left out: {shown} (see the warning above).")


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    return table


def _show_run(result: Any, title: str, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {"run_id": result.run_id, "status": result.status, "metrics": result.metrics}
            )
        )
    else:
        stdout.print(_metrics_table(title, result.metrics))
        stdout.print(f"MLflow run {result.run_id} ({result.status.lower()})")


Device = Annotated[str | None, typer.Option("--device", help=f"{DEVICE_HELP} [train.device].")]
RunId = Annotated[
    str | None,
    typer.Option("--run-id", help="MLflow run of `matching train` [latest finished one]."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
ReportDir = Annotated[
    Path | None,
    typer.Option(
        "--report-dir",
        file_okay=False,  # refused before training, not after it
        help="Also write metrics.json and the figures here (for DVC).",
    ),
]


@app.command()
@handled
def train(
    ctx: typer.Context,
    epochs: Annotated[int | None, typer.Option("--epochs", help="[train.epochs]")] = None,
    device: Device = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="[train.batch_size]")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate [train.lr].")] = None,
    hidden_size: Annotated[
        int | None, typer.Option("--hidden-size", help="[model.hidden_size]")
    ] = None,
    num_layers: Annotated[
        int | None, typer.Option("--num-layers", help="[model.num_layers]")
    ] = None,
    pair_features: Annotated[
        PairFeatures | None,
        typer.Option("--pair-features", help="[model.pair_features]"),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="[train.seed]")] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="[mlflow.experiment]")
    ] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="MLflow run name.")] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Continue a stopped run from its last epoch checkpoint."),
    ] = None,
    report_dir: ReportDir = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Train the pair model (preparing the data first when needed); log the run to MLflow."""
    from matching_cli.jobs import train_job

    state: State = ctx.obj
    settings = state.settings(
        data={"dir": data_dir},
        train={
            "epochs": epochs,
            "device": device,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
        },
        model={
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "pair_features": pair_features,
        },
        mlflow={"experiment": experiment},
    )
    with state.reporter() as reporter:
        result = train_job(settings, reporter, run_name, resume, report_dir)
    _show_run(result, "Test metrics", as_json)


@app.command()
@handled
def evaluate(
    ctx: typer.Context,
    run_id: RunId = None,
    pairs: Annotated[
        Path | None,
        typer.Option("--pairs", help="Labelled pairs parquet [the run's own test split]."),
    ] = None,
    device: Device = None,
    report_dir: ReportDir = None,
    data_dir: DataDir = None,
    errors: Annotated[
        int,
        typer.Option(
            "--errors",
            min=0,
            help="Also show (and log as evaluation/errors.csv) the N most confident false "
            "matches and the N most confident missed matches.",
        ),
    ] = 0,
    as_json: Json = False,
) -> None:
    """Score a training run's model on its test split (or on --pairs) and log the metrics to that run."""
    from matching_cli.jobs import evaluate_job

    state: State = ctx.obj
    settings = state.settings(data={"dir": data_dir}, train={"device": device})
    with state.reporter() as reporter:
        result = evaluate_job(settings, run_id, pairs, reporter, report_dir, errors)
    _show_run(result, f"Evaluation on {pairs or 'the test split'}", as_json)
    if result.mistakes is not None and not as_json:
        stdout.print(_mistakes_table(result.mistakes))


def _mistakes_table(mistakes: Any) -> Table:
    """One row per mistake: both names stacked in one cell, so a narrow terminal still shows them."""
    from matching_cli.mistakes import shown_features

    features = shown_features(mistakes)
    table = Table(title="The most confident mistakes (all features: evaluation/errors.csv)")
    table.add_column("kind", min_width=6)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("listings", min_width=20, ratio=1)
    for name in features:  # headers wrap at the underscores, values stay whole
        table.add_column(name.replace("_", " "), justify="right", min_width=5)
    for row in mistakes.itertuples(index=False):
        names = "\n".join(
            _short(str(name) if isinstance(name, str) else str(variantid))
            for name, variantid in ((row.name1, row.variantid1), (row.name2, row.variantid2))
        )
        values = [f"{getattr(row, f):.2f}" for f in features]
        table.add_row(row.kind, f"{row.score:.3f}", names, *values)
    return table


def _short(text: str, width: int = 36) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
@handled
def predict(
    ctx: typer.Context,
    pairs: Annotated[
        Path, typer.Argument(help="Parquet or .csv file with variantid1, variantid2.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV file to write; - for standard output.")
    ],
    run_id: RunId = None,
    submission: Annotated[
        bool,
        typer.Option("--submission", help="Write the competition's variantid1,variantid2,target."),
    ] = False,
    on_missing: Annotated[
        OnMissing,
        typer.Option(
            "--on-missing",
            help="A pair with a listing in no table: fail, score it as zeros, or leave it out.",
        ),
    ] = OnMissing.error,
    device: Device = None,
    data_dir: DataDir = None,
) -> None:
    """Score pairs with a trained model and write a CSV of match probabilities."""
    from matching_cli.files import is_stdout
    from matching_cli.jobs import predict_job

    state: State = ctx.obj
    settings = state.settings(data={"dir": data_dir}, train={"device": device})
    with state.reporter() as reporter:
        summary = predict_job(settings, run_id, pairs, output, submission, on_missing, reporter)
    dropped = (
        f"; {summary.missing:,} with an unknown listing ({on_missing})" if summary.missing else ""
    )
    # With `-o -` (or /dev/stdout) the scores are standard output: the summary goes to stderr.
    (stderr if is_stdout(output) else stdout).print(
        f"Wrote {summary.written:,} scores for {summary.pairs:,} pairs to {output}{dropped}."
    )


@app.command()
@handled
def match(
    ctx: typer.Context,
    run_id: RunId = None,
    listings: Annotated[
        Path | None,
        typer.Option("--listings", help="Parquet with a variantid column [every listing]."),
    ] = None,
    k: Annotated[
        int | None, typer.Option("-k", "--k", min=1, help="Neighbours per listing [match.k].")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", min=0, max=1, help="Match probability [the run's]."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", file_okay=False, help="Folder for the results [match.output]."
        ),
    ] = None,
    method: Annotated[
        BlockingMethod | None,
        typer.Option("--method", help="Blocking; hnsw is approximate [match.method]."),
    ] = None,
    exact_max: Annotated[
        int | None,
        typer.Option(
            "--exact-max",
            min=2,
            help="auto on a CPU: exact search up to this many listings [match.exact_max].",
        ),
    ] = None,
    same_category: Annotated[
        bool | None,
        typer.Option(
            "--same-category",
            help="Pair only listings of one level-2 category [match.same_category].",
        ),
    ] = None,
    join_threshold: Annotated[
        float | None,
        typer.Option(
            "--join-threshold",
            min=0,
            max=1,
            help="Probability needed to merge two groups; 0: any accepted pair "
            "[match.join_threshold].",
        ),
    ] = None,
    max_group: Annotated[
        int | None,
        typer.Option(
            "--max-group", min=0, help="No group grows past this; 0: no cap [match.max_group]."
        ),
    ] = None,
    ef_search: Annotated[
        int | None,
        typer.Option(
            "--ef-search",
            min=1,
            help="hnsw: search breadth, recall against time [match.hnsw_ef_search].",
        ),
    ] = None,
    all_pairs: Annotated[
        bool | None,
        typer.Option(
            "--all-pairs", help="pairs.parquet: every scored candidate [match.all_pairs]."
        ),
    ] = None,
    device: Device = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Find the duplicates in a catalogue: nearest neighbours, the pair model, product groups."""
    from matching_cli.match.job import MatchOptions, match_job

    state: State = ctx.obj
    settings = state.settings(
        data={"dir": data_dir},
        train={"device": device},
        match={
            "k": k,
            "output": out_dir,
            "method": method,
            "exact_max": exact_max,
            # A flag given turns a setting on; not given, the setting stands.
            "same_category": same_category or None,
            "join_threshold": join_threshold,
            "max_group": max_group,
            "hnsw_ef_search": ef_search,
            "all_pairs": all_pairs or None,
        },
    )
    options = MatchOptions(run_id=run_id, listings=listings, threshold=threshold)
    with state.reporter() as reporter:
        result = match_job(settings, options, reporter)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
    else:
        stdout.print(_match_table(result))


def _match_table(result: Any) -> Table:
    table = Table(title=f"Matches in {result.out_dir} (run {result.run_id})")
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in result.counts.items():
        table.add_row(name.replace("_", " "), f"{value:,}")
    for size, groups in result.groups_by_size.items():
        table.add_row(f"groups of {size}", f"{groups:,}")
    for stage, seconds in result.seconds.items():
        table.add_row(f"{stage} (s)", f"{seconds:,.1f}")
    for name, value in result.quality.items():
        table.add_row(name.replace("_", " "), f"{value:.4f}")
    return table
