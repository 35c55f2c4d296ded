"""Sweeps on the TEST split: upper bounds that choose nothing.

Every number here is the best of many settings judged on the test split, so
it overstates what any method would reach in use. The package's defaults are
never taken from this script (they come from held-out training-pool images,
``held_out.py``); the README cites these maxima only to show how far the
defaults are from what any setting of a method could reach.

    python benchmarks/test_split_upper_bounds.py            # ~5 min on 2 CPU cores

Prints, per sweep, the best test accuracy and its setting next to the
default's test accuracy, on the same training draw.
"""

import argparse
import itertools
import time
import warnings
from pathlib import Path

from sklearn_clip import (
    GDAClassifier,
    TipAdapterClassifier,
    ZSLinearProbeClassifier,
    few_shot_indices,
)
from sklearn_clip._datasets import load_features

FEATURES = Path(__file__).resolve().parents[2] / "shared/data/features/clip-vit-b32"

# name -> (data set, estimator factory(text, **setting), {parameter: values})
SWEEPS = {
    "GDA + zero-shot, stanford_cars": (
        "stanford_cars",
        lambda text, **p: GDAClassifier(text_features=text, **p),
        {
            "shrinkage": [0.05, 0.2, 0.4, 0.6],
            "discriminant_weight": [1.0, 2.0, 4.0, 8.0, 16.0],
        },
    ),
    "ZS linear probe, stanford_cars": (
        "stanford_cars",
        lambda text, **p: ZSLinearProbeClassifier(
            text_features=text, device="cpu", random_state=0, **p
        ),
        {"alpha": [0.001, 0.003, 0.01, 0.03], "max_epochs": [5, 10, 20, 40]},
    ),
    "Tip-Adapter-F, stanford_cars": (
        "stanford_cars",
        lambda text, **p: TipAdapterClassifier(
            text_features=text, fine_tune=True, device="cpu", random_state=0, **p
        ),
        {"cache_weight": [0.5, 1.0, 2.0], "sharpness": [3.0, 5.5, 8.0, 12.0]},
    ),
    "GDA image-only, caltech101": (
        "caltech101",
        lambda text, **p: GDAClassifier(**p),
        {"shrinkage": [0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95]},
    ),
}


def sweep(name, shots):
    dataset_name, make, grid = SWEEPS[name]
    data = load_features(FEATURES / f"{dataset_name}.npz")
    train = few_shot_indices(data["y_train"], shots, random_state=0)
    X, y = data["X_train"][train], data["y_train"][train]
    text = data["text_features"]

    def score(**setting):
        return make(text, **setting).fit(X, y).score(data["X_test"], data["y_test"])

    default = score()
    results = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        results.append((score(**setting), setting))
    best, setting = max(results, key=lambda r: r[0])
    return default, best, setting, len(results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument(
        "--sweeps", nargs="+", choices=list(SWEEPS), default=list(SWEEPS)
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(
        f"\n## Test-split sweeps at {args.shots} shots: UPPER BOUNDS (choose nothing)\n"
    )
    print("| sweep | default (test %) | best on test (test %) | setting | tried | s |")
    print("|---|---|---|---|---|---|")
    for name in args.sweeps:
        start = time.perf_counter()
        default, best, setting, n = sweep(name, args.shots)
        shown = ", ".join(f"{k}={v}" for k, v in setting.items())
        print(
            f"| {name} | {100 * default:.2f} | {100 * best:.2f} | {shown} | {n} | "
            f"{time.perf_counter() - start:.0f} |"
        )


if __name__ == "__main__":
    main()
