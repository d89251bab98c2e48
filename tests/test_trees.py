"""The array export of scikit-learn's boosted trees predicts what scikit-learn predicts."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from matching_cli.model.trees import TreeEnsemble, TreeSettings, export, fit


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """OpenMP's spinning threads crawl when the suite shares the CPUs (10 s instead of 0.2 s)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] + np.abs(x[:, 1]) + rng.normal(size=n) > 0.8).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan  # exercises the missing-value branch
    return x, y


def test_export_reproduces_predict_proba_after_save(tmp_path):
    x, y = data(2000, 0)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(x, y)
    trees = export(model)
    trees.save(tmp_path)
    loaded = TreeEnsemble.load(tmp_path)
    x_new, _ = data(3000, 1)
    expected = model.predict_proba(x_new)[:, 1]
    np.testing.assert_allclose(loaded.predict_proba(x_new), expected, atol=1e-6, rtol=0)
    assert len(loaded.roots) == 60 and not (tmp_path / "trees.pkl").exists()


def test_fit_learns_the_signal():
    x, y = data(2000, 2)
    trees = fit(x, y, TreeSettings(max_iter=50))
    x_new, y_new = data(2000, 3)
    accuracy = ((trees.predict_proba(x_new) > 0.5) == y_new).mean()
    majority = max(y_new.mean(), 1 - y_new.mean())
    assert accuracy > majority + 0.1


def test_staged_scores_are_scikit_learns():
    x, y = data(1500, 4)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    stages = np.array([1, 2, 17, 30])
    expected = np.array(list(model.staged_decision_function(x)))[stages - 1]
    staged = export(model).staged_raw_scores(x, stages, batch_rows=600)  # batches cut the rows
    np.testing.assert_allclose(staged, expected, atol=1e-9, rtol=0)
