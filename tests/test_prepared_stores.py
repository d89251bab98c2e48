"""One prepared store per fingerprint: models trained under other split settings each keep theirs,
a model scores from its own store when the raw files are gone, and old stores are pruned."""

from __future__ import annotations

import json
import shutil

from matching_cli.data.prepare import KEEP_STORES, ensure_prepared, prepare, stores
from matching_cli.settings import DataSettings
from tests.conftest import FAST, invoke


def test_models_of_two_split_seeds_score_without_rebuilding_or_raw_files(project, monkeypatch):
    first = invoke("train", *FAST, "--json")
    assert first.exit_code == 0, first.stderr
    monkeypatch.setenv("MATCHING_DATA__SPLIT_SEED", "7")
    second = invoke("train", *FAST, "--json")
    assert second.exit_code == 0, second.stderr
    monkeypatch.delenv("MATCHING_DATA__SPLIT_SEED")
    both = stores(project / "prepared")
    assert len(both) == 2
    written = {p: (p / "items.npy").stat().st_mtime_ns for p in both}

    shutil.copy(project / "data/test.parquet", project / "pairs.parquet")
    shutil.rmtree(project / "data")  # only the prepared stores are left
    for result in (first, second):
        run_id = json.loads(result.stdout)["run_id"]
        scored = invoke("predict", "pairs.parquet", "-o", f"{run_id}.csv", "--run-id", run_id)
        assert scored.exit_code == 0, scored.stderr
        evaluated = invoke("evaluate", "--run-id", run_id, "--json")
        assert evaluated.exit_code == 0, evaluated.stderr
    assert {p: (p / "items.npy").stat().st_mtime_ns for p in both} == written


def test_only_the_most_recently_used_stores_are_kept(project):
    data = DataSettings()
    first = ensure_prepared(data).fingerprint
    made = [first]
    for seed in range(1, KEEP_STORES + 1):
        made.append(prepare(data.model_copy(update={"split_seed": seed}))[0].fingerprint)
        if seed == 1:
            ensure_prepared(data)  # using the first store again keeps it among the recent
    kept = [p.name for p in stores(project / "prepared")]
    assert len(kept) == KEEP_STORES
    assert first in kept and made[1] not in kept
