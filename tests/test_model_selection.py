"""FewShotSplit and few-shot draws: k per class to train, the rest to validate."""

import numpy as np
import pytest
from sklearn.model_selection import (
    GridSearchCV,
    cross_val_score,
)

from sklearn_clip import (
    FewShotSplit,
    GDAClassifier,
)


# -- FewShotSplit --------------------------------------------------------------
def test_few_shot_split_draws_k_per_class_and_validates_on_the_rest():
    y = np.repeat(["a", "b", "c"], [5, 6, 7])
    cv = FewShotSplit(n_shots=2, n_splits=3, random_state=0)
    splits = list(cv.split(np.zeros(len(y)), y))
    assert len(splits) == cv.get_n_splits() == 3
    for train, valid in splits:
        assert sorted(np.unique(y[train], return_counts=True)[1]) == [2, 2, 2]
        assert np.intersect1d(train, valid).size == 0
        assert np.union1d(train, valid).size == len(y)
    assert not np.array_equal(splits[0][0], splits[1][0])
    again = list(FewShotSplit(2, 3, random_state=0).split(None, y))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again))


def test_few_shot_split_names_classes_too_small_to_validate():
    with pytest.raises(ValueError, match=r"\['b'\]"):
        list(FewShotSplit(n_shots=2).split(None, ["a", "a", "a", "b", "b"]))


def test_grid_search_with_few_shot_split_on_real_features(cars_shots):
    shots, X_test, y_test, _ = cars_shots
    X, y = shots(4)
    candidates = [0.05, 0.4, 0.9]
    split = FewShotSplit(n_shots=2, n_splits=2, random_state=0)
    search = GridSearchCV(GDAClassifier(), {"shrinkage": candidates}, cv=split)
    search.fit(X, y)
    by_hand = [
        cross_val_score(GDAClassifier(shrinkage=s), X, y, cv=split).mean()
        for s in candidates
    ]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], by_hand)
    assert search.best_params_["shrinkage"] == candidates[int(np.argmax(by_hand))]
    assert np.std(by_hand) > 0
    assert search.score(X_test, y_test) > 0.4
