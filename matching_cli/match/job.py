"""The job behind `matching match`: blocking, scoring, clustering and quality for a whole catalogue."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matching_cli import tracking
from matching_cli.data.feature_store import PairFeaturizer
from matching_cli.data.layout import TRUTH_FILE
from matching_cli.files import atomic_dir, interrupts_held, json_text
from matching_cli.loading import load_model_run
from matching_cli.match.blocking import (
    Candidates,
    HnswParams,
    IvfParams,
    find_candidates,
)
from matching_cli.match.clustering import Guard, cluster, size_histogram
from matching_cli.match.files import (
    check_output_dir,
    listing_rows,
    read_truth,
    write_clusters,
    write_pairs,
)
from matching_cli.match.quality import measure_quality
from matching_cli.match.text_blocking import (
    TextBlocking,
    shared_token_pairs,
    with_text_candidates,
)
from matching_cli.model.saved import Classifier, SavedModel
from matching_cli.model.scoring import chunk_pairs, scored_chunks
from matching_cli.model.train import items_to_device
from matching_cli.progress import NullReporter, Reporter, Task
from matching_cli.progress import closing as progress_closing
from matching_cli.settings import MatchSettings, Settings

log = logging.getLogger(__name__)
ARTIFACT_LIMIT = 200 * 2**20  # output files larger than this stay out of MLflow


@dataclass(frozen=True)
class MatchOptions:
    """What one `match` asks for beyond the [match] settings."""

    run_id: str | None = None
    listings: Path | None = None  # parquet with `variantid`; None: the whole catalogue
    threshold: float | None = None  # None: the model's grouping threshold


@dataclass
class MatchResult:
    run_id: str
    model_run_id: str
    out_dir: Path
    counts: dict[str, int]
    groups_by_size: dict[str, int]
    seconds: dict[str, float]
    quality: dict[str, float] = field(default_factory=dict)

    @property
    def candidates_per_s(self) -> float:
        return self.counts["candidates"] / max(self.seconds.get("blocking", 0.0), 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "out_dir": str(self.out_dir),
            "candidates_per_s": self.candidates_per_s,
        }


class Stopwatch:
    """Times each stage, and shows it as a task (a bar, or start and end lines in a log)."""

    def __init__(self, reporter: Reporter) -> None:
        self.seconds: dict[str, float] = {}
        self.reporter = reporter

    @contextmanager
    def __call__(self, stage: str, total: int | None = None, unit: str = "items") -> Iterator[Task]:
        started = time.perf_counter()
        with progress_closing(self.reporter.task(stage, total=total, unit=unit)) as task:
            yield task
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def match_job(
    settings: Settings,
    options: MatchOptions = MatchOptions(),
    reporter: Reporter | None = None,
    run_name: str | None = None,
) -> MatchResult:
    reporter = reporter or NullReporter()
    tracking.configure(settings.mlflow, create=False)
    clock = Stopwatch(reporter)
    match = settings.match
    out_dir = match.output
    check_output_dir(out_dir)
    with clock("loading"):
        loaded = load_model_run(settings, options.run_id, reporter)
        model_run_id, saved, prepared, device = (
            loaded.run_id,
            loaded.saved,
            loaded.prepared,
            loaded.device,
        )
        queries = listing_rows(prepared.items, options.listings)
    threshold = saved.grouping_threshold if options.threshold is None else options.threshold
    featurizer = loaded.featurizer()
    if match.text_blocking and not prepared.feature_names:
        # The names' model-code tokens are listing features: a store prepared without them
        # (`data.listing_features = false`) has none to propose candidates with.
        log.info("Text blocking is off: the prepared data has no listing features")
        match = match.model_copy(update={"text_blocking": False})
    tags = tracking.git_tags() | {
        "model_run_id": model_run_id,
        "device": str(device),
        "data_fingerprint": prepared.fingerprint,
    }
    # Interrupts are held from the moment the results are whole until their run is closed: one
    # that came as the output folder was swapped exited 130 over new results and a KILLED run.
    held = ExitStack()
    with held, tracking.run("match", run_name, tags) as run:
        run_id = run.id
        with clock("blocking"):
            groups = prepared.item_category if match.same_category else None
            if groups is not None and not (groups >= 0).any():
                log.warning(
                    "--same-category: no listing has a level-2 category (see prepare's log): "
                    "every listing is compared with all others"
                )
            elif groups is not None and (groups < 0).any():
                log.info(
                    "--same-category: %s listings have no level-2 category: they are compared "
                    "with each other only",
                    f"{int((groups < 0).sum()):,}",
                )
            candidates = find_candidates(
                prepared.items.matrix,
                queries,
                match.k,
                method=match.method,
                device=device,
                groups=groups,
                exact_max=match.exact_max,
                hnsw=HnswParams.of(match),
                ivf=IvfParams.of(match),
                reporter=reporter,
            )
            if match.text_blocking:
                listings = featurizer.listings if featurizer else prepared.listings()
                extra = shared_token_pairs(
                    listings.text_field("name_digits"), queries, TextBlocking.of(match), groups
                )
                candidates = with_text_candidates(candidates, prepared.items.matrix, *extra)
        tracking.log_params(
            _params(match, options, saved, threshold, model_run_id, device, candidates)
        )
        with clock("scoring"):
            scores = score_candidates(
                saved.classifier,
                prepared.items.matrix,
                candidates,
                loaded.scoring_device,
                reporter,
                featurizer,
            )
        accepted = scores >= threshold
        with clock("clustering", int(accepted.sum()), "accepted pairs") as task:
            labels = cluster(
                len(prepared.items.ids),
                candidates.left[accepted],
                candidates.right[accepted],
                scores[accepted],
                Guard.of(match),
            )
            scope = np.union1d(
                queries, np.concatenate([candidates.left[accepted], candidates.right[accepted]])
            )
            task.advance(int(accepted.sum()))
        cut = accepted & (labels[candidates.left] != labels[candidates.right])
        counts = {
            "listings": len(queries),
            "catalogue": len(prepared.items.ids),
            "candidates": len(candidates),
            "accepted_pairs": int(accepted.sum()),
            "pairs_cut_by_guard": int(cut.sum()),
            "groups": len(np.unique(labels[scope])),
        }
        result = MatchResult(
            run_id,
            model_run_id,
            out_dir,
            counts,
            size_histogram(np.unique(labels[scope], return_inverse=True)[1]),
            clock.seconds,
        )
        with clock("quality"):
            truth = settings.data.dir / TRUTH_FILE
            product = read_truth(truth, prepared.items) if truth.is_file() else None
            result.quality = measure_quality(prepared, queries, candidates, labels, product)
        # Every file is written into a staging folder that replaces the output folder at the end:
        # a failure on the way leaves the old results whole, never a mix of old and new.
        with atomic_dir(out_dir) as staging:
            with clock("writing"):
                keep = slice(None) if match.all_pairs else accepted
                files = [
                    write_pairs(
                        staging / "pairs.parquet", prepared.items.ids, candidates, scores, keep
                    ),
                    write_clusters(staging / "clusters.parquet", prepared.items.ids, labels, scope),
                ]
            _log_result(result, files, staging)
            held.enter_context(interrupts_held())
    return result


def score_candidates(
    model: Classifier,
    matrix: np.ndarray,
    candidates: Candidates,
    device: torch.device,
    reporter: Reporter,
    featurizer: PairFeaturizer | None = None,
) -> np.ndarray:
    """Match probabilities of the candidate pairs, through the same `predict_proba` as `predict`."""
    items = items_to_device(matrix, device)
    out = np.empty(len(candidates), np.float32)
    with progress_closing(
        reporter.task("scoring candidates", total=len(candidates), unit="pairs")
    ) as task:
        size = chunk_pairs(len(candidates))
        chunks = [slice(start, start + size) for start in range(0, len(candidates), size)]
        pairs_of = lambda chunk: (candidates.left[chunk], candidates.right[chunk])  # noqa: E731
        with closing(scored_chunks(model, items, chunks, pairs_of, featurizer)) as scored:
            for chunk, scores in scored:
                out[chunk] = scores
                task.advance(len(out[chunk]))
    return out


def _params(
    match: MatchSettings,
    options: MatchOptions,
    saved: SavedModel,
    threshold: float,
    model_run_id: str,
    device: torch.device,
    candidates: Candidates,
) -> dict[str, Any]:
    return {
        "model_run_id": model_run_id,
        "listings": str(options.listings or "all"),
        "k": match.k,
        "threshold": threshold,
        "threshold_from": _threshold_from(saved, options),
        "method": str(match.method),
        "methods_used": json.dumps(candidates.methods),
        "exact_max": match.exact_max,
        "same_category": match.same_category,
        "join_threshold": Guard.of(match).join_threshold,
        "max_group": Guard.of(match).max_size,
        "ivf_lists": match.ivf_lists,
        "ivf_probes": match.ivf_probes,
        "hnsw_m": match.hnsw_m,
        "hnsw_ef_construction": match.hnsw_ef_construction,
        "hnsw_ef_search": match.hnsw_ef_search,
        "device": str(device),
        "out_dir": str(match.output.resolve()),
        "all_pairs": match.all_pairs,
        "text_blocking": match.text_blocking,
        "text_token_cap": match.text_token_cap,
        "text_per_listing": match.text_per_listing,
    }


def _threshold_from(saved: SavedModel, options: MatchOptions) -> str:
    if options.threshold is not None:
        return "option"
    return "run" if saved.group_threshold is None else "group_precision"


def _log_result(result: MatchResult, files: list[Path], folder: Path) -> None:
    summary = result.as_dict()
    (folder / "summary.json").write_text(json_text(summary, indent=2))
    metrics = (
        {f"n_{k}": v for k, v in result.counts.items()}
        | {f"groups_of_{k.replace('+', '_plus')}": v for k, v in result.groups_by_size.items()}
        | {f"seconds_{k}": v for k, v in result.seconds.items()}
        | {"candidates_per_s": result.candidates_per_s}
        | result.quality
    )
    tracking.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    small = [p for p in files if p.stat().st_size <= ARTIFACT_LIMIT]
    if len(small) < len(files):
        log.info(
            "Output files over %d MiB stay out of MLflow; the run records their folder",
            ARTIFACT_LIMIT // 2**20,
        )
    tracking.log_files([*small, folder / "summary.json"], "match")
