"""Scoring pairs files in chunks: memory stays at the item matrix plus one chunk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from matching_cli.choices import OnMissing
from matching_cli.data.tables import Items, check_columns, open_parquet
from matching_cli.errors import DataError
from matching_cli.files import atomic_file, check_writable_parent
from matching_cli.model.scoring import predict_proba
from matching_cli.model.train import items_to_device
from matching_cli.progress import NullReporter, Reporter

log = logging.getLogger(__name__)


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
    chunk_rows: int = 1_000_000,
    reporter: Reporter | None = None,
) -> PredictSummary:
    """Write `variantid1,variantid2,score` (or `target` with `submission`) for every pair, atomically."""
    reporter = reporter or NullReporter()
    pf = open_parquet(pairs_path)
    check_columns(pf, pairs_path, {"variantid1": "int", "variantid2": "int"})
    check_writable_parent(out_path, "output")
    # A zero row at the end stands in for listings absent from every table (`--on-missing zero`).
    matrix = items_to_device(items.matrix, device, zero_rows=1)
    zero_row = len(items.ids)
    score_name = "target" if submission else "score"
    schema = pa.schema(
        [("variantid1", pa.int64()), ("variantid2", pa.int64()), (score_name, pa.float32())]
    )
    summary, examples = PredictSummary(0, 0, 0), []
    task = reporter.task("scoring pairs", total=pf.metadata.num_rows, unit="pairs")
    with (
        atomic_file(out_path) as tmp,
        pacsv.CSVWriter(
            str(tmp),
            schema,
            write_options=pacsv.WriteOptions(quoting_style="needed", quoting_header="none"),
        ) as writer,
    ):
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=["variantid1", "variantid2"]):
            v1, v2 = (_ids(batch.column(i), pairs_path) for i in (0, 1))
            left, right = items.rows(v1), items.rows(v2)
            absent = (left < 0) | (right < 0)
            summary.pairs += len(v1)
            if absent.any():
                summary.missing += int(absent.sum())
                examples += [
                    (int(a), int(b)) for a, b in zip(v1[absent][:3], v2[absent][:3], strict=True)
                ]
                if on_missing == OnMissing.drop:
                    keep = ~absent
                    v1, v2, left, right = v1[keep], v2[keep], left[keep], right[keep]
                left, right = (
                    np.where(left < 0, zero_row, left),
                    np.where(right < 0, zero_row, right),
                )
            if on_missing == OnMissing.error and summary.missing:
                task.advance(len(absent))
                continue  # count them all for the message; nothing is kept
            scores = predict_proba(
                model, matrix, torch.from_numpy(left).to(device), torch.from_numpy(right).to(device)
            )
            scores = scores.cpu().numpy()
            writer.write_table(pa.table([v1, v2, scores], schema=schema))
            summary.written += len(v1)
            task.advance(len(absent))
        if on_missing == OnMissing.error and summary.missing:
            shown = ", ".join(f"({a}, {b})" for a, b in examples[:3])
            raise DataError(
                f"{pairs_path}: {summary.missing:,} of {summary.pairs:,} pairs name a listing found in no "
                f"item table, e.g. {shown}; pass --on-missing zero or drop to score or skip them"
            )
    task.close()
    if summary.pairs == 0:
        log.warning("%s holds no pairs: wrote only the header", pairs_path)
    return summary


def _ids(column: pa.Array, path: Path) -> np.ndarray:
    if column.null_count:
        raise DataError(f"{path}: {column.null_count} pairs have a null variantid")
    return column.to_numpy().astype(np.int64)
