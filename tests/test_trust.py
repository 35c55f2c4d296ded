"""Calibration error, reliability curves, abstention curves, and the bench's
tables and plot of them."""

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss

from sklearn_clip import (
    ZeroShotClassifier,
    abstention_curve,
    expected_calibration_error,
    reliability_curve,
)
from sklearn_clip._cli import main
from sklearn_clip._trust import log_loss_of

from .conftest import FEATURES, _require


def _sampled(n, n_classes, sharpen, seed=0):
    """Probabilities and labels drawn from them (calibrated by construction),
    then reported with their logits scaled by ``sharpen``."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(n, n_classes))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(n_classes, p=p) for p in proba])
    shown = np.exp(sharpen * logits)
    return y, shown / shown.sum(axis=1, keepdims=True)


def test_calibrated_probabilities_have_a_small_error_and_sharpened_ones_not():
    y, calibrated = _sampled(20_000, 5, 1.0)
    _, overconfident = _sampled(20_000, 5, 3.0)
    assert expected_calibration_error(y, calibrated) < 0.02
    assert expected_calibration_error(y, overconfident) > 0.1
    confidence, accuracy, count = reliability_curve(y, overconfident)
    filled = count > 100
    assert np.all(accuracy[filled][-3:] < confidence[filled][-3:])
    assert count.sum() == len(y)


def test_error_is_the_count_weighted_gap_of_the_bins_with_labels():
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.3, 0.7], [0.4, 0.6]])
    y = np.array(["b", "a", "b", "a"])
    # Columns are ("a", "b"): the bin of 0.95 has accuracy 1/2 (gap 0.45);
    # 0.7 (right) and 0.6 (wrong) fall in bins of their own (gaps 0.3, 0.6).
    error = expected_calibration_error(y, proba, classes=["a", "b"])
    assert error == pytest.approx((2 * 0.45 + 0.3 + 0.6) / 4)
    # Two bins: one of 0.6-0.7 (accuracy 1/2, confidence 0.65).
    error = expected_calibration_error(y, proba, classes=["a", "b"], n_bins=2)
    assert error == pytest.approx((2 * 0.45 + 2 * 0.15) / 4)
    assert log_loss_of(y, proba, ["a", "b"]) == pytest.approx(
        log_loss(y, proba, labels=["a", "b"])
    )
    with pytest.raises(ValueError, match="classes has 3 entries"):
        expected_calibration_error(y, proba, classes=["a", "b", "c"])


def test_abstention_keeps_the_most_confident_images():
    y, proba = _sampled(1000, 4, 1.0, seed=1)
    accuracy, threshold = abstention_curve(y, proba, fractions=[1.0, 0.5, 0.1])
    top = proba.max(axis=1)
    right = proba.argmax(axis=1) == y
    assert accuracy[0] == pytest.approx(right.mean())
    kept = top >= threshold[1]
    assert kept.sum() == 500 and accuracy[1] == pytest.approx(right[kept].mean())
    assert accuracy[0] < accuracy[1] < accuracy[2]
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        abstention_curve(y, proba, fractions=[0.0])


def test_bench_prints_calibration_and_abstention_and_plots_them(tmp_path, capsys):
    path = _require(FEATURES / "stanford_cars.npz")
    args = ["bench", str(path), "--shots", "1", "2", "--seeds", "1"]
    args += ["--methods", "zero-shot", "GDA", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    data = np.load(path)
    X_test, y_test = data["X_test"].astype(np.float32), data["y_test"]
    text = data["text_features"].astype(np.float32)
    zero_shot = ZeroShotClassifier(text_features=text).fit(text, np.arange(len(text)))
    proba = zero_shot.predict_proba(X_test)
    ece = expected_calibration_error(y_test, proba)
    loss = log_loss(y_test, proba, labels=np.arange(len(text)))
    assert "expected calibration error (15 bins" in printed
    assert f"| zero-shot | {ece:.3f} ± 0.000 / {loss:.2f} |" in printed
    assert "fraction kept, 2 shots" in printed
    kept, _ = abstention_curve(y_test, proba)
    assert "| zero-shot | " + " | ".join(f"{100 * a:.1f}" for a in kept) in printed
    records = json.loads((tmp_path / "stanford_cars.json").read_text())["records"]
    assert all(len(r["abstention"]) == 10 and r["log_loss"] > 0 for r in records)
    assert (tmp_path / "stanford_cars_trust.png").stat().st_size > 10_000
