"""Pair features on tiny hand-made listings whose answers are known."""

import json

import numpy as np
import pytest

from matching_cli.data import pairs as pairs_module
from matching_cli.data.features import (
    Listings,
    TextModel,
    fit_text_model,
    listing_features,
)
from matching_cli.data.pairs import FAMILIES, feature_names, pair_features
from matching_cli.data.text import digit_tokens, normalise, tokens

NAMES = [
    "Смартфон Apple iPhone 13 128 ГБ синий",  # 0
    "apple iphone 13 128gb blue",  # 1: same product, Latin and glued unit
    "Смартфон Apple iPhone 13 256 ГБ синий",  # 2: differs in capacity only
    "Ноутбук ASUS Х515ЕА",  # 3: code typed with Cyrillic look-alikes
    "asus x515ea laptop",  # 4: the same code in Latin
    "Чехол для телефона",  # 5: no digits, no description, nothing else
]
DESCRIPTIONS = [
    "<p>Отличный <b>смартфон</b>&nbsp;Apple</p>",
    "<div>Apple smartphone</div>",
    None,
    "Модель X515EA, 8 ГБ",
    "",
    None,
]
ATTRIBUTES = [
    json.dumps({"Бренд": ["Apple"], "Встроенная память": ["128 ГБ"], "Цвет": ["синий"]}),
    json.dumps({"Бренд": ["apple"], "Встроенная память": ["128 гб"]}),
    json.dumps({"Бренд": ["Apple"], "Встроенная память": ["256 ГБ"], "Цвет": ["синий"]}),
    None,
    "not json",
    None,
]
CATEGORIES = [
    json.dumps({"1": "EPG", "2": "Электроника", "3": "Смартфоны", "4": "iPhone"}),
    json.dumps({"1": "EPG", "2": "Электроника", "3": "Смартфоны", "4": "Apple"}),
    json.dumps({"1": "EPG", "2": "Электроника", "3": "Смартфоны", "4": "iPhone"}),
    None,
    None,
    None,
]
MAIN = [[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]], None, None, None]
EXTRA = [[[0.0, 2.0], [1.0, 1.0]], None, None, None, None, None]


@pytest.fixture(scope="module")
def listings() -> Listings:
    model = fit_text_model([normalise(name) for name in NAMES])
    return listing_features(model, NAMES, DESCRIPTIONS, ATTRIBUTES, CATEGORIES, MAIN, EXTRA)


def features(listings: Listings, pairs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    left, right = np.array(pairs).T
    values = pair_features(listings, left, right)
    return dict(zip(feature_names(), values.T, strict=True))


def test_normalise_strips_html_and_unifies_units_and_look_alikes():
    assert normalise("<b>Диск</b>&nbsp;1,5 ТБ ёмкость") == "диск 1.5tb емкость"
    assert tokens(normalise("АВС")) == tokens(normalise("ABC")) == ["abc"]
    assert tokens(normalise("Х515ЕА")) == ["x515ea"]
    assert "черный" in tokens(normalise("Чёрный"))  # Russian words keep their letters
    assert digit_tokens(tokens(normalise("x515ea-bq 16 Gb"))) == ["x515eabq", "x515ea", "16gb"]


def test_shared_code_and_capacity(listings):
    f = features(listings, [(0, 1), (0, 2)])
    # 0-1: iphone 13 128gb on both sides, spelled differently
    assert f["digit_shared"][0] == 2 and f["digit_jaccard"][0] == 1.0
    assert f["unit_conflicts"][0] == 0 and f["digit_none_shared"][0] == 0
    # 0-2: 128 vs 256 GB: one conflicting value on each side
    assert f["unit_conflicts"][1] == 2
    assert f["digit_shared"][1] == 1 and f["digit_jaccard"][1] == pytest.approx(1 / 3)
    assert f["digit_unmatched"][1] == 1


def test_cyrillic_and_latin_code_agree(listings):
    f = features(listings, [(3, 4)])
    assert f["digit_shared"][0] == 1 and f["digit_jaccard"][0] == 1.0
    assert f["name_overlap"][0] == pytest.approx(2 / 3)  # asus, x515ea of 3 tokens each
    assert f["digit_cross_match"][0] == 1  # the code also sits in listing 3's description


def test_html_description_compared_as_text(listings):
    f = features(listings, [(0, 1)])
    assert f["desc_missing"][0] == 0
    assert 0 < f["desc_word_cos"][0] < 1  # "apple" is shared; the tags are not text


def test_attributes_categories_pictures(listings):
    f = features(listings, [(0, 1), (0, 2)])
    assert f["attr_shared_keys"].tolist() == [2, 3]
    assert f["attr_equal_share"].tolist() == [1.0, pytest.approx(2 / 3)]
    assert f["attr_numeric_conflicts"].tolist() == [0, 1]
    assert f["cat2_same"].tolist() == [1, 1] and f["cat4_same"].tolist() == [0, 1]
    # pictures of 0: [1,0], [0,1], [1,1]/sqrt2; of 1: [0,1]; of 2: [1,0]
    assert f["pic_best_cos"].tolist() == [pytest.approx(1.0), pytest.approx(1.0)]
    mean = (0 + 1 + 2**-0.5) / 3
    assert f["pic_mean_cos"].tolist() == [pytest.approx(mean), pytest.approx(mean)]
    assert f["pic_missing"].tolist() == [0, 0]


def test_missing_fields_give_neutral_values_and_flags(listings):
    f = features(listings, [(5, 0), (3, 4)])
    assert f["desc_missing"][0] == 1 and f["desc_char_cos"][0] == 0
    assert f["attr_missing"].tolist() == [1, 1] and f["attr_shared_keys"].tolist() == [0, 0]
    assert f["cat_missing"].tolist() == [1, 1] and f["cat2_same"].tolist() == [0, 0]
    assert f["pic_missing"].tolist() == [1, 1] and f["pic_best_cos"].tolist() == [0, 0]
    assert f["digits_missing"][0] == 1 and f["digit_none_shared"][0] == 0


def test_pandas_missing_values_are_missing():
    nan = float("nan")
    model = fit_text_model(["a 1", "b 2"])
    listings = listing_features(
        model, ["a 1", nan], [nan, "b"], [nan, None], [nan, "{}"], [nan, None]
    )
    values = pair_features(listings, np.array([0]), np.array([1]))
    names = feature_names()
    for flag in ("desc_missing", "digits_missing", "attr_missing", "cat_missing", "pic_missing"):
        assert values[0, names.index(flag)] == 1


def test_whole_columns_missing():
    names = ["a 1", "b 2", None]
    model = fit_text_model([normalise(n) for n in names])
    values = pair_features(listing_features(model, names), np.array([0, 2]), np.array([1, 1]))
    assert values.shape == (2, len(feature_names())) and np.isfinite(values).all()
    assert values[:, feature_names().index("pic_missing")].tolist() == [1, 1]


def test_families_select_columns(listings):
    values = pair_features(listings, np.array([0]), np.array([1]), families=("digits",))
    assert values.shape == (1, len(FAMILIES["digits"]))
    with pytest.raises(ValueError, match="unknown feature families"):
        feature_names(("colour",))


def test_saved_and_reloaded_give_the_same_features(listings, tmp_path):
    model = fit_text_model([normalise(name) for name in NAMES])
    arrays, meta = model.to_arrays()
    np.savez(tmp_path / "idf.npz", **arrays)
    (tmp_path / "vocab.json").write_text(json.dumps(meta))
    loaded = TextModel.from_arrays(
        dict(np.load(tmp_path / "idf.npz", allow_pickle=False)),
        json.loads((tmp_path / "vocab.json").read_text()),
    )
    served = listing_features(loaded, NAMES, DESCRIPTIONS, ATTRIBUTES, CATEGORIES, MAIN, EXTRA)
    served.save(tmp_path / "listings")
    again = Listings.load(tmp_path / "listings")
    left, right = np.array([0, 0, 3, 5]), np.array([1, 2, 4, 0])
    expected = pair_features(listings, left, right)
    np.testing.assert_array_equal(pair_features(again, left, right), expected)
    np.testing.assert_array_equal(pair_features(again, left, right, batch_pairs=1), expected)


def test_pictures_in_slices_equal_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    n = 60
    main = [[rng.normal(size=8)] for _ in range(n)]
    extra = [list(rng.normal(size=(rng.integers(0, 5), 8))) if i % 7 else None for i in range(n)]
    listings = listing_features(fit_text_model(["x"] * n), ["x"] * n, None, None, None, main, extra)
    left, right = rng.integers(0, n, 300), rng.integers(0, n, 300)
    monkeypatch.setattr(pairs_module, "PICTURE_PAIRS", 7)  # many slices, some pairs straddling
    values = pair_features(listings, left, right, families=("pictures",))
    off = listings.picture_offsets
    for k in range(len(left)):
        a = listings.pictures[off[left[k]] : off[left[k] + 1]]
        b = listings.pictures[off[right[k]] : off[right[k] + 1]]
        cosines = a @ b.T
        assert values[k, 0] == pytest.approx(cosines.max(), abs=1e-6)
        assert values[k, 1] == pytest.approx(cosines.mean(), abs=1e-6)


@pytest.mark.parametrize("cpus", [1, 2])
def test_listings_made_in_chunks_and_processes_equal_one_pass(monkeypatch, cpus):
    """prepare turns the listings into features in chunks, in a process per core."""
    from matching_cli.data import feature_store
    from matching_cli.data.text import normalise_all
    from matching_cli.progress import NullReporter

    monkeypatch.setattr(feature_store.os, "cpu_count", lambda: cpus)
    model = fit_text_model(normalise_all(NAMES))
    whole = listing_features(model, NAMES, DESCRIPTIONS, ATTRIBUTES, CATEGORIES)
    fields = [NAMES, DESCRIPTIONS, ATTRIBUTES, CATEGORIES, normalise_all(NAMES)]
    task = NullReporter().task("", total=None)
    chunked = feature_store._listings_in_chunks(model, fields, task, chunk=4)  # 4 + 2 rows
    pairs = np.array([0, 0, 1, 3, 5]), np.array([1, 2, 2, 4, 0])
    np.testing.assert_array_equal(pair_features(chunked, *pairs), pair_features(whole, *pairs))
    assert len(chunked) == len(NAMES) and chunked.picture_offsets.shape == (len(NAMES) + 1,)
