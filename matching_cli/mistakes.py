"""`evaluate --errors N`: the pairs a model is most sure of and wrong about, with what it saw.

A false match is a non-matching pair scored at or above the threshold, a missed match a matching pair
scored below it; the most confident of each are the highest and the lowest scores. Each row carries
both listings' names (when the data has them) and the model's pair features: what a user reads to
decide what to fix next (a feature, a label, the data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matching_cli.data.layout import TEXT_FILE
from matching_cli.data.readers import open_parquet, read_columns
from matching_cli.data.tables import lookup

FALSE_MATCH, MISSED_MATCH = "false match", "missed match"
# The features shown on screen, when the model reads them (the logged file has all): the name
# similarity, model codes and capacities, attribute and picture agreement say most about a mistake.
TELLING = (
    "name_char_cos",
    "digit_jaccard",
    "unit_conflicts",
    "attr_equal_share",
)
SHOWN_FEATURES = 4
PAIR_COLUMNS = ("kind", "variantid1", "variantid2", "name1", "name2", "target", "score")


def worst_mistakes(
    target: np.ndarray, score: np.ndarray, threshold: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the n most confident false matches (highest scores first) and of the n most
    confident missed matches (lowest scores first)."""
    false = np.flatnonzero((target != 1) & (score >= threshold))
    missed = np.flatnonzero((target == 1) & (score < threshold))
    false = false[np.argsort(-score[false], kind="stable")[:n]]
    missed = missed[np.argsort(score[missed], kind="stable")[:n]]
    return false, missed


def mistakes_table(
    ids: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    target: np.ndarray,
    score: np.ndarray,
    features: np.ndarray,
    feature_names: tuple[str, ...],
    threshold: float,
    n: int,
    data_dir: Path,
) -> pd.DataFrame:
    """One row per mistake: kind, both variantids and names, label, score and every feature column.

    `ids` are the item matrix's variantids; `left`, `right` rows of it; `features` the model's
    columns for these pairs."""
    false, missed = worst_mistakes(target, score, threshold, n)
    chosen = np.concatenate([false, missed])
    first, second = ids[left[chosen]], ids[right[chosen]]
    names = listing_names(data_dir, np.union1d(first, second))
    table = pd.DataFrame(
        {
            "kind": [FALSE_MATCH] * len(false) + [MISSED_MATCH] * len(missed),
            "variantid1": first,
            "variantid2": second,
            "name1": [names.get(int(i)) for i in first],
            "name2": [names.get(int(i)) for i in second],
            "target": target[chosen].astype(np.int64),
            "score": score[chosen].astype(np.float64),
        }
    )
    for column, name in enumerate(feature_names):
        table[name] = features[chosen, column].astype(np.float64)
    return table


def shown_features(table: pd.DataFrame) -> list[str]:
    """The handful of a `mistakes_table`'s feature columns worth a place on screen."""
    feature_names = [c for c in table.columns if c not in PAIR_COLUMNS]
    telling = [name for name in TELLING if name in feature_names]
    rest = [name for name in feature_names if name not in telling and not name.endswith("_missing")]
    return (telling + rest)[:SHOWN_FEATURES]


def listing_names(data_dir: Path, wanted: np.ndarray) -> dict[int, str | None]:
    """variantid -> name of the `wanted` listings, from the data folder's text table (empty when it
    has no such table or no `name` column: the store keeps no names)."""
    path = data_dir / TEXT_FILE
    if not path.is_file():
        return {}
    pf = open_parquet(path)
    if "name" not in pf.schema_arrow.names:
        return {}
    table = read_columns(pf, path, ["variantid", "name"])
    wanted = np.asarray(wanted)  # sorted and unique
    position = lookup(wanted, table.column("variantid").to_numpy())
    inside = np.flatnonzero(position >= 0)
    names = table.column("name").take(inside).to_pylist()
    return {int(wanted[position[row]]): name for row, name in zip(inside, names, strict=True)}
