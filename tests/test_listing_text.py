"""The demo data's words and text on hand-made families with known answers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from matching_cli.data import listing_text, variants, vocab
from matching_cli.data.listing_text import NO_DESCRIPTION, SPECS


def _words(axis: int) -> listing_text.Words:
    """One family of Samsung smartphones "A-1234": three products, 128 GB and black but for `axis`."""
    phone = vocab.TYPE_FORMS.to_pylist()[:: vocab.FORMS].index("Смартфон")
    samsung = vocab.BRAND_FORMS.to_pylist()[:: vocab.FORMS].index("Samsung")
    sizes = vocab.SIZE_FORMS.to_pylist()[:: vocab.FORMS]
    size = [sizes.index(s) for s in ("128 ГБ", "256 ГБ", "512 ГБ")]
    one = np.zeros(1, np.int64)
    return listing_text.Words(
        family_type=one + phone,
        family_level4=one,
        family_brand=one + samsung,
        family_series=one,
        family_prefix=one + vocab.CODE_PREFIXES.index("A-"),
        family_axis=one + axis,
        product_number=np.array([1234, 1244, 1254]) if axis == 0 else np.full(3, 1234),
        product_size=np.array(size) if axis == 1 else np.full(3, size[0]),
        product_colour=np.array([0, 1, 2]) if axis == 2 else np.zeros(3, np.int64),
    )


def _layout(**where: str) -> np.uint16:
    """A listing's layout: for each spec, "name", "description" or "attributes"; "" for none."""
    bits = 0 if where.pop("description", True) else NO_DESCRIPTION
    for spec, place in where.items():
        for k, name in enumerate(("name", "description", "attributes")):
            bits |= (name in place) << (SPECS[spec] + k)
    return np.uint16(bits)


def _texts(words, products, layouts, seed=0):
    rng = np.random.default_rng(seed)
    families, layout = np.zeros(len(products), np.int64), np.array(layouts, np.uint16)
    name, description = listing_text.text_columns(rng, words, families, products, layout)
    _, mapping = listing_text.attribute_columns(rng, words, families, products, layout)
    return name.to_pylist(), description.to_pylist(), [json.loads(m) for m in mapping.to_pylist()]


def test_siblings_differ_in_exactly_the_family_axis_spec():
    rng = np.random.default_rng(0)
    products = rng.integers(2, 6, 3000)
    words = listing_text.draw_words(rng, rng.integers(0, vocab.N_LEVEL2, 3000), products)
    family = np.repeat(np.arange(3000), products)
    specs = np.stack([words.product_number, words.product_size, words.product_colour], axis=1)
    for f in range(0, 3000, 7):
        mine = specs[family == f]
        varies = [len(np.unique(mine[:, k])) for k in range(3)]
        assert varies == [len(mine) if k == words.family_axis[f] else 1 for k in range(3)]
    assert set(np.unique(words.family_axis)) == {0, 1, 2}
    assert (words.product_number >= 100).all() and (words.product_number <= 9999).all()


def test_every_listing_shows_every_spec_somewhere():
    layout = listing_text.draw_layout(np.random.default_rng(0), 20_000)
    has_description = (layout & NO_DESCRIPTION) == 0
    assert 0.1 < 1 - has_description.mean() < 0.14
    for spec in SPECS:
        name, description, attributes = (listing_text.shows(layout, spec, k) for k in range(3))
        assert (name | (description & has_description) | attributes).all()
        assert not (description & ~has_description).any()
        assert (~name).mean() > 0.15  # specs do move out of the name
        assert 0.2 < (description & ~name).mean() / (~name).mean() < 0.8


def test_each_spec_goes_where_the_layout_puts_it():
    words = _words(axis=1)
    layouts = [
        _layout(code="name", size="attributes", colour="description"),
        _layout(code="attributes", size="name description", colour="name", description=False),
    ]
    names, descriptions, mappings = _texts(words, np.array([0, 1]), layouts)
    code_spellings = [p + "1234" for p in variants.code_prefix_forms("A-")]
    assert any(c in names[0] for c in code_spellings) and "Модель" not in mappings[0]
    assert "128" not in names[0] + descriptions[0] and mappings[0]["Объем памяти"] == ["128 ГБ"]
    assert "Цвет: " in descriptions[0] and "Цвет товара" not in mappings[0]
    assert mappings[1]["Модель"] == ["A-1234"] and not any(c in names[1] for c in code_spellings)
    assert "256" in names[1] and "Объем памяти" not in mappings[1]
    assert descriptions[1] is None


def test_listings_of_one_product_spell_its_specs_differently():
    words = _words(axis=0)
    everywhere = _layout(code="name", size="name", colour="name")
    names, _, _ = _texts(words, np.zeros(400, np.int64), [everywhere] * 400)
    assert len(set(names)) > 100
    joined = " ".join(names)
    for spelling in ("A-1234", "A1234", "А-1234", "a-1234", "A 1234", "Самсунг", "128Gb", "black"):
        assert spelling in joined, spelling
    assert "1244" not in joined  # another product's code


def test_the_one_differing_spec_is_in_both_texts():
    for axis, shown in ((0, ["1234", "1244"]), (1, ["128", "256"]), (2, ["черн", "бел"])):
        layouts = [_layout(code="name", size="name", colour="name")] * 2
        names, _, _ = _texts(_words(axis), np.array([0, 1]), layouts, seed=axis)
        lower = [n.lower().replace("black", "черн").replace("white", "бел") for n in names]
        assert shown[0] in lower[0] and shown[1] not in lower[0], names
        assert shown[1] in lower[1] and shown[0] not in lower[1], names


def test_size_spellings_keep_the_number():
    assert variants.size_forms("128 ГБ")[:2] == ["128 ГБ", "128 GB"]
    assert all("256" in s for s in variants.size_forms("8/256 ГБ"))
    assert variants.cyrillic("Samsung") == "Самсунг" and variants.cyrillic("JBL") == "JBL"
    assert "КМ" in variants.code_prefix_forms("KM-")[2]  # Cyrillic letters that look the same
    assert isinstance(vocab.SIZE_FORMS, pa.Array) and len(vocab.SIZE_FORMS) % vocab.FORMS == 0
