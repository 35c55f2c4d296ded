"""ZSLinearProbeClassifier: a probe started at, and pulled towards, zero-shot."""

import numpy as np

from sklearn_clip import (
    LinearProbeClassifier,
    ZeroShotClassifier,
    ZSLinearProbeClassifier,
)

from .conftest import zero_shot_accuracy


# -- ZS linear probe -------------------------------------------------------------------
def test_zs_linear_probe_beats_zero_shot_and_plain_probe(cars_shots):
    shots, X_test, y_test, text = cars_shots
    X, y = shots(2)
    probe = ZSLinearProbeClassifier(text_features=text, device="cpu", random_state=0)
    score = probe.fit(X, y).score(X_test, y_test)
    plain = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    assert score > zero_shot_accuracy(text, X, y, X_test, y_test) + 0.02
    assert score > plain.score(X_test, y_test) + 0.1
    assert probe.coef_.shape == text.shape


def test_zs_linear_probe_with_a_strong_pull_stayszero_shot_accuracy(cars_shots):
    shots, X_test, _, text = cars_shots
    X, y = shots(2)
    probe = ZSLinearProbeClassifier(
        alpha=1e6, text_features=text, device="cpu", random_state=0
    ).fit(X, y)
    np.testing.assert_allclose(probe.coef_, text, atol=1e-3)
    zero_shot = ZeroShotClassifier(text_features=text).fit(X, y)
    agree = (probe.predict(X_test) == zero_shot.predict(X_test)).mean()
    assert agree > 0.99
