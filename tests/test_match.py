"""`matching match`: blocking, clustering on hand-made graphs, the CLI's files, run and errors."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from matching_cli.match.blocking import (
    HnswParams,
    IvfParams,
    build_hnsw,
    find_candidates,
    stored_vectors,
    unit_rows,
)
from matching_cli.match.clustering import Guard, cluster, size_histogram
from matching_cli.match.quality import (
    blocking_recall,
    cluster_quality,
    reduction_ratio,
    true_pair_recall,
)
from tests.conftest import invoke, store


def groups_of(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == g).tolist()) for g in np.unique(labels)}


def edges(*triples: tuple[int, int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left, right, score = zip(*triples, strict=True)
    return np.array(left), np.array(right), np.array(score)


# A chain whose weakest link joins two strong halves; a star (a hub); two cliques and one bridge.
CHAIN = edges((0, 1, 0.9), (1, 2, 0.6), (2, 3, 0.95), (3, 4, 0.7))
STAR = edges(*[(0, leaf, 1 - leaf / 100) for leaf in range(1, 7)])
CLIQUES = edges(
    *[(a, b, 0.97) for a in range(4) for b in range(a + 1, 4)],
    *[(a, b, 0.96) for a in range(4, 8) for b in range(a + 1, 8)],
    (3, 4, 0.62),
)


def test_connected_components_chain_everything():
    for graph, n in ((CHAIN, 5), (STAR, 7), (CLIQUES, 8)):
        assert groups_of(cluster(n, *graph)) == {frozenset(range(n))}


def test_the_join_threshold_cuts_the_weak_link_between_groups():
    assert groups_of(cluster(5, *CHAIN, Guard(join_threshold=0.8))) == {
        frozenset({0, 1}),
        frozenset({2, 3, 4}),
    }
    assert groups_of(cluster(8, *CLIQUES, Guard(join_threshold=0.8))) == {
        frozenset(range(4)),
        frozenset(range(4, 8)),
    }
    # A bridge as strong as the join threshold is kept.
    assert len(groups_of(cluster(8, *CLIQUES, Guard(join_threshold=0.6)))) == 1
    # Single listings join on any accepted edge: a star stays whole.
    assert groups_of(cluster(7, *STAR, Guard(join_threshold=0.999))) == {frozenset(range(7))}


def test_the_size_cap_cuts_the_weakest_edges():
    assert groups_of(cluster(7, *STAR, Guard(max_size=4))) == {
        frozenset({0, 1, 2, 3}),
        *(frozenset({leaf}) for leaf in (4, 5, 6)),
    }
    assert groups_of(cluster(8, *CLIQUES, Guard(max_size=4))) == {
        frozenset(range(4)),
        frozenset(range(4, 8)),
    }


def test_clustering_ignores_edge_order_and_keeps_isolated_nodes():
    order = np.random.default_rng(0).permutation(len(CLIQUES[0]))
    shuffled = tuple(a[order] for a in CLIQUES)
    labels = cluster(10, *shuffled, Guard(join_threshold=0.8))
    assert groups_of(labels) == {
        frozenset(range(4)),
        frozenset(range(4, 8)),
        frozenset({8}),
        frozenset({9}),
    }
    assert size_histogram(labels)["1"] == 2 and size_histogram(labels)["4"] == 2


def test_cluster_quality_on_a_known_partition():
    labels, product = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 1, 2])
    q = cluster_quality(labels, product)
    assert q["cluster_pair_precision"] == pytest.approx(0.5)  # 2 of the 4 predicted pairs
    assert q["bcubed_precision"] == pytest.approx(14 / 18)
    assert cluster_quality(product, product)["adjusted_rand"] == pytest.approx(1.0)
    assert reduction_ratio(10, 100, 100) == pytest.approx(1 - 10 / 4950)
    # `match --listings` of one known listing: nothing to judge, not a perfect 1.0
    assert cluster_quality(labels, np.array([-1, -1, 1, -1, -1, -1])) == {}
    assert cluster_quality(labels, np.array([0, 1, 2, 3, 4, 5])) == {}  # no two of one product


def test_quality_of_new_listings_counts_their_matches_in_the_catalogue():
    """`match --listings`: listing 0 is new; its product has two more listings in the catalogue,
    and it was grouped with one of them. Only pairs of two queries were counted: nothing."""
    labels, product = np.array([0, 0, 1, 1, 2]), np.array([0, 0, 0, 1, 1])
    is_query = np.array([True, False, False, False, False])
    q = cluster_quality(labels, product, is_query)
    # Pairs holding listing 0: true (0, 1), (0, 2); grouped (0, 1).
    assert q["cluster_pair_precision"] == 1.0 and q["cluster_pair_recall"] == 0.5
    assert q["bcubed_precision"] == 1.0 and q["bcubed_recall"] == pytest.approx(2 / 3)
    assert "adjusted_rand" not in q  # the catalogue's own groups were not made
    assert cluster_quality(labels, product, np.ones(5, bool)) == cluster_quality(labels, product)
    candidates = np.array([0, 0]), np.array([1, 3])
    assert true_pair_recall(*candidates, product, is_query) == 0.5


def clustered_vectors(n: int = 3000, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    product = rng.integers(0, n // 3, n)
    centres = rng.standard_normal((n // 3, dim))
    vectors = (centres[product] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    return unit_rows(vectors), product


def brute_force(unit: np.ndarray, k: int) -> set[tuple[int, int]]:
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argsort(-sim, axis=1)[:, :k]
    return {(min(a, b), max(a, b)) for a, row in enumerate(top) for b in row.tolist()}


def test_exact_search_finds_the_true_neighbours_once_each():
    unit, _ = clustered_vectors(800)
    found = find_candidates(unit, np.arange(len(unit)), 5, method="exact")
    assert (found.left < found.right).all()
    assert len(np.unique(found.keys(len(unit)))) == len(found)
    assert set(zip(found.left.tolist(), found.right.tolist(), strict=True)) == brute_force(unit, 5)
    cosine = np.einsum("ij,ij->i", unit[found.left], unit[found.right])
    np.testing.assert_allclose(found.similarity, cosine, atol=1e-5)
    assert found.methods == {"exact": len(unit)}


def test_hnsw_agrees_with_exact_search_above_a_floor():
    unit, _ = clustered_vectors()
    queries = np.arange(len(unit))
    exact = find_candidates(unit, queries, 10, method="exact")
    approximate = find_candidates(unit, queries, 10, method="hnsw")
    assert approximate.methods == {"hnsw": len(unit)}
    recall = blocking_recall(approximate.keys(len(unit)), exact.left, exact.right, len(unit))
    assert recall > 0.95


def test_ivf_agrees_with_exact_search_and_is_exact_when_every_list_is_searched():
    unit, _ = clustered_vectors()
    queries = np.arange(len(unit))
    exact = find_candidates(unit, queries, 10, method="exact")
    # `auto` takes IVF once exact search would cost more than a catalogue of `exact_max`.
    approximate = find_candidates(unit, queries, 10, exact_max=1000)
    assert approximate.methods == {"ivf": len(unit)}
    # These vectors are near-uniform noise around tiny clusters, IVF's hard case: on WDC's real
    # embeddings and the 96k demo catalogue it finds 0.99-1.00 (README "Why faiss IVF").
    recall = blocking_recall(approximate.keys(len(unit)), exact.left, exact.right, len(unit))
    assert recall > 0.9
    every_list = find_candidates(unit, queries, 10, method="ivf", ivf=IvfParams(probes=10**6))
    assert (every_list.keys(len(unit)) == exact.keys(len(unit))).all()
    np.testing.assert_allclose(every_list.similarity, exact.similarity, atol=1e-5)


def test_ivf_lists_grow_with_the_square_root_of_the_catalogue_and_keep_a_training_sample():
    assert IvfParams().lists_for(1_000_000) == 4_000
    assert IvfParams().lists_for(3_000) == 3_000 // 64  # 219 wanted, each needs 64 to train on
    assert IvfParams().lists_for(20) == 1
    assert IvfParams(lists=100).lists_for(1_000_000) == 100


def test_a_memory_mapped_item_matrix_gives_the_same_candidates(tmp_path):
    """`match` hands blocking the prepared matrix as a memory map of unnormalised rows."""
    unit, _ = clustered_vectors(1500)
    scaled = unit * np.linspace(0.5, 2.0, len(unit), dtype=np.float32)[:, None]
    np.save(tmp_path / "items.npy", scaled)
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    queries = np.arange(len(unit))
    expected = find_candidates(unit, queries, 6, method="exact")
    found = find_candidates(mapped, queries, 6, method="exact")
    assert (found.keys(len(unit)) == expected.keys(len(unit))).all()
    np.testing.assert_allclose(found.similarity, expected.similarity, atol=1e-5)
    # The index is built by two threads, so its graph may differ a little from run to run.
    approximate = find_candidates(mapped, queries, 6, method="hnsw")
    assert blocking_recall(approximate.keys(len(unit)), found.left, found.right, len(unit)) > 0.95
    index = build_hnsw(mapped, HnswParams())
    np.testing.assert_allclose(stored_vectors(index), unit, atol=1e-6)
    # Rows read as a stretch of the file (dense), picked through the map (scattered), or none.
    for rows in (np.arange(100, 1400, 3), np.arange(0, 1500, 20), np.arange(0)):
        np.testing.assert_allclose(unit_rows(mapped, rows), unit[rows], atol=1e-6)
    # IVF reads its queries from the map again, normalised: with every list searched, exact.
    every_list = find_candidates(mapped, queries, 6, method="ivf", ivf=IvfParams(probes=10**6))
    assert (every_list.keys(len(unit)) == found.keys(len(unit))).all()
    np.testing.assert_allclose(every_list.similarity, found.similarity, atol=1e-5)


def test_queries_groups_and_empty_rows_limit_the_candidates():
    unit, _ = clustered_vectors(600)
    unit[:10] = 0  # listings with no embedding at all
    groups = np.arange(len(unit)) % 3
    queries = np.arange(0, 100)
    found = find_candidates(unit, queries, 4, groups=groups)
    assert np.isin(found.left, queries).sum() + np.isin(found.right, queries).sum() >= len(found)
    assert (groups[found.left] == groups[found.right]).all()
    assert not np.isin(np.concatenate([found.left, found.right]), np.arange(10)).any()
    # An index over each group's rows alone, queried with some of them: the same pairs.
    indexed = find_candidates(
        unit, queries, 4, groups=groups, method="ivf", ivf=IvfParams(probes=10**6)
    )
    assert (indexed.keys(len(unit)) == found.keys(len(unit))).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_exact_search_on_cuda_matches_the_cpu():
    unit, _ = clustered_vectors()
    cpu = find_candidates(unit, np.arange(len(unit)), 10, method="exact")
    cuda = find_candidates(
        unit, np.arange(len(unit)), 10, method="exact", device=torch.device("cuda")
    )
    assert blocking_recall(cuda.keys(len(unit)), cpu.left, cpu.right, len(unit)) > 0.99
    np.testing.assert_allclose(
        cuda.similarity, np.einsum("ij,ij->i", unit[cuda.left], unit[cuda.right]), atol=1e-5
    )


def test_match_writes_pairs_clusters_summary_and_a_run(in_trained):
    folder, run_id, _ = in_trained
    result = invoke("match", "--run-id", run_id, "-o", "out", "-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    pairs, clusters = (pq.read_table(f"out/{name}.parquet") for name in ("pairs", "clusters"))
    assert [(f.name, str(f.type)) for f in pairs.schema] == [
        ("variantid1", "int64"),
        ("variantid2", "int64"),
        ("similarity", "float"),
        ("score", "float"),
    ]
    assert [(f.name, str(f.type)) for f in clusters.schema] == [
        ("variantid", "int64"),
        ("cluster_id", "int64"),
        ("cluster_size", "int64"),
    ]
    pairs, clusters = pairs.to_pandas(), clusters.to_pandas()
    listings = np.load(store() / "item_ids.npy")
    assert sorted(clusters["variantid"]) == sorted(listings)
    sizes = clusters.groupby("cluster_id")["variantid"].transform("size")
    assert (sizes == clusters["cluster_size"]).all()
    smallest = clusters.groupby("cluster_id")["variantid"].min()
    assert (smallest.index == smallest.to_numpy()).all()  # a group is named by its smallest id
    model = json.loads((folder / "models" / run_id / "model.json").read_text())
    threshold = model["group_threshold"]  # grouping by the validation-precision threshold
    assert threshold is not None
    assert (pairs["score"] >= threshold).all() and (pairs["variantid1"] < pairs["variantid2"]).all()
    counts = summary["counts"]
    assert counts["listings"] == len(listings) and counts["accepted_pairs"] == len(pairs)
    text_pairs = json.loads(
        mlflow.MlflowClient().get_run(summary["run_id"]).data.params["methods_used"]
    )["text"]
    assert len(listings) * 5 / 2 <= counts["candidates"] - text_pairs <= len(listings) * 5
    assert (
        sum(summary["groups_by_size"].values())
        == counts["groups"]
        == clusters["cluster_id"].nunique()
    )
    quality = summary["quality"]
    for name in (
        "blocking_recall",
        "reduction_ratio",
        "pairs_f1",
        "blocking_true_pair_recall",
        "cluster_pair_f1",
        "bcubed_f1",
        "adjusted_rand",
    ):
        assert 0 <= quality[name] <= 1, name
    assert quality["blocking_recall"] > 0.5
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.data.tags["matching.kind"] == "match" and run.data.tags["model_run_id"] == run_id
    assert run.data.params["k"] == "5" and float(run.data.params["threshold"]) == pytest.approx(
        threshold
    )
    for name in (
        "seconds_blocking",
        "seconds_scoring",
        "seconds_clustering",
        "candidates_per_s",
        "n_candidates",
        "bcubed_f1",
    ):
        assert name in run.data.metrics, name
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(summary["run_id"], "match")}
    assert logged == {"match/pairs.parquet", "match/clusters.parquet", "match/summary.json"}
    capped = invoke("match", "--run-id", run_id, "-o", "capped", "--max-group", "3")
    assert "groups of 2" in capped.stdout
    assert pd.read_parquet("capped/clusters.parquet")["cluster_size"].max() <= 3


def test_match_with_the_index_finds_what_exact_search_finds(in_trained):
    _, run_id, _ = in_trained
    found = {}
    for method in ("exact", "ivf", "hnsw"):
        result = invoke(
            "match", "--run-id", run_id, "-o", method, "--method", method, "--all-pairs"
        )
        assert result.exit_code == 0, result.stderr
        found[method] = pd.read_parquet(f"{method}/pairs.parquet")
    keys = [set(zip(f["variantid1"], f["variantid2"], strict=True)) for f in found.values()]
    for approximate in keys[1:]:
        assert len(keys[0] & approximate) / len(keys[0]) > 0.95


def test_match_on_given_listings_and_one_category(in_trained):
    _, run_id, _ = in_trained
    listings = pd.read_parquet("data/test.parquet")["variantid1"].drop_duplicates().head(40)
    listings.to_frame("variantid").to_parquet("some.parquet")
    result = invoke(
        "match",
        "--run-id",
        run_id,
        "--listings",
        "some.parquet",
        "-o",
        "some",
        "--all-pairs",
        "--same-category",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    pairs = pd.read_parquet("some/pairs.parquet")
    assert (
        len(pairs)
        and (pairs["variantid1"].isin(listings) | pairs["variantid2"].isin(listings)).all()
    )
    assert json.loads(result.stdout)["counts"]["listings"] == len(listings)
    assert set(listings) <= set(pd.read_parquet("some/clusters.parquet")["variantid"])


def test_match_reads_the_listings_from_a_csv_too(in_trained):
    _, run_id, _ = in_trained
    listings = pd.read_parquet("data/test.parquet")["variantid2"].drop_duplicates().head(30)
    listings.to_frame("variantid").to_parquet("some.parquet")
    Path("some.csv").write_text('"variantid"\n' + "\n".join(map(str, listings)) + "\n")
    for name in ("some.parquet", "some.csv"):
        result = invoke("match", "--run-id", run_id, "--listings", name, "-o", name + ".out")
        assert result.exit_code == 0, result.stderr
    from_csv, from_parquet = (
        pd.read_parquet(f"{n}.out/pairs.parquet") for n in ("some.csv", "some.parquet")
    )
    assert len(from_parquet) and from_csv.equals(from_parquet)
    Path("bad.csv").write_text("id\n1\n")
    result = invoke("match", "--listings", "bad.csv", "-o", "bad")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: --listings bad.csv: the header names no variantid column (found: id)")
    )


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_measure_with_nothing_to_measure_is_null_in_the_json(in_trained):
    # One listing, the only one of its product: no true pair to find, so no blocking recall. It
    # was written `NaN`, which Python reads and jq, JavaScript and every strict parser refuse.
    _, run_id, _ = in_trained
    truth = pd.read_parquet("data/truth.parquet")
    alone = truth.groupby("product_id")["variantid"].transform("size") == 1
    truth.loc[alone, ["variantid"]].head(1).to_parquet("one.parquet")
    result = invoke("match", "--run-id", run_id, "--listings", "one.parquet", "-o", "one", "--json")
    assert result.exit_code == 0, result.stderr
    for summary in (
        _strict_json(result.stdout),
        _strict_json(Path("one/summary.json").read_text()),
    ):
        assert summary["quality"]["blocking_true_pair_recall"] is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text", "not a parquet file"),
        (pd.DataFrame({"id": [1]}), "column 'variantid' is missing"),
        (pd.DataFrame({"variantid": [1, 2]}), "2 of 2 variantids are in no item table (e.g. 1, 2)"),
        (pd.DataFrame({"variantid": pd.Series([], dtype="int64")}), "holds no listings"),
    ],
)
def test_bad_listings_are_a_clear_error(in_trained, content, message):
    if isinstance(content, str):
        with open("bad.parquet", "w") as f:
            f.write(content)
    else:
        content.to_parquet("bad.parquet")
    result = invoke("match", "--listings", "bad.parquet", "-o", "bad")
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --listings bad.parquet")


def test_match_takes_its_choices_from_the_match_settings(in_trained, tmp_path):
    _, run_id, _ = in_trained
    config = tmp_path / "match.toml"
    config.write_text("[match]\nk = 3\nmax_group = 4\noutput = 'from_settings'\nall_pairs = true\n")
    result = invoke(
        "--config", str(config), "match", "--run-id", run_id, "-k", "2", "--probes", "5", "--json"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert Path(summary["out_dir"]) == Path("from_settings")
    params = mlflow.MlflowClient().get_run(summary["run_id"]).data.params
    assert (params["k"], params["max_group"], params["all_pairs"]) == ("2", "4", "True")
    assert (params["ivf_lists"], params["ivf_probes"]) == ("0", "5")
    assert pd.read_parquet("from_settings/clusters.parquet")["cluster_size"].max() <= 4
    # all_pairs: every candidate is written, below the threshold too.
    assert len(pd.read_parquet("from_settings/pairs.parquet")) == summary["counts"]["candidates"]
