"""The `matching` command line: each command parses options, calls the core, shows the result."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperCommand

from matching_cli import __version__, show
from matching_cli.choices import (
    DEVICE_HELP,
    BlockingMethod,
    Engine,
    Head,
    OnMissing,
    PairFeatures,
    RunStatus,
    Source,
)
from matching_cli.errors import MatchingError
from matching_cli.files import json_text
from matching_cli.progress import rich_reporter
from matching_cli.settings import (
    AUTO_BATCH_MAX,
    AUTO_TREES_BELOW,
    BASE_BATCH,
    BASE_LR,
    MIN_STEPS_PER_EPOCH,
    Settings,
    load_settings,
)

app = typer.Typer(
    name="matching",
    help=(
        "Learn whether two marketplace listings are the same product, from their embeddings and "
        "their own fields."
    ),
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
    """Learn whether two marketplace listings are the same product, from their embeddings and
    their own fields."""
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
    # MLflow sets its loggers' level itself when it is first imported (later, by the command),
    # from MLFLOW_LOGGING_LEVEL: a level the user set there is kept.
    mlflow_level = logging.DEBUG if verbose else logging.WARNING
    if "mlflow" not in sys.modules:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(mlflow_level))
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(mlflow_level)
    # urllib3 warns once per retry of an unreachable tracking server; the error says it once.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.ERROR)
    ctx.obj = State(config=config, verbose=verbose, quiet=quiet)


class PlainUsage(TyperCommand):
    """A usage line names a required argument plainly (`PAIRS`), not in typer's braces."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def handled(command: F) -> F:
    """Turn the core's errors into one red line and a non-zero exit (a traceback with --verbose)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        state: State = (ctx.obj if ctx is not None else None) or State()
        try:
            with _terminate_as_interrupt():
                # pyarrow imports pandas in its first to_numpy(), and a Ctrl-C that comes while it
                # does is lost (pyarrow 25): prepare ran on to the end. Before any work, then.
                import pandas  # noqa: F401

                return command(*args, **kwargs)
        except MatchingError as e:
            if state.verbose:
                stderr.print_exception()
            # escape: a message may hold brackets (`matching-cli[spark]`, `local[2]`)
            stderr.print(
                f"[red]Error:[/red] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]Interrupted.[/yellow]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) ends a command as Ctrl-C does: its MLflow run is
    marked KILLED and nothing half-written is left, instead of the process dying mid-way. The
    training loop catches both itself, to stop after the current batch."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def setting_help(text: str, key: str) -> str:
    """An option's help: what it does, the settings key it overrides and that key's default."""
    section, name = key.split(".")
    default = getattr(Settings.model_fields[section].default, name)
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif key in AUTO_DEFAULTS:
        shown = AUTO_DEFAULTS[key]
    else:
        shown = str(default)
    return f"{text} [{key}, default {shown}]."


# `auto` values, spelt out (settings.auto_batch_size and auto_lr).
AUTO_DEFAULTS = {
    "train.batch_size": f"auto: {AUTO_BATCH_MAX['cpu']} on CPU, {AUTO_BATCH_MAX['accelerator']} "
    f"on GPU, halved for small data to >= {MIN_STEPS_PER_EPOCH} steps an epoch",
    "train.lr": f"auto: {BASE_LR} x sqrt(batch / {BASE_BATCH})",
}

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help=setting_help("Folder of the raw parquet files", "data.dir")),
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
            "--pairs",
            min=20,
            help=setting_help("Demo data: labelled pairs", "download.synthetic_pairs"),
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help=setting_help("Demo data: random seed", "download.synthetic_seed")
        ),
    ] = None,
    source: Annotated[
        Source, typer.Option("--source", help="The public link, or `dvc pull data.dvc`.")
    ] = Source.yandex,
    force: Annotated[
        bool, typer.Option("--force", help="Replace data that is already there.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Get the raw data: competition files, a DVC copy or demo data.

    The competition files come from the Yandex Disk public link; `--source dvc` pulls data.dvc;
    `--synthetic` writes the demo data set. A data folder already there is kept unless `--force`.
    """
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
        origin = dl.pull_dvc(target, Path.cwd(), force=force)
        stdout.print(f"Restored {target} from {origin}.")
        return
    with state.reporter() as reporter:
        if synthetic:
            from matching_cli.data.synthetic import check_same_demo, generate

            if dl.data_present(target) and not force:
                check_same_demo(
                    target, settings.download.synthetic_pairs, settings.download.synthetic_seed
                )
                stdout.print(show.already_there(target, synthetic=True, data_dir=data_dir))
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
                stdout.print(show.already_there(target, synthetic=False, data_dir=data_dir))
                return
            stdout.print(
                f"Downloaded {result.bytes / 2**20:,.1f} MiB into {target}: {', '.join(result.files)}"
            )
    tracked = dl.track_with_dvc(target, Path.cwd())
    if tracked is not None:
        stdout.print(show.dvc_next_step(tracked, target))


@app.command()
@handled
def prepare(
    ctx: typer.Context,
    data_dir: DataDir = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Prepare again from the raw files, even when the arrays are up to date."
        ),
    ] = False,
) -> None:
    """Check the raw files and write training-ready arrays.

    The arrays and the train / validation / test split are reused until the raw files or the
    data settings change.
    """
    from matching_cli.data.prepare import prepared_now

    state: State = ctx.obj
    settings = state.settings(data={"dir": data_dir})
    with state.reporter() as reporter:
        prepared, report = prepared_now(settings.data, reporter, force)
    stdout.print(show.prepared_table(settings.data.prepared_dir, report))
    missing = ", ".join(f"{k}: {v:,}" for k, v in prepared.manifest["missing"].items())
    stdout.print(
        f"{len(prepared.items.ids):,} listings; missing embeddings (zero vectors) {missing}; "
        f"split {report.method} (largest pair-graph component {report.largest_component_share:.2%} of pairs); "
        f"{len(prepared.category_names)} level-2 categories."
    )
    if left_out := prepared.manifest.get("pairs_left_out"):
        shown = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in left_out.items())
        stdout.print(f"Labelled pairs left out: {shown} (see the warning above).")


def _show_run(result: Any, title: str, as_json: bool) -> None:
    registered = getattr(result, "registered", None)
    if as_json:
        typer.echo(json_text(show.run_json(result)))
    else:
        stdout.print(show.run_table(title, result))
        stdout.print(f"MLflow run {result.run_id} ({result.status.lower()})")
        if registered:
            stdout.print(f"Registered as {registered}")


Device = Annotated[
    str | None,
    typer.Option("--device", help=setting_help(f"Where to run: {DEVICE_HELP}", "train.device")),
]
RunId = Annotated[
    str | None,
    typer.Option(
        "--run-id",
        help="MLflow run of `matching train` [of the experiment's finished ones, the one started "
        "last].",
    ),
]
Model = Annotated[
    str | None,
    typer.Option("--model", help="A registered model: models:/NAME@ALIAS or models:/NAME/VERSION."),
]


def _model_source(run_id: str | None, model: str | None) -> str | None:
    """What load_model_run takes: a run id, a models:/ URI, or None for the latest run."""
    if run_id and model:
        raise typer.BadParameter("give --run-id or --model, not both", param_hint="--model")
    if model is not None and not model.startswith("models:/"):
        raise typer.BadParameter(
            "expected models:/NAME@ALIAS or models:/NAME/VERSION", param_hint="--model"
        )
    return model or run_id


ModelExperiment = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        help=setting_help(
            "MLflow experiment whose training run is used without --run-id",
            "mlflow.experiment",
        ),
    ),
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
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help=setting_help("Training epochs (fewer with early stopping)", "train.epochs"),
        ),
    ] = None,
    device: Device = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help=setting_help("Pairs per training batch", "train.batch_size")
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help=setting_help("AdamW learning rate", "train.lr"))
    ] = None,
    hidden_size: Annotated[
        int | None,
        typer.Option(
            "--hidden-size", help=setting_help("Width of the hidden layers", "model.hidden_size")
        ),
    ] = None,
    num_layers: Annotated[
        int | None,
        typer.Option(
            "--num-layers", help=setting_help("Number of hidden layers", "model.num_layers")
        ),
    ] = None,
    head: Annotated[
        Head | None,
        typer.Option(
            "--head",
            help=setting_help(
                "mlp: a neural network; trees: gradient-boosted trees on the pair features; "
                f"auto: trees below {AUTO_TREES_BELOW:,} training pairs, unless an option only "
                "the MLP reads is given",
                "model.head",
            ),
        ),
    ] = None,
    pair_features: Annotated[
        PairFeatures | None,
        typer.Option(
            "--pair-features",
            help=setting_help(
                "How a pair is fed to the model (symmetric: order-free)", "model.pair_features"
            ),
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help=setting_help("Random seed of weights, batches and dropout", "train.seed")
        ),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment", help=setting_help("MLflow experiment of the run", "mlflow.experiment")
        ),
    ] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="MLflow run name.")] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Continue a stopped run from its last epoch checkpoint."),
    ] = None,
    register: Annotated[
        str | None,
        typer.Option("--register", help="Register the model as a new version of this name."),
    ] = None,
    report_dir: ReportDir = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Train the pair model and log the run to MLflow.

    Prepares the data first when needed, picks the threshold on validation, tests the model
    and saves it in models/<run id>/ and in the MLflow run. Under `torchrun --nproc-per-node N
    -m matching_cli train`, N processes train it together (--batch-size is each one's share).
    With --head trees, gradient-boosted trees are fitted on the CPU instead of the MLP; the
    default, --head auto, fits them on smaller catalogues (see --head) unless an option only the
    MLP reads (--epochs, --batch-size, --lr, --hidden-size, --num-layers, --pair-features,
    --device with an accelerator) is given.
    """
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
            "head": head,
        },
        mlflow={"experiment": experiment},
    )
    mlp_options = [
        name
        for name, value in {
            "--epochs": epochs,
            "--batch-size": batch_size,
            "--lr": lr,
            "--hidden-size": hidden_size,
            "--num-layers": num_layers,
            "--pair-features": pair_features,
            f"--device {device}": device if device not in (None, "auto", "cpu") else None,
        }.items()
        if value is not None
    ]
    if resume is None and settings.model.head == Head.trees and mlp_options:
        # Refused, not ignored: a run that silently trained something else than asked is worse
        # than a one-line error.
        raise MatchingError(
            f"{', '.join(mlp_options)}: only for the MLP head; the trees (head = trees) fit on "
            "the CPU and choose their number of trees themselves. Drop them, or give --head mlp"
        )
    if resume is not None:
        _check_resume_options(
            {
                "--batch-size": batch_size,
                "--lr": lr,
                "--hidden-size": hidden_size,
                "--num-layers": num_layers,
                "--pair-features": pair_features,
                "--head": head,
                "--seed": seed,
                "--run-name": run_name,
            }
        )
    with state.reporter() as reporter:
        result = train_job(
            settings,
            reporter,
            run_name,
            resume,
            report_dir,
            register=register,
            resume_epochs=epochs if resume else None,
            mlp_options=mlp_options,
        )
    if result is not None:  # None: a process of several, not the first
        _show_run(result, "Test metrics", as_json)
        if result.status == RunStatus.killed:
            # Stopped by Ctrl-C or SIGTERM during the epochs: the best model so far is saved and
            # shown, but `train && evaluate` must not go on as after a whole run.
            raise typer.Exit(130)


def _check_resume_options(options: dict[str, Any]) -> None:
    """A resumed run goes on as it was trained: options that would change that are refused, not
    ignored (only --epochs, to continue further, --device and --data-dir apply)."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise MatchingError(
            f"--resume continues a run with its own settings: {', '.join(given)} cannot change "
            "them; drop them, or train a new run (--epochs may raise the run's total)"
        )


@app.command()
@handled
def evaluate(
    ctx: typer.Context,
    run_id: RunId = None,
    model: Model = None,
    experiment: ModelExperiment = None,
    pairs: Annotated[
        Path | None,
        typer.Option("--pairs", help="Labelled pairs, parquet or .csv [the run's own test split]."),
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
    """Score a trained model on labelled pairs.

    Uses the run's own test split, or --pairs, and logs the metrics to that training run.
    """
    from matching_cli.jobs import evaluate_job

    state: State = ctx.obj
    settings = state.settings(
        data={"dir": data_dir}, train={"device": device}, mlflow={"experiment": experiment}
    )
    with state.reporter() as reporter:
        result = evaluate_job(
            settings, _model_source(run_id, model), pairs, reporter, report_dir, errors
        )
    where = show.short_path(pairs) if pairs else "the test split"
    _show_run(result, f"Evaluation on {where}", as_json)
    if result.mistakes is not None and not as_json:
        stdout.print(show.mistakes_rich_table(result.mistakes))


@app.command(cls=PlainUsage)
@handled
def predict(
    ctx: typer.Context,
    pairs: Annotated[
        Path,
        typer.Argument(metavar="PAIRS", help="Parquet or .csv file with variantid1, variantid2."),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="CSV file to write (Parquet if named *.parquet); - for standard output.",
        ),
    ],
    run_id: RunId = None,
    model: Model = None,
    experiment: ModelExperiment = None,
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
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="local: this process; spark: Apache Spark with the run's served model (see README).",
        ),
    ] = Engine.local,
    spark_master: Annotated[
        str, typer.Option("--spark-master", help="Spark master URL, with --engine spark.")
    ] = "local[2]",
) -> None:
    """Write match probabilities for a file of pairs.

    The file holds variantid1, variantid2 and score (target with --submission): the probability
    that the two listings are the same product. CSV, or Parquet where its name ends in .parquet.
    """
    from matching_cli.files import is_stdout
    from matching_cli.jobs import predict_job

    if engine != Engine.spark and spark_master != "local[2]":
        raise typer.BadParameter("only with --engine spark", param_hint="--spark-master")

    state: State = ctx.obj
    settings = state.settings(
        data={"dir": data_dir}, train={"device": device}, mlflow={"experiment": experiment}
    )
    with state.reporter() as reporter:
        predicted = predict_job(
            settings,
            _model_source(run_id, model),
            pairs,
            output,
            submission,
            on_missing,
            reporter,
            engine,
            spark_master,
        )
    summary = predicted.summary
    dropped = (
        f"; {summary.missing:,} with an unknown listing ({on_missing})" if summary.missing else ""
    )
    # With `-o -` (or /dev/stdout) the scores are standard output: the summary goes to stderr.
    (stderr if is_stdout(output) else stdout).print(
        f"Wrote {summary.written:,} scores for {summary.pairs:,} pairs to {output}{dropped}, "
        f"with the model of training run {predicted.run_id}."
    )


@app.command()
@handled
def match(
    ctx: typer.Context,
    run_id: RunId = None,
    model: Model = None,
    experiment: ModelExperiment = None,
    listings: Annotated[
        Path | None,
        typer.Option("--listings", help="Parquet or .csv with a variantid column [every listing]."),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("-k", "--k", min=1, help=setting_help("Neighbours per listing", "match.k")),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", min=0, max=1, help="Match probability [the run's]."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            help=setting_help("Folder for the results", "match.output"),
        ),
    ] = None,
    method: Annotated[
        BlockingMethod | None,
        typer.Option(
            "--method", help=setting_help("Blocking; ivf and hnsw are approximate", "match.method")
        ),
    ] = None,
    exact_max: Annotated[
        int | None,
        typer.Option(
            "--exact-max",
            min=2,
            help=setting_help(
                "auto on a CPU: exact search up to this many listings", "match.exact_max"
            ),
        ),
    ] = None,
    same_category: Annotated[
        bool | None,
        typer.Option(
            "--same-category/--no-same-category",
            help=setting_help("Pair only listings of one level-2 category", "match.same_category"),
        ),
    ] = None,
    join_threshold: Annotated[
        float | None,
        typer.Option(
            "--join-threshold",
            min=0,
            max=1,
            help=setting_help(
                "Probability needed to merge two groups; 0: any accepted pair",
                "match.join_threshold",
            ),
        ),
    ] = None,
    max_group: Annotated[
        int | None,
        typer.Option(
            "--max-group",
            min=0,
            help=setting_help("No group grows past this; 0: no cap", "match.max_group"),
        ),
    ] = None,
    probes: Annotated[
        int | None,
        typer.Option(
            "--probes",
            min=1,
            help=setting_help(
                "ivf: nearest clusters searched, recall against time", "match.ivf_probes"
            ),
        ),
    ] = None,
    ef_search: Annotated[
        int | None,
        typer.Option(
            "--ef-search",
            min=1,
            help=setting_help("hnsw: search breadth, recall against time", "match.hnsw_ef_search"),
        ),
    ] = None,
    all_pairs: Annotated[
        bool | None,
        typer.Option(
            "--all-pairs/--no-all-pairs",
            help=setting_help("pairs.parquet: every scored candidate", "match.all_pairs"),
        ),
    ] = None,
    device: Device = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Find the duplicate listings in a whole catalogue.

    Nearest neighbours give candidate pairs, the pair model scores them, and accepted pairs are
    grouped into products.
    """
    from matching_cli.match.job import MatchOptions, match_job

    state: State = ctx.obj
    settings = state.settings(
        data={"dir": data_dir},
        train={"device": device},
        mlflow={"experiment": experiment},
        match={
            "k": k,
            "output": out_dir,
            "method": method,
            "exact_max": exact_max,
            # A flag given, either way, overrides the setting; not given (None), it stands.
            "same_category": same_category,
            "join_threshold": join_threshold,
            "max_group": max_group,
            "ivf_probes": probes,
            "hnsw_ef_search": ef_search,
            "all_pairs": all_pairs,
        },
    )
    options = MatchOptions(
        run_id=_model_source(run_id, model), listings=listings, threshold=threshold
    )
    with state.reporter() as reporter:
        result = match_job(settings, options, reporter)
    if as_json:
        typer.echo(json_text(result.as_dict()))
    else:
        stdout.print(show.match_table(result))
        stdout.print(
            f"Model of training run {result.model_run_id}; this match is MLflow run {result.run_id}."
        )


@app.command(cls=PlainUsage)
@handled
def promote(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="Registered model name (`train --register NAME`)."),
    ],
    version: Annotated[
        int, typer.Argument(metavar="VERSION", min=1, help="Its version to promote.")
    ],
    alias: Annotated[
        str, typer.Option("--alias", help="The alias that will point at this version.")
    ] = "champion",
) -> None:
    """Point a registered model's alias at one of its versions.

    predict, evaluate and match then take --model models:/NAME@ALIAS.
    """
    from matching_cli import tracking

    state: State = ctx.obj
    tracking.configure(state.settings().mlflow, create=False)
    tracking.set_alias(name, version, alias)
    stdout.print(f"models:/{name}@{alias} is now version {version}.")
