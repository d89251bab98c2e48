"""How much the demo data's text says beyond its name vectors, and what generating it costs.

    PYTHONPATH=. python benchmarks/demo_signal.py --pairs 20000          # AP of two one-number scores
    PYTHONPATH=. python benchmarks/demo_signal.py --pairs 200000 --time  # seconds and peak memory

The scores: the cosine of the two `name_bert_64` vectors; the Jaccard of the names' digit-bearing
tokens, plain (lower-cased words), normalised (Cyrillic look-alikes read as Latin, "KM-1234" and
"KM 1234" one token, a number glued to its unit split off), and normalised over name, description
and attribute values; gradient-boosted trees on all four (out-of-fold), which says whether the text
adds to the vector. AP on all pairs, and on matches against hard non-matches only (pairs within one
level-2 category), where the text has to do the work.
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
import pandas as pd
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score
from sklearn.model_selection import cross_val_predict

from matching_cli.data import synthetic

_LOOKALIKE = str.maketrans("авсенкмортхуі", "abcehkmoptxyi")


def _digit_tokens(name: str, normalise: bool) -> frozenset[str]:
    text = name.lower()
    if normalise:
        text = text.translate(_LOOKALIKE)
        text = re.sub(r"\b([a-z]{1,2})[- ](\d)", r"\1\2", text)  # "km-1234", "km 1234": one code
        text = re.sub(r"(\d)([^\W\d_]+)", r"\1 \2", text)  # "128gb": a number and its unit
    return frozenset(t for t in re.findall(r"\w+", text) if any(c.isdigit() for c in t))


def _all_text(text: pd.DataFrame, attributes: pd.DataFrame) -> pd.Series:
    """Name, description without its HTML, and the attributes' values, as one string."""
    values = attributes.characteristic_attributes_mapping.map(
        lambda m: " ".join(v for vs in json.loads(m).values() for v in vs)
    )
    description = text.description.fillna("").str.replace(r"<[^>]+>", " ", regex=True)
    return text.name + " " + description + " " + values.reindex(text.index).fillna("")


def _jaccard(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def measure(out: Path) -> dict[str, float]:
    train = pq.read_table(out / "train.parquet").to_pandas()
    text = pq.read_table(out / "text_and_bert.parquet").to_pandas().set_index("variantid")
    attributes = pq.read_table(out / "attributes.parquet").to_pandas().set_index("variantid")
    level2 = {v: json.loads(c)["2"] for v, c in attributes.categories.items()}
    a, b, y = train.variantid1.to_numpy(), train.variantid2.to_numpy(), train.target.to_numpy()
    scores = {}
    vectors = text.name_bert_64
    cos = []
    for i, j in zip(a, b, strict=True):
        u, v = vectors[i], vectors[j]
        ok = u is not None and v is not None
        cos.append(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v) if ok else 0.0)
    scores["name cosine"] = np.array(cos)
    fields = {"names": text.name, "all fields": _all_text(text, attributes)}
    for label, field, normalise in [
        ("digit-token Jaccard of names", "names", False),
        ("same, normalised", "names", True),
        ("same, normalised, all fields", "all fields", True),
    ]:
        tokens = {v: _digit_tokens(t, normalise) for v, t in fields[field].items()}
        scores[label] = np.array(
            [_jaccard(tokens[i], tokens[j]) for i, j in zip(a, b, strict=True)]
        )
    four = np.stack(list(scores.values()), axis=1)
    folds = cross_val_predict(
        HistGradientBoostingClassifier(), four, y, cv=2, method="predict_proba"
    )
    scores["trees on these four, out of fold"] = folds[:, 1]
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
