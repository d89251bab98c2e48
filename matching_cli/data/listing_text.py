"""The demo data's words per product and the text of its listings, many rows at a time.

A family shares its type, brand, model line and code prefix; its products differ from each other in
exactly one spec, the family's `axis`: the model number (A1234, A1244), the size (128 vs 256 GB) or
the colour. Each listing spells its product's specs its own way (word order, "ГБ"/"GB", Cyrillic
look-alike letters in the code, the brand in Cyrillic, a typo) and puts each spec in its name, its
description or its attributes, at least one of them. The text of a row is built with Arrow string
kernels over taken vocabulary arrays, never with a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from matching_cli.data import vocab
from matching_cli.data.arrays import ranks
from matching_cli.data.vocab import FORMS

AXES = ("code", "size", "colour")
AXIS_SHARE = [0.35, 0.4, 0.25]
# Where a listing shows each spec, by layout bit (a spec in no visible place goes to attributes).
NO_DESCRIPTION = 1
SPECS = {"code": 1, "size": 4, "colour": 7}  # bit of "in the name"; +1 description, +2 attributes
_IN_NAME = {"code": 0.8, "size": 0.7, "colour": 0.6}
_IN_ATTRIBUTES = {"code": 0.5, "size": 0.4, "colour": 0.85}
# How often each of the FORMS spellings is used (the canonical one first).
_SPELLING = {
    "type": [0.96, 0.04, 0, 0, 0],
    "brand": [0.8, 0.12, 0.04, 0, 0.04],
    "code": [0.55, 0.15, 0.12, 0.1, 0.08],
    "size": [0.5, 0.2, 0.15, 0.15, 0],
    "colour": [0.75, 0.15, 0.1, 0, 0],
}


@dataclass
class Words:
    """Vocabulary indices: a family's type, level-4 category, brand, model line, code prefix and
    axis; a product's model number, size and colour. Siblings share all but the axis's spec."""

    family_type: np.ndarray
    family_level4: np.ndarray
    family_brand: np.ndarray
    family_series: np.ndarray
    family_prefix: np.ndarray
    family_axis: np.ndarray
    product_number: np.ndarray
    product_size: np.ndarray
    product_colour: np.ndarray


def draw_words(rng: np.random.Generator, level2: np.ndarray, products: np.ndarray) -> Words:
    """Words for families of `level2` categories with `products` products each (at most 5)."""
    n = len(products)
    product_family = np.repeat(np.arange(n), products)
    level1 = vocab.LEVEL2_LEVEL1[level2]
    type_start = np.searchsorted(vocab.TYPE_LEVEL2, np.arange(vocab.N_LEVEL2))
    axis = rng.choice(3, n, p=AXIS_SHARE)
    rank = ranks(products)
    moves = [(axis[product_family] == k) * rank for k in range(3)]
    # Siblings step through numbers (staying at 3-4 digits), sizes and colours, so no two of a
    # family share the axis's spec; steps coprime with the 18 colours keep five colours distinct.
    number, number_step = rng.integers(100, 9500, n), rng.choice([1, 10, 100], n)
    size, size_count = rng.integers(0, 99, n), vocab.SIZE_COUNT[level2]
    colour, colour_step = rng.integers(0, 18, n), rng.choice([1, 5, 7, 11], n)
    f = product_family
    return Words(
        family_type=type_start[level2] + below(rng, np.bincount(vocab.TYPE_LEVEL2)[level2]),
        family_level4=rng.integers(0, vocab.LEVEL4_PER_TYPE, n),
        family_brand=vocab.BRAND_START[level2] + below(rng, vocab.BRAND_COUNT[level2]),
        family_series=vocab.SERIES_START[level1] + below(rng, vocab.SERIES_COUNT[level1]),
        family_prefix=rng.integers(0, len(vocab.CODE_PREFIXES), n),
        family_axis=axis,
        product_number=number[f] + number_step[f] * moves[0],
        product_size=vocab.SIZE_START[level2[f]] + (size[f] + moves[1]) % size_count[f],
        product_colour=(colour[f] + colour_step[f] * moves[2]) % len(vocab.COLOURS),
    )


def draw_layout(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per listing, bits saying whether it has a description and where each spec shows."""
    no_description = rng.random(n) < 0.12
    layout = no_description.astype(np.uint16) * NO_DESCRIPTION
    for spec, bit in SPECS.items():
        name = rng.random(n) < _IN_NAME[spec]
        description = (rng.random(n) < 0.5) & ~no_description
        attributes = (rng.random(n) < _IN_ATTRIBUTES[spec]) | ~(name | description)
        for k, shown in enumerate((name, description, attributes)):
            layout |= shown.astype(np.uint16) << (bit + k)
    return layout


def shows(layout: np.ndarray, spec: str, where: int) -> np.ndarray:
    """Whether each listing shows `spec` in its name (0), description (1) or attributes (2)."""
    return ((layout >> (SPECS[spec] + where)) & 1) == 1


def below(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """A uniform index below each of `counts`."""
    return (rng.random(len(counts)) * counts).astype(np.int64)


def _join(*parts: pa.Array | str) -> pa.Array:
    # The leading "": pyarrow 25 drops, rather than joins to "", a row whose parts are all null.
    return pc.binary_join_element_wise("", *parts, "", null_handling="skip")


def _unless(drop: np.ndarray, values: pa.Array | pa.Scalar) -> pa.Array:
    return pc.if_else(pa.array(drop), pa.scalar(None, pa.string()), values)


def _spelled(rng: np.random.Generator, forms: pa.Array, word: np.ndarray, kind: str) -> pa.Array:
    return forms.take(word * FORMS + rng.choice(FORMS, len(word), p=_SPELLING[kind]))


def _specs(rng, words: Words, families, products) -> dict[str, pa.Array]:
    """Each listing's code, size and colour, each in a spelling drawn for this listing."""
    prefix = _spelled(rng, vocab.CODE_PREFIX_FORMS, words.family_prefix[families], "code")
    number = pc.cast(pa.array(words.product_number[products]), pa.string())
    return {
        "code": _join(prefix, number),
        "size": _spelled(rng, vocab.SIZE_FORMS, words.product_size[products], "size"),
        "colour": _spelled(rng, vocab.COLOUR_FORMS, words.product_colour[products], "colour"),
    }


def text_columns(
    rng: np.random.Generator, words: Words, families, products, layout: np.ndarray
) -> list[pa.Array]:
    """`name` and `description` of listings of these families and products, laid out by `layout`."""
    n = len(products)
    kind = _spelled(rng, vocab.TYPE_FORMS, words.family_type[families], "type")
    brand = _spelled(rng, vocab.BRAND_FORMS, words.family_brand[families], "brand")
    series = _unless(rng.random(n) < 0.5, vocab.SERIES.take(words.family_series[families]))
    spec = _specs(rng, words, families, products)
    code, size, colour = (_unless(~shows(layout, s, 0), spec[s]) for s in AXES)
    extra = _unless(rng.random(n) >= 0.15, vocab.EXTRA_WORDS.take(rng.integers(0, 6, n)))
    orders = [
        [kind, brand, series, code, size, colour, extra],
        [brand, series, code, kind, size, colour, extra],
        [kind, brand, code, colour, size, extra],
        [brand, kind, series, code, colour, size, extra],
        [kind, size, brand, series, code, colour, extra],
    ]
    joined = [pc.binary_join_element_wise(*o, " ", null_handling="skip") for o in orders]
    which = rng.choice(5, n, p=[0.4, 0.2, 0.15, 0.15, 0.1]).astype(np.int8)
    name = pc.choose(pa.array(which), *joined)

    spec = _specs(rng, words, families, products)  # the description spells them again
    said = {s: ~shows(layout, s, 1) for s in AXES}
    sentence = _join(
        _unless(said["code"], _join("Модель: ", spec["code"], ". ")),
        _unless(said["size"], _join("Характеристики: ", spec["size"], ". ")),
        _unless(said["colour"], _join("Цвет: ", spec["colour"], ". ")),
    )
    items = _join(
        _unless(said["code"], _join("<li>Модель: ", spec["code"], "</li>")),
        _unless(said["size"], _join("<li>", spec["size"], "</li>")),
        _unless(said["colour"], _join("<li>Цвет: ", spec["colour"], "</li>")),
    )
    s1 = vocab.SENTENCES.take(rng.integers(0, 10, n))
    s2 = vocab.SENTENCES.take(rng.integers(0, 10, n))
    templates = [
        _join("<p>", kind, " ", brand, ". ", s1, "</p><p>", sentence, s2, "</p>"),
        _join(s1, "<br>", sentence, "<br>Бренд: ", brand),
        _join("<ul><li>Бренд: ", brand, "</li>", items, "</ul><p>", s1, "</p>"),
        _join(s1, " ", sentence, s2),
    ]
    which = pa.array(rng.choice(4, n, p=[0.35, 0.25, 0.25, 0.15]).astype(np.int8))
    description = _unless((layout & NO_DESCRIPTION) > 0, pc.choose(which, *templates))
    return [name, description]


def attribute_columns(
    rng: np.random.Generator, words: Words, families, products, layout: np.ndarray
) -> list[pa.Array]:
    """`categories` and `characteristic_attributes_mapping` (type and brand always; model, size
    and colour where `layout` puts them; country often) of these listings. Canonical spellings:
    sellers pick attribute values from the marketplace's lists."""
    n = len(products)
    categories = vocab.CATEGORY_JSON.take(
        words.family_type[families] * vocab.LEVEL4_PER_TYPE + words.family_level4[families]
    )
    prefix = vocab.CODE_PREFIX_FORMS.take(words.family_prefix[families] * FORMS)
    number = pc.cast(pa.array(words.product_number[products]), pa.string())
    size = words.product_size[products]
    mapping = _join(
        '{"Тип": [',
        vocab.TYPES_JSON.take(words.family_type[families]),
        '], "Бренд": [',
        vocab.BRANDS_JSON.take(words.family_brand[families]),
        "]",
        _unless(~shows(layout, "code", 2), _join(', "Модель": ["', prefix, number, '"]')),
        _unless(
            ~shows(layout, "size", 2),
            _join(", ", vocab.SIZE_KEYS_JSON.take(size), ": [", vocab.SIZES_JSON.take(size), "]"),
        ),
        _unless(
            ~shows(layout, "colour", 2),
            _join(
                ', "Цвет товара": [', vocab.COLOURS_JSON.take(words.product_colour[products]), "]"
            ),
        ),
        _unless(rng.random(n) < 0.6, pa.scalar(', "Страна-изготовитель": ["Китай"]')),
        "}",
    )
    return [categories, mapping]
