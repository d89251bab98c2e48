"""The demo data set: the real schema, realistic shares, a pair graph that splits, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from matching_cli.data import listing_text, synthetic
from matching_cli.data import vocab as _vocab
from matching_cli.errors import DataError

NESTED = pa.large_list(pa.large_list(pa.float64()))
# Written out here rather than taken from the module, so a wrong schema there fails.
EXPECTED = {
    "train.parquet": {"variantid1": pa.int64(), "variantid2": pa.int64(), "target": pa.int64()},
    "test.parquet": {"variantid1": pa.int64(), "variantid2": pa.int64()},
    "images_embed.parquet": {
        "variantid": pa.int64(),
        "main_pic_embeddings_resnet_v1": NESTED,
        "pic_embeddings_resnet_v1": NESTED,
    },
    "text_and_bert.parquet": {
        "variantid": pa.int64(),
        "name": pa.string(),
        "description": pa.string(),
        "name_bert_64": pa.list_(pa.float64()),
    },
    "attributes.parquet": {
        "variantid": pa.int64(),
        "categories": pa.string(),
        "characteristic_attributes_mapping": pa.string(),
    },
    "truth.parquet": {"variantid": pa.int64(), "product_id": pa.int64()},
}


class _CountingReporter:
    def __init__(self):
        self.totals, self.advanced, self.closed = [], 0.0, False

    def task(self, description, total, unit="items"):
        self.totals.append(total)
        return self

    def advance(self, amount=1):
        self.advanced += amount

    def update(self, *, description=None, total=None):
        pass

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    reporter = _CountingReporter()
    summary = synthetic.generate(out, 2000, seed=0, reporter=reporter)
    tables = {name: pq.read_table(out / name) for name in EXPECTED}
    return out, summary, tables, reporter


def _read_all(out: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(out / name) for name in EXPECTED}


def _product_of(tables, variantids: np.ndarray) -> np.ndarray:
    truth = tables["truth.parquet"]
    ids, products = truth["variantid"].to_numpy(), truth["product_id"].to_numpy()
    order = np.argsort(ids)
    return products[order[np.searchsorted(ids, variantids, sorter=order)]]


def test_every_file_has_the_real_arrow_schema(demo):
    out, summary, tables, _ = demo
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)  # no partial files left
    assert sorted(p.name for p in summary.files) == sorted(EXPECTED)
    for name, columns in EXPECTED.items():
        schema = tables[name].schema
        assert schema.names == list(columns), name
        for column, expected in columns.items():
            assert schema.field(column).type == expected, f"{name}:{column}"


def test_sizes_and_shares_look_like_the_competition(demo):
    _, summary, tables, reporter = demo
    train = tables["train.parquet"]
    assert summary.pairs == train.num_rows == 2000
    assert summary.test_pairs == tables["test.parquet"].num_rows == round(2000 * 49_620 / 1_168_516)
    assert summary.listings == tables["attributes.parquet"].num_rows
    assert 1.85 < summary.listings / summary.pairs < 2.0  # real: 2,252,569 / 1,168,516
    share = pc.mean(train["target"]).as_py()
    assert summary.positive_share == pytest.approx(share)
    assert abs(share - 0.48) < 0.03
    assert set(train["target"].to_pylist()) == {0, 1}
    assert reporter.totals[0] >= 1 and reporter.advanced == reporter.totals[0] and reporter.closed


def test_texts_are_russian_with_html_and_missing_descriptions(demo):
    _, _, tables, _ = demo
    text = tables["text_and_bert.parquet"]
    description = text["description"]
    assert 0.08 < description.null_count / len(description) < 0.16
    html = pc.match_substring_regex(description.drop_null(), r"<p>|<br>|<ul><li>")
    assert pc.mean(pc.cast(html, pa.int8())).as_py() > 0.5
    names = text["name"].to_pylist()
    assert all(names) and any("ГБ" in n or "размер" in n or "см" in n for n in names)
    assert len(set(names)) > len(names) / 3


def test_embeddings_have_the_real_lengths_and_nulls(demo):
    _, _, tables, _ = demo
    images = tables["images_embed.parquet"]
    main = images["main_pic_embeddings_resnet_v1"].combine_chunks()
    assert 0 < main.null_count < 0.05 * len(main)
    assert set(pc.list_value_length(main).drop_null().to_pylist()) == {1}
    assert set(pc.list_value_length(main.flatten()).to_pylist()) == {128}
    extra = images["pic_embeddings_resnet_v1"].combine_chunks()
    assert 0.5 < extra.null_count / len(extra) < 0.7
    assert set(pc.list_value_length(extra).drop_null().to_pylist()) <= {0, 1, 2, 3, 4}
    assert set(pc.list_value_length(extra.flatten()).to_pylist()) == {128}
    bert = tables["text_and_bert.parquet"]["name_bert_64"].combine_chunks()
    assert set(pc.list_value_length(bert).drop_null().to_pylist()) == {64}
    assert np.isfinite(bert.flatten().to_numpy()).all()


def test_categories_and_attributes_are_json_like_the_real_ones(demo):
    _, _, tables, _ = demo
    attributes = tables["attributes.parquet"]
    categories = [json.loads(c) for c in attributes["categories"].to_pylist()]
    assert all(list(c) == ["1", "2", "3", "4"] for c in categories)
    assert {c["1"] for c in categories} == set(_vocab.LEVEL1)
    assert len({c["2"] for c in categories}) > 15
    assert '"2": "' in attributes["categories"][0].as_py()  # ensure_ascii=False, json's spacing
    mappings = [json.loads(m) for m in attributes["characteristic_attributes_mapping"].to_pylist()]
    assert all(isinstance(m["Бренд"], list) and len(m["Бренд"]) == 1 for m in mappings)


def test_every_pair_refers_to_listings_in_every_table(demo):
    _, _, tables, _ = demo
    listing_sets = []
    for name in (
        "images_embed.parquet",
        "text_and_bert.parquet",
        "attributes.parquet",
        "truth.parquet",
    ):
        ids = tables[name]["variantid"].to_numpy()
        assert len(np.unique(ids)) == len(ids), name
        assert not (np.diff(ids) > 0).all(), f"{name} is sorted"
        listing_sets.append(np.sort(ids))
    assert all(np.array_equal(listing_sets[0], s) for s in listing_sets[1:])
    in_pairs = {}
    for name in ("train.parquet", "test.parquet"):
        pairs = tables[name]
        in_pairs[name] = np.concatenate(
            [pairs["variantid1"].to_numpy(), pairs["variantid2"].to_numpy()]
        )
        assert np.isin(in_pairs[name], listing_sets[0]).all(), name
    assert not np.isin(in_pairs["test.parquet"], in_pairs["train.parquet"]).any()


def test_truth_agrees_with_labels_but_for_a_little_label_noise(demo):
    _, _, tables, _ = demo
    train = tables["train.parquet"]
    first = _product_of(tables, train["variantid1"].to_numpy())
    second = _product_of(tables, train["variantid2"].to_numpy())
    target = train["target"].to_numpy()
    agreement = ((first == second) == (target == 1)).mean()
    assert 0.96 <= agreement < 1.0


def test_negatives_are_partly_hard_within_one_category(demo):
    _, _, tables, _ = demo
    attributes = tables["attributes.parquet"]
    level2 = dict(
        zip(
            attributes["variantid"].to_pylist(),
            (json.loads(c)["2"] for c in attributes["categories"].to_pylist()),
            strict=True,
        )
    )
    train = tables["train.parquet"].to_pandas()
    negatives = train[train.target == 0]
    same = np.array(
        [
            level2[a] == level2[b]
            for a, b in zip(negatives.variantid1, negatives.variantid2, strict=True)
        ]
    )
    assert 0.45 < same.mean() < 0.85  # hard ones share the family's category, easy ones never


def test_pair_graph_falls_into_small_components(demo):
    _, _, tables, _ = demo
    train = tables["train.parquet"]
    a, b = train["variantid1"].to_numpy(), train["variantid2"].to_numpy()
    nodes = np.unique(np.concatenate([a, b]))
    i, j = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(nodes), len(nodes)))
    n_components, labels = connected_components(graph, directed=False)
    assert n_components > len(a) / 4
    assert np.bincount(labels).max() <= 60


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        (tmp_path / name).mkdir()
        synthetic.generate(tmp_path / name, 300, seed=seed)
        runs[name] = _read_all(tmp_path / name)
    for file in EXPECTED:
        assert runs["a"][file].equals(runs["b"][file]), file
        assert not runs["a"][file].equals(runs["c"][file]), file


def test_image_file_name_can_be_the_competitions(tmp_path):
    summary = synthetic.generate(tmp_path, 100, image_file="resnet.parquet")
    assert (tmp_path / "resnet.parquet").is_file()
    assert not (tmp_path / "images_embed.parquet").exists()
    assert tmp_path / "resnet.parquet" in summary.files


def test_too_few_pairs_is_refused(tmp_path):
    with pytest.raises(DataError, match="--pairs must be at least 20"):
        synthetic.generate(tmp_path, 19)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_no_partial_files(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(listing_text, "attribute_columns", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        synthetic.generate(tmp_path, 100)
    assert list(tmp_path.iterdir()) == []


_LOOKALIKE = str.maketrans("АВСЕНКМОРТХавсенкмортх", "ABCEHKMOPTXabcehkmoptx")
_CODE = re.compile(r"(?<!\w)([ABCEHKMOPTX]{1,2})[- ]?(\d{3,4})(?!\w)", re.IGNORECASE)


def _listing_texts(tables) -> dict[int, str]:
    """Each listing's name, description and attribute values as one string."""
    text = tables["text_and_bert.parquet"].to_pandas().set_index("variantid")
    attributes = tables["attributes.parquet"].to_pandas().set_index("variantid")
    values = attributes.characteristic_attributes_mapping.map(
        lambda m: " ".join(v for vs in json.loads(m).values() for v in vs)
    )
    joined = text.name + " | " + text.description.fillna("") + " | " + values[text.index]
    return joined.to_dict()


def _codes(text: str) -> set[str]:
    """Model codes in a text, spelt one way: "КМ-1234", "km 1234", "KM1234" -> "KM1234"."""
    return {(p + d).upper() for p, d in _CODE.findall(text.translate(_LOOKALIKE))}


def test_listings_of_one_product_share_its_model_code_in_varied_spellings(demo):
    _, _, tables, _ = demo
    texts = _listing_texts(tables)
    truth = tables["truth.parquet"].to_pandas()
    shared = truth.groupby("product_id").variantid.agg(
        lambda ids: set.intersection(*(_codes(texts[i]) for i in ids))
    )
    assert (shared.map(len) > 0).all()  # every listing shows the code, in one spelling or another
    names = tables["text_and_bert.parquet"]["name"].to_pylist()
    cyrillic_code = [re.search(r"(?<!\w)[АВСЕНКМОРТХ]{1,2}-?\d{3,4}", n) for n in names]
    assert 0.03 < np.mean([m is not None for m in cyrillic_code]) < 0.3
    spelt = [re.findall(r"\d+ ?(ГБ|GB|Gb|гигабайт)", n) for n in names]
    assert len({s for found in spelt for s in found}) == 4


def _spec_finder() -> tuple[re.Pattern, dict[str, tuple[str, str]]]:
    """A pattern for every spelling of every size and colour, and what each spelling stands for."""
    meaning = {}
    for kind, forms in (("size", _vocab.SIZE_FORMS), ("colour", _vocab.COLOUR_FORMS)):
        spellings = forms.to_pylist()
        for k, form in enumerate(spellings):
            meaning.setdefault(form, (kind, spellings[k - k % _vocab.FORMS]))
    alternatives = "|".join(re.escape(f) for f in sorted(meaning, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)"), meaning


def test_hard_non_matches_show_their_one_differing_spec_in_the_text(demo):
    _, _, tables, _ = demo
    texts = _listing_texts(tables)
    pattern, meaning = _spec_finder()

    def specs(v: int) -> set[tuple[str, str]]:
        found = {meaning[m] for m in pattern.findall(texts[v])}
        return found | {("code", c) for c in _codes(texts[v])}

    attributes = tables["attributes.parquet"].to_pandas().set_index("variantid")
    level2 = attributes.categories.map(lambda c: json.loads(c)["2"])
    train = tables["train.parquet"].to_pandas()
    first, second = train.variantid1, train.variantid2
    other_product = _product_of(tables, first.to_numpy()) != _product_of(tables, second.to_numpy())
    hard = train[other_product & (level2[first].to_numpy() == level2[second].to_numpy())]
    assert len(hard) > 200
    kinds = [
        {kind for kind, _ in specs(a) ^ specs(b)}
        for a, b in zip(hard.variantid1, hard.variantid2, strict=True)
    ]
    assert all(kinds)  # the two listings' texts differ in a spec
    assert (
        np.mean([len(k) == 1 for k in kinds]) > 0.9
    )  # in one (the rest: a spec shown by one only)
