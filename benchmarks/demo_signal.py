"""How much the demo data's text says beyond its name vectors, and what generating it costs.

    PYTHONPATH=. python benchmarks/demo_signal.py --pairs 20000          # AP of two one-number scores
    PYTHONPATH=. python benchmarks/demo_signal.py --pairs 200000 --time  # seconds and peak memory

The two scores are the cosine of the two `name_bert_64` vectors and the Jaccard of the names'
digit-bearing tokens, plain (lower-cased words) and normalised (Cyrillic look-alikes read as Latin,
a number glued to its unit split off). AP on all pairs, and on matches against hard non-matches
only (pairs within one level-2 category), where the text has to do the work.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import average_precision_score

from matching_cli.data import synthetic

_LOOKALIKE = str.maketrans("авсенкмортхуі", "abcehkmoptxyi")


def _digit_tokens(name: str, normalise: bool) -> frozenset[str]:
    text = name.lower()
    if normalise:
        text = re.sub(r"(\d)([^\W\d_]+)", r"\1 \2", text.translate(_LOOKALIKE))
    return frozenset(t for t in re.findall(r"\w+", text) if any(c.isdigit() for c in t))


def _jaccard(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def measure(out: Path) -> dict[str, float]:
    train = pq.read_table(out / "train.parquet").to_pandas()
    text = pq.read_table(out / "text_and_bert.parquet").to_pandas().set_index("variantid")
    level2 = {
        v: json.loads(c)["2"]
        for v, c in pq.read_table(out / "attributes.parquet", columns=["variantid", "categories"])
        .to_pandas()
        .itertuples(index=False)
    }
    a, b, y = train.variantid1.to_numpy(), train.variantid2.to_numpy(), train.target.to_numpy()
    scores = {}
    vectors = text.name_bert_64
    cos = []
    for i, j in zip(a, b, strict=True):
        u, v = vectors[i], vectors[j]
        ok = u is not None and v is not None
        cos.append(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v) if ok else 0.0)
    scores["name cosine"] = np.array(cos)
    for normalise in (False, True):
        tokens = {v: _digit_tokens(n, normalise) for v, n in text.name.items()}
        label = "digit-token Jaccard" + (" (normalised)" if normalise else "")
        scores[label] = np.array(
            [_jaccard(tokens[i], tokens[j]) for i, j in zip(a, b, strict=True)]
        )
    hard_or_match = (y == 1) | np.array([level2[i] == level2[j] for i, j in zip(a, b, strict=True)])
    result = {}
    for label, s in scores.items():
        result[f"AP {label}"] = average_precision_score(y, s)
        result[f"AP {label}, matches vs hard"] = average_precision_score(
            y[hard_or_match], s[hard_or_match]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="only time the generation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synthetic.generate(Path(tmp), args.pairs, args.seed)
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20
        print(
            f"generate --pairs {args.pairs}: {seconds:.1f} s wall, {cpu:.1f} s CPU "
            f"(both threads), peak RSS {peak:.2f} GiB"
        )
        if not args.time:
            for key, value in measure(Path(tmp)).items():
                print(f"{key:55s} {value:.3f}")


if __name__ == "__main__":
    main()
