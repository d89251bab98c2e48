"""The files of `matching match`: the listings to match, the true products, the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matching_cli.data.readers import (
    check_columns,
    check_input_file,
    csv_table,
    int64_ids,
    is_csv,
    open_parquet,
    read_columns,
)
from matching_cli.data.tables import Items, unique_sorted
from matching_cli.errors import DataError
from matching_cli.files import atomic_file, check_can_make, check_own_folder
from matching_cli.match.blocking import Candidates
from matching_cli.match.clustering import group_sizes

OUTPUT_FILES = ("pairs.parquet", "clusters.parquet", "summary.json")


def check_output_dir(out_dir: Path) -> None:
    """The output folder is replaced as a whole: refuse one holding anything `match` did not write."""
    check_own_folder(
        out_dir,
        OUTPUT_FILES.__contains__,
        "--output",
        "the folder is replaced as a whole: give a new or empty folder",
    )
    # The folder (and any missing above it) appears only at the end; made now, it stayed behind
    # a command that failed before.
    check_can_make(out_dir, "--output")


def listing_rows(items: Items, path: Path | None) -> np.ndarray:
    """Item-matrix rows of the listings in `path` (a parquet file with `variantid`, or a CSV named
    *.csv), or all rows."""
    if path is None:
        return np.arange(len(items.ids))
    ids = _read_listing_ids(path)
    if len(ids) == 0:
        raise DataError(f"--listings {path}: holds no listings")
    rows = items.rows(ids)
    unknown = ids[rows < 0]
    if len(unknown):
        shown = ", ".join(str(v) for v in unknown[:3])
        raise DataError(
            f"--listings {path}: {len(unknown):,} of {len(ids):,} variantids are in no item table "
            f"(e.g. {shown}); are they from this data set?"
        )
    return unique_sorted(rows)


def _read_listing_ids(path: Path) -> np.ndarray:
    try:
        check_input_file(path)
        column = _listing_ids(path)
    except DataError as e:
        raise DataError(f"--listings {e}") from None
    if column.null_count:
        raise DataError(f"--listings {path}: column 'variantid' has {column.null_count} nulls")
    try:
        return int64_ids(column, path, "variantid")
    except DataError as e:
        raise DataError(f"--listings {e}") from None


def _listing_ids(path: Path) -> pa.ChunkedArray:
    if is_csv(path):
        return csv_table(path, {"variantid": pa.int64()}).column(0)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(
            f"{path}: not a parquet file ({e}); give one with a variantid column (or a CSV "
            "named *.csv)"
        ) from None
    check_columns(pf, path, {"variantid": "int"})
    return read_columns(pf, path, ["variantid"]).column(0)


def read_truth(path: Path, items: Items) -> np.ndarray:
    """A product code per item-matrix row (-1 where unknown) from `variantid, product_id`."""
    pf = open_parquet(path)
    check_columns(pf, path, {"variantid": "int", "product_id": "int"})
    table = read_columns(pf, path, ["variantid", "product_id"])
    rows = items.rows(int64_ids(table.column("variantid"), path, "variantid"))
    codes = np.unique(table.column("product_id").to_numpy(), return_inverse=True)[1]
    product = np.full(len(items.ids), -1, np.int64)
    product[rows[rows >= 0]] = codes[rows >= 0]
    return product


def write_pairs(
    path: Path,
    ids: np.ndarray,
    candidates: Candidates,
    scores: np.ndarray,
    keep: np.ndarray | slice,
) -> Path:
    table = pa.table(
        {
            "variantid1": ids[candidates.left[keep]],
            "variantid2": ids[candidates.right[keep]],
            "similarity": candidates.similarity[keep],
            "score": scores[keep],
        }
    )
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_clusters(path: Path, ids: np.ndarray, labels: np.ndarray, scope: np.ndarray) -> Path:
    """One row per listing in scope; a group is named by its smallest variantid (ids are sorted)."""
    first_row = np.full(labels.max() + 1, len(ids), np.int64)
    np.minimum.at(first_row, labels, np.arange(len(ids)))
    cluster_id = ids[first_row[labels[scope]]]
    order = np.lexsort((ids[scope], cluster_id))
    table = pa.table(
        {
            "variantid": ids[scope][order],
            "cluster_id": cluster_id[order],
            "cluster_size": group_sizes(labels)[scope][order].astype(np.int64),
        }
    )
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    return path
