"""The array export of scikit-learn's boosted trees predicts what scikit-learn predicts."""

import multiprocessing

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from matching_cli.model import tree_walk
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


def test_a_column_with_no_value_is_never_split_on():
    # Every embedding of a block zero: every cosine missing. scikit-learn 1.9's binning raised
    # "window shape cannot be larger than input array shape" on such a column.
    x, y = data(2000, 2)
    x[:, 3] = np.nan
    trees = fit(x, y, TreeSettings(max_iter=30))
    assert 3 not in set(trees.feature[~trees.is_leaf].tolist())
    x_new, y_new = data(2000, 3)
    accuracy = ((trees.predict_proba(x_new) > 0.5) == y_new).mean()
    assert accuracy > max(y_new.mean(), 1 - y_new.mean()) + 0.1


def test_staged_scores_are_scikit_learns():
    x, y = data(1500, 4)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    stages = np.array([1, 2, 17, 30])
    expected = np.array(list(model.staged_decision_function(x)))[stages - 1]
    trees = export(model)
    staged = trees.staged_raw_scores(x, stages)
    by_numpy = trees.numpy_staged_raw_scores(x, stages, batch_rows=600)  # batches cut the rows
    np.testing.assert_allclose(staged, expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(by_numpy, expected, atol=1e-9, rtol=0)


def test_the_compiled_walk_scores_as_numpy_and_scikit_learn():
    """The installed scikit-learn's compiled walk is taken (this test fails when a new version
    changes it, and scoring falls back to numpy's walk, about twice as slow)."""
    x, y = data(2000, 5)
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    trees = export(model)
    assert trees._compiled_tables is not None
    x_new, _ = data(3000, 6)
    np.testing.assert_allclose(trees.raw_score(x_new), model.decision_function(x_new), atol=1e-9)
    np.testing.assert_allclose(trees.raw_score(x_new), trees.numpy_raw_score(x_new), atol=1e-9)


@pytest.mark.parametrize("change", ["halved leaves", "another signature"])
def test_a_walk_that_disagrees_is_not_used(monkeypatch, caplog, change):
    """A scikit-learn whose compiled walk means something else, or is called otherwise: the probe
    catches it, numpy walks."""
    x, y = data(1000, 7)
    trees = export(HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y))
    walk, record = tree_walk.compiled_walk()

    def other_walk(nodes, rows, raw_bitsets, known_bitsets, f_idx_map, n_threads, out):
        if change == "another signature":
            raise TypeError("other_walk() takes 6 positional arguments but 7 were given")
        walk(nodes, rows, raw_bitsets, known_bitsets, f_idx_map, n_threads, out)
        out *= 2

    monkeypatch.setattr(tree_walk, "compiled_walk", lambda: (other_walk, record))
    assert trees._compiled_tables is None
    assert "walked by numpy" in caplog.text
    np.testing.assert_allclose(trees.raw_score(x), trees.numpy_raw_score(x), atol=0)


def _score_in_child(trees: TreeEnsemble, x: np.ndarray, out) -> None:
    out.put(trees.raw_score(x))


def test_trees_score_in_a_process_forked_after_fitting():
    """Fitting runs an OpenMP team; a team in a process forked after that hangs (GNU OpenMP),
    as `predict`'s and `match`'s scoring workers are: the compiled walk keeps to one thread there
    (it runs on every core in the process that fitted)."""
    x, y = data(20_000, 8)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    # Two threads where the child starts too: it would walk on two without its own rule.
    with threadpool_limits(limits=2, user_api="openmp"):
        trees = fit(x, y, TreeSettings(max_iter=20))
        child = context.Process(
            target=_score_in_child, args=(trees, x[:2000], out)
        )  # 16 KB: fits the pipe
        child.start()
        child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "scoring in a forked process hung"
    np.testing.assert_allclose(out.get(timeout=10), trees.raw_score(x[:2000]), atol=0)
