"""Scoring pairs files in chunks: memory stays at the item matrix plus one chunk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from matching_cli.choices import OnMissing
from matching_cli.data.feature_store import PairFeaturizer
from matching_cli.data.readers import (
    CSV_ROW_BYTES,
    check_columns,
    check_input_file,
    corrupt_inside,
    csv_batches,
    int64_ids,
    is_csv,
    open_parquet,
    row_group_batches,
)
from matching_cli.data.tables import Items, absent_pairs
from matching_cli.errors import DataError
from matching_cli.files import check_output, output_stream
from matching_cli.model.scoring import chunk_pairs, scored_chunks
from matching_cli.model.train import items_to_device
from matching_cli.progress import NullReporter, Reporter
from matching_cli.progress import closing as progress_closing

log = logging.getLogger(__name__)


@contextmanager
def scores_file(out_path: Path, submission: bool) -> Iterator[Callable[..., None]]:
    """`write(variantid1, variantid2, scores)` appends rows to the file that every engine writes,
    atomically: `variantid1,variantid2,score` (`target` with `submission`), as Parquet where the
    name ends in `.parquet`, else as CSV with an unquoted header."""
    score_name = "target" if submission else "score"
    schema = pa.schema(
        [("variantid1", pa.int64()), ("variantid2", pa.int64()), (score_name, pa.float32())]
    )
    with output_stream(out_path, "--output") as stream:
        if is_parquet(out_path):
            with pq.ParquetWriter(stream, schema) as writer:
                yield lambda *columns: writer.write_table(pa.table(list(columns), schema=schema))
            return
        # The header is written here: Arrow quotes the names it writes, unless told not to by an
        # option that pyarrow 22 brought.
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        stream.write((",".join(schema.names) + "\n").encode())
        with pacsv.CSVWriter(stream, schema, write_options=options) as writer:
            yield lambda *columns: writer.write_table(pa.table(list(columns), schema=schema))


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


@dataclass
class PredictSummary:
    pairs: int
    written: int
    missing: int  # pairs with a listing found in no item table


def predict_file(
    model: torch.nn.Module,
    items: Items,
    device: torch.device,
    pairs_path: Path,
    out_path: Path,
    *,
    submission: bool = False,
    on_missing: OnMissing = OnMissing.error,
    chunk_rows: int | None = None,
    reporter: Reporter | None = None,
    featurizer: PairFeaturizer | None = None,
) -> PredictSummary:
    """Write `variantid1,variantid2,score` (or `target` with `submission`) for every pair, atomically,
    as `scores_file` says."""
    reporter = reporter or NullReporter()
    total, batches = _pair_batches(pairs_path, chunk_rows)
    check_output(out_path, "--output")
    matrix = items_to_device(items.matrix, device)
    summary = PredictSummary(0, 0, 0)
    examples: list[tuple[int, int]] = []
    with progress_closing(reporter.task("scoring pairs", total=total, unit="pairs")) as task:
        chunks = _chunks(batches, items, pairs_path, on_missing, summary, examples)
        # A listing absent from every table (`--on-missing zero`) is scored as row 0: its pairs' scores
        # are set to 0 after.
        scored = scored_chunks(
            model, matrix, chunks, _Chunk.pairs_to_score, featurizer, missing_row=0
        )
        with scores_file(out_path, submission) as write, closing(scored):
            for chunk, scores in scored:
                if scores is None:
                    task.advance(chunk.seen)
                    continue  # count them all for the message; nothing is kept
                scores[chunk.absent] = (
                    0.0  # `--on-missing zero`: no listing, no evidence of a match
                )
                write(chunk.v1, chunk.v2, scores)
                summary.written += len(chunk.v1)
                task.advance(chunk.seen)
            if on_missing == OnMissing.error and summary.missing:
                raise missing_error(str(pairs_path), summary.missing, summary.pairs, examples)
    if summary.pairs == 0:
        log.warning("%s holds no pairs: wrote a file of no rows", pairs_path)
    return summary


def missing_error(
    where: str,
    count: int,
    total: int,
    examples: list[tuple[int, int]],
    remedy: str = "--on-missing zero or drop",
) -> DataError:
    return DataError(
        f"{absent_pairs(where, count, total, examples)}; pass {remedy} to score or skip them"
    )


@dataclass
class _Chunk:
    """A batch of pairs, its listings' item rows (-1: in no table), and whether to score it."""

    v1: np.ndarray
    v2: np.ndarray
    left: np.ndarray
    right: np.ndarray
    absent: np.ndarray
    seen: int  # pairs read, before any were dropped
    score: bool

    def pairs_to_score(self) -> tuple[np.ndarray, np.ndarray] | None:
        return (self.left, self.right) if self.score else None


def _chunks(
    batches: Iterator[pa.RecordBatch],
    items: Items,
    pairs_path: Path,
    on_missing: OnMissing,
    summary: PredictSummary,
    examples: list[tuple[int, int]],
) -> Iterator[_Chunk]:
    """The pairs' item rows, missing listings counted (with a few `examples`) and handled."""
    for batch in batches:
        v1, v2 = (_ids(batch.column(i), pairs_path) for i in (0, 1))
        left, right = items.rows(v1), items.rows(v2)
        absent = (left < 0) | (right < 0)
        summary.pairs += len(v1)
        seen = len(absent)
        if absent.any():
            summary.missing += int(absent.sum())
            examples += [
                (int(a), int(b)) for a, b in zip(v1[absent][:3], v2[absent][:3], strict=True)
            ]
            if on_missing == OnMissing.drop:
                keep = ~absent
                v1, v2, left, right, absent = (x[keep] for x in (v1, v2, left, right, absent))
        score = not (on_missing == OnMissing.error and summary.missing)
        yield _Chunk(v1, v2, left, right, absent, seen, score)


def _pair_batches(
    path: Path, chunk_rows: int | None
) -> tuple[int | None, Iterator[pa.RecordBatch]]:
    """(rows if known, batches of variantid1, variantid2) from a parquet or a `.csv` pairs file;
    `chunk_rows` a batch, or as `scoring.chunk_pairs` says."""
    if is_csv(path):
        check_input_file(path)
        rows = chunk_rows or chunk_pairs(path.stat().st_size // CSV_ROW_BYTES)  # about
        return None, csv_batches(
            path, dict.fromkeys(["variantid1", "variantid2"], pa.int64()), rows
        )
    pf = open_parquet(path)
    check_columns(pf, path, {"variantid1": "int", "variantid2": "int"})
    rows = chunk_rows or chunk_pairs(pf.metadata.num_rows)
    batches = row_group_batches(pf, ["variantid1", "variantid2"], rows)
    return pf.metadata.num_rows, corrupt_inside(path, batches)


def _ids(column: pa.Array, path: Path) -> np.ndarray:
    if column.null_count:
        count = column.null_count
        raise DataError(
            f"{path}: {count:,} {'pair has' if count == 1 else 'pairs have'} a null variantid; "
            "drop or fill those rows"
        )
    return int64_ids(column, path, "variantid1 or variantid2")
