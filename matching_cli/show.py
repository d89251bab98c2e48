"""What the commands print: result tables and the one-line messages that say what happened and
what to do next. Tables fit 80 columns: long paths are shortened, never wrapped mid-word."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from matching_cli.data.layout import is_demo

if TYPE_CHECKING:
    from matching_cli.data.download import Tracked
    from matching_cli.data.prepare import SplitReport
    from matching_cli.jobs import RunResult
    from matching_cli.match.job import MatchResult

TITLE_PATH_CHARS = 40


def short_path(path: Path, limit: int = TITLE_PATH_CHARS) -> str:
    """`path` relative to the current folder when inside it; past `limit`, its last parts after
    `…/`, so that a title fits on one line."""
    try:
        text = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(path)
    if len(text) <= limit:
        return text
    kept = ""
    for part in reversed(Path(text).parts):
        candidate = f"{part}/{kept}" if kept else part
        if len(candidate) + 2 > limit and kept:
            break
        kept = candidate
    return f"…/{kept}"


def run_table(title: str, result: RunResult) -> Table:
    """Test metrics, then the threshold they were measured at and, after training, the head and
    the epoch kept (the MLP) or the number of trees."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    if result.threshold is not None:
        table.add_section()
        # On validation, or on the cross-fitted trees' out-of-fold scores of train and validation.
        table.add_row("threshold (best F1, chosen in training)", f"{result.threshold:.4f}")
    if result.head is not None:
        table.add_row("head", str(result.head))
    if result.best_epoch is not None:
        table.add_row("best epoch (weights kept)", f"{result.best_epoch} of {result.epochs}")
    if result.n_trees is not None:
        table.add_row("trees fitted", str(result.n_trees))
    return table


def run_json(result: RunResult) -> dict[str, Any]:
    out: dict[str, Any] = {"run_id": result.run_id, "status": result.status}
    out["metrics"] = result.metrics
    if result.threshold is not None:
        out["threshold"] = result.threshold
    if result.head is not None:
        out["head"] = str(result.head)
    if result.best_epoch is not None:
        out["best_epoch"], out["epochs"] = result.best_epoch, result.epochs
    if result.n_trees is not None:
        out["n_trees"] = result.n_trees
    if result.registered:
        out["registered"] = result.registered
    return out


def prepared_table(prepared_dir: Path, report: SplitReport) -> Table:
    table = Table(title=f"Prepared data in {short_path(prepared_dir)}")
    for column in ("split", "pairs", "positive share"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for name, size in report.sizes.items():
        table.add_row(name, f"{size:,}", f"{report.positive_share[name]:.1%}")
    return table


def match_table(result: MatchResult) -> Table:
    table = Table(title=f"Matches in {short_path(result.out_dir)}")
    table.add_column("measure")
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


def already_there(target: Path, synthetic: bool, data_dir: Path | None) -> str:
    """What the data folder holds, and the command that would replace it (nothing was changed)."""
    where = f" --data-dir {data_dir}" if data_dir is not None else ""
    holds = "the demo data set" if is_demo(target) else "the competition files"
    if synthetic:
        return (
            f"{target} already holds {holds}; nothing was written. "
            f"`matching download --synthetic --force{where}` writes the demo data set over it."
        )
    if is_demo(target):
        return (
            f"{target} holds the demo data set (from `matching download --synthetic`); nothing "
            f"was downloaded. `matching download --force{where}` replaces it with the "
            "competition files."
        )
    return (
        f"{target} already holds the competition files; nothing was downloaded. "
        f"`matching download --force{where}` downloads them again."
    )


def dvc_next_step(tracked: Tracked, target: Path) -> str:
    """After `dvc add`: commit only when the .dvc file changed; `dvc push` only with a remote."""
    name = tracked.dvc_file.name
    if not tracked.changed:
        return f"{name} already described these files: nothing to commit."
    commit = f"Tracked {target} with DVC: commit {name} (`git add {name} && git commit`)"
    if tracked.remote:
        return f"{commit}, then `dvc push` uploads the files to the remote {tracked.remote!r}."
    return (
        f"{commit}. No DVC remote is configured: to share the files, "
        "`dvc remote add -d NAME URL`, then `dvc push`."
    )


def mistakes_rich_table(mistakes: Any) -> Table:
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
            _cut(str(name) if isinstance(name, str) else str(variantid))
            for name, variantid in ((row.name1, row.variantid1), (row.name2, row.variantid2))
        )
        values = [f"{getattr(row, f):.2f}" for f in features]
        table.add_row(row.kind, f"{row.score:.3f}", names, *values)
    return table


def _cut(text: str, width: int = 36) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
