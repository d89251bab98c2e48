"""Pair features on tiny hand-made listings whose answers are known."""

import json
import logging
import re
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from matching_cli.data import pairs as pairs_module
from matching_cli.data.feature_store import PairFeaturizer
from matching_cli.data.features import (
    TEXT_FIELDS,
    Listings,
    TextModel,
    column_bounds,
    fit_text_model,
    listing_features,
)
from matching_cli.data.pairs import FAMILIES, feature_names, pair_features
from matching_cli.data.text import normalise, tokens
from matching_cli.data.words import Words, as_strings
from matching_cli.workers import ahead

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
    assert [t for t in tokens(normalise("x515ea-bq 16 Gb")) if re.search(r"\d", t)] == [
        "x515eabq",
        "x515ea",
        "16gb",
    ]


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
    # pictures are kept in half precision: cosines to about 1e-3
    assert f["pic_best_cos"].tolist() == [pytest.approx(1.0, abs=1e-3)] * 2
    mean = (0 + 1 + 2**-0.5) / 3
    assert f["pic_mean_cos"].tolist() == [pytest.approx(mean, abs=1e-3)] * 2
    assert f["pic_missing"].tolist() == [0, 0]


def test_missing_fields_give_neutral_values_and_flags(listings):
    f = features(listings, [(5, 0), (3, 4)])
    assert f["desc_missing"][0] == 1 and f["desc_word_cos"][0] == 0
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
    assert not again.name_char.data.flags.writeable  # mapped read-only, not read into memory
    left, right = np.array([0, 0, 3, 5]), np.array([1, 2, 4, 0])
    expected = pair_features(listings, left, right)
    np.testing.assert_array_equal(pair_features(again, left, right), expected)
    np.testing.assert_array_equal(pair_features(again, left, right, batch_pairs=1), expected)


def test_text_model_saved_without_its_ngram_sizes_reads_as_3_to_5():
    """Text models saved before the sizes were recorded used 3-5 characters: read back, they must
    compute those n-grams (trigrams would miss most of their keys), and a model saved now keeps
    its own sizes."""
    old = fit_text_model(NAMES, ngrams=(3, 5))
    arrays, meta = old.to_arrays()
    assert meta.pop("char_ngrams") == [3, 5]
    loaded = TextModel.from_arrays(arrays, meta)
    assert loaded.ngrams == (3, 5)
    words = Words.of(as_strings(NAMES, len(NAMES)))
    np.testing.assert_array_equal(
        loaded.char_tfidf(words).toarray(), old.char_tfidf(words).toarray()
    )
    new = fit_text_model(NAMES)
    assert TextModel.from_arrays(*new.to_arrays()).ngrams == new.ngrams == (3, 3)


def test_fields_side_by_side_equal_comparing_each_field_alone(listings):
    """The text fields are stored and compared side by side; each similarity must equal the dot
    products of that field's rows alone, within a field and across name and description."""
    left, right = np.array([0, 0, 1, 3, 4, 5, 2]), np.array([1, 2, 2, 4, 5, 0, 2])
    field = {name: listings.text_field(name) for name in TEXT_FIELDS}
    bounds, k = column_bounds(TEXT_FIELDS), list(TEXT_FIELDS).index("unit_counts")
    units_given = listings.text_across[:, bounds[k] : bounds[k + 1]]  # 1 per unit a listing gives

    def dot(x, y):
        return np.asarray(x[left].multiply(y[right]).sum(axis=1)).ravel()

    got = features(listings, list(zip(left, right, strict=True)))
    np.testing.assert_allclose(
        got["name_word_cos"], dot(field["name_word"], field["name_word"]), atol=1e-6
    )
    np.testing.assert_allclose(
        got["desc_word_cos"], dot(field["desc_word"], field["desc_word"]), atol=1e-6
    )
    cross = np.maximum(
        dot(field["name_word"], field["desc_word"]), dot(field["desc_word"], field["name_word"])
    )
    np.testing.assert_allclose(got["cross_word_cos"], cross, atol=1e-6)
    assert (got["cross_word_cos"] > 0).any()  # the fixture's descriptions repeat names' words
    shared = dot(field["name_digits"], field["name_digits"])
    np.testing.assert_array_equal(got["digit_shared"], shared)
    units = dot(field["unit_counts"], units_given) + dot(units_given, field["unit_counts"])
    conflicts = np.maximum(units - 2 * dot(field["unit_values"], field["unit_values"]), 0)
    np.testing.assert_array_equal(got["unit_conflicts"], conflicts)
    assert (got["unit_conflicts"] > 0).any()
    for k, name in enumerate(TEXT_FIELDS):  # the stored counts are each field's own entries
        np.testing.assert_array_equal(listings.text_counts[:, k], np.diff(field[name].indptr))
    tokens = field["name_tokens"]
    shared, count = dot(tokens, tokens), np.diff(tokens.indptr)
    union = count[left] + count[right] - shared
    np.testing.assert_allclose(got["name_jaccard"], shared / union, atol=1e-6)
    assert ((got["name_jaccard"] > 0) & (got["name_jaccard"] < 1)).any()


def test_pairs_out_of_order_get_their_own_rows(listings):
    """Pairs are computed in the order of their left rows, in batches: each row of the result must
    still be its own pair's, as when the pair is computed alone."""
    rng = np.random.default_rng(3)
    left, right = rng.integers(0, len(listings), 40), rng.integers(0, len(listings), 40)
    assert (np.diff(left) < 0).any()
    alone = np.vstack(
        [pair_features(listings, left[k : k + 1], right[k : k + 1]) for k in range(40)]
    )
    np.testing.assert_array_equal(pair_features(listings, left, right, batch_pairs=7), alone)


def test_pictures_in_slices_equal_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    n = 60
    main = [[rng.normal(size=8)] for _ in range(n)]
    extra = [list(rng.normal(size=(rng.integers(0, 5), 8))) if i % 7 else None for i in range(n)]
    listings = listing_features(fit_text_model(["x"] * n), ["x"] * n, None, None, None, main, extra)
    left, right = rng.integers(0, n, 300), rng.integers(0, n, 300)
    monkeypatch.setattr(pairs_module, "PICTURE_VECTORS", 7)  # groups in many slices
    values = pair_features(listings, left, right, families=("pictures",))
    start, count = listings.picture_spans.T
    for k in range(len(left)):
        a = listings.pictures[start[left[k]] : start[left[k]] + count[left[k]]]
        b = listings.pictures[start[right[k]] : start[right[k]] + count[right[k]]]
        cosines = a.astype(np.float32) @ b.astype(np.float32).T
        assert values[k, 0] == pytest.approx(cosines.max(), abs=1e-6)
        assert values[k, 1] == pytest.approx(cosines.mean(), abs=1e-6)


TEXTS = [
    *NAMES,
    *[d for d in DESCRIPTIONS if d],
    "Диск 1,5 ТБ, 8 гб; 2.5 Gb x515ea-bq",
    "<ul><li>Бренд:&nbsp;Realme</li><li>256 ГБ</li></ul>",
    '  Чёрный   ВЕС 3 кг\tразмер 42 "',
    "8 гбайт",
    "4 гб/8 гб и 8гб, 2.5 Gb; 8\u00a0ГБ, 16\tгб",
    "конец 8",
    "гб начало",
    "Кот\u00a0и\u2009пёс &amp; ﬁlter ＡＢＣ１２ сом",
    "",
]


def test_words_per_distinct_word_equal_normalising_each_text():
    """prepare normalises each distinct word once; every row must get the tokens that
    normalising its whole text gives."""
    words = Words.of(as_strings(TEXTS, len(TEXTS)))
    counts = words.token_counts().toarray()
    for row, text in enumerate(TEXTS):
        expected = sorted(tokens(normalise(text)))
        got = sorted(
            t for t, c in zip(words.token_strings, counts[row], strict=True) for _ in range(int(c))
        )
        assert got == expected, text


def test_words_cut_texts_only_where_longer():
    """`Words.of(column, max_chars)` cuts a text longer than max_chars characters (not bytes:
    Cyrillic takes two) and leaves the rest; a column of no rows has no words."""
    import pyarrow as pa

    def tokens_of(words: Words) -> list[list[str]]:
        counts = words.token_counts()
        return [sorted(words.token_strings[j] for j in row.indices) for row in counts]

    texts = ["щ" * 7 + " a", "жжж b", None]
    cut, whole = (tokens_of(Words.of(as_strings(texts, 3), max_chars=n)) for n in (6, 9))
    assert cut == [["щ" * 6], ["b", "жжж"], []]
    assert whole == [["a", "щ" * 7], ["b", "жжж"], []]
    assert Words.of(pa.array([], pa.string()), max_chars=6).rows.shape[0] == 0


def test_words_saved_read_back_equal(tmp_path):
    """prepare's worker hands the descriptions' words over through files."""
    words = Words.of(as_strings(TEXTS, len(TEXTS)))
    words.save(tmp_path / "words")
    back = Words.load(tmp_path / "words")
    assert (back.normalised, back.token_strings) == (words.normalised, words.token_strings)
    for name in ("rows", "word_tokens"):
        a, b = getattr(words, name), getattr(back, name)
        assert a.shape == b.shape and (a != b).nnz == 0, name


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("binary", [True, False])
def test_remap_columns_moves_sums_and_drops_as_a_dense_reference(drop, binary):
    """Columns moved to their new places (some meeting in one, some dropped, empty rows among
    them) give what the dense matrix gives, and the matrix remapped is left as it was."""
    from matching_cli.data.words import remap_columns

    rng = np.random.default_rng(5)
    dense = sp.random(40, 30, density=0.2, random_state=6, dtype=np.float32).toarray()
    dense[7] = 0.0
    matrix = sp.csr_matrix(dense)
    before = matrix.copy()
    column_of = rng.integers(0, 12, 30)
    if drop:
        column_of[rng.random(30) < 0.3] = -1
    want = np.zeros((40, 12), np.float32)
    for j, target in enumerate(column_of):
        if target >= 0:
            want[:, target] += matrix[:, j].toarray().ravel()
    if binary:
        want = (want != 0).astype(np.float32)
    got = remap_columns(matrix, column_of, 12, binary)
    assert got.has_canonical_format
    np.testing.assert_allclose(got.toarray(), want, rtol=1e-6)
    assert (matrix != before).nnz == 0 and np.array_equal(matrix.indptr, before.indptr)


def term_key(term: str) -> int:
    """The key that `ngrams.ngram_keys` should give the n-gram `term` (a window of a padded part,
    e.g. " ab"), computed here one code point at a time: what the vectorised hash must equal."""
    from matching_cli.data.ngrams import _BASE

    key = np.uint64(0)
    with np.errstate(over="ignore"):
        for code in np.frombuffer(term.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64):
            key = key * _BASE + code
    return int(key ^ np.uint64(len(term)))


@pytest.mark.parametrize("ngrams", [(3, 3), (3, 5)])
def test_char_tfidf_equals_scikit_learns(ngrams):
    """The TF-IDF computed per distinct word, n-grams as keys, is scikit-learn's sublinear
    char_wb TF-IDF: trigrams (the default), and 3-5 (what text models saved before used)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    model = fit_text_model(NAMES, ngrams=ngrams)
    assert model.ngrams == ngrams
    normalised = [normalise(name) for name in NAMES]
    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=ngrams, sublinear_tf=True)
    expected = reference.fit_transform(normalised).toarray()
    terms = sorted(reference.vocabulary_, key=lambda t: int(term_key(t)))
    assert model.char_keys.tolist() == [int(term_key(t)) for t in terms]
    np.testing.assert_allclose(
        model.char_idf, reference.idf_[[reference.vocabulary_[t] for t in terms]]
    )
    got = model.char_tfidf(Words.of(as_strings(NAMES, len(NAMES)))).toarray()
    np.testing.assert_allclose(
        got, expected[:, [reference.vocabulary_[t] for t in terms]], atol=1e-6
    )


@pytest.mark.parametrize("sizes", [(3, 3), (3, 4), (3, 5)])
def test_ngram_keys_are_char_wb_ngrams(sizes):
    from collections import Counter

    from sklearn.feature_extraction.text import TfidfVectorizer

    from matching_cli.data.ngrams import ngram_keys

    analyse = TfidfVectorizer(analyzer="char_wb", ngram_range=sizes).build_analyzer()
    clean = ["a", "ab", "abc", "apple iphone 128gb", "", "x515ea-bq", "", "ab c"]  # single spaces
    uneven = [*clean, "чёрный  кот", " x", "y\tz\n"]  # split one by one
    with_controls = [*clean, "ab\x01cd", "\x00efg"]  # the code points 0 and 1 are dropped
    for texts in (clean, uneven, with_controls, [], [""]):
        owner, keys = ngram_keys(texts, sizes)
        assert len(owner) == len(keys)
        for i, text in enumerate(texts):
            text = text.replace("\x00", "").replace("\x01", "")
            assert Counter(keys[owner == i].tolist()) == Counter(
                int(term_key(gram)) for gram in analyse(text)
            ), text


def test_attributes_split_into_entries_equal_parsing_each_text():
    """Attribute texts are split into entries parsed once each; texts of other shapes are parsed
    whole: every row must get what parsing its own text gives."""
    from matching_cli.data.fields import _entries, _parse_json, attribute_rows
    from matching_cli.data.words import HASH_FEATURES

    texts = [
        *ATTRIBUTES,
        json.dumps({"Вес": "3 кг", "Цвет": ["синий", "белый"]}),  # a scalar value
        json.dumps({"Модель": ['X], "Y'], "Бренд": ["Apple"]}),  # the separator inside a value
        '{ "Бренд" : [ "Apple" ] , "Объем": ["3 л"] }',
        # What the pattern for usual entries must leave to the JSON parser: escapes, a raw
        # control character (not JSON), white space JSON does not know, numbers, an empty list.
        '{"Модель": ["X\\"Y"], "Бренд": ["\\u0410pple"]}',
        '{"Цвет": ["чёрный\tбелый"], "Бренд": ["Apple"]}',
        '{"Цвет":\u00a0["синий"], "Бренд": ["Apple"]}',
        '{"Вес": [3, "4"], "Цвет": [], "Объем":["1 л","2 л"]}',
        "{}",
        "[1, 2]",
        "",
    ]
    matrices = attribute_rows(as_strings(texts, len(texts)))
    entries = [_entries(_parse_json(text)) for text in texts]
    for kind, matrix in enumerate(matrices):
        assert matrix.shape == (len(texts), HASH_FEATURES)
        assert (matrix.data == 1.0).all(), kind  # binary
        for row, found in enumerate(entries):
            assert set(matrix[row].indices) == {e[kind] for e in found if e[kind] >= 0}, (kind, row)
        # Checked from the data, not a flag: unsorted rows made the pairs' dots 7x as slow.
        fresh = sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=matrix.shape)
        assert fresh.has_sorted_indices, kind
    assert (np.diff(matrices[0].indptr) > 0).tolist() == [bool(row) for row in entries]


def test_models_of_retired_features_are_told_to_train_again():
    """A model trained on a column this version no longer computes, or with an older text model,
    gets a one-line error that says what to do."""
    from matching_cli.data.feature_store import columns_for
    from matching_cli.errors import DataError

    with pytest.raises(DataError, match=r"no longer computes \['desc_char_cos'\]; train it again"):
        columns_for(feature_names(), ("name_char_cos", "desc_char_cos"))
    with pytest.raises(DataError, match="run `matching prepare` again"):
        columns_for(feature_names(("text",)), ("pic_best_cos",))
    with pytest.raises(DataError, match="older version of matching; train the model again"):
        TextModel.from_arrays(
            {"char_idf": np.ones(1), "word_idf": np.ones(1)}, {"word_terms": ["a"]}
        )


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_ahead_keeps_chunk_order_and_equals_computing_here(listings, workers):
    """predict computes the next chunks' features in forked workers: every chunk must get its own
    rows, in order, and a chunk that needs none (None) gets none."""
    featurizer = PairFeaturizer(listings, tuple(feature_names()))
    rng = np.random.default_rng(1)
    chunks = [(rng.integers(0, 6, n), rng.integers(0, 6, n)) for n in (5, 1, 7, 3, 4)]
    chunks.insert(2, None)
    out = list(ahead(featurizer, iter(chunks), lambda c: c, workers))
    assert [chunk is given for (chunk, _), given in zip(out, chunks, strict=True)] == [True] * 6
    for chunk, rows in out:
        if chunk is None:
            assert rows is None
        else:
            np.testing.assert_array_equal(rows, pair_features(listings, *chunk))


def test_ahead_runs_start_in_each_worker_first():
    """predict's workers set torch to one thread (`start`) before their first chunk."""
    import os

    def start():
        os.environ["AHEAD_TEST_STARTED"] = "yes"

    def started(left, right):
        return np.array([os.environ.get("AHEAD_TEST_STARTED") == "yes"])

    chunks = [(np.array([i]), np.array([i])) for i in range(5)]
    out = list(ahead(started, iter(chunks), lambda c: c, 2, start=start))
    assert [bool(flag[0]) for _, flag in out] == [True] * 5
    assert "AHEAD_TEST_STARTED" not in os.environ  # it ran there, not here


@pytest.mark.parametrize("forward_here", [False, True])
def test_scored_chunks_equal_scoring_here(listings, forward_here):
    """predict and match score chunks in forked processes on one thread each (on a CPU), or
    compute their features there beside the forward pass here (on a GPU): every chunk must get
    the probabilities that scoring it here gives, in order, and a row of -1 is scored as the
    missing row."""
    import torch

    from matching_cli.model.network import ModelConfig, PairClassifier
    from matching_cli.model.scoring import predict_proba, scored_chunks
    from matching_cli.settings import ModelSettings

    torch.manual_seed(0)
    names = tuple(feature_names())
    model = PairClassifier(ModelConfig.build(ModelSettings(head="mlp"), [4], names))
    missing = len(listings)
    items = torch.randn(missing + 1, 4)
    items[missing] = 0.0
    featurizer = PairFeaturizer(listings, names)
    rng = np.random.default_rng(2)
    chunks = [(rng.integers(-1, missing, n), rng.integers(-1, missing, n)) for n in (5, 3, 7, 2)]
    chunks.insert(1, None)
    threads = torch.get_num_threads()
    scored = scored_chunks(
        model, items, iter(chunks), lambda c: c, featurizer, missing, forward_here
    )
    out = list(scored)
    assert torch.get_num_threads() == threads
    assert [chunk is given for (chunk, _), given in zip(out, chunks, strict=True)] == [True] * 5
    for chunk, probabilities in out:
        if chunk is None:
            assert probabilities is None
            continue
        features = torch.from_numpy(featurizer(*chunk))
        left, right = (torch.from_numpy(np.where(side < 0, missing, side)) for side in chunk)
        expected = predict_proba(model, items, left, right, features).numpy()
        np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)


def test_ahead_gives_the_next_chunk_to_whichever_worker_is_free():
    """A pairs file's row groups of 1,048,576 rows, read in chunks of a million, come as large and
    small chunks by turns. Each chunk must go to a free worker, not wait for the first chunk's:
    otherwise every large chunk went to one worker while the other sat idle."""
    import os
    import time

    def work(left, right):
        if left[0] == 1:  # a large chunk
            time.sleep(0.5)
        return np.array([os.getpid()])

    chunks = [(np.array([k % 2]), np.array([0])) for k in range(1, 9)]  # large, small, ...
    out = list(ahead(work, iter(chunks), lambda c: c, 2))
    assert [chunk for chunk, _ in out] == chunks
    large = {int(pid[0]) for chunk, pid in out if chunk[0][0] == 1}
    assert len(large) == 2, "the large chunks all went to one worker"


def test_ahead_raises_the_workers_error(listings):
    featurizer = PairFeaturizer(listings, tuple(feature_names()))
    bad = (np.array([0]), np.array([99]))  # no listing 99: the worker's IndexError comes back
    with pytest.raises(IndexError):
        list(ahead(featurizer, iter([bad, bad]), lambda c: c, 1))


@pytest.mark.parametrize("main_in_matrix", [True, False])
def test_prepare_reads_pictures_as_the_served_model_does(tmp_path, monkeypatch, main_in_matrix):
    """prepare takes the main pictures from the item matrix (or reads them as it does, where
    `data.blocks` leaves them out) and the extras batch by batch, and puts both in place a part
    at a time; the served model builds them one listing at a time (`picture_arrays`): both must
    give every listing the same vectors, in the same order (main first, at most
    MAX_EXTRA_PICTURES extras)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matching_cli.data import feature_store
    from matching_cli.data.features import MAX_EXTRA_PICTURES, picture_arrays
    from matching_cli.data.tables import Items, ItemTables, load_items

    rng = np.random.default_rng(3)
    n = 9
    # As wide as Ozon's: the item matrix knows that column's width.
    vectors = lambda k: [list(v) for v in rng.normal(size=(k, 128))]  # noqa: E731
    main = [vectors(1) if i % 4 else None for i in range(n)]
    main[5] = vectors(2)  # two main vectors: their mean direction
    extra = [vectors(i % 3) if i % 5 else None for i in range(n)]
    extra[2] = vectors(MAX_EXTRA_PICTURES + 3)  # capped
    ids = np.arange(100, 100 + n)
    # Rows out of order, one for a listing not in `ids`, and listing 104 twice (the same main
    # picture, or the item matrix refuses it): its later row's extras win.
    order = [3, 0, 8, 1, 5, 4, 2, 7, 6]
    table = pa.table(
        {
            "variantid": [int(ids[i]) for i in order] + [999, 104],
            "main_pic_embeddings_resnet_v1": [main[i] for i in order] + [vectors(1), main[4]],
            "pic_embeddings_resnet_v1": [extra[i] for i in order] + [None, extra[7]],
        }
    )
    pq.write_table(table, tmp_path / "images_embed.parquet", row_group_size=4)
    pq.write_table(pa.table({"variantid": [100]}), tmp_path / "text_and_bert.parquet")
    monkeypatch.setattr(feature_store, "PICTURE_BATCH_ROWS", 2)
    monkeypatch.setattr(feature_store, "JOIN_ROWS", 4)

    def allocate(shape):  # as prepare does: the matrix is a file
        return np.lib.format.open_memmap(tmp_path / "items.npy", "w+", np.float32, shape)

    items = load_items(ItemTables.of(tmp_path, ["main_pic_embeddings_resnet_v1"]), None, allocate)
    items.matrix.flush()
    if not main_in_matrix:
        items = Items(items.ids, items.matrix[:, :0], items.missing[:, :0], [])
    block = feature_store._main_picture_block(items, tmp_path / "features")
    assert (block is not None) == main_in_matrix
    kinds = [
        feature_store._main_pictures(tmp_path, items.ids, block),
        feature_store._extra_pictures(*feature_store._picture_blocks(tmp_path, items.ids)),
    ]
    feature_store._save_pictures(tmp_path, kinds)
    got, got_spans = np.load(tmp_path / "pictures.npy"), np.load(tmp_path / "picture_spans.npy")
    extra[4] = extra[7]
    main.append(table["main_pic_embeddings_resnet_v1"][n].as_py())  # listing 999
    extra.append(None)
    want, want_spans = picture_arrays(main, extra, n + 1)
    assert items.ids.tolist() == [*ids, 999]
    np.testing.assert_array_equal(got_spans[:, 1], want_spans[:, 1])
    assert want_spans[2, 1] == 1 + MAX_EXTRA_PICTURES
    assert want_spans[5, 1] == 1  # two main vectors, one main picture
    for i in range(n + 1):
        (a, k), (b, _) = got_spans[i], want_spans[i]
        np.testing.assert_array_equal(got[a : a + k], want[b : b + k])


def test_the_served_model_rounds_main_pictures_as_the_item_matrix_does():
    """prepare stores the item matrix's main pictures (float32, divided by their norm) as float16;
    the served model normalises the raw vectors itself. Multiplied by the norm's reciprocal, 0.4%
    of these vectors came out one float16 step apart, and picture cosines up to 5e-5."""
    from matching_cli.data.features import PICTURE_DTYPE, picture_arrays
    from matching_cli.data.tables import normalise

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(20_000, 128)) * rng.lognormal(0, 1, (20_000, 1))
    served, _ = picture_arrays([[list(v)] for v in raw], None, len(raw))
    matrix = raw.astype(np.float32)
    normalise(matrix)
    np.testing.assert_array_equal(served, matrix.astype(PICTURE_DTYPE))


def test_code_words_read_as_normalise_and_tokens_read_them():
    """Code-like words skip `normalise` and `tokens` (`words._code_word`): every such word, with
    Latin, Russian look-alike and other Russian letters, ё, a hyphen or none, must come out as
    they would make it."""
    import itertools
    import re

    from matching_cli.data.words import _CODE, _code_word

    letters = ["", "a", "ab", "xz", "м", "мт", "ка", "жк", "бк", "ёж", "ае", "aж", "kм", "мab", "ё"]
    digits = ["0", "7", "264", "8843"]
    marks = ["", ".", ",", ";", ":", "!", "?"]
    parts = itertools.product(letters, ["", "-"], digits, marks)
    words = [f"{a}{sep}{d}{mark}" for a, sep, d, mark in parts]
    words += ["х515", "н-8191", "ра-5915.", "се967,", "128", "1,5", "2.5", "8гб", "ab-12-3", "x."]
    pattern = re.compile(_CODE)
    checked = [w for w in words if pattern.match(w)]
    assert len(checked) > 700
    for word in checked:
        text = normalise(word)
        assert _code_word(word) == (text, tokens(text)), word


def test_attribute_texts_of_one_word_read_as_normalise_reads_them():
    """Attribute names and values that are one plain or code-like word skip `normalise`'s regexes
    (`words.normalise_word`); every text, of that shape or near it, must read the same."""
    import itertools

    from matching_cli.data.words import normalise_word

    heads = ["", "KH", "Кт", "ХЕ", "Bosch", "Чёрный", "черный", "АВС", "K\u212a", "Ａ"]
    tails = ["", "5319", "-1019", "-1019.", "5319!", " 128 ГБ", "\n", "gb", "&amp;", "<b>", "1,5"]
    texts = [a + t for a, t in itertools.product(heads, tails)]
    for text in texts:
        assert normalise_word(text) == normalise(text), text


def test_plain_words_are_their_own_text_and_token():
    """Words matching `words._PLAIN` skip `normalise` and `tokens` altogether: each must be its own
    normalised text and its one token. Near misses (digits, units, look-alikes alone, ё,
    punctuation) must not match: they go through the regexes or `_code_word`."""
    import itertools
    import re

    from matching_cli.data.words import _PLAIN

    letters = ["", "a", "xz", "ab", "мы", "бж", "ёж", "мт", "ае", "aж", "kм"]
    tails = ["", "0", "128", "8843", "gb", "гб", "-5", ".", "5.", "5gb", "5x", "ё"]
    words = [a + t for a, t in itertools.product(letters, tails)]
    pattern = re.compile(_PLAIN)
    plain = [w for w in words if pattern.match(w)]
    assert {"a", "xz", "мы", "бж", "ab8843", "128"} <= set(plain)
    assert not {"5gb", "5x", "мт", "мт128", "ab-5", "ab.", "a5.", "ёж", "", "aж0"} & set(plain)
    for word in plain:
        assert (normalise(word), tokens(word)) == (word, [word]), word


def test_a_worker_that_dies_is_told_not_waited_for():
    import os

    from matching_cli.workers import Forked

    with pytest.raises(RuntimeError, match="exit code 3"):
        Forked(os._exit, 3).result()


class _Unpicklable(Exception):
    def __init__(self):
        super().__init__("holds a lock")
        self.lock = __import__("threading").Lock()


def _raise_unpicklable():
    raise _Unpicklable()


def test_a_worker_error_that_cannot_be_sent_is_told_by_its_text():
    """An error holding something that cannot be pickled killed the worker as it was sent, and the
    parent said it "stopped without a result" (killed for memory?)."""
    from matching_cli.workers import Forked

    with pytest.raises(RuntimeError, match="_Unpicklable: holds a lock"):
        Forked(_raise_unpicklable).result()


def _warn_and_return(value):
    import logging

    logging.getLogger("matching_cli.data.fields").warning("a worker's warning about %s", value)
    return value


def _warn_about_pairs(left, right):
    return _warn_and_return(left + right)


def test_what_a_worker_logs_is_logged_by_its_parent(caplog):
    """A forked worker's log records go to its parent, which logs them: written by the worker
    itself they went around the parent's progress display, and were lost where its stderr is no
    file (the CLI tests' captured output)."""
    from matching_cli.workers import Forked

    with caplog.at_level("WARNING", logger="matching_cli"):
        assert Forked(_warn_and_return, 7).result() == 7
        chunks = [(np.array([1]), np.array([2])), (np.array([3]), np.array([4]))]
        assert [int(v[0]) for _, v in ahead(_warn_about_pairs, chunks, lambda c: c, 2)] == [3, 7]
    # Sorted: the two `ahead` workers may finish in either order.
    told = sorted((r.name, r.levelname, r.getMessage()) for r in caplog.records)
    assert told == [
        ("matching_cli.data.fields", "WARNING", f"a worker's warning about {value}")
        for value in ("7", "[3]", "[7]")
    ]


def _first_then_after_a_sign(sign, fail):
    """Yields 1, then waits for `sign` to exist (the caller makes it once it has the 1)."""
    import time

    yield 1
    deadline = time.monotonic() + 20
    while not sign.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the 1 never reached the caller")
        time.sleep(0.01)
    if fail:
        raise ValueError("after the first value")
    return 2


@pytest.mark.parametrize("fork", [True, False])
@pytest.mark.parametrize("fail", [False, True])
def test_a_worker_sends_each_value_it_yields_at_once(tmp_path, monkeypatch, fail, fork):
    """prepare's worker hands the descriptions' words over while it goes on with the rest: each
    value a generator yields reaches the caller then, its return value last, an error when it
    comes. Where no process is forked, it runs here a value at a time: it waits for what the
    caller does in between (the item matrix that prepare's worker takes the main pictures from)."""
    from matching_cli import workers

    monkeypatch.setattr(workers, "can_fork", lambda: fork)
    sign = tmp_path / "sign"
    with workers.beside(_first_then_after_a_sign, sign, fail) as next_value:
        assert next_value() == 1
        sign.touch()
        if fail:
            with pytest.raises(ValueError, match="after the first"):
                next_value()
        else:
            assert next_value() == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_scoring_workers_keep_the_memory_they_free():
    """predict's workers keep freed memory for their next chunk (each page given back and taken
    again cost a page fault: 21 s of system time in 10M pairs). A 20 MB block freed must stay in
    the process after `keep_freed_memory`, and go back to the system without it."""
    import subprocess

    script = """
import sys, numpy as np
from matching_cli.workers import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
block = np.ones(20 << 20, dtype=np.uint8)
before = resident()
del block
print((before - resident()) >> 20)
"""

    def given_back(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        )
        return int(run.stdout)

    assert given_back("default") >= 19
    # Nothing given back; on Python 3.13 the process even grows by a MiB after the `del`.
    assert given_back("keep") <= 0


def test_workers_still_running_are_stopped_when_scoring_stops():
    """predict stopped (an error, Ctrl-C) while chunks' features are being computed: their
    processes are stopped, not waited for."""
    import time

    def slow(left, right):
        if left[0] == 1:
            time.sleep(60)
        return np.zeros((len(left), 1), np.float32)

    chunks = [(np.array([0]), np.array([0])), (np.array([1]), np.array([1]))]
    scored = ahead(slow, iter(chunks), lambda c: c, 2)
    next(scored)
    started = time.monotonic()
    scored.close()  # the second chunk's process sleeps for a minute
    assert time.monotonic() - started < 20


def test_fields_follow_the_item_order(tmp_path, caplog):
    """The fields are read in item-matrix order: a listing the file lacks gets null (no words), a
    listing the file repeats gets its last row, and a description is cut to DESCRIPTION_CHARS.
    The names' and descriptions' words are found in the file's order and their rows reordered:
    each listing must get the tokens of its own text."""
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    from matching_cli.data.feature_store import _attribute_fields, _text_words
    from matching_cli.data.fields import DESCRIPTION_CHARS, attribute_rows, category_codes
    from matching_cli.data.layout import ATTRIBUTES_FILE, TEXT_FILE
    from matching_cli.data.tables import read_categories

    long = "x" * (DESCRIPTION_CHARS + 50)
    table = pa.table(
        {
            "variantid": pa.array([30, 10, 50, 10], pa.int64()),
            "name": ["c 8 gb", "a first", None, "a last"],
            "description": ["dc", "da", long, None],
            "categories": ['{"2": "c"}', '{"2": "a first"}', None, '{"2": "a last"}'],
            "characteristic_attributes_mapping": [
                '{"c": ["3"]}', '{"a": ["1"]}', '{"e": ["5"]}', '{"a": ["2"]}'
            ],
        }
    )  # fmt: skip
    fields = ["variantid", "categories", "characteristic_attributes_mapping"]
    pq.write_table(table.drop(fields[1:]), tmp_path / TEXT_FILE, row_group_size=2)
    pq.write_table(table.select(fields), tmp_path / ATTRIBUTES_FILE, row_group_size=2)
    ids = np.array([10, 20, 30, 50])

    def tokens_by_row(words: Words) -> list[Counter]:
        counts = words.token_counts()
        return [
            Counter({words.token_strings[j]: c for j, c in zip(row.indices, row.data, strict=True)})
            for row in counts
        ]

    for name, want in (
        ("name", ["a last", None, "c 8 gb", None]),
        ("description", [None, None, "dc", long[:DESCRIPTION_CHARS]]),
    ):
        got = _text_words(tmp_path, ids, name)
        assert got.rows.shape[0] == len(ids)
        assert tokens_by_row(got) == tokens_by_row(Words.of(pa.array(want, pa.string()))), name
    assert tokens_by_row(_text_words(tmp_path, ids, "name"))[2] == Counter({"c": 1, "8gb": 1})
    # The attributes and categories are parsed in the file's order and their rows reordered too.
    attributes, categories = _attribute_fields(tmp_path, ids)
    want = category_codes(pa.array(['{"2": "a last"}', None, '{"2": "c"}', None], pa.string()))
    assert np.array_equal(categories, want)
    assert len(set(want[:, 0])) == 3  # two listings' own codes and -1: reordering would show
    # The level-2 names of the per-category metric, read as the file's dictionaries (one per row
    # group, merged).
    level2, names = read_categories(tmp_path, ids)
    assert names == ["a first", "a last", "c"] and level2.tolist() == [1, -1, 2, -1]
    texts = pa.array(['{"a": ["2"]}', None, '{"c": ["3"]}', '{"e": ["5"]}'], pa.string())
    for got, expected in zip(attributes, attribute_rows(texts), strict=True):
        assert got.shape == expected.shape and (got != expected).nnz == 0
    assert attributes[1][0].nnz == 1 and attributes[1][1].nnz == 0
    # A file without the attributes column: every listing's attribute rows empty.
    pq.write_table(table.select(fields[:2]), tmp_path / ATTRIBUTES_FILE)
    attributes, categories = _attribute_fields(tmp_path, ids)
    assert [m.shape[0] for m in attributes] == [len(ids)] * 4
    assert all(m.nnz == 0 for m in attributes) and np.array_equal(categories, want)
    # No attributes file at all: empty rows, no categories, and one line that says so.
    (tmp_path / ATTRIBUTES_FILE).unlink()
    with caplog.at_level(logging.INFO, logger="matching_cli.data.feature_store"):
        caplog.clear()  # what the calls above said, where an earlier test left the level at INFO
        attributes, categories = _attribute_fields(tmp_path, ids)
    assert all(m.shape[0] == len(ids) and m.nnz == 0 for m in attributes)
    assert (categories == -1).all() and categories.shape[0] == len(ids)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"{tmp_path / ATTRIBUTES_FILE} not found: the features of categories, "
        "characteristic_attributes_mapping are marked missing"
    ]


def test_words_are_split_at_every_white_space_as_arrow_and_python_split_them():
    """`Words.of` splits with the ASCII kernel after making the other white space a space: the
    words must be those that `utf8_split_whitespace` and Python's `str.split` give, for every
    white-space character, alone, repeated and at the ends (Arrow's kernels also give empty
    words at the ends, which have no tokens)."""
    import sys

    import pyarrow as pa
    import pyarrow.compute as pc

    from matching_cli.data.words import _spaced

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    texts = [f"a{s}b{s}{s}c{s}" for s in spaces] + [f"{s}x" for s in spaces]
    texts += [
        "".join(spaces) + "y" + "".join(spaces),
        "plain words only",
        "",
        "\u200bzero\u200bwidth",
    ]
    column = pa.array(texts)
    words = [
        [w for w in row if w] for row in pc.ascii_split_whitespace(_spaced(column)).to_pylist()
    ]
    assert words == [t.split() for t in texts]
    assert words == [[w for w in row if w] for row in pc.utf8_split_whitespace(column).to_pylist()]


@pytest.mark.parametrize("rows_at_once", [1, 3, 1 << 18])
def test_sparse_rows_are_made_unit_length_in_place(rows_at_once):
    """TF-IDF rows are L2-normalised in parts of rows: empty rows at a part's start, middle or
    end stay zero, and every other row ends at length 1, in the direction it had."""
    from matching_cli.data.features import unit_sparse_rows

    rng = np.random.default_rng(5)
    dense = rng.random((11, 6)).astype(np.float32) * (rng.random((11, 6)) < 0.5)
    dense[[0, 4, 5, 10]] = 0.0
    matrix = sp.csr_matrix(dense)
    out = unit_sparse_rows(matrix, rows_at_once)
    assert out is matrix
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    want = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
    np.testing.assert_allclose(out.toarray(), want, rtol=1e-6)
