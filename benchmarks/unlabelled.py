"""Fit time of TransCLIPClassifier: thousands of unlabelled images, hundreds
of classes, idle and beside busy processes.

Cases (real stanford_cars CLIP ViT-B/32 features; 5,000 unlabelled rows are
the test split, the training pool and the start of the test split again):

- zero-shot, no label at all (``classes`` given): mixture + new-image weight;
- zero-shot prior with 4 labelled images per class: + the fallback check;
- Tip-Adapter-F with 4 labelled images per class: + its fits in the check;
- 1,000 classes with 2 unlabelled images each (random unit vectors and
  random class text: timing only), zero-shot prior.

    python benchmarks/unlabelled.py            # idle, median of 3
    python benchmarks/unlabelled.py --load 2   # and beside 2 busy processes

Prints a Markdown table of fit seconds (median of ``--repeats``, the cases
interleaved).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from sklearn_clip import (
    TipAdapterClassifier,
    TransCLIPClassifier,
    ZeroShotClassifier,
    few_shot_indices,
)
from sklearn_clip._bench import busy_torch_processes, machine
from sklearn_clip._datasets import load_features

DEFAULT_FEATURES = (
    Path(__file__).resolve().parents[2]
    / "shared/data/features/clip-vit-b32/stanford_cars.npz"
)


def cases(features):
    data = load_features(features)
    text, n_classes = data["text_features"], len(data["text_features"])
    unlabelled = np.vstack([data["X_test"], data["X_train"], data["X_test"]])[:5000]
    shots = few_shot_indices(data["y_train"], 4, random_state=0)
    X_shots, y_shots = data["X_train"][shots], data["y_train"][shots]
    X = np.vstack([X_shots, unlabelled])
    y = np.r_[y_shots, np.full(len(unlabelled), -1)]
    zero_shot = ZeroShotClassifier(text_features=text)
    tip_adapter_f = TipAdapterClassifier(
        text_features=text, fine_tune=True, random_state=0
    )
    rng = np.random.default_rng(0)
    random_rows = rng.normal(size=(2000, 512))
    random_rows /= np.linalg.norm(random_rows, axis=1, keepdims=True)
    random_text = rng.normal(size=(1000, 512))
    random_text /= np.linalg.norm(random_text, axis=1, keepdims=True)
    return {
        f"zero-shot, 5,000 unlabelled, {n_classes} classes, no label": (
            TransCLIPClassifier(zero_shot, classes=np.arange(n_classes)),
            unlabelled,
            np.full(len(unlabelled), -1),
        ),
        "zero-shot, + 4 labelled per class": (
            TransCLIPClassifier(zero_shot, random_state=0),
            X,
            y,
        ),
        "Tip-Adapter-F, + 4 labelled per class": (
            TransCLIPClassifier(tip_adapter_f, random_state=0),
            X,
            y,
        ),
        "zero-shot, 1,000 classes x 2 unlabelled (random)": (
            TransCLIPClassifier(
                ZeroShotClassifier(text_features=random_text), classes=np.arange(1000)
            ),
            random_rows,
            np.full(len(random_rows), -1),
        ),
    }


def measure(all_cases, repeats):
    seconds = {name: [] for name in all_cases}
    for _ in range(repeats):
        for name, (estimator, X, y) in all_cases.items():  # interleaved
            start = time.perf_counter()
            estimator.fit(X, y)
            seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", default=str(DEFAULT_FEATURES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy torch processes")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.load < 0:
        parser.error("--repeats must be >= 1 and --load >= 0")
    warnings.filterwarnings("ignore", category=UserWarning)
    all_cases = cases(args.features)
    idle = measure(all_cases, args.repeats)
    loaded = {}
    if args.load:
        with busy_torch_processes(args.load):
            loaded = measure(all_cases, args.repeats)
    header = "| case | fit (s), idle |"
    if loaded:
        header += f" beside {args.load} busy processes (s) |"
    print(f"\nTransCLIPClassifier fit time, median of {args.repeats}, {machine()}\n")
    print(header)
    print("|---" * (3 if loaded else 2) + "|")
    for name in all_cases:
        row = f"| {name} | {idle[name]:.2f} |"
        if loaded:
            row += f" {loaded[name]:.2f} ({loaded[name] / idle[name]:.1f}x) |"
        print(row)


if __name__ == "__main__":
    main()
