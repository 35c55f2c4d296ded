"""Coverage and size of conformal prediction sets at few shots, per route.

With k labelled images per class there is no separate calibration set. The
routes measured on each few-shot draw (real CLIP ViT-B/32 features):

- ``zero-shot, split``: zero-shot CLIP learns nothing from the shots, so all
  of them calibrate it (MAPIE's ``SplitConformalClassifier``, prefit);
  sets with class text only;
- ``cross-conformal``: MAPIE's ``CrossConformalClassifier`` over the shots
  (stratified folds, at most 4), scores aggregated as ``"crossval"`` (CV+,
  the rule with a guarantee) and ``"mean"`` (MAPIE's default);
- ``transductive``: :func:`sklearn_clip.transductive_conformal_sets` with
  ``TransCLIPClassifier(estimator)``: each fold's scores are fitted with the
  fold's images and the test images unlabelled (Gazin et al., 2024);
- ``transductive, per class`` (class-conditional), where every class has at
  least 9 labelled images (90 %).

Scores are LAC (``1 - probability``) everywhere. Prints, per data set,
coverage of the test images' true labels (%, mean ± std over draws), mean
set size, and the 10th percentile of per-class coverage where each class
has >= 9 calibration images.

    python benchmarks/conformal.py                          # every set
    python benchmarks/conformal.py --data oxford_pets --estimator CLIPClassifier
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from sklearn_clip import (
    TransCLIPClassifier,
    ZeroShotClassifier,
    few_shot_indices,
    transductive_conformal_sets,
)
from sklearn_clip._bench import METHODS, machine
from sklearn_clip._conformal import min_calibration_per_class
from sklearn_clip._datasets import load_features

FEATURES = Path(__file__).resolve().parents[2] / "shared/data/features/clip-vit-b32"


def _metrics(sets, classes, y_test, confidence):
    """coverage, mean size, 10th percentile of per-class coverage."""
    columns = np.searchsorted(classes, y_test)
    covered = sets[np.arange(len(y_test)), columns]
    per_class = [covered[columns == c].mean() for c in np.unique(columns)]
    return covered.mean(), sets.sum(axis=1).mean(), np.percentile(per_class, 10)


def run_draw(data, estimator_name, n_shots, seed, confidence, max_folds):
    from mapie.classification import CrossConformalClassifier, SplitConformalClassifier

    text = data["text_features"]
    if text is not None:
        text = dict(enumerate(text))  # folds may lack classes
    train = few_shot_indices(data["y_train"], n_shots, random_state=seed)
    X, y = data["X_train"][train], data["y_train"][train]
    X_test, y_test = data["X_test"], data["y_test"]
    classes = np.unique(y)
    folds = StratifiedKFold(min(max_folds, n_shots), shuffle=True, random_state=seed)
    results = {}
    if text is not None:
        zero_shot = ZeroShotClassifier(text_features=text).fit(X, y)
        split = SplitConformalClassifier(
            zero_shot, confidence_level=confidence, prefit=True
        ).conformalize(X, y)
        results["zero-shot, split"] = split.predict_set(X_test)[1][:, :, 0]
    build = METHODS[estimator_name].build
    cross = CrossConformalClassifier(
        build(text), confidence_level=confidence, cv=folds, random_state=seed
    ).fit_conformalize(X, y)
    for aggregate in ("crossval", "mean"):
        sets = cross.predict_set(X_test, agg_scores=aggregate)[1][:, :, 0]
        results[f"cross-conformal ({aggregate})"] = sets
    transductive = TransCLIPClassifier(build(text), random_state=seed)
    results["transductive"] = transductive_conformal_sets(
        transductive,
        X,
        y,
        X_test,
        confidence=confidence,
        cv=max_folds,
        random_state=seed,
    )[0]
    if n_shots >= min_calibration_per_class(confidence):
        results["transductive, per class"] = transductive_conformal_sets(
            transductive,
            X,
            y,
            X_test,
            confidence=confidence,
            cv=max_folds,
            class_conditional=True,
            random_state=seed,
        )[0]
    return {
        route: _metrics(sets, classes, y_test, confidence)
        for route, sets in results.items()
    }


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        nargs="+",
        default=["stanford_cars", "oxford_pets", "caltech101", "oxford_flowers"],
    )
    parser.add_argument("--shots", nargs="+", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--max-folds", type=int, default=4)
    parser.add_argument(
        "--estimator",
        default="auto",
        help="a bench method name; auto: 'GDA + zero-shot' with class text, "
        "CLIPClassifier without",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for name in args.data:
        data = load_features(FEATURES / f"{name}.npz")
        estimator = args.estimator
        if estimator == "auto":
            has_text = data["text_features"] is not None
            estimator = "GDA + zero-shot" if has_text else "CLIPClassifier"
        table = {}
        for n_shots in args.shots:
            for seed in range(args.seeds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    draw = run_draw(
                        data,
                        estimator,
                        n_shots,
                        seed,
                        args.confidence,
                        args.max_folds,
                    )
                for route, values in draw.items():
                    table.setdefault(route, {}).setdefault(n_shots, []).append(values)
        print(
            f"\n## {name}: {args.confidence:.0%} sets, estimator {estimator}: "
            f"coverage (%, mean ± std over {args.seeds} draws) / mean set size "
            f"[10th percentile of per-class coverage, %] ({len(data['y_test'])} test "
            f"images, {len(np.unique(data['y_test']))} classes)\n"
        )
        print("| route | " + " | ".join(f"{n} shots" for n in args.shots) + " |")
        print("|---" * (len(args.shots) + 1) + "|")
        for route, by_shot in table.items():
            cells = []
            for n in args.shots:
                if n not in by_shot:
                    cells.append("-")
                    continue
                values = np.array(by_shot[n])
                coverage = 100 * values[:, 0]
                cell = (
                    f"{coverage.mean():.1f} ± {_std(coverage):.1f} / "
                    f"{values[:, 1].mean():.1f}"
                )
                if n >= min_calibration_per_class(args.confidence):
                    cell += f" [{100 * values[:, 2].mean():.0f}]"
                cells.append(cell)
            print(f"| {route} | " + " | ".join(cells) + " |")
    total = time.perf_counter() - started
    print(f"\nTime: {total // 60:.0f} min {total % 60:.0f} s on {machine()}")


if __name__ == "__main__":
    main()
