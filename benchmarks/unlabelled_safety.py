"""How TransCLIPClassifier's safety rule and mixture settings were chosen:
validation pools only, never a test split.

Every case below fits the estimator alone and wrapped in
``TransCLIPClassifier`` on the same labelled draw and scores both on rows
whose labels no fit sees, none of them from a test split:

- ``pool``: the labelled shots and, unlabelled, the rest of the stanford_cars
  training pool or the validation split of an image-only set; scored on
  those unlabelled rows (transductive).
- ``2 per class``: the same with only 2 unlabelled rows per class (a set
  with many classes and few images each).
- ``wrong pool``: the unlabelled rows are another set's training pool
  (cars <-> pets, caltech101 <-> flowers); scored inductively on the
  validation rows (cars: the pool rows not drawn).
- ``90 % one class``: 900 noisy copies of one class's validation rows plus
  100 rows of the others, unlabelled; the change of the big class or of
  the others together, whichever is worse.
- ``zero-shot``: stanford_cars, no label, the training pool to classify.

Priors: ``GDAClassifier(text_features=...)`` on stanford_cars (the class
text exists), ``LogisticRegression(C=10)`` on the image-only sets.

    python benchmarks/unlabelled_safety.py --seeds 3
    python benchmarks/unlabelled_safety.py --set class_proportions=balanced

Prints one Markdown row per case: points gained by the unlabelled images
(mean over draws; worst draw in brackets).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from sklearn_clip import (
    GDAClassifier,
    TransCLIPClassifier,
    ZeroShotClassifier,
    _transclip,
    few_shot_indices,
)
from sklearn_clip._datasets import load_features

FEATURES = Path(__file__).resolve().parents[2] / "shared/data/features/clip-vit-b32"
SETS = ("stanford_cars", "oxford_pets", "oxford_flowers", "caltech101")
WRONG = {
    "stanford_cars": "oxford_pets",
    "oxford_pets": "stanford_cars",
    "caltech101": "oxford_flowers",
    "oxford_flowers": "caltech101",
}


def base_for(data):
    if data.get("text_features") is not None:
        return GDAClassifier(text_features=data["text_features"])
    return LogisticRegression(C=10, max_iter=1000)


def split(data, n_shots, seed):
    """Labelled shots, and validation rows (X, y) no fit labels."""
    train = few_shot_indices(data["y_train"], n_shots, random_state=seed)
    X, y = data["X_train"][train], data["y_train"][train]
    if data.get("X_val") is not None:
        return X, y, data["X_val"], data["y_val"]
    rest = np.setdiff1d(np.arange(len(data["y_train"])), train)
    return X, y, data["X_train"][rest], data["y_train"][rest]


def hidden(X, y, X_unlabelled):
    return np.vstack([X, X_unlabelled]), np.r_[y, np.full(len(X_unlabelled), -1)]


def gain_transductive(wrapped, base, X, y, X_pool, y_pool):
    alone = clone(base).fit(X, y).predict(X_pool)
    clf = clone(wrapped).fit(*hidden(X, y, X_pool))
    labels = clf.transduction_[len(y) :]
    return np.mean(labels == y_pool) - np.mean(alone == y_pool), clf, alone, labels


def run_case(case, name, data, sets, wrapped, n_shots, seed, rng):
    base = base_for(data)
    wrapped = clone(wrapped).set_params(estimator=base)
    if n_shots:
        X, y, X_val, y_val = split(data, n_shots, seed)
    if case == "pool":
        return gain_transductive(wrapped, base, X, y, X_val, y_val)[:2]
    if case == "2 per class":
        rows = few_shot_indices(y_val, 2, random_state=seed)
        return gain_transductive(wrapped, base, X, y, X_val[rows], y_val[rows])[:2]
    if case == "wrong pool":
        other = sets[WRONG[name]]["X_train"]
        clf = clone(wrapped).fit(*hidden(X, y, other))
        alone = clone(base).fit(X, y).score(X_val, y_val)
        return clf.score(X_val, y_val) - alone, clf
    if case == "90 % one class":
        big = rng.integers(len(np.unique(y_val)))
        rows_big = np.flatnonzero(y_val == big)
        copies = rng.choice(rows_big, 900)
        noise = 0.01 * rng.normal(size=(900, X_val.shape[1]))
        others = rng.choice(np.flatnonzero(y_val != big), 100, replace=False)
        X_pool = np.vstack([X_val[copies] + noise, X_val[others]])
        y_pool = np.r_[y_val[copies], y_val[others]]
        _, clf, alone, labels = gain_transductive(wrapped, base, X, y, X_pool, y_pool)
        # The big class, and the other classes together (one row of a class
        # is no measure of it).
        worst = min(
            np.mean(labels[rows] == y_pool[rows]) - np.mean(alone[rows] == y_pool[rows])
            for rows in (y_pool == big, y_pool != big)
        )
        return worst, clf
    if case == "zero-shot":
        text = data["text_features"]
        zero_shot = ZeroShotClassifier(text_features=text)
        classes = np.arange(len(text))
        clf = clone(wrapped).set_params(estimator=zero_shot, classes=classes)
        X_pool, y_pool = data["X_train"], data["y_train"]
        clf.fit(X_pool, np.full(len(X_pool), -1))
        alone = zero_shot.fit(text, classes).predict(X_pool)
        gain = np.mean(clf.transduction_ == y_pool) - np.mean(alone == y_pool)
        return gain, clf
    raise ValueError(case)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["pool", "2 per class", "wrong pool", "90 % one class", "zero-shot"],
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="PARAM=VALUE of TransCLIPClassifier, or _CONSTANT=VALUE of its module",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    wrapped = TransCLIPClassifier(random_state=0)
    for setting in args.set:
        key, value = setting.split("=")
        try:
            value = float(value) if "." in value else int(value)
        except ValueError:
            pass
        if key.startswith("_"):
            setattr(_transclip, key, value)
        else:
            wrapped.set_params(**{key: value})
    sets = {name: load_features(FEATURES / f"{name}.npz") for name in SETS}
    print(f"settings: {args.set or 'defaults'}; {args.seeds} draw(s)\n")
    print("| set | case | shots | gain (points), mean [worst] | uses | s |")
    print("|---|---|---|---|---|---|")
    for name in args.sets:
        for case in args.cases:
            if case == "zero-shot" and sets[name].get("text_features") is None:
                continue
            for n_shots in [0] if case == "zero-shot" else args.shots:
                gains, uses, start = [], [], time.perf_counter()
                for seed in range(args.seeds):
                    rng = np.random.default_rng(seed)
                    gain, clf = run_case(
                        case, name, sets[name], sets, wrapped, n_shots, seed, rng
                    )
                    gains.append(100 * gain)
                    uses.append(clf.safety_["uses_unlabelled"])
                seconds = (time.perf_counter() - start) / args.seeds
                print(
                    f"| {name} | {case} | {n_shots} | {np.mean(gains):+.2f} "
                    f"[{min(gains):+.2f}] | {sum(uses)}/{len(uses)} | {seconds:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
