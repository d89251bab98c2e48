"""Benchmark of `matching match`, run by hand (not by pytest), from a project folder.

    cd project && python /path/to/benchmarks/match_bench.py [--sample 20000] [--libraries] [--end-to-end]

The project folder holds `data/` (the demo data set has `truth.parquet`, each listing's product) and,
for --end-to-end, an MLflow store with a training run. It prints markdown tables:
  1. blocking recall against K with exact search, for a random sample of listings queried against the
     whole catalogue: the share of each listing's same-product listings (`truth.parquet`) and of its
     labelled matching partners (`train.parquet`) that are among its K nearest neighbours;
  2. the approximate indexes (faiss IVF, the default, at --ivf-probes, and HNSW) against exact
     search on that sample at one K: build and query time (and the query time extrapolated to every
     listing), the share of the exact neighbours each finds, and the same-product recall of both;
     --libraries adds hnswlib and usearch when installed;
  3. --end-to-end: `matching match` itself, time per stage, candidates/s, quality, peak memory.
Wall time on a shared machine is noisy: the process CPU time is printed beside it.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from matching_cli.data.layout import TRUTH_FILE
from matching_cli.data.prepare import ensure_prepared
from matching_cli.match.blocking import (
    HnswParams,
    IvfParams,
    build_hnsw,
    build_ivf,
    search,
    unit_rows,
)
from matching_cli.match.files import read_truth
from matching_cli.match.job import MatchOptions, match_job
from matching_cli.settings import load_settings


class Timer:
    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:,.1f} s (cpu {self.cpu:,.1f} s)"


def directed_recall(neighbours: np.ndarray, queries: np.ndarray, same: Callable) -> float:
    """Pooled over the queries: found partners / all partners, `same(query) -> partner rows`."""
    found = total = 0
    for row, found_rows in zip(queries.tolist(), neighbours, strict=True):
        partners = same(row)
        total += len(partners)
        found += len(np.intersect1d(partners, found_rows))
    return found / total if total else float("nan")


def partner_lookups(prepared, product: np.ndarray | None) -> dict[str, Callable]:  # type: ignore[no-untyped-def]
    lookups = {}
    if product is not None:
        by_product = np.argsort(product, kind="stable")
        bounds = np.searchsorted(product[by_product], np.arange(product.max() + 2))

        def same_product(row: int) -> np.ndarray:
            if product[row] < 0:
                return np.zeros(0, np.int64)
            members = by_product[bounds[product[row]] : bounds[product[row] + 1]]
            return members[members != row]

        lookups["same product"] = same_product
    pairs = [prepared.splits[s] for s in prepared.splits]
    left = np.concatenate([p.left[p.target == 1] for p in pairs])
    right = np.concatenate([p.right[p.target == 1] for p in pairs])
    a, b = np.concatenate([left, right]), np.concatenate([right, left])
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    lookups["labelled match"] = lambda row: b[
        np.searchsorted(a, row) : np.searchsorted(a, row, "right")
    ]
    return lookups


def recall_against_k(unit, sample, ks, lookups, device) -> np.ndarray:  # type: ignore[no-untyped-def]
    with Timer() as t:
        exact, _ = search(unit, sample, max(ks), "exact", device)
    print(
        f"\n## Blocking recall against K (exact search, {len(sample):,} sampled listings "
        f"against all {len(unit):,}; {t})\n"
    )
    print("| K | " + " | ".join(lookups) + " |\n|---|" + "---|" * len(lookups))
    for k in ks:
        row = [f"{directed_recall(exact[:, :k], sample, same):.3f}" for same in lookups.values()]
        print(f"| {k} | " + " | ".join(row) + " |")
    return exact


def compare_indexes(unit, sample, exact, k, lookups, params, ef_searches, args) -> None:  # type: ignore[no-untyped-def]
    same = lookups.get("same product") or lookups["labelled match"]
    exact_recall = directed_recall(exact[:, :k], sample, same)
    print(
        f"\n## Approximate index against exact search at K={k} ({len(sample):,} sampled queries; "
        f"exact finds {exact_recall:.3f} of the same-product partners)\n"
    )
    print(
        "| index | build | query sample | query all (extrapolated) | share of exact neighbours "
        "| same-product recall | of exact's |\n|---|---|---|---|---|---|---|"
    )

    def report(name: str, build: Timer, query: Callable[[np.ndarray], np.ndarray]) -> None:
        with Timer() as t:
            found = query(unit[sample])
        found = np.array([r[r != q][:k] for q, r in zip(sample, found, strict=True)], dtype=object)
        overlap = np.mean(
            [len(np.intersect1d(f, e[:k])) / k for f, e in zip(found, exact, strict=True)]
        )
        recall = directed_recall(found, sample, same)
        scale = len(unit) / len(sample)
        print(
            f"| {name} | {build} | {t.wall:,.1f} s | {t.wall * scale:,.0f} s (cpu {t.cpu * scale:,.0f} s) "
            f"| {overlap:.3f} | {recall:.3f} | {recall / exact_recall:.1%} |",
            flush=True,
        )

    with Timer() as build:
        index = build_hnsw(unit, params)
    for ef in ef_searches:
        index.hnsw.efSearch = ef

        def query(q: np.ndarray) -> np.ndarray:
            return index.search(q, k + 1)[1]

        report(f"faiss HNSW M={params.m} efC={params.ef_construction} efS={ef}", build, query)
    with Timer() as build:
        ivf = build_ivf(unit, IvfParams())
    for probes in (int(p) for p in args.ivf_probes.split(",")):
        ivf.nprobe = probes

        def query(q: np.ndarray) -> np.ndarray:
            return ivf.search(q, k + 1)[1]

        report(f"faiss IVF {ivf.nlist} lists, {probes} probes", build, query)
    for name, make in _other_libraries(unit, params, k, args).items():
        try:
            with Timer() as build:
                query = make()
        except ImportError as e:
            print(f"| {name} | not installed ({e.name}) | | | | | |")
            continue
        report(name, build, query)


def _other_libraries(unit, params, k, args):  # type: ignore[no-untyped-def]
    def hnswlib_index():  # type: ignore[no-untyped-def]
        import hnswlib

        index = hnswlib.Index(space="ip", dim=unit.shape[1])
        index.init_index(len(unit), M=params.m, ef_construction=params.ef_construction)
        index.add_items(unit)
        index.set_ef(params.ef_search)
        return lambda q: index.knn_query(q, k + 1)[0]

    def usearch_index():  # type: ignore[no-untyped-def]
        from usearch.index import Index

        index = Index(
            ndim=unit.shape[1],
            metric="ip",
            connectivity=params.m,
            expansion_add=params.ef_construction,
            expansion_search=params.ef_search,
        )
        index.add(np.arange(len(unit)), unit)
        return lambda q: index.search(q, k + 1).keys

    name = f"M={params.m} efC={params.ef_construction} efS={params.ef_search}"
    wanted = set(args.libraries.split(","))
    makers = {f"hnswlib {name}": hnswlib_index} if "hnswlib" in wanted else {}
    makers |= {f"usearch {name}": usearch_index} if "usearch" in wanted else {}
    return makers


def end_to_end(settings, args) -> None:  # type: ignore[no-untyped-def]
    match = settings.match.model_copy(
        update={"k": args.k, "method": args.method, "output": Path(args.out)}
    )
    with Timer() as t:
        result = match_job(settings.model_copy(update={"match": match}), MatchOptions())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\n## matching match, K={args.k}, method {args.method} "
        f"({result.counts['catalogue']:,} listings; {t}; peak memory {peak:.1f} GiB)\n"
    )
    print("| stage | seconds |\n|---|---|")
    for stage, seconds in result.seconds.items():
        print(f"| {stage} | {seconds:,.1f} |")
    print(
        f"\ncandidates {result.counts['candidates']:,}, {result.candidates_per_s:,.0f} candidates/s "
        f"in blocking; accepted {result.counts['accepted_pairs']:,}; groups {result.counts['groups']:,}"
    )
    print("\n| metric | value |\n|---|---|")
    for name, value in result.quality.items():
        print(f"| {name} | {value:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=20_000, help="listings queried exactly")
    parser.add_argument("--ks", default="1,5,10,20,50")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-construction", type=int, default=HnswParams.ef_construction)
    parser.add_argument("--ef-search", default="32,64,128")
    parser.add_argument("--libraries", default="", help="also: hnswlib,usearch (comma-separated)")
    parser.add_argument("--ivf-probes", default="8,16,32")
    parser.add_argument("--end-to-end", action="store_true", help="only run `matching match`")
    parser.add_argument("--method", default="auto", help="--end-to-end: blocking method")
    parser.add_argument("--out", default="bench_matches")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = load_settings(overrides={"train": {"device": args.device}})
    print(f"torch threads {torch.get_num_threads()}")
    if args.end_to_end:
        end_to_end(settings, args)
        return
    prepared = ensure_prepared(settings.data)
    truth = settings.data.dir / TRUTH_FILE
    product = read_truth(truth, prepared.items) if truth.is_file() else None
    with Timer() as t:
        unit = unit_rows(prepared.items.matrix)
    print(f"{len(unit):,} listings x {unit.shape[1]} dims, re-normalised in {t}")
    sample = np.sort(
        np.random.default_rng(0).choice(len(unit), min(args.sample, len(unit)), replace=False)
    )
    lookups = partner_lookups(prepared, product)
    ks = [int(k) for k in args.ks.split(",")]
    exact = recall_against_k(
        unit, sample, sorted({*ks, args.k}), lookups, torch.device(args.device)
    )
    params = HnswParams(ef_construction=args.ef_construction)
    compare_indexes(
        unit,
        sample,
        exact,
        args.k,
        lookups,
        params,
        [int(e) for e in args.ef_search.split(",")],
        args,
    )


if __name__ == "__main__":
    main()
