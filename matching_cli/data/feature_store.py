"""The features stage of `prepare`: the listings' own fields read in item-matrix order, turned into
per-listing arrays (`features.Listings`) and the labelled pairs' feature rows, kept in the store.

Every field is optional: a file or column that the catalogue lacks is read as absent, and the pair
step gives neutral values and a "missing" flag for it (see `data/pairs.py`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
from matching_cli.data.pairs import FAMILIES, feature_names, pair_features
from matching_cli.data.tables import (
    check_columns,
    corrupt_inside,
    image_file,
    lookup,
    open_parquet,
    read_columns,
    row_group_batches,
)
from matching_cli.data.words import Words, as_strings
from matching_cli.errors import DataError
from matching_cli.progress import Reporter
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


@contextmanager
def features_started(
    data_dir: Path, ids: np.ndarray, out: Path, reporter: Reporter
) -> Iterator[Callable[[np.ndarray, np.ndarray], list[str]]]:
    """The features stage of listings `ids` (the item matrix's order) begun: a second process
    (where there is a second core) reads the descriptions, attributes, categories and pictures
    and saves their arrays into `out` while the caller goes on (`prepare` reads the embeddings
    meanwhile). The function given, `write(left, right)`, does the names and the text rows here
    and writes the feature rows of the labelled pairs (rows `left`, `right` of the item matrix);
    it returns the feature names, in column order.

    The two processes take about the same time, and nothing big is sent between them: the
    descriptions' words reach this one through files. A bad field file is told before any work."""
    _check_field_files(data_dir)
    with beside(_other_fields, data_dir, ids, out / LISTINGS_DIR) as from_worker:
        yield partial(_write_features, data_dir, ids, out, reporter, from_worker)


def _write_features(
    data_dir: Path,
    ids: np.ndarray,
    out: Path,
    reporter: Reporter,
    from_worker: Callable[[], Path | None],
    left: np.ndarray,
    right: np.ndarray,
) -> list[str]:
    folder = out / LISTINGS_DIR
    task = reporter.task("features: the listings' fields, words, text model and rows", total=None)
    names = Words.of(_string_columns(data_dir, ids, TEXT_FILE, ("name",))["name"])
    text_model = fit_text_model(names)
    # Saved at once: the 1.5 GB of the real size's need not be held while the other rows are made.
    save_arrays(folder, {"name_char": text_model.char_tfidf(names)})
    saved_words = from_worker()
    descriptions = Words.load(saved_words)
    save_arrays(folder, text_rows(text_model, names, descriptions))
    del names, descriptions
    shutil.rmtree(saved_words)
    from_worker()  # the attributes', categories' and pictures' arrays saved
    task.close()
    save_text_model(text_model, out / TEXT_MODEL)
    listings = Listings.load(folder)
    columns_out = feature_names()
    rows = np.lib.format.open_memmap(
        out / PAIR_FEATURES, "w+", np.float32, (len(left), len(columns_out))
    )
    task = reporter.task("features: labelled pairs", total=len(left), unit="pairs")
    chunks = [slice(start, start + PAIR_CHUNK) for start in range(0, len(left), PAIR_CHUNK)]
    compute = partial(pair_features, listings)
    pairs_of = lambda chunk: (left[chunk], right[chunk])  # noqa: E731
    workers = one_per_core() if len(chunks) > 1 else 0
    for chunk, values in ahead(compute, chunks, pairs_of, workers):
        rows[chunk] = values
        task.advance(len(rows[chunk]))
    task.close()
    rows.flush()
    log.info("Pair features: %d columns in %d families", len(columns_out), len(FAMILIES))
    return columns_out


def _other_fields(data_dir: Path, ids: np.ndarray, folder: Path) -> Iterator[Path]:
    """The descriptions' words, saved into a folder of `folder` that is yielded at once; then the
    attributes', categories' and pictures' arrays of `Listings`, saved into `folder`."""
    descriptions = _string_columns(data_dir, ids, TEXT_FILE, ("description",))["description"]
    saved_words = folder / DESCRIPTION_WORDS
    Words.of(descriptions, DESCRIPTION_CHARS).save(saved_words)
    del descriptions
    yield saved_words
    columns = _string_columns(data_dir, ids, ATTRIBUTES_FILE)
    attributes = attribute_rows(
        as_strings(columns.pop("characteristic_attributes_mapping"), len(ids))
    )
    categories = category_codes(as_strings(columns.pop("categories"), len(ids)))
    save_arrays(folder, attribute_features(attributes, categories))
    del columns, attributes, categories  # saved: their memory goes before the pictures come
    blocks, spans = _picture_blocks(data_dir, ids)
    _save_stacked(folder / "pictures.npy", blocks)
    save_arrays(folder, {"picture_spans": spans})


def load_listings(store: Path) -> Listings:
    return Listings.load(store / LISTINGS_DIR)


def save_text_model(model: TextModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays, meta = model.to_arrays()
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values, allow_pickle=False)
    (folder / "terms.json").write_text(json.dumps(meta, ensure_ascii=False))


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
    open_parquet(image_file(data_dir))


def _present_columns(pf: pq.ParquetFile, path: Path) -> list[str]:
    """The fields of `path` it has, checked to be strings beside an integer variantid."""
    present = [n for n in _FIELDS[path.name] if n in pf.schema_arrow.names]
    check_columns(pf, path, {"variantid": "int"} | dict.fromkeys(present, "string"))
    return present


def _string_columns(
    data_dir: Path, ids: np.ndarray, file: str, wanted: tuple[str, ...] | None = None
) -> dict[str, pa.Array]:
    """The `_FIELDS` columns of `file` (those `wanted`), one value per listing of `ids`, null where
    absent."""
    path = data_dir / file
    wanted = wanted or _FIELDS[file]
    pf = open_parquet(path) if path.is_file() else None
    present = [] if pf is None else [n for n in _present_columns(pf, path) if n in wanted]
    out: dict[str, pa.Array] = {}
    for name in set(wanted) - set(present):
        log.info("%s: no column '%s'; its features are marked missing", path, name)
        out[name] = pa.nulls(len(ids), pa.string())
    if not present:
        return out
    # Where each listing's row is, found once per file; the columns then come one at a time.
    index = _row_of(ids, read_columns(pf, path, ["variantid"]).column(0))
    for name in present:
        values = read_columns(pf, path, [name]).column(0)
        if name == "description":  # only its start is read: no need to hold the rest
            values = pc.utf8_slice_codeunits(values, 0, DESCRIPTION_CHARS)
        # Taken where it is, with null rows for the absent ids: appending a null row to the column
        # first copied it, and the real size's descriptions took 2.8 s this way, 0.3 s now.
        out[name] = values.take(index).combine_chunks()
    return out


def _row_of(ids: np.ndarray, variantid: pa.ChunkedArray) -> pa.Array:
    """The table row of each of `ids` (a repeated id: its last row); null for ids the table
    lacks."""
    rows = lookup(ids, variantid.to_numpy())
    inside = np.flatnonzero(rows >= 0)
    index = np.zeros(len(ids), np.int64)
    found = np.zeros(len(ids), bool)
    index[rows[inside]] = inside
    found[rows[inside]] = True
    return pa.array(index, mask=~found)


_NO_PICTURES = np.zeros((0, 1), PICTURE_DTYPE)


def _save_stacked(path: Path, blocks: list[np.ndarray]) -> None:
    """`np.save(path, np.concatenate(blocks))` without the stacked copy: at full size the
    pictures are a gigabyte, and each block's memory goes as soon as it is written."""
    if not blocks:
        np.save(path, _NO_PICTURES, allow_pickle=False)
        return
    header = {
        "descr": np.lib.format.dtype_to_descr(blocks[0].dtype),
        "fortran_order": False,
        "shape": (sum(len(b) for b in blocks), blocks[0].shape[1]),
    }
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        blocks.reverse()
        while blocks:
            np.ascontiguousarray(blocks.pop()).tofile(f)


def _picture_blocks(data_dir: Path, ids: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every picture vector of each listing (main first, up to MAX_EXTRA_PICTURES extras),
    L2-normalised, as float16 (`PICTURE_DTYPE`), in blocks of rows, and each listing's span of them
    (start, count) in the blocks stacked.

    A batch of rows at a time, each made small at once and kept in the order read (a listing's
    vectors put in place, not sorted there): decoding all pictures of the full data as float64, or
    sorting them into listing order afterwards, took several times the memory of the result."""
    path = image_file(data_dir)
    pf = open_parquet(path)
    present = [c for c in (MAIN_PICTURE, EXTRA_PICTURES) if c in pf.schema_arrow.names]
    spans = np.zeros((len(ids), 2), np.int64)
    nothing: tuple[list[np.ndarray], np.ndarray] = [], np.zeros((len(ids), 2), np.int64)
    if not present:
        return nothing
    vectors: list[np.ndarray] = []
    start = 0
    batches = row_group_batches(pf, ["variantid", *present], PICTURE_BATCH_ROWS)
    for batch in corrupt_inside(path, batches):
        rows = lookup(ids, batch.column(0).to_numpy(zero_copy_only=False))
        kinds = []  # per column: (table row, vector) of those kept, by row, in the row's order
        for rank in range(len(present)):
            owner, position, values = _flat_vectors(batch.column(rank + 1))
            keep = (rows[owner] >= 0) & (position < (1 if rank == 0 else MAX_EXTRA_PICTURES))
            kinds.append((owner, values) if keep.all() else (owner[keep], values[keep]))
        widths = {values.shape[1] for _, values in kinds if len(values)}
        if len(widths) > 1:  # main and extra pictures of other widths: none is comparable
            return nothing
        if not widths:
            continue
        if vectors and widths != {vectors[0].shape[1]}:  # other batches, other widths
            return nothing
        # Row r's vectors go to [first[r], first[r] + count[r]): its main, then its extras.
        per_kind = [np.bincount(owner, minlength=len(rows)) for owner, _ in kinds]
        count = np.sum(per_kind, axis=0)
        first = np.cumsum(count) - count
        block = np.empty((int(count.sum()), widths.pop()), PICTURE_DTYPE)
        before = np.zeros(len(rows), np.int64)  # the row's vectors of the earlier kinds
        for (owner, values), counts in zip(kinds, per_kind, strict=True):
            within = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
            # Cast first, then put in place: scattering with the cast took the real size's
            # pictures 10.7-12.2 s, this 9.0-11.0 s.
            block[first[owner] + before[owner] + within] = unit_rows(values, in_place=True).astype(
                PICTURE_DTYPE
            )
            before += counts
        filled = np.flatnonzero(count > 0)
        spans[rows[filled]] = np.column_stack([start + first[filled], count[filled]])  # later wins
        vectors.append(block)
        start += len(block)
    return vectors, spans


def _flat_vectors(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<double>> column -> (table row, position in its row, vector) of each non-null,
    finite vector of the most common width, as float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    inner = pc.list_flatten(column)
    owner = np.repeat(np.arange(len(column)), counts)
    position = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
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
