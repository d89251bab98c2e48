"""Public matching benchmarks in Ditto's pair-file format -> a catalogue in the Ozon layout, to check
the defaults on more real data than WDC computers (README, "Checked on more real sets").

    python benchmarks/ditto_to_ozon.py OUT --train train.txt [valid.txt] --test test.txt
    python benchmarks/ditto_to_ozon.py OUT --train test.txt --split 0.3     # one file, split here
    python benchmarks/ditto_to_ozon.py OUT --baselines                      # on a folder made so

Ditto's files (github.com/megagonlabs/ditto, `data/`) hold one labelled pair a line:
`COL title VAL ... COL price VAL ...<TAB>COL title VAL ...<TAB>1`. A record is a listing, known by
its text (the same text on one side is the same listing): the first field is its `name`, the
other fields joined its `description` (and, with `--attributes`, each of them an attribute in
`attributes.parquet` too). Written: `OUT/data/{train,text_and_bert,images_embed}.parquet` and
`OUT/test.parquet` (score it with `matching evaluate --pairs OUT/test.parquet`).

The vectors are stand-ins: TF-IDF of character 2-4-grams reduced by SVD to 64 values (the name,
`name_bert_64`) and 128 (the description, or the name where there is none, as the "picture"), the
way the WDC computers folder carries a sentence model's vectors of the same two texts. They are
weaker than a sentence model's; the pair features read the text itself.

`--baselines` prints two simple models' test AP / F1 on such a folder: the cosine of the two name
vectors, and gradient-boosted trees on five similarities of the names (character-3-gram and word
TF-IDF cosines, word Jaccard, agreement of the words with digits, both having such words), and of
the descriptions where there are any. Their F1 threshold is the best on 5-fold out-of-fold scores
of the training pairs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

SIDES = (1, 2)
ID_BASE, SIDE_STEP = 400_000_000, 10_000_000  # as the WDC computers folder numbers its offers


def read_pairs(files: list[Path]) -> list[tuple[str, str, int]]:
    """(left record, right record, label) of every whole line; a line cut short (a file copied
    in part) is skipped."""
    pairs = []
    for path in files:
        for line in path.read_text(encoding="utf-8").split("\n"):
            fields = line.split("\t")
            if len(fields) == 3 and fields[2] in ("0", "1"):
                pairs.append((fields[0], fields[1], int(fields[2])))
    return pairs


def record_fields(record: str) -> dict[str, str]:
    """`COL a VAL x COL b VAL y` -> {a: x, b: y}, values stripped."""
    parts = re.split(r"COL (\S+) VAL ?", record.strip())
    return {key: value.strip() for key, value in zip(parts[1::2], parts[2::2], strict=True)}


def convert(
    out: Path,
    train: list[tuple[str, str, int]],
    test: list[tuple[str, str, int]],
    attributes: bool = False,
) -> str:
    ids: dict[tuple[int, str], int] = {}

    def variantid(side: int, record: str) -> int:
        key = (side, record)
        if key not in ids:
            ids[key] = ID_BASE + side * SIDE_STEP + len(ids)
        return ids[key]

    def frame(pairs: list[tuple[str, str, int]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "variantid1": [variantid(1, left) for left, _, _ in pairs],
                "variantid2": [variantid(2, right) for _, right, _ in pairs],
                "target": [float(label) for _, _, label in pairs],
            }
        )

    train_pairs, test_pairs = frame(train), frame(test)
    names, descriptions, mappings = [], [], []
    for _, record in ids:
        fields = record_fields(record)
        values = list(fields.values())
        names.append(values[0] if values else "")
        rest = {k: v for k, v in list(fields.items())[1:] if v and v.lower() != "nan"}
        descriptions.append(" ".join(rest.values()))
        mappings.append(json.dumps({k: [v] for k, v in rest.items()}, ensure_ascii=False))
    listing_ids = list(ids.values())
    name_vectors = stand_in_vectors(names, 64)
    second = [d or n for d, n in zip(descriptions, names, strict=True)]
    picture_vectors = stand_in_vectors(second, 128)
    (out / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "variantid": listing_ids,
            "name": names,
            "description": descriptions,
            "name_bert_64": list(name_vectors),
        }
    ).to_parquet(out / "data" / "text_and_bert.parquet")
    pd.DataFrame(
        {"variantid": listing_ids, "main_pic_embeddings_resnet_v1": [[v] for v in picture_vectors]}
    ).to_parquet(out / "data" / "images_embed.parquet")
    if attributes:
        pd.DataFrame(
            {"variantid": listing_ids, "characteristic_attributes_mapping": mappings}
        ).to_parquet(out / "data" / "attributes.parquet")
    train_pairs.to_parquet(out / "data" / "train.parquet")
    test_pairs.to_parquet(out / "test.parquet")
    return (
        f"{out}: {len(ids):,} listings; train {len(train_pairs):,} pairs "
        f"({int(train_pairs.target.sum()):,} matches), test {len(test_pairs):,} "
        f"({int(test_pairs.target.sum()):,})"
    )


def stand_in_vectors(texts: list[str], dim: int) -> np.ndarray:
    """(len(texts), dim) float32: TF-IDF of character 2-4-grams, reduced by SVD (zero-padded where
    the texts have fewer terms than `dim`)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    counts = tfidf.fit_transform(texts)
    width = min(dim, counts.shape[1] - 1)
    reduced = TruncatedSVD(width, random_state=0).fit_transform(counts)
    return np.pad(reduced, ((0, 0), (0, dim - width))).astype(np.float32)


def baselines(folder: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.model_selection import cross_val_predict

    from matching_cli.model.metrics import best_f1_threshold

    text = pd.read_parquet(folder / "data" / "text_and_bert.parquet").set_index("variantid")
    train = pd.read_parquet(folder / "data" / "train.parquet")
    test = pd.read_parquet(folder / "test.parquet")
    columns = ["name"] + (["description"] if text["description"].str.len().gt(0).any() else [])
    x_train, x_test = (
        np.hstack([similarities(text, column, pairs) for column in columns])
        for pairs in (train, test)
    )
    vectors = np.stack(text["name_bert_64"].to_numpy())
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    row = {v: i for i, v in enumerate(text.index)}

    def cosine(pairs: pd.DataFrame) -> np.ndarray:
        left = vectors[[row[v] for v in pairs.variantid1]]
        return (left * vectors[[row[v] for v in pairs.variantid2]]).sum(axis=1)

    y_train, y_test = train.target.to_numpy(), test.target.to_numpy()

    def report(label: str, fitted: np.ndarray, scores: np.ndarray) -> None:
        f1 = f1_score(y_test, scores >= best_f1_threshold(y_train, fitted))
        print(f"{label}: test AP {average_precision_score(y_test, scores):.3f} F1 {f1:.3f}")

    report("name-vector cosine", cosine(train), cosine(test))
    trees = HistGradientBoostingClassifier(random_state=0)
    out_of_fold = cross_val_predict(trees, x_train, y_train, cv=5, method="predict_proba")[:, 1]
    scores = trees.fit(x_train, y_train).predict_proba(x_test)[:, 1]
    report(f"trees on {x_train.shape[1]} text similarities", out_of_fold, scores)


def similarities(text: pd.DataFrame, column: str, pairs: pd.DataFrame) -> np.ndarray:
    """(len(pairs), 5): TF-IDF cosines of character 3-grams and of words, word Jaccard, Jaccard
    of the words with digits, and whether both texts have such words."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    values = text[column].fillna("")
    left = values.loc[pairs.variantid1].tolist()
    right = values.loc[pairs.variantid2].tolist()
    out = []
    for tfidf in (
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True),
        TfidfVectorizer(token_pattern=r"\w+", sublinear_tf=True),
    ):
        tfidf.fit(values.tolist())
        a, b = tfidf.transform(left), tfidf.transform(right)
        out.append(np.asarray(a.multiply(b).sum(axis=1)).ravel())
    words = [
        (set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower())))
        for a, b in zip(left, right, strict=True)
    ]
    coded = [
        ({w for w in a if re.search(r"\d", w)}, {w for w in b if re.search(r"\d", w)})
        for a, b in words
    ]
    out.append([len(a & b) / max(1, len(a | b)) for a, b in words])
    out.append([len(a & b) / max(1, len(a | b)) for a, b in coded])
    out.append([float(bool(a) and bool(b)) for a, b in coded])
    return np.column_stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the catalogue folder to write (or read)")
    parser.add_argument("--train", type=Path, nargs="+", help="Ditto pair files to train on")
    parser.add_argument(
        "--test", type=Path, nargs="*", default=[], help="Ditto pair files to test on"
    )
    parser.add_argument("--split", type=float, default=0.3, help="without --test: share tested")
    parser.add_argument("--seed", type=int, default=0, help="without --test: the split's seed")
    parser.add_argument(
        "--attributes", action="store_true", help="the fields after the first as attributes too"
    )
    parser.add_argument("--baselines", action="store_true", help="print the simple baselines")
    args = parser.parse_args()
    if args.train:
        train, test = read_pairs(args.train), read_pairs(args.test)
        if not test:
            order = np.random.default_rng(args.seed).permutation(len(train))
            tested = int(len(train) * args.split)
            test = [train[i] for i in order[:tested]]
            train = [train[i] for i in order[tested:]]
        print(convert(args.out, train, test, args.attributes))
    if args.baselines:
        baselines(args.out)


if __name__ == "__main__":
    main()
