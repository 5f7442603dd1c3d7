import numpy as np
import pytest

from aigrid.rightsize.tree_ensemble import TreeEnsemble


def test_a_hand_built_tree_walks_to_the_right_leaf():
    # one tree: x0 <= 0.5 ? (x1 <= 2 ? 1 : 2) : 3; padded node 5 is never reached
    t = TreeEnsemble(feature=np.array([[0, 1, 0, 0, 0, 0]], np.int32),
                     threshold=np.array([[0.5, 2.0, 0, 0, 0, 0]]), left=np.array([[1, 2, 0, 0, 0, 0]], np.int32),
                     right=np.array([[4, 3, 0, 0, 0, 0]], np.int32), value=np.array([[0, 0, 1.0, 2.0, 3.0, 9.0]]),
                     leaf=np.array([[False, False, True, True, True, True]]),
                     missing_left=np.array([[True, False, False, False, False, False]]), base=10.0, depth=2)
    assert t.predict(np.array([0.1, 1.0], np.float32)) == 11.0
    assert t.predict(np.array([0.1, 5.0], np.float32)) == 12.0
    assert t.predict(np.array([0.9, 0.0], np.float32)) == 13.0
    assert t.predict(np.array([np.nan, 0.0], np.float32)) == 11.0  # missing goes left at the root


def test_exported_scikit_learn_model_predicts_the_same():
    ensemble = pytest.importorskip("sklearn.ensemble")
    rng = np.random.default_rng(0)
    x = rng.random((2000, 6)).astype(np.float32)
    y = 2 * x[:, 0] + np.sin(5 * x[:, 1]) + rng.normal(0, 0.1, 2000)
    model = ensemble.HistGradientBoostingRegressor(max_iter=40, max_depth=3, early_stopping=False,
                                                   random_state=0).fit(x, y)
    t = TreeEnsemble.from_sklearn(model)
    ours = np.array([t.predict(row) for row in x[:100]])
    assert np.abs(ours - model.predict(x[:100])).max() < 1e-9
    z = t.arrays("h")
    assert TreeEnsemble.from_arrays(z, "h").predict(x[0]) == t.predict(x[0])
