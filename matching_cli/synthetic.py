"""A demo data set in exactly the schema of the Ozon E-CUP matching files (see DATA.md).

The real files cannot be downloaded everywhere, so tests and demos run on this. It models what makes
the task hard: listings are grouped into products (1-5 listings each), products into families of
look-alikes within one category. A match is two listings of one product; a hard non-match, two
products of one family; an easy one, a listing and a one-off listing of another category. Each
embedding block is family centre + product offset + listing noise, some pictures and names belong to
another product and 1.5% of labels are flipped, so a good model reaches a PR-AUC well below 1.
Pairs never leave a family and its one-off partners, which keeps the pair graph in small components
for a split by component; test pairs have families of their own. `truth.parquet` (no competition
file) gives each listing's product. The output depends only on `seed` and `n_pairs`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matching_cli import _vocab as vocab
from matching_cli.errors import DataError
from matching_cli.progress import NullReporter, Reporter

REAL_PAIRS, REAL_TEST_PAIRS, REAL_LISTINGS = 1_168_516, 49_620, 2_252_569
MIN_PAIRS = 20
POSITIVE_SHARE = 0.48
EASY_SHARE = 0.35  # of the non-matches; the others are hard, within a family
LABEL_NOISE = 0.015
PRODUCTS_PER_FAMILY = ([2, 3, 4, 5], [0.3, 0.3, 0.25, 0.15])
LISTINGS_PER_PRODUCT = ([1, 2, 3, 4, 5], [0.2, 0.35, 0.22, 0.13, 0.1])
FAMILY_LISTINGS_PER_PAIR = (
    1.65  # with the one-off listings, ~1.93 listings per pair as in the real data
)
CHUNK_ROWS = 200_000

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

# Dictionaries and statistics of random floats or unique titles only cost time.
_WRITER_OPTIONS = {
    "images": {"use_dictionary": False, "write_statistics": ["variantid"]},
    "text": {"use_dictionary": False, "write_statistics": ["variantid"]},
    "attributes": {"use_dictionary": ["categories"], "write_statistics": ["variantid"]},
}


@dataclass(frozen=True)
class _Noise:
    """How one embedding block scatters; spreads are per coordinate, around a unit-scale centre."""

    dim: int
    family: float  # families of one product type around the type's centre
    product: float  # median spread of a family's products: the gap a model must see
    listing: float  # median noise of one listing (another photo, another seller's title)
    wrong: float  # share of listings whose vector is another product's (wrong picture, junk title)


TEXT, IMAGE = _Noise(64, 0.6, 0.28, 0.35, 0.03), _Noise(128, 0.6, 0.27, 0.4, 0.05)


@dataclass(frozen=True)
class SyntheticSummary:
    pairs: int  # labelled pairs in train.parquet
    test_pairs: int
    listings: int  # rows in the product tables
    positive_share: float
    files: list[Path]


@dataclass
class _Catalogue:
    """Who is who: each listing's product, each product's family, and the words of each."""

    listing_product: np.ndarray
    product_family: np.ndarray
    product_number: np.ndarray
    product_size: np.ndarray
    product_colour: np.ndarray
    family_type: np.ndarray
    family_level4: np.ndarray
    family_brand: np.ndarray
    family_series: np.ndarray


def generate(
    out_dir: Path,
    n_pairs: int,
    seed: int = 0,
    reporter: Reporter | None = None,
    image_file: str = "images_embed.parquet",
) -> SyntheticSummary:
    """Write the five competition files and `truth.parquet` into `out_dir`, each file whole or not at all."""
    if n_pairs < MIN_PAIRS:
        raise DataError(
            f"--pairs must be at least {MIN_PAIRS} (got {n_pairs}): "
            "fewer cannot hold matches, hard and easy non-matches in every split"
        )
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: not a directory; create it first")
    rng = _streams(seed, 0, 1)[0]
    n_test = max(1, round(n_pairs * REAL_TEST_PAIRS / REAL_PAIRS))
    cat, train, test = _catalogue(rng, n_pairs, n_test)
    n_listings = len(cat.listing_product)
    ids = _unique_ids(rng, n_listings)
    flip = rng.random(n_pairs) < LABEL_NOISE  # annotators' mistakes: truth.parquet stays right
    train = (*train[:2], train[2] ^ flip)
    orders = [rng.permutation(n_listings) for _ in range(4)]
    product_ids = rng.permutation(len(cat.product_family)).astype(np.int64)
    vectors = {b: _product_vectors(seed, k, cat, b) for k, b in ((1, TEXT), (2, IMAGE))}

    names = {
        "images": image_file,
        "text": "text_and_bert.parquet",
        "attributes": "attributes.parquet",
    }
    n_chunks = math.ceil(n_listings / CHUNK_ROWS)
    builders = {"images": _image_batch, "text": _text_batch, "attributes": _attribute_batch}
    task = (reporter or NullReporter()).task("writing demo data", total=n_chunks, unit="chunks")
    try:
        with ExitStack() as stack:
            writers = {}
            for k, table in enumerate(builders):
                path = stack.enter_context(_replacing(out_dir / names[table]))
                rngs = _streams(seed, 3 + k, n_chunks)
                writer = pq.ParquetWriter(path, SCHEMAS[table], **_WRITER_OPTIONS[table])
                writers[table] = (stack.enter_context(writer), rngs)
            for i in range(n_chunks):
                for k, (table, (writer, rngs)) in enumerate(writers.items()):
                    rows = orders[k][i * CHUNK_ROWS : (i + 1) * CHUNK_ROWS]
                    columns = builders[table](rngs[i], rows, cat, vectors)
                    writer.write_batch(_batch(table, ids[rows], *columns))
                task.advance()
    finally:
        task.close()

    target = train[2].astype(np.int64)
    small = {
        "train.parquet": _pair_columns(rng, ids, *train[:2], target),
        "test.parquet": _pair_columns(rng, ids, *test),
        "truth.parquet": [ids[orders[3]], product_ids[cat.listing_product[orders[3]]]],
    }
    for (name, columns), table in zip(small.items(), ("train", "test", "truth"), strict=True):
        with _replacing(out_dir / name) as path:
            pq.write_table(pa.Table.from_batches([_batch(table, *columns)]), path)
    files = [
        out_dir / n for n in ("train.parquet", "test.parquet", *names.values(), "truth.parquet")
    ]
    return SyntheticSummary(n_pairs, n_test, n_listings, float(target.mean()), files)


def _streams(seed: int, purpose: int, n: int) -> list[np.random.Generator]:
    """`n` generators for one purpose, each depending only on the seed, the purpose and its index."""
    root = np.random.SeedSequence(seed).spawn(purpose + 1)[purpose]
    return [np.random.default_rng(s) for s in root.spawn(n)]


def _ranks(counts: np.ndarray) -> np.ndarray:
    """Position of each member within its group, for groups of `counts` consecutive members."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def _catalogue(
    rng: np.random.Generator, n_pairs: int, n_test: int
) -> tuple[_Catalogue, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Families, products and listings, and the train and test pairs as listing indices."""
    products, listings, avoid, pairs = [], [], [], []
    for n in (n_pairs, n_test):
        p, m, a, (left, right, target) = _families_and_pairs(rng, n)
        first_family, first_listing = sum(map(len, products)), sum(x.sum() for x in listings)
        products.append(p)
        listings.append(m)
        avoid.append(np.where(a >= 0, a + first_family, -1))
        pairs.append((left + first_listing, right + first_listing, target))
    # Listings that no pair uses, as in the real tables.
    spare = max(0, round(n_pairs * REAL_LISTINGS / REAL_PAIRS) - sum(x.sum() for x in listings))
    products, listings = (
        np.concatenate([*products, np.ones(spare, int)]),
        np.concatenate([*listings, np.ones(spare, int)]),
    )
    avoid = np.concatenate([*avoid, np.full(spare, -1)])

    n_families = len(products)
    level2 = rng.choice(vocab.N_LEVEL2, n_families, p=rng.dirichlet(np.full(vocab.N_LEVEL2, 3.0)))
    lone = avoid >= 0  # an easy partner: any category but its anchor's
    level2[lone] = (
        level2[avoid[lone]] + rng.integers(1, vocab.N_LEVEL2, lone.sum())
    ) % vocab.N_LEVEL2
    level1 = vocab.LEVEL2_LEVEL1[level2]
    type_start = np.searchsorted(vocab.TYPE_LEVEL2, np.arange(vocab.N_LEVEL2))
    type_count = np.bincount(vocab.TYPE_LEVEL2, minlength=vocab.N_LEVEL2)
    family_type = type_start[level2] + _below(rng, type_count[level2])
    product_family = np.repeat(np.arange(n_families), products)
    product_level2 = level2[product_family]
    # Siblings share brand and model line; the number steps by 10 (A14, A24...), by 1, or not at
    # all when they differ only in colour or size.
    base, step = rng.integers(1, 60, n_families), rng.choice([0, 1, 10], n_families)
    cat = _Catalogue(
        listing_product=np.repeat(np.arange(len(listings)), listings).astype(np.int32),
        product_family=product_family.astype(np.int32),
        product_number=base[product_family] + step[product_family] * _ranks(products),
        product_size=vocab.SIZE_START[product_level2]
        + _below(rng, vocab.SIZE_COUNT[product_level2]),
        product_colour=rng.integers(0, len(vocab.COLOURS), len(listings)),
        family_type=family_type,
        family_level4=rng.integers(0, vocab.LEVEL4_PER_TYPE, n_families),
        family_brand=vocab.BRAND_START[level2] + _below(rng, vocab.BRAND_COUNT[level2]),
        family_series=vocab.SERIES_START[level1] + _below(rng, vocab.SERIES_COUNT[level1]),
    )
    return cat, pairs[0], pairs[1][:2]


def _below(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    return (rng.random(len(counts)) * counts).astype(np.int64)


def _families_and_pairs(rng: np.random.Generator, n_pairs: int):
    """One split's families (products per family, listings per product) and its pairs.

    Matches are neighbours within a product, hard non-matches a listing each of two products one or
    two apart in a family; each easy non-match gets a new one-off listing as its partner, a family
    of its own whose category must differ from that of the family in `avoid`.
    """
    n_pos = round(POSITIVE_SHARE * n_pairs)
    n_easy = round(EASY_SHARE * (n_pairs - n_pos))
    n_hard = n_pairs - n_pos - n_easy
    mean = np.dot(*PRODUCTS_PER_FAMILY) * np.dot(*LISTINGS_PER_PRODUCT)
    n_families = math.ceil(n_pairs * FAMILY_LISTINGS_PER_PAIR / mean)
    while True:
        products = rng.choice(PRODUCTS_PER_FAMILY[0], n_families, p=PRODUCTS_PER_FAMILY[1])
        listings = rng.choice(LISTINGS_PER_PRODUCT[0], products.sum(), p=LISTINGS_PER_PRODUCT[1])
        first = np.cumsum(listings) - listings
        later = np.flatnonzero(_ranks(listings) > 0)
        positive = np.stack([later - 1, later], axis=1)
        hard = []
        for gap in (1, 2):
            p = np.flatnonzero(_ranks(products) >= gap)
            hard.append(
                np.stack(
                    [
                        first[p - gap] + _below(rng, listings[p - gap]),
                        first[p] + _below(rng, listings[p]),
                    ],
                    axis=1,
                )
            )
        hard = np.concatenate(hard)
        if len(positive) >= n_pos and len(hard) >= n_hard:
            break
        n_families *= 2  # only tiny splits get here
    n_listings = listings.sum()
    positive = positive[rng.choice(len(positive), n_pos, replace=False)]
    hard = hard[rng.choice(len(hard), n_hard, replace=False)]
    anchor = rng.integers(0, n_listings, n_easy)
    listing_family = np.repeat(np.repeat(np.arange(n_families), products), listings)
    left = np.concatenate([positive[:, 0], hard[:, 0], anchor])
    right = np.concatenate([positive[:, 1], hard[:, 1], n_listings + np.arange(n_easy)])
    target = np.arange(n_pairs) < n_pos
    avoid = np.concatenate([np.full(n_families, -1), listing_family[anchor]])
    ones = np.ones(n_easy, int)
    return (
        np.concatenate([products, ones]),
        np.concatenate([listings, ones]),
        avoid,
        (left, right, target),
    )


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    while True:
        ids = np.unique(rng.integers(10_000_000, 1_000_000_000, n + n // 50 + 100))
        if len(ids) >= n:
            return rng.permutation(ids)[:n]


def _product_vectors(seed: int, purpose: int, cat: _Catalogue, noise: _Noise) -> np.ndarray:
    """Each product's point (float32) in one block, built family chunk by family chunk."""
    n_families = len(cat.family_type)
    chunks = range(0, n_families, CHUNK_ROWS)
    rngs = _streams(seed, purpose, len(chunks) + 1)
    shared = rngs.pop()
    level2 = shared.standard_normal((vocab.N_LEVEL2, noise.dim))
    # A common direction makes all cosines positive, as with real BERT and ResNet vectors.
    centre = (shared.standard_normal(noise.dim) + 0.8 * level2[vocab.TYPE_LEVEL2]
              + 0.5 * shared.standard_normal((len(vocab.TYPE_LEVEL2), noise.dim)))
    centre = centre.astype(np.float32)
    first_product = np.searchsorted(cat.product_family, np.arange(n_families + 1))
    out = np.empty((len(cat.product_family), noise.dim), np.float32)
    for rng, start in zip(rngs, chunks, strict=True):
        stop = min(start + CHUNK_ROWS, n_families)
        family = rng.standard_normal((stop - start, noise.dim), np.float32)
        family *= noise.family
        family += centre[cat.family_type[start:stop]]
        products = out[first_product[start]:first_product[stop]]
        spread = noise.product * rng.lognormal(0, 0.5, len(products)).astype(np.float32)
        rng.standard_normal(out=products, dtype=np.float32)
        products *= spread[:, None]
        products += family[cat.product_family[first_product[start]:first_product[stop]] - start]
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


def _lists(values: np.ndarray, counts: np.ndarray, null: np.ndarray, large: bool) -> pa.Array:
    """Arrow lists of `counts` items each from the rows of `values`; null where `null`."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(
        pa.array(offsets.astype(np.int64 if large else np.int32)), values, mask=pa.array(null)
    )


def _vector_lists(vectors: np.ndarray, counts: np.ndarray, null: np.ndarray) -> pa.Array:
    inner = _lists(
        pa.array(vectors.astype(np.float64).reshape(-1)),
        np.full(len(vectors), vectors.shape[1]),
        np.zeros(len(vectors), bool),
        True,
    )
    return _lists(inner, counts, null, True)


def _image_batch(rng, rows, cat, vectors) -> list[pa.Array]:
    products = cat.listing_product[rows]
    n = len(rows)
    main_null = rng.random(n) < 0.01
    main = _listing_vectors(rng, vectors[IMAGE], products[~main_null], IMAGE)
    extra_null = rng.random(n) < 0.6
    count = np.where(extra_null, 0, rng.choice(5, n, p=[0.05, 0.35, 0.25, 0.2, 0.15]))
    # Other photos of the same product: closer to it than to anything else, but not the main one.
    extra = _listing_vectors(rng, vectors[IMAGE], np.repeat(products, count), IMAGE)
    return [
        _vector_lists(main, (~main_null).astype(int), main_null),
        _vector_lists(extra, count, extra_null),
    ]


def _text_batch(rng, rows, cat, vectors) -> list[pa.Array]:
    products = cat.listing_product[rows]
    families = cat.product_family[products]
    null = rng.random(len(rows)) < 0.005
    bert = _listing_vectors(rng, vectors[TEXT], products[~null], TEXT)
    text = vocab.texts(
        rng,
        cat.family_type[families],
        cat.family_brand[families],
        cat.family_series[families],
        cat.product_number[products],
        cat.product_size[products],
        cat.product_colour[products],
    )
    bert_values = pa.array(bert.astype(np.float64).reshape(-1))
    return [
        text["name"],
        text["description"],
        _lists(bert_values, np.where(null, 0, TEXT.dim), null, False),
    ]


def _attribute_batch(rng, rows, cat, vectors) -> list[pa.Array]:
    products = cat.listing_product[rows]
    families = cat.product_family[products]
    categories = vocab.CATEGORY_JSON.take(
        cat.family_type[families] * vocab.LEVEL4_PER_TYPE + cat.family_level4[families]
    )
    return [
        categories,
        vocab.attributes_json(
            rng,
            cat.family_type[families],
            cat.family_brand[families],
            cat.family_series[families],
            cat.product_number[products],
            cat.product_colour[products],
        ),
    ]


def _pair_columns(rng, ids, left, right, target=None) -> list[np.ndarray]:
    """Pairs in random order, each with its two sides in random order."""
    swap = rng.random(len(left)) < 0.5
    order = rng.permutation(len(left))
    first, second = np.where(swap, right, left)[order], np.where(swap, left, right)[order]
    return [ids[first], ids[second]] + ([] if target is None else [target[order]])


def _batch(table: str, *columns) -> pa.RecordBatch:
    arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMAS[table])


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that becomes `path` only if the block finishes."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
