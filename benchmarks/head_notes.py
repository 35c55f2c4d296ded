"""Figures the README and the user guide quote about the heads, outside the
bench tables: each section prints the numbers one sentence cites.

    python benchmarks/head_notes.py                   # every section, ~1 min
    python benchmarks/head_notes.py --only class-weight

Sections:

``class-weight``
    ``class_weight="balanced"`` on a 10:1 imbalanced draw of 20 stanford_cars
    classes (ten with 10 training images, ten with 1; test: those classes'
    test images): balanced accuracy without and with it, per trained head
    (README, "Weights, imbalance, threads"; ``tests/test_heads.py`` asserts
    the gain of the first three).
``adapter-start``
    CLIP-Adapter with BatchNorm before training (its BatchNorm statistics
    fitted on one shot per class, its weights as initialised: ``lr=1e-12``)
    against zero-shot, stanford_cars test split (README, "Trainable heads";
    ``CLIPAdapterClassifier``'s docstring; user guide, "Choosing a method").
``adapter-new-classes``
    CLIP-Adapter fitted on the even-numbered half of stanford_cars' classes
    at 4 shots and scored on the odd-numbered half's test images through
    ``with_classes``, with and without BatchNorm, against zero-shot on the
    same images (user guide, "Choosing a method").

Nothing here chooses a setting: these are the defaults' figures.
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    ZSLinearProbeClassifier,
    few_shot_indices,
)
from sklearn_clip._bench import machine
from sklearn_clip._datasets import load_features

FEATURES = Path(__file__).resolve().parents[2] / "shared/data/features/clip-vit-b32"


def class_weight(cars):
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [
            rng.choice(
                np.flatnonzero(cars["y_train"] == c), 10 if c < 10 else 1, replace=False
            )
            for c in range(20)
        ]
    )
    X, y = cars["X_train"][rows], cars["y_train"][rows]
    test = cars["y_test"] < 20
    text = cars["text_features"][:20]
    heads = {
        "linear probe": lambda: LinearProbeClassifier(),
        "attention probe": lambda: AttentionProbeClassifier(text_features=text),
        "CLIP-Adapter": lambda: CLIPAdapterClassifier(text_features=text),
        "ZS linear probe": lambda: ZSLinearProbeClassifier(text_features=text),
        "Tip-Adapter-F": lambda: TipAdapterClassifier(
            text_features=text, fine_tune=True
        ),
    }
    print("\n## class_weight on a 10:1 imbalanced draw (20 stanford_cars classes)\n")
    print("| head | balanced accuracy, None (%) | 'balanced' (%) | change |")
    print("|---|---|---|---|")
    for name, make in heads.items():
        scores = [
            100
            * balanced_accuracy_score(
                cars["y_test"][test],
                make()
                .set_params(class_weight=weight, device="cpu", random_state=0)
                .fit(X, y)
                .predict(cars["X_test"][test]),
            )
            for weight in (None, "balanced")
        ]
        print(
            f"| {name} | {scores[0]:.2f} | {scores[1]:.2f} | "
            f"{scores[1] - scores[0]:+.2f} |"
        )


def adapter_start(cars):
    text = cars["text_features"]
    train = few_shot_indices(cars["y_train"], 1, random_state=0)
    X, y = cars["X_train"][train], cars["y_train"][train]
    X_test, y_test = cars["X_test"], cars["y_test"]
    zero_shot = ZeroShotClassifier(text_features=text).fit(X, y).score(X_test, y_test)
    untrained = CLIPAdapterClassifier(
        text_features=text, lr=1e-12, device="cpu", random_state=0
    ).fit(X, y)
    trained = CLIPAdapterClassifier(
        text_features=text, device="cpu", random_state=0
    ).fit(X, y)
    print("\n## CLIP-Adapter (BatchNorm) before training, stanford_cars, 1 shot\n")
    print("| model | test accuracy (%) |")
    print("|---|---|")
    print(f"| zero-shot | {100 * zero_shot:.2f} |")
    print(
        "| CLIP-Adapter, weights as initialised (lr=1e-12) | "
        f"{100 * untrained.score(X_test, y_test):.2f} |"
    )
    print(f"| CLIP-Adapter, defaults | {100 * trained.score(X_test, y_test):.2f} |")


def adapter_new_classes(cars):
    text = cars["text_features"]
    train = few_shot_indices(cars["y_train"], 4, random_state=0)
    train = train[cars["y_train"][train] % 2 == 0]  # the even-numbered classes
    X, y = cars["X_train"][train], cars["y_train"][train]
    fitted = np.unique(y)
    new_classes = np.setdiff1d(np.arange(len(text)), fitted)
    new = np.isin(cars["y_test"], new_classes)
    X_new, y_new = cars["X_test"][new], cars["y_test"][new]
    new_text = text[new_classes]
    zero_shot = np.mean(new_classes[(X_new @ new_text.T).argmax(axis=1)] == y_new)
    print(
        "\n## CLIP-Adapter on new classes: fitted on the even-numbered half of "
        "stanford_cars' classes at 4 shots, scored on the odd-numbered half\n"
    )
    print("| model | test accuracy on the new classes (%) |")
    print("|---|---|")
    print(f"| zero-shot | {100 * zero_shot:.2f} |")
    for batch_norm in (True, False):
        clf = CLIPAdapterClassifier(
            text_features=text[fitted],
            batch_norm=batch_norm,
            device="cpu",
            random_state=0,
        ).fit(X, y)
        moved = clf.with_classes(new_classes, text_features=new_text)
        accuracy = np.mean(moved.predict(X_new) == y_new)
        print(f"| CLIP-Adapter, batch_norm={batch_norm} | {100 * accuracy:.2f} |")


SECTIONS = {
    "class-weight": class_weight,
    "adapter-start": adapter_start,
    "adapter-new-classes": adapter_new_classes,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS)
    )
    args = parser.parse_args()
    cars = load_features(FEATURES / "stanford_cars.npz")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could represent a regression")
        for name in args.only:
            SECTIONS[name](cars)
    print(f"\nMachine: {machine()}")


if __name__ == "__main__":
    main()
