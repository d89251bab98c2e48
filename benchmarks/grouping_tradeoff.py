"""The grouping threshold's trade-off: pairwise precision / recall and B-cubed of `match`'s groups.

Run `matching match --all-pairs -o OUT` once (every candidate's score is written), then

    python benchmarks/grouping_tradeoff.py OUT --data-dir data [--run-id ID]

re-clusters those pairs at each threshold with the [match] guard and prints, against the data's
truth.parquet, the quality of the groups; and, for the training run's model, the thresholds that
reach given validation precisions (what [match] group_precision picks). Run by hand, not by pytest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from matching_cli import tracking
from matching_cli.data.feature_store import columns_for
from matching_cli.data.layout import TRUTH_FILE
from matching_cli.data.tables import lookup
from matching_cli.loading import load_model_run
from matching_cli.match.clustering import Guard, cluster
from matching_cli.match.files import read_truth
from matching_cli.match.quality import cluster_quality
from matching_cli.model.metrics import best_f1_threshold, precision_threshold
from matching_cli.model.scoring import predict_proba
from matching_cli.model.train import items_to_device, pairs_to_device
from matching_cli.progress import NullReporter
from matching_cli.settings import load_settings

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
PRECISIONS = (0.8, 0.85, 0.9, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a `match --all-pairs` output folder")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--run-id")
    args = parser.parse_args()
    settings = load_settings(None, {"data": {"dir": args.data_dir}})
    tracking.configure(settings.mlflow)
    loaded = load_model_run(settings, args.run_id, NullReporter())
    val = loaded.prepared.splits["val"]
    columns = columns_for(loaded.prepared.feature_names, loaded.feature_names)
    device_val = pairs_to_device(val, loaded.scoring_device, columns)
    items = items_to_device(loaded.prepared.items.matrix, loaded.scoring_device)
    scores = (
        predict_proba(
            loaded.saved.classifier, items, device_val.left, device_val.right, device_val.features
        )
        .cpu()
        .numpy()
    )
    print(f"validation F1 threshold {best_f1_threshold(val.target, scores):.3f}")
    for precision in PRECISIONS:
        found = precision_threshold(val.target, scores, precision)
        print(f"validation precision >= {precision}: threshold {found}")

    ids = loaded.prepared.items.ids
    pairs = pd.read_parquet(args.out / "pairs.parquet")
    left = lookup(ids, pairs["variantid1"].to_numpy())
    right = lookup(ids, pairs["variantid2"].to_numpy())
    score = pairs["score"].to_numpy()
    product = read_truth(args.data_dir / TRUTH_FILE, loaded.prepared.items)
    guard = Guard.of(loaded.settings.match)
    print(
        "| threshold | pairwise precision | pairwise recall | B-cubed P | B-cubed R | B-cubed F1 |"
    )
    print("|---|---|---|---|---|---|")
    for threshold in THRESHOLDS:
        kept = score >= threshold
        labels = cluster(len(ids), left[kept], right[kept], score[kept], guard)
        q = cluster_quality(labels, product)
        print(
            f"| {threshold:.2f} | {q['cluster_pair_precision']:.3f} | "
            f"{q['cluster_pair_recall']:.3f} | {q['bcubed_precision']:.3f} | "
            f"{q['bcubed_recall']:.3f} | {q['bcubed_f1']:.3f} |"
        )


if __name__ == "__main__":
    main()
