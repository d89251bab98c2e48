"""Raw parquet files -> validated arrays: one float32 item matrix, pair index arrays, categories.

Only the needed columns are read (never the descriptions), in record batches, straight into a
preallocated matrix: no per-row Python, and memory stays near the size of the result.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from matching_cli.data.fields import json_object
from matching_cli.data.labels import clean_labels
from matching_cli.data.layout import ATTRIBUTES_FILE, IMAGE_FILES, TEXT_FILE
from matching_cli.data.readers import (
    BATCH_ROWS,
    check_columns,
    corrupt_inside,
    csv_table,
    first_line,
    int64_ids,
    is_csv,
    list_depth,
    open_parquet,
    read_columns,
)
from matching_cli.data.words import distinct
from matching_cli.errors import DataError
from matching_cli.files import fingerprint_file
from matching_cli.progress import NullReporter, Reporter, closing

log = logging.getLogger(__name__)

# Widths of the competition's embedding columns; other columns take the width most rows have.
KNOWN_DIMS = {
    "name_bert_64": 64,
    "main_pic_embeddings_resnet_v1": 128,
    "pic_embeddings_resnet_v1": 128,
}


@dataclass(frozen=True)
class Block:
    """One embedding column of the item tables, as it sits in the item matrix."""

    name: str
    file: str
    dim: int
    offset: int


@dataclass
class Items:
    ids: np.ndarray  # sorted int64 variantids
    matrix: np.ndarray  # (n, sum of dims) float32, each block L2-normalised, missing = 0
    missing: np.ndarray  # (n, n_blocks) bool
    blocks: list[Block]

    def rows(self, variantids: np.ndarray) -> np.ndarray:
        """Row of each variantid, -1 where the listing is in no table."""
        return lookup(self.ids, variantids)


def lookup(sorted_ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in `sorted_ids`, -1 where it is absent.

    The keys are searched in sorted order: on millions of random keys that is about 3x faster than
    searching them as they come (each binary search then walks a cached path)."""
    # As int64, like `sorted_ids`: numpy compares uint64 with int64 as float64, and ids of 2^53 and
    # above then meet their neighbours.
    keys = np.asarray(keys).astype(np.int64, copy=False)
    if len(sorted_ids) == 0:
        return np.full(len(keys), -1, np.int64)
    order = np.argsort(keys)
    ordered = keys[order]
    pos = np.minimum(np.searchsorted(sorted_ids, ordered), len(sorted_ids) - 1)
    out = np.empty(len(keys), np.int64)
    out[order] = np.where(sorted_ids[pos] == ordered, pos, -1)
    return out


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """`np.unique` by sorting: numpy's default hash-based unique is about 40x slower on millions of
    integers."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    keep = np.empty(len(ordered), bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def image_file(data_dir: Path) -> Path | None:
    """`images_embed.parquet` (the original project's name) or `resnet.parquet` (the competition's);
    None where there is neither: a catalogue without pictures (its picture features are marked
    missing, and `data.blocks` must name no picture column)."""
    found = [data_dir / name for name in IMAGE_FILES if (data_dir / name).is_file()]
    if len(found) == 2 and fingerprint_file(found[0]) != fingerprint_file(found[1]):
        raise DataError(
            f"{data_dir}: both {' and '.join(sorted(IMAGE_FILES))} exist and differ; keep one"
        )
    return found[0] if found else None


def _block_source(data_dir: Path, column: str) -> Path:
    images = image_file(data_dir)
    candidates = [data_dir / TEXT_FILE, *([images] if images else [])]
    for path in candidates:
        if column in open_parquet(path).schema_arrow.names:
            return path
    where = ", ".join(p.name for p in candidates)
    if images is None:
        where += f" (there is no image table, {' or '.join(IMAGE_FILES)})"
    raise DataError(
        f"embedding column '{column}' (data.blocks) is in none of {where}; list the embedding "
        "columns the catalogue has in [data] blocks of settings.toml"
    )


@dataclass
class Unusable:
    """Vectors of a column read as missing: of another length than the column's, or with NaN, inf
    or a value beyond float32's range. `rows`: the batch rows that lost one."""

    rows: np.ndarray
    lengths: list[int]
    not_finite: int

    def __len__(self) -> int:
        return len(self.rows)


def _vectors(column: pa.Array, dim: int | None) -> tuple[np.ndarray, np.ndarray, Unusable]:
    """A list<double> column, or list<list<double>> (averaged over inner vectors) -> (rows, present,
    unusable): writable float32 rows, zero where a row has no vector. A vector of another length
    or not finite is left out, as a null one is (`Unusable` says which and why)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if list_depth(column.type) == 2:
        counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        inner = pc.list_flatten(column)
        owner = np.repeat(np.arange(n), counts)
    else:
        inner, owner = column, np.arange(n)
    valid = inner.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(inner), 0).to_numpy()
    dim = dim or (int(lengths[valid][0]) if valid.any() else 0)
    wrong = valid & (lengths != dim)
    unusable = Unusable(owner[wrong], sorted(set(lengths[wrong].tolist()))[:5], 0)
    if wrong.any():
        inner = inner.filter(pa.array(~wrong))
        owner, valid = owner[~wrong], valid[~wrong]
    values = pc.list_flatten(inner).to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):  # a double beyond float32's range becomes inf: left out
        values = values.astype(np.float32, copy=False).reshape(-1, dim)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        unusable.not_finite = int((~finite).sum())
        unusable.rows = np.union1d(unusable.rows, owner[valid][~finite])
        kept = np.flatnonzero(valid)[~finite]
        valid = valid.copy()
        valid[kept] = False
        values = values[finite]
    owner = owner[valid]
    if len(owner) == n and (owner == np.arange(n)).all():  # one vector per row: no scatter
        # float32 vectors come as a view of Arrow's read-only buffer: callers normalise in place
        values = np.ascontiguousarray(values) if values.flags.writeable else values.copy()
        return values, np.ones(n, dtype=bool), unusable
    out = np.zeros((n, dim), dtype=np.float32)
    per_row = np.bincount(owner, minlength=n)
    if per_row.max(initial=0) <= 1:  # some rows null, none with two vectors: a plain scatter
        out[owner] = values
    else:
        # Several vectors in a row are summed; L2-normalising later makes that their mean direction.
        np.add.at(out, owner, values)
    return out, per_row > 0, unusable


def embedding_rows(column: pa.Array, name: str, dim: int) -> np.ndarray:
    """One embedding column of rows given outside the files (a served request): L2-normalised
    float32 rows as `prepare` makes them, zero where a row has none."""
    if pa.types.is_null(column.type):  # every value null
        return np.zeros((len(column), dim), np.float32)
    if not list_depth(column.type):
        raise DataError(f"the request's column '{name}' holds {column.type}, not vectors")
    rows, _, _ = _vectors(column, dim)  # a vector it cannot use is read as missing, as prepare does
    rows = np.array(rows, dtype=np.float32)  # a fresh copy: normalised in place
    normalise(rows)
    return rows


def normalise(matrix: np.ndarray) -> np.ndarray:
    """L2-normalise rows in place; zero rows stay zero. Which rows are not zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))[:, None]  # no N x D temporary
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return norms[:, 0] > 0


def read_rows(matrix: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows start:stop of an item matrix as a fresh float32 array.

    A memory-mapped matrix is read from its file: copying it through the map would also keep the
    file's pages mapped in this process, twice the memory."""
    stop = len(matrix) if stop is None else min(stop, len(matrix))
    n = max(stop - start, 0)
    out = np.zeros((n, matrix.shape[1]), np.float32)
    if _whole_float32_file(matrix):
        row_bytes = matrix.shape[1] * 4
        with open(matrix.filename, "rb") as f:  # type: ignore[attr-defined]
            f.seek(matrix.offset + start * row_bytes)  # type: ignore[attr-defined]
            f.readinto(memoryview(out[:n]).cast("B"))
    else:
        out[:n] = matrix[start:stop]
    return out


def shared_rows(matrix: np.ndarray) -> np.ndarray:
    """The item matrix for processes that only read it (scoring): a whole float32 .npy file mapped
    copy-on-write, not read (its pages are shared through the page cache; at the real size reading
    the 1.8 GB took 5 s of every `predict`), writable so that torch takes it as it is; any other
    matrix as `read_rows` gives it."""
    if not _whole_float32_file(matrix):
        return read_rows(matrix)
    return np.load(matrix.filename, mmap_mode="c")  # type: ignore[attr-defined]


def _whole_float32_file(matrix: np.ndarray) -> bool:
    """A C-ordered float32 memory map of a whole .npy file (not a view of part of one)."""
    if not isinstance(matrix, np.memmap) or not matrix.filename:
        return False
    return (
        matrix.dtype == np.float32
        and matrix.flags.c_contiguous
        and os.path.getsize(matrix.filename) == matrix.offset + matrix.nbytes
    )


def read_ids(path: Path) -> np.ndarray:
    pf = open_parquet(path)
    check_columns(pf, path, {"variantid": "int"})
    ids = read_columns(pf, path, ["variantid"]).column(0)
    if ids.null_count:
        raise DataError(f"{path}: column 'variantid' has {ids.null_count} nulls")
    return int64_ids(ids, path, "variantid")


@dataclass
class ItemTables:
    """The item tables' ids, found before their vectors are read: `prepare` starts the features
    stage on them while the embeddings are read."""

    ids: np.ndarray  # sorted int64 variantids of every table
    block_names: list[str]  # the embedding columns, in the item matrix's order
    sources: dict[str, Path]  # embedding column -> the file that has it
    table_ids: dict[Path, np.ndarray]  # file -> its variantids, in row order

    @classmethod
    def of(cls, data_dir: Path, block_names: list[str]) -> ItemTables:
        sources = {name: _block_source(data_dir, name) for name in block_names}
        table_ids = {path: read_ids(path) for path in set(sources.values())}
        ids = unique_sorted(np.concatenate(list(table_ids.values())))
        return cls(ids, list(block_names), sources, table_ids)


def load_items(
    tables: ItemTables,
    reporter: Reporter | None = None,
    allocate: Callable[[tuple[int, int]], np.ndarray] | None = None,
) -> Items:
    """The item tables as one matrix, its blocks in `tables.block_names`' order. `allocate(shape)`
    gives the zeroed float32 matrix to fill: `prepare` passes a memory map of its output file,
    which on a large catalogue is several times faster than filling fresh memory and writing it
    out afterwards."""
    reporter = reporter or NullReporter()
    allocate = allocate or (lambda shape: np.zeros(shape, np.float32))
    sources, block_names = tables.sources, tables.block_names
    dims = {name: _first_dim(sources[name], name) for name in block_names}
    blocks, offset = [], 0
    for name in block_names:
        blocks.append(Block(name, sources[name].name, dims[name], offset))
        offset += dims[name]
    items = Items(
        tables.ids,
        allocate((len(tables.ids), offset)),
        np.ones((len(tables.ids), len(blocks)), bool),
        blocks,
    )
    for b, block in enumerate(blocks):
        path = sources[block.name]
        _fill_block(items, b, path, tables.table_ids[path], reporter)
    return items


def _first_dim(path: Path, name: str) -> int:
    pf = open_parquet(path)
    check_columns(pf, path, {name: "vector"})
    # The width most of the first rows with vectors have (a few thousand rows: little is decoded).
    for batch in corrupt_inside(path, pf.iter_batches(batch_size=4096, columns=[name])):
        column = batch.column(0)
        inner = pc.list_flatten(column) if list_depth(column.type) == 2 else column
        lengths = pc.drop_null(pc.list_value_length(inner)).to_numpy()
        if not len(lengths):
            continue
        common = int(np.bincount(lengths).argmax())
        if name in KNOWN_DIMS and common != KNOWN_DIMS[name]:
            raise DataError(
                f"{path}: column '{name}' holds vectors of length {common}, not the "
                f"{KNOWN_DIMS[name]} of the competition's column of that name; name the column "
                f"for its vectors (e.g. 'my_vectors_{common}') and list it in [data] blocks"
            )
        return common
    if pf.metadata.num_rows == 0:
        raise DataError(f"{path}: holds no rows; a catalogue's tables need its listings")
    raise DataError(
        f"{path}: column '{name}' holds no vector at all (every row is null); "
        "leave it out of data.blocks"
    )


def _fill_block(
    items: Items, b: int, path: Path, table_ids: np.ndarray, reporter: Reporter
) -> None:
    block = items.blocks[b]
    # Scattering rows into a column view is faster than numpy's mixed fancy-and-slice assignment.
    columns = items.matrix[:, block.offset : block.offset + block.dim]
    rows = lookup(items.ids, table_ids)
    duplicated = np.flatnonzero(np.bincount(rows, minlength=len(items.ids)) > 1)
    repeats: list[tuple[np.ndarray, np.ndarray]] = []
    left_out = _LeftOut()
    with closing(reporter.task(f"reading {block.name}", total=len(table_ids), unit="rows")) as task:
        start, any_vector = 0, False
        for batch in corrupt_inside(path, _batches_in_parallel(path, block.name)):
            vectors, present, unusable = _vectors(batch.column(0), block.dim)
            left_out.add(unusable, table_ids[start + unusable.rows])
            any_vector |= bool(normalise(vectors).any())
            target = rows[start : start + len(vectors)]
            if len(duplicated):
                mask = np.isin(target, duplicated)
                repeats.append((target[mask], np.where(present[mask, None], vectors[mask], np.nan)))
            # In row order, so that the matrix's pages are first written in order, not at random.
            order = np.argsort(target)
            columns[target[order]] = vectors[order]
            items.missing[target, b] = ~present
            start += len(vectors)
            task.advance(len(vectors))
    left_out.tell(path, block)
    if repeats:
        _check_repeats(items, b, path, *map(np.concatenate, zip(*repeats, strict=True)))
    if not any_vector:  # every row null, or every vector zero: the block tells the model nothing
        raise DataError(
            f"{path}: column '{block.name}' holds no vector at all (every row is null or zero); "
            "leave it out of data.blocks"
        )


def _batches_in_parallel(path: Path, column: str, workers: int = 2) -> Iterator[pa.RecordBatch]:
    """The column's record batches in file order, decoding the next row groups in other threads
    while this one is converted (measured about 1.5x faster on two cores)."""
    groups = iter(range(open_parquet(path).num_row_groups))

    def read(group: int) -> pa.Table:
        return pq.ParquetFile(path).read_row_group(group, columns=[column], use_threads=False)

    with ThreadPoolExecutor(workers) as pool:
        # A window of `workers` row groups: decoding runs ahead, but memory stays bounded.
        pending = deque(pool.submit(read, g) for g in itertools.islice(groups, workers))
        while pending:
            table = pending.popleft().result()
            pending.extend(pool.submit(read, g) for g in itertools.islice(groups, 1))
            yield from table.to_batches(max_chunksize=BATCH_ROWS)


@dataclass
class _LeftOut:
    """The unusable vectors of a column's batches, told once (`tell`): how many, why, and which
    listings, so that they can be found and fixed."""

    count: int = 0
    not_finite: int = 0
    lengths: set[int] = field(default_factory=set)
    examples: list[int] = field(default_factory=list)

    def add(self, unusable: Unusable, ids: np.ndarray) -> None:
        self.count += len(unusable)
        self.not_finite += unusable.not_finite
        self.lengths.update(unusable.lengths)
        self.examples += ids[: 3 - len(self.examples)].tolist()

    def tell(self, path: Path, block: Block) -> None:
        if not self.count:
            return
        why = []
        if self.lengths:
            why.append(f"of length {sorted(self.lengths)[:5]}, not {block.dim}")
        if self.not_finite:
            why.append(f"with NaN, inf or values beyond float32's range ({self.not_finite:,})")
        log.warning(
            "%s: %s listings' '%s' vectors are %s: read as missing, as a null one is (e.g. variantid "
            "%s); fix them to use them",
            path,
            f"{self.count:,}",
            block.name,
            " or ".join(why),
            ", ".join(map(str, self.examples)),
        )


def _check_repeats(items: Items, b: int, path: Path, rows: np.ndarray, vectors: np.ndarray) -> None:
    """A variantid listed twice is fine when both rows say the same; otherwise which one is right?"""
    order = np.argsort(rows, kind="stable")
    rows, vectors = rows[order], vectors[order]
    _, first = np.unique(rows, return_index=True)
    reference = vectors[first[np.searchsorted(rows[first], rows)]]
    same = np.isclose(vectors, reference, atol=1e-6, equal_nan=True).all(axis=1)
    if not same.all():
        conflicting = np.unique(rows[~same])
        raise DataError(
            f"{path}: {len(conflicting)} variantids appear more than once with different "
            f"'{items.blocks[b].name}' vectors (e.g. {items.ids[conflicting[0]]}); deduplicate the table"
        )


@dataclass
class Pairs:
    left: np.ndarray  # row in the item matrix
    right: np.ndarray
    target: np.ndarray | None  # float32 0/1, None for unlabelled pairs
    variantid1: np.ndarray
    variantid2: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)  # label problems -> pairs left out


def absent_pairs(where: str, count: int, total: int, examples: list[tuple[int, int]]) -> str:
    """What to say of `count` of `total` pairs in `where` that name a listing of no item table."""
    shown = ", ".join(f"({a}, {b})" for a, b in examples[:3])
    return (
        f"{where}: {count:,} of {total:,} pairs name a listing found in no item table, e.g. {shown}"
    )


def read_pairs(
    path: Path,
    items: Items,
    labelled: bool,
    pairs_limit_dropped: float = 0.5,
    both_classes: bool = True,
) -> Pairs:
    """The pairs of `path` (parquet, or a CSV named *.csv) as item-matrix rows; `both_classes`:
    training needs matches and non-matches (evaluation can do with one)."""
    columns = {"variantid1": "int", "variantid2": "int"} | (
        {"target": "number"} if labelled else {}
    )
    if is_csv(path):
        # The label as text: pandas writes a boolean column as True/False.
        types = {"int": pa.int64(), "number": pa.string()}
        table = csv_table(path, {name: types[kind] for name, kind in columns.items()})
        if labelled:
            target = _csv_number(table.column("target"), path, "target")
            table = table.set_column(table.schema.get_field_index("target"), "target", target)
    else:
        pf = open_parquet(path)
        check_columns(pf, path, columns)
        table = read_columns(pf, path, list(columns))
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no pairs")
    for name in ("variantid1", "variantid2"):
        if table.column(name).null_count:
            raise DataError(f"{path}: column '{name}' has {table.column(name).null_count} nulls")
    v1 = int64_ids(table.column("variantid1"), path, "variantid1")
    v2 = int64_ids(table.column("variantid2"), path, "variantid2")
    target = _targets(table.column("target"), path) if labelled else None
    left, right = items.rows(v1), items.rows(v2)
    absent = (left < 0) | (right < 0)
    if absent.any():
        examples = list(zip(v1[absent][:3], v2[absent][:3], strict=True))
        message = absent_pairs(str(path), int(absent.sum()), len(v1), examples)
        if absent.mean() > pairs_limit_dropped:
            raise DataError(message + "; are the item tables from the same data set?")
        log.warning("%s; they are left out", message)
        keep = ~absent
        left, right, v1, v2 = left[keep], right[keep], v1[keep], v2[keep]
        target = target[keep] if target is not None else None
    if target is None:
        return Pairs(left, right, target, v1, v2)
    keep, dropped = clean_labels(left, right, target, path)
    if not keep.any():
        raise DataError(f"{path}: no usable pair is left once {', '.join(dropped)} are left out")
    pairs = Pairs(left[keep], right[keep], target[keep], v1[keep], v2[keep], dropped)
    if both_classes and pairs.target.min() == pairs.target.max():
        raise DataError(
            f"{path}: every pair has target {int(pairs.target[0])}; training needs both classes"
        )
    return pairs


def _csv_number(column: pa.ChunkedArray, path: Path, name: str) -> pa.ChunkedArray:
    """A CSV column of numbers or true/false (any case) as float64; an empty field is null."""
    text = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    text = pc.replace_substring_regex(
        pc.replace_substring_regex(text, "^true$", "1"), "^false$", "0"
    )
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:
        return pc.cast(text, pa.float64())
    except pa.ArrowInvalid as e:
        raise DataError(
            f"{path}: column '{name}' holds text that is no number ({first_line(e)}); every pair "
            "needs 0 or 1"
        ) from None


def _targets(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    if column.null_count:
        raise DataError(
            f"{path}: column 'target' has {column.null_count} nulls; every pair needs 0 or 1"
        )
    values = column.to_numpy().astype(np.float64)
    bad = (values != 0) & (values != 1)
    if bad.any():
        found = sorted(set(values[bad].tolist()))[:5]
        raise DataError(
            f"{path}: column 'target' has {int(bad.sum())} values other than 0/1 (e.g. {found})"
        )
    return values.astype(np.float32)


def read_categories(data_dir: Path, ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Level-2 category code per item (-1 unknown) and the code -> name list."""
    path = data_dir / ATTRIBUTES_FILE
    codes = np.full(len(ids), -1, dtype=np.int32)
    if not path.is_file():
        log.info("%s not found: the per-category metric is skipped", path)
        return codes, []
    pf = open_parquet(path)
    if "categories" not in pf.schema_arrow.names:
        log.info("%s has no column 'categories': the per-category metric is skipped", path)
        return codes, []
    check_columns(pf, path, {"variantid": "int", "categories": "string"})
    table = read_columns(pf, path, ["variantid", "categories"], dictionary=("categories",))
    # Parse each distinct JSON string once: a catalogue has few distinct category paths.
    index, texts = distinct(table.column("categories"))
    level2 = [_level2(text) for text in texts]
    unreadable = [t for t, c in zip(texts, level2, strict=True) if c is _UNREADABLE]
    if unreadable:
        log.warning(
            "%s: %d distinct 'categories' values are not JSON objects (e.g. %r); those listings "
            "count as of unknown category",
            path,
            len(unreadable),
            unreadable[0][:80],
        )
        level2 = [None if c is _UNREADABLE else c for c in level2]
    names = sorted({c for c in level2 if c is not None})
    if not names and len(texts) > len(unreadable):
        unread = set(unreadable)
        shown = next(t for t in texts if t not in unread)
        log.warning(
            "%s: no 'categories' value has the key \"2\" (e.g. %r); the category features and "
            'the per-category metric are left out (DATA.md: {"1": ..., "2": ..., ...})',
            path,
            shown[:80],
        )
    code_of = np.array([names.index(c) if c is not None else -1 for c in level2] + [-1], np.int32)
    rows = lookup(ids, table.column("variantid").to_numpy())
    inside = rows >= 0
    codes[rows[inside]] = code_of[index[inside]]
    return codes, names


_UNREADABLE = object()  # a categories value that is not a JSON object


def _level2(text: str | None) -> object:
    value = json_object(text)
    if value is None:
        return _UNREADABLE
    found = value.get("2")
    return str(found) if found is not None else None
