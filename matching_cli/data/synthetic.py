"""A demo data set in exactly the schema of the Ozon E-CUP matching files (see DATA.md).

The real files cannot be downloaded everywhere, so tests and demos run on this. It models what makes
the task hard: listings are grouped into products (1-5 listings each), products into families of
look-alikes within one category. A match is two listings of one product; a hard non-match, two
products of one family; an easy one, a listing and a one-off listing of another category. Each
embedding block is family centre + product offset + listing noise, some pictures and names belong to
another product and 1.5% of labels are flipped, so a good model's PR-AUC stays well below 1.
The text tells more than the vectors where they blur: a family's products differ in exactly one
spec (model number, size or colour) that their listings' text shows, in spellings that vary
between listings of one product (see `listing_text.py`).
Pairs never leave a family and its one-off partners, which keeps the pair graph in small components
for a split by component; test pairs have families of their own. `truth.parquet` (no competition
file) gives each listing's product. The output depends only on `seed` and `n_pairs`.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matching_cli.data import listing_text, vocab
from matching_cli.data.arrays import ranks
from matching_cli.data.layout import (
    ATTRIBUTES_FILE,
    IMAGE_FILES,
    PAIRS_FILE,
    TEST_FILE,
    TEXT_FILE,
    TRUTH_FILE,
    is_demo,
)
from matching_cli.errors import DataError
from matching_cli.files import atomic_file
from matching_cli.progress import NullReporter, Reporter, Task, closing

REAL_PAIRS, REAL_TEST_PAIRS, REAL_LISTINGS = 1_168_516, 49_620, 2_252_569
MIN_PAIRS = 20
POSITIVE_SHARE = 0.48
EASY_SHARE = 0.35  # of the non-matches; the others are hard, within a family
LABEL_NOISE = 0.015
PRODUCTS_PER_FAMILY = ([2, 3, 4, 5], [0.3, 0.3, 0.25, 0.15])
LISTINGS_PER_PRODUCT = ([1, 2, 3, 4, 5], [0.2, 0.35, 0.22, 0.13, 0.1])
FAMILY_LISTINGS_PER_PAIR = 1.65  # one-off and unused listings bring it to the real ~1.93
CHUNK_ROWS = 50_000

_I64, _STR, _NESTED = pa.int64(), pa.string(), pa.large_list(pa.large_list(pa.float64()))
SCHEMAS = {
    "train": pa.schema([("variantid1", _I64), ("variantid2", _I64), ("target", _I64)]),
    "test": pa.schema([("variantid1", _I64), ("variantid2", _I64)]),
    "images": pa.schema(
        [
            ("variantid", _I64),
            ("main_pic_embeddings_resnet_v1", _NESTED),
            ("pic_embeddings_resnet_v1", _NESTED),
        ]
    ),
    "text": pa.schema(
        [
            ("variantid", _I64),
            ("name", _STR),
            ("description", _STR),
            ("name_bert_64", pa.list_(pa.float64())),
        ]
    ),
    "attributes": pa.schema(
        [("variantid", _I64), ("categories", _STR), ("characteristic_attributes_mapping", _STR)]
    ),
    "truth": pa.schema([("variantid", _I64), ("product_id", _I64)]),
}
# Dictionaries and statistics of random floats or unique titles only cost time. Byte stream split
# (a standard Parquet encoding) packs the floats a third smaller and faster than plain + snappy.
_FLOATS = "main_pic_embeddings_resnet_v1", "pic_embeddings_resnet_v1"
_WRITER_OPTIONS = {
    "images": {
        "use_dictionary": False,
        "write_statistics": ["variantid"],
        "use_byte_stream_split": [f"{c}.list.element.list.element" for c in _FLOATS],
    },
    "text": {
        "use_dictionary": False,
        "write_statistics": ["variantid"],
        "use_byte_stream_split": ["name_bert_64.list.element"],
    },
    "attributes": {"use_dictionary": ["categories"], "write_statistics": ["variantid"]},
}
ORIGIN_KEY = "matching.demo"  # truth.parquet's metadata: [pairs, seed] of the set


@dataclass(frozen=True)
class _Noise:
    """How one embedding block scatters; spreads are per coordinate, around a unit-scale centre."""

    stream: int  # which random stream draws the products' points
    dim: int
    family: float  # families of one product type around the type's centre
    product: float  # median spread of a family's products: the gap a model must see
    listing: float  # median noise of one listing (another photo, another seller's title)
    wrong: float  # share of listings whose vector is another product's (wrong picture, junk title)


# Tuned so that gradient boosting on |a-b|, a*b and cosines reaches a PR-AUC of about 0.87.
TEXT = _Noise(stream=1, dim=64, family=0.6, product=0.28, listing=0.35, wrong=0.03)
IMAGE = _Noise(stream=2, dim=128, family=0.6, product=0.27, listing=0.4, wrong=0.05)


@dataclass(frozen=True)
class SyntheticSummary:
    pairs: int  # labelled pairs in train.parquet
    test_pairs: int
    listings: int  # rows in the product tables
    positive_share: float
    files: list[Path]


@dataclass
class _Catalogue:
    """Listings as indices: each listing's product, each product's family, their words, and where
    each listing shows its specs (one layout for all three tables, so they agree)."""

    listing_product: np.ndarray
    product_family: np.ndarray
    words: listing_text.Words
    listing_layout: np.ndarray


@dataclass
class _Split:
    """One split's families (products per family, listings per product) and pairs."""

    products: np.ndarray
    listings: np.ndarray
    avoid: np.ndarray  # per family: the family whose level-2 category it must not share, or -1
    left: np.ndarray
    right: np.ndarray
    target: np.ndarray


def generate(
    out_dir: Path,
    n_pairs: int,
    seed: int = 0,
    reporter: Reporter | None = None,
    image_file: str = IMAGE_FILES[1],  # the original project's name
) -> SyntheticSummary:
    """Write the five competition files and `truth.parquet` into `out_dir` (each whole or absent)."""
    if n_pairs < MIN_PAIRS:
        raise DataError(
            f"--pairs must be at least {MIN_PAIRS} (got {n_pairs}): fewer cannot hold "
            "matches, hard and easy non-matches in every split"
        )
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: not a directory; create it first")
    rng = _streams(seed, 0, 1)[0]
    n_test = max(1, round(n_pairs * REAL_TEST_PAIRS / REAL_PAIRS))
    cat, train, test = _catalogue(rng, n_pairs, n_test)
    n_listings = len(cat.listing_product)
    ids = _unique_ids(rng, n_listings)
    orders = [rng.permutation(n_listings) for _ in range(4)]
    names = {
        "images": image_file,
        "text": TEXT_FILE,
        "attributes": ATTRIBUTES_FILE,
    }
    task = (reporter or NullReporter()).task(
        "writing demo data", total=math.ceil(n_listings / CHUNK_ROWS), unit="chunks"
    )
    with closing(task):
        _write_listing_tables(out_dir, names, seed, cat, ids, orders[:3], task)

    target = (train.target ^ (rng.random(n_pairs) < LABEL_NOISE)).astype(np.int64)
    product_ids = rng.permutation(len(cat.product_family)).astype(np.int64)
    small = {
        "train": _pair_columns(rng, ids, train.left, train.right, target),
        "test": _pair_columns(rng, ids, test.left, test.right),
        "truth": [ids[orders[3]], product_ids[cat.listing_product[orders[3]]]],
    }
    small_files = {"train": PAIRS_FILE, "test": TEST_FILE, "truth": TRUTH_FILE}
    for table, columns in small.items():
        written = pa.Table.from_batches([_batch(table, *columns)])
        if table == "truth":  # what was asked, so that another `--pairs` or `--seed` is told apart
            written = written.replace_schema_metadata({ORIGIN_KEY: json.dumps([n_pairs, seed])})
        with atomic_file(out_dir / small_files[table]) as path:
            pq.write_table(written, path)
    files = [out_dir / n for n in (PAIRS_FILE, TEST_FILE, *names.values(), TRUTH_FILE)]
    return SyntheticSummary(n_pairs, n_test, n_listings, float(target.mean()), files)


def _streams(seed: int, purpose: int, n: int) -> list[np.random.Generator]:
    """`n` generators for one purpose, each depending only on the seed, the purpose and its index."""
    root = np.random.SeedSequence(seed).spawn(purpose + 1)[purpose]
    return [np.random.default_rng(s) for s in root.spawn(n)]


def _catalogue(
    rng: np.random.Generator, n_pairs: int, n_test: int
) -> tuple[_Catalogue, _Split, _Split]:
    """Train and test families side by side, then listings no pair uses, as in the real tables."""
    train, test = _families_and_pairs(rng, n_pairs), _families_and_pairs(rng, n_test)
    first_family, first_listing = len(train.products), train.listings.sum()
    test.avoid = np.where(test.avoid >= 0, test.avoid + first_family, -1)
    test.left, test.right = test.left + first_listing, test.right + first_listing
    spare = max(
        0, round(n_pairs * REAL_LISTINGS / REAL_PAIRS) - first_listing - test.listings.sum()
    )
    ones = np.ones(spare, int)
    products = np.concatenate([train.products, test.products, ones])
    listings = np.concatenate([train.listings, test.listings, ones])
    avoid = np.concatenate([train.avoid, test.avoid, np.full(spare, -1)])

    n = vocab.N_LEVEL2  # categories differ in size, as real ones do
    level2 = rng.choice(n, len(products), p=rng.dirichlet(np.full(n, 3.0)))
    lone = avoid >= 0
    level2[lone] = (level2[avoid[lone]] + rng.integers(1, n, lone.sum())) % n
    cat = _Catalogue(
        listing_product=np.repeat(np.arange(len(listings)), listings).astype(np.int32),
        product_family=np.repeat(np.arange(len(products)), products).astype(np.int32),
        words=listing_text.draw_words(rng, level2, products),
        listing_layout=listing_text.draw_layout(rng, listings.sum()),
    )
    return cat, train, test


def _families_and_pairs(rng: np.random.Generator, n_pairs: int) -> _Split:
    """Matches are neighbours within a product; hard non-matches, a listing each of two products one
    or two apart in a family; an easy non-match pairs a listing with a new one-off listing, which is
    a family of its own in another category."""
    n_pos = round(POSITIVE_SHARE * n_pairs)
    n_easy = round(EASY_SHARE * (n_pairs - n_pos))
    n_hard = n_pairs - n_pos - n_easy
    mean = np.dot(*PRODUCTS_PER_FAMILY) * np.dot(*LISTINGS_PER_PRODUCT)
    n_families = math.ceil(n_pairs * FAMILY_LISTINGS_PER_PAIR / mean)
    while True:
        products = rng.choice(PRODUCTS_PER_FAMILY[0], n_families, p=PRODUCTS_PER_FAMILY[1])
        listings = rng.choice(LISTINGS_PER_PRODUCT[0], products.sum(), p=LISTINGS_PER_PRODUCT[1])
        first, rank = np.cumsum(listings) - listings, ranks(products)
        later = np.flatnonzero(ranks(listings) > 0)
        positive = np.stack([later - 1, later], axis=1)
        hard = np.empty((0, 2), np.int64)
        for gap in (1, 2):
            p = np.flatnonzero(rank >= gap)
            sides = [first[q] + listing_text.below(rng, listings[q]) for q in (p - gap, p)]
            hard = np.concatenate([hard, np.stack(sides, axis=1)])
        if len(positive) >= n_pos and len(hard) >= n_hard:
            break
        n_families *= 2  # only tiny splits get here
    positive = positive[rng.choice(len(positive), n_pos, replace=False)]
    hard = hard[rng.choice(len(hard), n_hard, replace=False)]
    n_listings = listings.sum()
    anchor = rng.integers(0, n_listings, n_easy)
    listing_family = np.repeat(np.repeat(np.arange(n_families), products), listings)
    ones = np.ones(n_easy, int)
    return _Split(
        products=np.concatenate([products, ones]),
        listings=np.concatenate([listings, ones]),
        avoid=np.concatenate([np.full(n_families, -1), listing_family[anchor]]),
        left=np.concatenate([positive[:, 0], hard[:, 0], anchor]),
        right=np.concatenate([positive[:, 1], hard[:, 1], n_listings + np.arange(n_easy)]),
        target=np.arange(n_pairs) < n_pos,
    )


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    while True:
        ids = np.unique(rng.integers(10_000_000, 1_000_000_000, n + n // 50 + 100))
        if len(ids) >= n:
            return rng.permutation(ids)[:n]


def _write_listing_tables(
    out_dir: Path,
    names: dict[str, str],
    seed: int,
    cat: _Catalogue,
    ids: np.ndarray,
    orders: list[np.ndarray],
    task: Task,
) -> None:
    """The three product tables, chunk by chunk, each in its own row order."""
    n_chunks = math.ceil(len(ids) / CHUNK_ROWS)
    rngs = {table: _streams(seed, 3 + k, n_chunks) for k, table in enumerate(names)}
    builders = {"images": _image_columns, "text": _text_columns, "attributes": _attribute_columns}
    with ThreadPoolExecutor(2) as pool, ExitStack() as stack:
        text, image = pool.map(lambda noise: _product_vectors(seed, cat, noise), (TEXT, IMAGE))
        vectors = {TEXT: text, IMAGE: image}
        writers = {
            table: stack.enter_context(
                pq.ParquetWriter(
                    stack.enter_context(atomic_file(out_dir / name)),
                    SCHEMAS[table],
                    **_WRITER_OPTIONS[table],
                )
            )
            for table, name in names.items()
        }

        def build(i: int) -> dict[str, pa.RecordBatch]:
            rows = [order[i * CHUNK_ROWS : (i + 1) * CHUNK_ROWS] for order in orders]
            return {
                table: _batch(table, ids[r], *builders[table](rngs[table][i], r, cat, vectors))
                for table, r in zip(names, rows, strict=True)
            }

        # Building the next chunk while this one is written keeps both cores busy.
        pending = pool.submit(build, 0)
        for i in range(n_chunks):
            batches = pending.result()
            if i + 1 < n_chunks:
                pending = pool.submit(build, i + 1)
            for table, batch in batches.items():
                writers[table].write_batch(batch)
            task.advance()


def _product_vectors(seed: int, cat: _Catalogue, noise: _Noise) -> np.ndarray:
    """Each product's point (float32) in one block, built family chunk by family chunk."""
    n_families = len(cat.words.family_type)
    chunks = range(0, n_families, CHUNK_ROWS)
    *rngs, shared = _streams(seed, noise.stream, len(chunks) + 1)
    types = vocab.TYPE_LEVEL2
    level2 = shared.standard_normal((vocab.N_LEVEL2, noise.dim))
    # A common direction makes all cosines positive, as with real BERT and ResNet vectors.
    centre = (
        shared.standard_normal(noise.dim)
        + 0.8 * level2[types]
        + 0.5 * shared.standard_normal((len(types), noise.dim))
    ).astype(np.float32)
    first_product = np.searchsorted(cat.product_family, np.arange(n_families + 1))
    out = np.empty((len(cat.product_family), noise.dim), np.float32)
    for rng, start in zip(rngs, chunks, strict=True):
        stop = min(start + CHUNK_ROWS, n_families)
        family = rng.standard_normal((stop - start, noise.dim), np.float32)
        family *= noise.family
        family += centre[cat.words.family_type[start:stop]]
        span = slice(first_product[start], first_product[stop])
        spread = noise.product * rng.lognormal(0, 0.5, span.stop - span.start)
        products = out[span]
        rng.standard_normal(out=products, dtype=np.float32)
        products *= spread[:, None].astype(np.float32)
        products += family[cat.product_family[span] - start]
    return out


def _listing_vectors(
    rng: np.random.Generator, vectors: np.ndarray, products: np.ndarray, noise: _Noise
) -> np.ndarray:
    source = products.copy()
    wrong = rng.random(len(source)) < noise.wrong
    source[wrong] = rng.integers(0, len(vectors), wrong.sum())
    scale = (noise.listing * rng.lognormal(0, 0.4, len(source))).astype(np.float32)
    out = rng.standard_normal((len(source), noise.dim), np.float32)
    out *= scale[:, None]  # in place: these are the biggest arrays of the run
    out += vectors[source]
    return out


def _lists(values: pa.Array, counts: np.ndarray, null: np.ndarray, large: bool) -> pa.Array:
    """Arrow lists of `counts` items each from `values`; null where `null`."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64 if large else np.int32)
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(pa.array(offsets), values, mask=pa.array(null))


def _vector_lists(vectors: np.ndarray, counts: np.ndarray, null: np.ndarray) -> pa.Array:
    """large_list<large_list<double>>: `counts` vectors (rows of `vectors`) per listing."""
    n, dim = vectors.shape
    inner = _lists(
        pa.array(vectors.astype(np.float64).reshape(-1)),
        np.full(n, dim),
        np.zeros(n, bool),
        large=True,
    )
    return _lists(inner, counts, null, large=True)


def _image_columns(rng, rows, cat, vectors) -> list[pa.Array]:
    products = cat.listing_product[rows]
    n = len(rows)
    main_null = rng.random(n) < 0.01
    main = _listing_vectors(rng, vectors[IMAGE], products[~main_null], IMAGE)
    extra_null = rng.random(n) < 0.6
    count = np.where(extra_null, 0, rng.choice(5, n, p=[0.05, 0.35, 0.25, 0.2, 0.15]))
    extra = _listing_vectors(rng, vectors[IMAGE], np.repeat(products, count), IMAGE)
    return [
        _vector_lists(main, (~main_null).astype(int), main_null),
        _vector_lists(extra, count, extra_null),
    ]


def _text_columns(rng, rows, cat, vectors) -> list[pa.Array]:
    products = cat.listing_product[rows]
    null = rng.random(len(rows)) < 0.005
    bert = _listing_vectors(rng, vectors[TEXT], products[~null], TEXT)
    bert_lists = _lists(
        pa.array(bert.astype(np.float64).reshape(-1)),
        np.where(null, 0, TEXT.dim),
        null,
        large=False,
    )
    families, layout = cat.product_family[products], cat.listing_layout[rows]
    name, description = listing_text.text_columns(rng, cat.words, families, products, layout)
    return [name, description, bert_lists]


def _attribute_columns(rng, rows, cat, vectors) -> list[pa.Array]:
    products = cat.listing_product[rows]
    families, layout = cat.product_family[products], cat.listing_layout[rows]
    return listing_text.attribute_columns(rng, cat.words, families, products, layout)


def _pair_columns(rng, ids, left, right, target=None) -> list[np.ndarray]:
    """Pairs in random order, each with its two sides in random order."""
    swap = rng.random(len(left)) < 0.5
    order = rng.permutation(len(left))
    first, second = np.where(swap, right, left)[order], np.where(swap, left, right)[order]
    return [ids[first], ids[second]] + ([] if target is None else [target[order]])


def check_same_demo(data_dir: Path, pairs: int, seed: int) -> None:
    """Refuse to keep a demo data set other than the one asked for (another --pairs or --seed):
    `download --synthetic` kept the old one and exited 0, so `download --synthetic --pairs N &&
    train` trained on the old one. Competition files are left to the caller's message."""
    if not is_demo(data_dir):
        return
    held_pairs, held_seed = demo_origin(data_dir)
    if held_pairs == pairs and held_seed in (None, seed):
        return
    held = f"{held_pairs:,} pairs" + (f", seed {held_seed}" if held_seed is not None else "")
    raise DataError(
        f"{data_dir} holds another demo data set ({held}) than the one asked for ({pairs:,} "
        f"pairs, seed {seed}); nothing was written: add --force to replace it"
    )


def demo_origin(data_dir: Path) -> tuple[int, int | None]:
    """(pairs, seed) of the demo data set in `data_dir`; the seed is None for a set written before
    it was recorded (its pairs are the labelled file's rows)."""
    metadata = pq.read_schema(data_dir / TRUTH_FILE).metadata or {}
    if ORIGIN_KEY.encode() in metadata:
        pairs, seed = json.loads(metadata[ORIGIN_KEY.encode()])
        return pairs, seed
    return pq.read_metadata(data_dir / PAIRS_FILE).num_rows, None


def _batch(table: str, *columns: np.ndarray | pa.Array) -> pa.RecordBatch:
    arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMAS[table])
