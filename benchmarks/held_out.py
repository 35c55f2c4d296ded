"""Where the defaults come from: candidate settings scored on held-out data.

Defaults are chosen without the test split. Two kinds of held-out data:

* ``pool``: stanford_cars has no validation split, so each shot count k
  draws k images per class from the 16-per-class training pool with
  :class:`~sklearn_clip.FewShotSplit` and scores on the remaining 16 - k
  (``sklearn.model_selection.cross_val_score`` per candidate, 3 draws).
* ``val``: the image-only sets (caltech101, oxford_pets, oxford_flowers)
  train on the whole 16-shot pool and score on their validation split.

Training-pool features are averages over 10 augmentations while test
features are single views, so the pool favours settings that fit the
augmented views; the README says where this mattered (CLIP-Adapter).

    python benchmarks/held_out.py                    # every grid, ~3 min on 2 CPU cores
    python benchmarks/held_out.py --grids "GDA + zero-shot discriminant_weight"

Prints one Markdown table per grid (mean held-out accuracy per setting and
shot count; the package default is marked with *).
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import PredefinedSplit, cross_val_score

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    FewShotSplit,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    ZSLinearProbeClassifier,
)
from sklearn_clip._datasets import load_features

FEATURES = Path(__file__).resolve().parents[2] / "shared/data/features/clip-vit-b32"

# name -> (held-out data, estimator factory(text), parameter, candidates, shots);
# the factory's own value of the parameter is the package default. A tuple of
# parameters is searched jointly: each candidate is a tuple of their values.
GRIDS = {
    "GDA + zero-shot discriminant_weight": (
        "pool",
        lambda text: GDAClassifier(discriminant_weight="auto", text_features=text),
        "discriminant_weight",
        [0.06, 0.25, 1.0, 2.0, 4.0, "auto"],
        (1, 2, 4, 8, 12),
    ),
    "ZS linear probe alpha": (
        "pool",
        lambda text: ZSLinearProbeClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        "alpha",
        [0.003, 0.01, 0.03],
        (1, 4, 8, 12),
    ),
    "attention probe lr": (
        "pool",
        lambda text: AttentionProbeClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        "lr",
        [3e-3, 6e-3, 1.2e-2],
        (1, 4, 8, 12),
    ),
    "attention probe max_epochs": (
        "pool",
        lambda text: AttentionProbeClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        "max_epochs",
        [12, 25, 50],
        (1, 4, 8, 12),
    ),
    "ZS linear probe max_epochs": (
        "pool",
        lambda text: ZSLinearProbeClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        "max_epochs",
        [5, 10, 20],
        (1, 4, 8, 12),
    ),
    "Tip-Adapter sharpness": (
        "pool",
        lambda text: TipAdapterClassifier(text_features=text, device="cpu"),
        "sharpness",
        [3.0, 5.5, 8.0],
        (1, 2, 4, 8, 12),
    ),
    "CLIP-Adapter max_epochs": (
        "pool",
        lambda text: CLIPAdapterClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        "max_epochs",
        [15, 30, 60],
        (1, 4, 8, 12),
    ),
    "CLIP-Adapter batch_size, lr, max_epochs": (
        "pool",
        lambda text: CLIPAdapterClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        ("batch_size", "lr", "max_epochs"),
        # The default, then schedules cheaper at 16 shots: half the epochs,
        # or larger batches (faster epochs), or smaller batches with fewer epochs.
        [
            (128, 1e-3, 30),
            (128, 2e-3, 15),
            (256, 1.5e-3, 30),
            (512, 3e-3, 30),
            (64, 1e-3, 15),
            (32, 1e-3, 8),
        ],
        (1, 2, 8, 12),
    ),
    "CLIP-Adapter batch_norm": (
        "pool",
        lambda text: CLIPAdapterClassifier(
            text_features=text, device="cpu", random_state=0
        ),
        "batch_norm",
        [False, True],
        (1, 2, 4, 8, 12),
    ),
    "linear probe max_epochs": (
        "pool",
        lambda text: LinearProbeClassifier(device="cpu", random_state=0),
        "max_epochs",
        [1, 2, 3, 6],
        (1, 4, 8, 12),
    ),
    "Tip-Adapter cache_weight": (
        "pool",
        lambda text: TipAdapterClassifier(text_features=text, device="cpu"),
        "cache_weight",
        [1.0, 2.0, 4.0],
        (1, 2, 4, 8, 12),
    ),
    "Tip-Adapter-F cache_weight": (
        "pool",
        lambda text: TipAdapterClassifier(
            fine_tune=True, text_features=text, device="cpu", random_state=0
        ),
        "cache_weight",
        [1.0, 2.0, 4.0],
        (1, 4, 8, 12),
    ),
    "GDA shrinkage": (
        "val",
        lambda text: GDAClassifier(),
        "shrinkage",
        [0.1, 0.2, 0.4, 0.6],
        (16,),
    ),
}
VAL_SETS = ("caltech101", "oxford_pets", "oxford_flowers")


def held_out_scores(estimator, X, y, param, candidates, cv):
    """Mean held-out accuracy of ``estimator`` with each candidate setting."""
    names = param if isinstance(param, tuple) else (param,)
    scores = []
    for values in candidates:
        values = values if isinstance(param, tuple) else (values,)
        candidate = clone(estimator).set_params(**dict(zip(names, values)))
        scores.append(cross_val_score(candidate, X, y, cv=cv).mean())
    return np.array(scores)


def pool_curve(make, param, candidates, shots, seeds):
    data = load_features(FEATURES / "stanford_cars.npz")
    X, y = data["X_train"], data["y_train"]
    estimator = make(data["text_features"])
    return {
        f"{n_shots} shots": held_out_scores(
            estimator,
            X,
            y,
            param,
            candidates,
            cv=FewShotSplit(n_shots, n_splits=seeds, random_state=0),
        )
        for n_shots in shots
    }


def val_curve(make, param, candidates):
    rows = {}
    for name in VAL_SETS:
        data = load_features(FEATURES / f"{name}.npz")
        n_train = len(data["y_train"])
        X = np.concatenate([data["X_train"], data["X_val"]])
        y = np.concatenate([data["y_train"], data["y_val"]])
        # One split: train on the 16-shot pool, score on the validation split.
        only_split = PredefinedSplit(
            np.r_[np.full(n_train, -1), np.zeros(len(y) - n_train)]
        )
        rows[name] = held_out_scores(make(None), X, y, param, candidates, only_split)
    return rows


def resolved_default(estimator, param):
    """The estimator's value of ``param``, with ``None`` defaults resolved."""
    if isinstance(param, tuple):
        return tuple(resolved_default(estimator, name) for name in param)
    default = estimator.get_params()[param]
    if param == "lr" and default is None:  # the solver's default step size
        default = estimator._default_lr[estimator.solver]
    if param == "cache_weight" and default is None:
        default = estimator._cache_weight()
    return default


def markdown(name, default, candidates, rows):
    header = [
        f"{', '.join(map(str, value)) if isinstance(value, tuple) else value}"
        f"{' *' if value == default else ''}"
        for value in candidates
    ]
    lines = [
        f"### {name}",
        "",
        "| held-out | " + " | ".join(header) + " |",
        "|---" * (len(candidates) + 1) + "|",
    ]
    for label, scores in rows.items():
        best = scores.max()
        cells = [
            f"**{100 * s:.2f}**" if s == best else f"{100 * s:.2f}" for s in scores
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument(
        "--seeds", type=int, default=3, help="few-shot draws per shot count"
    )
    args = parser.parse_args(argv)
    if not FEATURES.is_dir():
        raise SystemExit(f"needs the features in {FEATURES} (see ../shared/data)")
    warnings.filterwarnings("ignore", message=".*fewer than.*")
    for name in args.grids:
        kind, make, param, candidates, shots = GRIDS[name]
        default = resolved_default(make(None), param)
        if kind == "pool":
            rows = pool_curve(make, param, candidates, shots, args.seeds)
        else:
            rows = val_curve(make, param, candidates)
        print(markdown(name, default, candidates, rows), flush=True)


if __name__ == "__main__":
    main()
