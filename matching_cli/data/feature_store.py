"""The features stage of `prepare`: the listings' own fields read in item-matrix order, turned into
per-listing arrays (`features.Listings`) and the labelled pairs' feature rows, kept in the store.

Every field is optional: a file or column that the catalogue lacks is read as absent, and the pair
step gives neutral values and a "missing" flag for it (see `data/pairs.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from matching_cli.data.arrays import ranks
from matching_cli.data.features import (
    MAX_EXTRA_PICTURES,
    PICTURE_DTYPE,
    Listings,
    TextModel,
    attribute_features,
    fit_text_model,
    save_arrays,
    text_rows,
    unit_rows,
)
from matching_cli.data.fields import DESCRIPTION_CHARS, attribute_rows, category_codes
from matching_cli.data.layout import ATTRIBUTES_FILE, TEXT_FILE
from matching_cli.data.pairs import FAMILIES, TEXT_FAMILIES, feature_names, pair_features
from matching_cli.data.readers import (
    check_columns,
    corrupt_inside,
    first_line,
    open_parquet,
    read_columns,
    row_group_batches,
)
from matching_cli.data.tables import Items, ItemTables, image_file, load_items, lookup, read_rows
from matching_cli.data.words import Words, as_strings
from matching_cli.errors import DataError
from matching_cli.files import atomic_dir
from matching_cli.progress import Reporter, closing
from matching_cli.workers import ahead, beside, one_per_core

log = logging.getLogger(__name__)
LISTINGS_DIR = "features"
PAIR_FEATURES = "pair_features.npy"
TEXT_MODEL = "text_model"
MAIN_PICTURE = "main_pic_embeddings_resnet_v1"
EXTRA_PICTURES = "pic_embeddings_resnet_v1"
PICTURE_BATCH_ROWS = 32_768  # at 3 pictures a listing, a batch decodes to 100 MB of float64
PAIR_CHUNK = 1 << 18  # labelled pairs whose features a process computes at a time
DESCRIPTION_WORDS = "description_words"  # a folder the features stage removes when done
JOIN_ROWS = 1 << 18  # listings whose pictures are put in place at a time


@contextmanager
def features_started(
    data_dir: Path, ids: np.ndarray, out: Path, reporter: Reporter
) -> Iterator[Callable[[Items, np.ndarray, np.ndarray], list[str]]]:
    """The features stage of listings `ids` (the item matrix's order) begun: a second process
    (where there is a second core) reads the descriptions, attributes, categories and extra
    pictures and saves their arrays into `out` while the caller goes on (`prepare` reads the embeddings
    meanwhile). The function given, `write(items, left, right)`, tells the worker where the item
    matrix's main pictures are (it puts them beside the extras), does the names and the text rows
    here and writes the feature rows of the labelled pairs (rows `left`, `right` of the item
    matrix); it returns the feature names, in column order.

    The two processes take about the same time, and nothing big is sent between them: the
    descriptions' words reach this one through files, the main pictures the worker through the
    item matrix's file. A bad field file is told before any work."""
    _check_field_files(data_dir)
    # Where the main pictures are, sent to the worker once the item matrix is written.
    main_block, to_worker = multiprocessing.Pipe(duplex=False)
    with (
        main_block,
        to_worker,
        beside(_other_fields, data_dir, ids, out / LISTINGS_DIR, main_block) as from_worker,
    ):
        yield partial(_write_features, data_dir, ids, out, reporter, from_worker, to_worker)


def _write_features(
    data_dir: Path,
    ids: np.ndarray,
    out: Path,
    reporter: Reporter,
    from_worker: Callable[[], Path | None],
    to_worker: Connection,
    items: Items,
    left: np.ndarray,
    right: np.ndarray,
) -> list[str]:
    folder = out / LISTINGS_DIR
    to_worker.send(_main_picture_block(items, folder))
    task = reporter.task("features: the listings' fields, words, text model and rows", total=None)
    with closing(task):
        names = _text_words(data_dir, ids, "name")
        text_model = fit_text_model(names)
        # Saved at once: the 1.5 GB of the real size's need not be held while the other rows are made.
        save_arrays(folder, {"name_char": text_model.char_tfidf(names)})
        saved_words = from_worker()
        descriptions = Words.load(saved_words)
        arrays = text_rows(text_model, names, descriptions)
        save_arrays(folder, arrays)
        made_here = ["name_char", *arrays]
        del names, descriptions, arrays
        shutil.rmtree(saved_words)
    save_text_model(text_model, out / TEXT_MODEL)
    columns_out = feature_names()
    rows = np.lib.format.open_memmap(
        out / PAIR_FEATURES, "w+", np.float32, (len(left), len(columns_out))
    )
    # The families that read this process's arrays alone are computed while the worker still
    # makes the others (the pictures last): at the real size this process waited 4 s for it.
    here = Listings.load(folder, only=made_here)
    _fill_pair_rows(rows, here, left, right, TEXT_FAMILIES, 0, reporter)
    from_worker()  # the attributes', categories' and pictures' arrays saved
    others = tuple(f for f in FAMILIES if f not in TEXT_FAMILIES)
    _fill_pair_rows(rows, Listings.load(folder), left, right, others, one_per_core(), reporter)
    rows.flush()
    log.info("Pair features: %d columns in %d families", len(columns_out), len(FAMILIES))
    return columns_out


def write_pair_features(
    out: Path, listings: Listings | None, left: np.ndarray, right: np.ndarray, reporter: Reporter
) -> list[str]:
    """The labelled pairs' feature rows of `listings` (None: a store without pair features) into
    `out`, on every core; their names, in column order."""
    if listings is None:
        np.save(out / PAIR_FEATURES, np.zeros((len(left), 0), np.float32))
        return []
    names = feature_names()
    rows = np.lib.format.open_memmap(out / PAIR_FEATURES, "w+", np.float32, (len(left), len(names)))
    _fill_pair_rows(rows, listings, left, right, tuple(FAMILIES), one_per_core(), reporter)
    rows.flush()
    return names


def _fill_pair_rows(
    rows: np.ndarray,
    listings: Listings,
    left: np.ndarray,
    right: np.ndarray,
    families: tuple[str, ...],
    workers: int,
    reporter: Reporter,
) -> None:
    """The `families`' columns of `rows` (all of `feature_names()`) for pairs (left, right), in
    chunks, the next `workers` chunks computed in forked processes meanwhile."""
    columns = columns_for(feature_names(), tuple(feature_names(families)))
    with closing(
        reporter.task(f"features: labelled pairs ({', '.join(families)})", total=len(left))
    ) as task:
        chunks = [slice(start, start + PAIR_CHUNK) for start in range(0, len(left), PAIR_CHUNK)]
        compute = partial(pair_features, listings, families=families)
        pairs_of = lambda chunk: (left[chunk], right[chunk])  # noqa: E731
        for chunk, values in ahead(compute, chunks, pairs_of, workers if len(chunks) > 1 else 0):
            rows[chunk, columns] = values
            task.advance(len(values))


def _other_fields(
    data_dir: Path, ids: np.ndarray, folder: Path, main_block: Connection
) -> Iterator[Path]:
    """The descriptions' words, saved into a folder of `folder` that is yielded at once; then the
    attributes', categories' and pictures' arrays of `Listings`, saved into `folder`: the main
    pictures where `main_block` says, once it does (`MainPictureBlock`)."""
    saved_words = folder / DESCRIPTION_WORDS
    _text_words(data_dir, ids, "description").save(saved_words)
    yield saved_words
    attributes, categories = _attribute_fields(data_dir, ids)
    save_arrays(folder, attribute_features(attributes, categories))
    del attributes, categories  # saved: their memory goes before the pictures come
    extras = _extra_pictures(*_picture_blocks(data_dir, ids))
    _save_pictures(folder, [_main_pictures(data_dir, ids, main_block.recv()), extras])


def load_listings(store: Path) -> Listings:
    return Listings.load(store / LISTINGS_DIR)


def save_text_model(model: TextModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays, meta = model.to_arrays()
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values, allow_pickle=False)
    (folder / "terms.json").write_text(json.dumps(meta, ensure_ascii=False))


# The `Listings` arrays that a text model makes (the rest are the same whatever model reads them).
TEXT_ARRAYS = ("name_char", "text_rows", "text_across", "text_counts", "has_desc")
TEXT_FOR = "text_for"  # a store's folder of its listings' text arrays made by other text models


def text_model_digest(model: TextModel) -> str:
    """What tells text models apart: a digest of their vocabularies and weights."""
    arrays, meta = model.to_arrays()
    digest = hashlib.sha256(json.dumps(meta, ensure_ascii=False).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()[:16]


def listings_for_model(store: Path, data_dir: Path, model: TextModel) -> Listings:
    """The store's listings with the text arrays that `model` makes of them: a model trained on
    other data (a store of other raw files) reads its own vocabularies and idf, not the ones fitted
    on this store's names, or a pair's score would depend on which other listings the folder
    holds. Made from the raw files in `data_dir` the first time, then kept in the store."""
    listings = load_listings(store)
    digest = text_model_digest(model)
    if digest == text_model_digest(load_text_model(store / TEXT_MODEL)):
        return listings
    folder = store / TEXT_FOR / digest

    def with_made() -> Listings:
        made = Listings.load(folder, only=TEXT_ARRAYS)
        return replace(listings, **{name: getattr(made, name) for name in TEXT_ARRAYS})

    if folder.is_dir():
        try:
            return with_made()
        except (OSError, ValueError, KeyError, EOFError) as e:  # cut short: made again
            log.warning("%s is damaged (%s): making it again", folder, first_line(e))
    log.info(
        "The model was trained on other data: making these listings' text features with its text "
        "model (once; kept in %s)",
        folder,
    )
    ids = np.load(store / "item_ids.npy")
    with atomic_dir(folder) as out:
        names = _text_words(data_dir, ids, "name")
        arrays = {"name_char": model.char_tfidf(names)}
        arrays |= text_rows(model, names, _text_words(data_dir, ids, "description"))
        save_arrays(out, arrays)
    return with_made()


def load_text_model(folder: Path) -> TextModel:
    meta = json.loads((folder / "terms.json").read_text())
    arrays = {p.stem: np.load(p, allow_pickle=False) for p in folder.glob("*.npy")}
    return TextModel.from_arrays(arrays, meta)


# The fields each file gives, read as strings (any of them may be absent).
_FIELDS = {
    TEXT_FILE: ("name", "description"),
    ATTRIBUTES_FILE: ("categories", "characteristic_attributes_mapping"),
}


def _check_field_files(data_dir: Path) -> None:
    """Check the field files' columns and the picture file (their schema only) before the work is
    split in two, so that a bad file is told at once."""
    for file in _FIELDS:
        if (data_dir / file).is_file():
            _present_columns(open_parquet(data_dir / file), data_dir / file)
    images = image_file(data_dir)
    if images is None:
        log.info("%s has no image table: the picture features are marked missing", data_dir)
    elif _has_extra_pictures(pf := open_parquet(images)):
        check_columns(pf, images, {EXTRA_PICTURES: "vector"})


def _has_extra_pictures(pf: pq.ParquetFile) -> bool:
    """Whether the image table has the extra pictures' column with any value in it (pandas
    writes a column of None alone as one of type null: no pictures, not a wrong type)."""
    schema = pf.schema_arrow
    return EXTRA_PICTURES in schema.names and not pa.types.is_null(
        schema.field(EXTRA_PICTURES).type
    )


def _present_columns(pf: pq.ParquetFile, path: Path) -> list[str]:
    """The fields of `path` it has, checked to be strings beside an integer variantid."""
    present = [n for n in _FIELDS[path.name] if n in pf.schema_arrow.names]
    check_columns(pf, path, {"variantid": "int"} | dict.fromkeys(present, "string"))
    return present


def _field_file(path: Path, wanted: tuple[str, ...]) -> tuple[pq.ParquetFile | None, list[str]]:
    """A field file (None where there is none) and which of the `wanted` fields it has; what it
    lacks is logged (an absent file in one line): those features are marked missing."""
    if not path.is_file():
        log.info("%s not found: the features of %s are marked missing", path, ", ".join(wanted))
        return None, []
    pf = open_parquet(path)
    present = [n for n in _present_columns(pf, path) if n in wanted]
    for name in wanted:
        if name not in present:
            log.info("%s: no column '%s'; its features are marked missing", path, name)
    return pf, present


def _attribute_fields(data_dir: Path, ids: np.ndarray) -> tuple[list[sp.csr_matrix], np.ndarray]:
    """The attributes' hashed rows (`fields.attribute_rows`) and the categories' codes
    (`fields.category_codes`) of listings `ids`: empty rows and -1 where the file, a column or a
    listing's row is absent. Parsed in the file's order, then put in the listings' (taking the
    texts into listing order first copied 650 MB of strings: 2.3 s at the real size)."""
    path = data_dir / ATTRIBUTES_FILE
    pf, present = _field_file(path, _FIELDS[ATTRIBUTES_FILE])
    if pf is None or not present:
        nothing = pa.nulls(len(ids), pa.string())
        return attribute_rows(nothing), category_codes(nothing)
    rows = lookup(ids, read_columns(pf, path, ["variantid"]).column(0).to_numpy())
    where = _row_of(ids, rows)
    if where.null_count:
        log.info(
            "%s has no row for %s of the %s listings: their attribute and category features are "
            "marked missing",
            path,
            f"{where.null_count:,}",
            f"{len(ids):,}",
        )
    file_rows = pf.metadata.num_rows

    def column(name: str, dictionary: tuple[str, ...] = ()) -> pa.Array:
        return as_strings(
            read_columns(pf, path, [name], dictionary).column(0) if name in present else None,
            file_rows,
        )

    for name in present:
        _warn_conflicting(path, name, ids, rows, partial(column, name))
    attributes = attribute_rows(column("characteristic_attributes_mapping"), str(path))
    if "characteristic_attributes_mapping" in present and attributes[0].nnz == 0:
        log.warning(
            "%s: column 'characteristic_attributes_mapping' names no attribute in any row; the "
            "attribute features are marked missing",
            path,
        )
    categories = category_codes(column("categories", ("categories",)))  # few distinct paths
    return [_in_listing_order(m, where) for m in attributes], _in_listing_order(categories, where)


def _in_listing_order(
    values: sp.csr_matrix | np.ndarray, where: pa.Array
) -> sp.csr_matrix | np.ndarray:
    """Rows of `values`, one per row of a file, in listing order (`where`, from `_row_of`): a
    listing the file lacks gets an empty row (sparse) or a row of -1 (dense, the categories')."""
    if where.null_count:
        if sp.issparse(values):
            absent = sp.csr_matrix((1, values.shape[1]), dtype=values.dtype)
            values = sp.vstack([values, absent], format="csr")
        else:
            values = np.concatenate([values, np.full((1, *values.shape[1:]), -1, values.dtype)])
        where = pc.fill_null(where, values.shape[0] - 1)
    return values[where.to_numpy(zero_copy_only=False)]


def _text_words(data_dir: Path, ids: np.ndarray, name: str) -> Words:
    """`Words` of the text file's column `name` ("name" or "description"), one row per listing
    of `ids`, empty where absent. The words are found in the file's order and their rows then
    put in the listings' (taking the texts into that order first copied them: 0.9 s of the real
    size's descriptions, against 0.1 s for the rows)."""
    path = data_dir / TEXT_FILE
    pf, present = _field_file(path, (name,))
    if pf is None or not present:
        return Words.of(pa.nulls(len(ids), pa.string()))
    rows = lookup(ids, read_columns(pf, path, ["variantid"]).column(0).to_numpy())
    where = _row_of(ids, rows)
    values = read_columns(pf, path, [name]).column(0).combine_chunks()
    _warn_conflicting(path, name, ids, rows, lambda: values)
    words = Words.of(values, DESCRIPTION_CHARS if name == "description" else None)
    if not any(words.normalised):  # no word with text (stops at the first that has)
        log.warning(
            "%s: column '%s' holds no text in any row; its features are marked missing", path, name
        )
    words.rows = _in_listing_order(words.rows, where)
    return words


def _warn_conflicting(
    path: Path, name: str, ids: np.ndarray, rows: np.ndarray, values: Callable[[], pa.Array]
) -> None:
    """A variantid in several rows of a file (`rows`: each file row's listing, -1 none) reads its
    last row's field: told where those rows disagree (the embeddings' are refused,
    `tables._check_repeats`; a field is kept as read). `values()` reads the field's column, where
    an id repeats."""
    found = rows >= 0
    counts = np.bincount(rows[found], minlength=len(ids))
    if counts.max(initial=0) <= 1:  # the usual table
        return
    repeated = np.flatnonzero(found & (counts[np.maximum(rows, 0)] > 1))
    frame = pa.table({"row": rows[repeated], "value": values().take(pa.array(repeated))})
    differing = frame.to_pandas().groupby("row")["value"].nunique(dropna=False)
    differing = differing[differing > 1]
    if len(differing):
        log.warning(
            "%s: %s variantids appear in several rows with different '%s' (e.g. %s); the last "
            "row is read: deduplicate the table",
            path,
            f"{len(differing):,}",
            name,
            ids[differing.index[0]],
        )


def _row_of(ids: np.ndarray, rows: np.ndarray) -> pa.Array:
    """The table row of each of `ids` (`rows`: the listing of each table row, -1 none; a repeated
    id: its last row); null for ids the table lacks."""
    inside = np.flatnonzero(rows >= 0)
    index = np.zeros(len(ids), np.int64)
    found = np.zeros(len(ids), bool)
    index[rows[inside]] = inside
    found[rows[inside]] = True
    return pa.array(index, mask=~found)


_NO_PICTURES = np.zeros((0, 1), PICTURE_DTYPE)


@contextmanager
def _npy_file(path: Path, dtype: np.dtype, shape: tuple[int, int]) -> Iterator[BinaryIO]:
    """An .npy file of this dtype and shape, its header written: the caller writes the rows, in
    order."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": shape,
    }
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        yield f


def _picture_blocks(data_dir: Path, ids: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The first MAX_EXTRA_PICTURES extra pictures of each listing, L2-normalised, as float16
    (`PICTURE_DTYPE`), in blocks of rows, and each listing's span of them (start, count) in the
    blocks stacked.

    A batch of rows at a time, each made small at once and kept in the order read (not sorted
    into listing order: the spans say where each listing's are): decoding all pictures of the
    full data as float64, or sorting them afterwards, took several times the memory of the
    result."""
    path = image_file(data_dir)
    spans = np.zeros((len(ids), 2), np.int64)
    if path is None:
        return [], spans
    pf = open_parquet(path)
    if not _has_extra_pictures(pf):
        return [], spans
    vectors: list[np.ndarray] = []
    start = 0
    batches = row_group_batches(pf, ["variantid", EXTRA_PICTURES], PICTURE_BATCH_ROWS)
    for batch in corrupt_inside(path, batches):
        rows = lookup(ids, batch.column(0).to_numpy(zero_copy_only=False))
        owner, position, values = _flat_vectors(batch.column(1))
        keep = (rows[owner] >= 0) & (position < MAX_EXTRA_PICTURES)
        if not keep.all():
            owner, values = owner[keep], values[keep]
        if not len(values):
            continue
        if vectors and values.shape[1] != vectors[0].shape[1]:  # other batches, other widths
            return [], np.zeros((len(ids), 2), np.int64)
        # The vectors come in row order: row r's are [first[r], first[r] + count[r]).
        count = np.bincount(owner, minlength=len(rows))
        first = np.cumsum(count) - count
        filled = np.flatnonzero(count > 0)
        spans[rows[filled]] = np.column_stack([start + first[filled], count[filled]])  # later wins
        vectors.append(unit_rows(values, in_place=True).astype(PICTURE_DTYPE))
        start += len(values)
    return vectors, spans


@dataclass
class PictureKind:
    """One kind of picture (main, extras): how many vectors each listing has, and `take(lo, hi)`
    gives those of listings lo..hi, in listing order."""

    counts: np.ndarray
    width: int
    take: Callable[[int, int], np.ndarray]


@dataclass
class MainPictureBlock:
    """Where the item matrix's main pictures are: its file, the columns, and a file of which
    listings have one (the rest are zero rows)."""

    matrix: Path
    offset: int
    dim: int
    present: Path


def _main_picture_block(items: Items, folder: Path) -> MainPictureBlock | None:
    """The item matrix's main-picture block (its flags saved into `folder`); None where it has
    none (`data.blocks` left it out) or is not a file."""
    names = [block.name for block in items.blocks]
    if MAIN_PICTURE not in names or not isinstance(items.matrix, np.memmap):
        return None
    b = names.index(MAIN_PICTURE)
    present = folder / "main_pictures_present.npy"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(present, ~items.missing[:, b], allow_pickle=False)
    block = items.blocks[b]
    return MainPictureBlock(Path(items.matrix.filename), block.offset, block.dim, present)


def _main_pictures(data_dir: Path, ids: np.ndarray, block: MainPictureBlock | None) -> PictureKind:
    """The main picture of each listing as the model reads it: its vector, or the mean direction
    of several, L2-normalised. The item matrix's block, read from its file a part at a time (not
    through a map, which would keep its pages in this process); where there is none, the column
    read here the same way."""
    if block is not None:
        matrix = np.load(block.matrix, mmap_mode="r")
        present = np.load(block.present)
        block.present.unlink()
        columns = slice(block.offset, block.offset + block.dim)

        def take(lo: int, hi: int) -> np.ndarray:
            return read_rows(matrix, lo, hi)[present[lo:hi], columns]

        return PictureKind(present.astype(np.int64), block.dim, take)
    nothing = PictureKind(np.zeros(len(ids), np.int64), 1, lambda lo, hi: _NO_PICTURES)
    images = image_file(data_dir)
    if images is None or MAIN_PICTURE not in open_parquet(images).schema_arrow.names:
        return nothing
    try:
        own = load_items(ItemTables.of(data_dir, [MAIN_PICTURE]))
    except DataError as e:  # a column the model does not read: its features are marked missing
        log.warning("The main pictures are left out of the pair features: %s", e)
        return nothing
    rows = lookup(own.ids, ids)
    found = (rows >= 0) & ~own.missing[np.maximum(rows, 0), 0]

    def take_own(lo: int, hi: int) -> np.ndarray:
        return own.matrix[rows[lo:hi][found[lo:hi]]]

    return PictureKind(found.astype(np.int64), own.matrix.shape[1], take_own)


def _extra_pictures(blocks: list[np.ndarray], spans: np.ndarray) -> PictureKind:
    """`_picture_blocks`' extra pictures, stacked (each block's memory going as it is copied)."""
    vectors = np.empty((sum(map(len, blocks)), blocks[0].shape[1] if blocks else 1), PICTURE_DTYPE)
    start = 0
    blocks.reverse()
    while blocks:
        block = blocks.pop()
        vectors[start : start + len(block)] = block
        start += len(block)
    first, counts = spans.T

    def take(lo: int, hi: int) -> np.ndarray:
        part = counts[lo:hi]
        return vectors[np.repeat(first[lo:hi], part) + ranks(part)]

    return PictureKind(counts, vectors.shape[1], take)


def _save_pictures(folder: Path, kinds: list[PictureKind]) -> None:
    """`Listings.pictures` and `picture_spans` into `folder`: each listing's vectors of each kind
    (main, extras), one kind after the other. A kind whose vectors are not as wide as the first
    kind's is left out: they cannot be compared.

    Written a part of the listings at a time, in order: their vectors are one stretch of the
    file. (Put in place through a map of the file, the real size's took 5.6 s and 5.5 GB.)"""
    widths = [kind.width for kind in kinds if kind.counts.any()]
    if len(set(widths)) > 1:
        log.warning("Pictures of %s widths: only those of width %d are compared", widths, widths[0])
        kinds = [kind for kind in kinds if kind.width == widths[0] or not kind.counts.any()]
    count = np.sum([kind.counts for kind in kinds], axis=0)
    start = np.cumsum(count) - count
    save_arrays(folder, {"picture_spans": np.column_stack([start, count])})
    if not widths:
        np.save(folder / "pictures.npy", _NO_PICTURES, allow_pickle=False)
        return
    shape = (int(count.sum()), widths[0])
    with _npy_file(folder / "pictures.npy", PICTURE_DTYPE, shape) as f:
        for lo in range(0, len(count), JOIN_ROWS):
            hi = lo + JOIN_ROWS
            part = np.empty((int(count[lo:hi].sum()), widths[0]), PICTURE_DTYPE)
            place = start[lo:hi] - start[lo]  # each listing's next free row of `part`
            for kind in kinds:
                counts = kind.counts[lo:hi]
                part[np.repeat(place, counts) + ranks(counts)] = kind.take(lo, hi)
                place = place + counts
            part.tofile(f)


def _flat_vectors(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<double>> column -> (table row, position in its row, vector) of each non-null,
    finite vector of the most common width, as float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    inner = pc.list_flatten(column)
    owner = np.repeat(np.arange(len(column)), counts)
    position = ranks(counts)
    lengths = pc.fill_null(pc.list_value_length(inner), 0).to_numpy(zero_copy_only=False)
    if not lengths.any():
        return owner[:0], position[:0], np.zeros((0, 1), np.float32)
    width = int(np.bincount(lengths[lengths > 0]).argmax())
    ok = lengths == width
    if not ok.all():  # the usual file has one width and no null vector: nothing to filter
        inner = inner.filter(pa.array(ok))
        owner, position = owner[ok], position[ok]
    values = pc.list_flatten(inner).to_numpy(zero_copy_only=False)
    values = values.astype(np.float32).reshape(-1, width)
    finite = np.isfinite(values).all(axis=1)
    if finite.all():
        return owner, position, values
    return owner[finite], position[finite], values[finite]


def columns_for(names: list[str], wanted: tuple[str, ...]) -> np.ndarray:
    """Positions of the `wanted` feature columns among `names` (what a store holds)."""
    missing = [w for w in wanted if w not in names]
    retired = [w for w in missing if w not in feature_names()]
    if retired:
        raise DataError(
            f"the model reads pair features that this version of matching no longer computes "
            f"{retired}; train it again"
        )
    if missing:
        raise DataError(
            f"the prepared data has no pair features {missing}; run `matching prepare` again"
        )
    return np.array([names.index(w) for w in wanted], dtype=np.int64)


class PairFeaturizer:
    """The field features a model reads, for pairs given by item rows: what `predict` and `match`
    compute for pairs that were not prepared."""

    def __init__(self, listings: Listings, names: tuple[str, ...]):
        self.listings, self.names = listings, names
        self.families = tuple(f for f, columns in FAMILIES.items() if set(columns) & set(names))
        self.columns = columns_for(feature_names(self.families), names)

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(n, len(names)) float32; a row of -1 (a listing in no table) gives a row of zeros."""
        absent = (left < 0) | (right < 0)
        rows = pair_features(
            self.listings, np.where(absent, 0, left), np.where(absent, 0, right), self.families
        )[:, self.columns]
        rows[absent] = 0.0
        return rows
