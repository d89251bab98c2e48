"""Reading the user's files: parquet and CSV, each failure a one-line error that names the file
and says what to do (a folder, a dangling link, text where parquet was expected, damaged pages, a
column missing or of the wrong type)."""

from __future__ import annotations

import csv
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from matching_cli.errors import DataError

_T = TypeVar("_T")

BATCH_ROWS = 131_072


def check_input_file(path: Path, missing: str = "") -> None:
    """Name what is wrong with an input path: a folder, a link loop, a dangling link, no file.
    `missing` says what to do when there is no file (default: download the data)."""
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"{path}: a symlink loop; point it at the file") from None
        if path.is_symlink():
            raise DataError(
                f"{path}: a link to {os.readlink(path)}, which does not exist"
            ) from None
        if e.errno == errno.ENOENT and missing:
            raise DataError(f"{path}: not found; {missing}") from None
        if e.errno == errno.ENOENT:
            raise DataError(
                f"{path}: file not found; run `matching download` (or --synthetic)"
            ) from None
        raise DataError(f"{path}: cannot read it ({e.strerror})") from None
    if path.is_dir():
        if path.suffix in (".parquet", ".csv"):  # as Spark and pandas' partition_cols write
            raise DataError(
                f"{path}: is a folder (a partitioned data set?); write it as one file, e.g. "
                "pyarrow.parquet.write_table(pyarrow.parquet.read_table(folder), file)"
            )
        raise DataError(f"{path}: is a folder; give a file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a device or a pipe); give a file")


def open_parquet(path: Path) -> pq.ParquetFile:
    check_input_file(path)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        separator = _text_separator(path)
        if separator == "\t":
            raise DataError(
                f"{path}: not a readable parquet file but text separated by tabs (TSV?); write it "
                "as parquet, or as a CSV (commas) named *.csv where a CSV is read"
            ) from None
        if separator == ",":
            raise DataError(
                f"{path}: not a readable parquet file but text (CSV?); name it *.csv where a "
                "CSV is read (pairs for predict and evaluate --pairs, match --listings), or "
                "convert it to parquet"
            ) from None
        raise DataError(f"{path}: not a readable parquet file ({e}); download it again") from e


def is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


CSV_ROW_BYTES = 24  # a line of a pairs CSV: two ids of 8-11 digits, a comma, a newline


def csv_batches(
    path: Path, types: dict[str, pa.DataType], chunk_rows: int = 1 << 16
) -> Iterator[pa.RecordBatch]:
    """The `types` columns of a CSV whose header names them (others ignored), in batches of
    about `chunk_rows` rows. R's write.csv and pandas' QUOTE_ALL quote the names ("variantid1"),
    others put a space after each comma: the header is read as CSV, and Arrow is given the names
    so read and skips the line itself."""
    check_input_file(path)
    with path.open("rb") as f:
        first = f.readline().decode("utf-8-sig", "replace")
    header = [name.strip() for name in next(csv.reader([first], skipinitialspace=True), [])]
    absent = [c for c in types if c not in header]
    if absent:
        raise DataError(
            f"{path}: the header names no {', '.join(absent)} column (found: "
            f"{', '.join(header)[:200]}); the CSV starts with a line naming {','.join(types)}"
        )
    options = pacsv.ConvertOptions(column_types=types, include_columns=list(types))
    block = pacsv.ReadOptions(
        block_size=max(1 << 20, chunk_rows * CSV_ROW_BYTES), column_names=header, skip_rows=1
    )
    try:
        yield from pacsv.open_csv(path, read_options=block, convert_options=options)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{path}: not a readable CSV of {', '.join(types)} ({first_line(e)})"
        ) from None


def csv_table(path: Path, types: dict[str, pa.DataType]) -> pa.Table:
    schema = pa.schema(list(types.items()))
    return pa.Table.from_batches(list(csv_batches(path, types)), schema=schema)


def _text_separator(path: Path) -> str | None:
    """ "," or "\t" where the file starts with a line of text holding one (a CSV or TSV header);
    else None."""
    with path.open("rb") as f:
        head = f.read(256)
    try:
        first_line = head.decode("utf-8-sig").splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        return None
    if not first_line.replace("\t", " ").isprintable():
        return None
    return "\t" if "\t" in first_line else "," if "," in first_line else None


def corrupt_inside(path: Path, batches: Iterable[_T]) -> Iterator[_T]:
    """`batches` as they come; a file whose footer is fine but whose pages are damaged is named."""
    try:
        yield from batches
    except (pa.ArrowException, OSError) as e:
        raise damaged(path, e) from None


def row_group_batches(
    pf: pq.ParquetFile,
    columns: list[str],
    batch_size: int = BATCH_ROWS,
    groups: Iterable[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The file's rows (of row `groups` alone, where given) in batches, read one row group at a
    time: pyarrow's batch reader over the whole file grew by the data it had read (2.9 GB after
    the full data's pictures, none of them kept); per row group it stays flat."""
    for group in range(pf.metadata.num_row_groups) if groups is None else groups:
        yield from pf.iter_batches(batch_size=batch_size, columns=columns, row_groups=[group])


def read_columns(
    pf: pq.ParquetFile, path: Path, columns: list[str], dictionary: tuple[str, ...] = ()
) -> pa.Table:
    """The columns, a column of nulls alone (what pandas writes for a column of None) as strings:
    `check_columns` lets such a column through only where it wants text. The text columns named
    in `dictionary` are read as dictionary arrays, as a file usually stores a column of few
    distinct values: the real size's `categories` in 0.03 s instead of 0.3-1.2 s, no string
    copied per row."""
    schema = pf.schema_arrow
    wanted = [c for c in dictionary if pa.types.is_string(schema.field(c).type)]
    try:
        if wanted:
            pf = pq.ParquetFile(path, metadata=pf.metadata, read_dictionary=wanted)
        table = pf.read(columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise damaged(path, e) from None
    for i, column in enumerate(table.schema):
        if pa.types.is_null(column.type):
            table = table.set_column(i, column.name, pa.nulls(table.num_rows, pa.string()))
        elif pa.types.is_dictionary(column.type) and column.name not in dictionary:
            # A dictionary-encoded column (pandas' category dtype) read as the values it stands for.
            plain = table.column(i).cast(column.type.value_type)
            table = table.set_column(i, column.name, plain)
    return table


_INT64_MAX = 2**63 - 1


def int64_ids(column: pa.Array | pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    """A variantid column as int64, the form in which every table's ids are compared (a uint64
    column's and an int64 column's must meet). uint64 ids above 2^63 - 1 have no int64 form:
    refused, one of them named, rather than wrapped into negative ids that would not meet the other
    tables' and that the results would show."""
    if pa.types.is_uint64(column.type):
        top = pc.max(column).as_py()
        if top is not None and top > _INT64_MAX:
            raise DataError(
                f"{path}: column '{name}' holds ids above 2^63 - 1 (e.g. {top}); matching reads "
                "variantids as signed 64-bit integers: renumber them, the same way in every file"
            )
    return column.to_numpy(zero_copy_only=False).astype(np.int64)


def first_line(error: BaseException | str) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def damaged(path: Path, error: Exception) -> DataError:
    return DataError(
        f"{path}: damaged inside, its data cannot be decoded ({first_line(error)}); download or rewrite it"
    )


def check_columns(pf: pq.ParquetFile, path: Path, expected: dict[str, str]) -> None:
    """`expected` maps column -> 'int' | 'float' | 'string' | 'vector'."""
    schema = pf.schema_arrow
    for column, kind in expected.items():
        if column not in schema.names:
            raise DataError(
                f"{path}: column '{column}' is missing (found: {', '.join(schema.names)})"
            )
        found = schema.field(column).type
        ok = {
            "int": pa.types.is_integer(found),
            # a label: 0/1 as any number, or a boolean
            "number": pa.types.is_integer(found)
            or pa.types.is_floating(found)
            or pa.types.is_boolean(found),
            # A column of nulls alone has no type of its own: no text, not a wrong one.
            "string": _is_text(found)
            or (pa.types.is_dictionary(found) and _is_text(found.value_type))
            or pa.types.is_null(found),
            "vector": list_depth(found) in (1, 2) and pa.types.is_floating(_leaf(found)),
        }[kind]
        if not ok:
            want = {
                "int": "an integer",
                "number": "a number",
                "string": "a string",
                "vector": "list<double> or list<list<double>>",
            }[kind]
            raise DataError(f"{path}: column '{column}' should be {want}, found {found}")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def list_depth(t: pa.DataType) -> int:
    depth = 0
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t, depth = t.value_type, depth + 1
    return depth


def _leaf(t: pa.DataType) -> pa.DataType:
    while list_depth(t):
        t = t.value_type
    return t
