"""Few-shot benchmark of every classifier on CLIP features.

Run ``sklearn-clip bench FEATURES.npz`` (or ``python -m sklearn_clip.bench``).
For each shot count and seed it samples a few-shot training set from the
training pool, fits every method on it, and scores on the test split. Nothing
is tuned on the test split: methods run with their defaults.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from ._model_selection import few_shot_indices
from ._zero_shot import ZeroShotClassifier


@dataclass(frozen=True)
class Method:
    """A benchmarked method: builds an unfitted estimator from the dataset's
    text features (None for image-only sets)."""

    build: Callable
    needs_text: bool = False
    uses_shots: bool = True  # False: the result does not depend on the train set


METHODS = {
    "zero-shot": Method(
        lambda text: ZeroShotClassifier(text_features=text),
        needs_text=True,
        uses_shots=False,
    ),
    "LR": Method(lambda text: LogisticRegression(max_iter=1000)),
    "StandardScaler + LR": Method(
        lambda text: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    ),
}


def load_features(path):
    """Load a features ``.npz`` in the ``../shared/data`` format.

    Returns a dict with float32 ``X_train``, ``X_test``, labels ``y_train``,
    ``y_test``, ``text_features`` (or None) and ``name``.
    """
    path = Path(path)
    with np.load(path) as data:
        missing = {"X_train", "y_train", "X_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)}")
        dataset = {key: data[key] for key in ("X_train", "y_train", "X_test", "y_test")}
        text = data["text_features"] if "text_features" in data.files else None
    for key in ("X_train", "X_test"):
        dataset[key] = dataset[key].astype(np.float32)
    dataset["text_features"] = None if text is None else text.astype(np.float32)
    dataset["name"] = path.stem
    return dataset


def run_benchmark(dataset, methods, shots, seeds, progress=True):
    """Fit and score every method at every shot count and seed.

    Returns a list of records ``{method, shots, seed, accuracy, fit_seconds}``.
    """
    runs = [(n, s, m) for n in shots for s in range(seeds) for m in methods]
    records, once = [], {}
    for n_shots, seed, name in tqdm(
        runs, desc=f"bench {dataset['name']}", disable=not progress
    ):
        method = METHODS[name]
        if method.needs_text and dataset["text_features"] is None:
            continue
        if not method.uses_shots and name in once:
            accuracy, seconds = once[name]
        else:
            train = few_shot_indices(dataset["y_train"], n_shots, random_state=seed)
            estimator = method.build(dataset["text_features"])
            start = time.perf_counter()
            estimator.fit(dataset["X_train"][train], dataset["y_train"][train])
            seconds = time.perf_counter() - start
            accuracy = float(estimator.score(dataset["X_test"], dataset["y_test"]))
            once[name] = (accuracy, seconds)
        records.append(
            dict(method=name, shots=n_shots, seed=seed, accuracy=accuracy,
                 fit_seconds=seconds)
        )
    return records


def summarize(records, key):
    """``{method: {shots: (mean, std)}}`` of ``key`` over seeds."""
    table = {}
    for record in records:
        table.setdefault(record["method"], {}).setdefault(record["shots"], []).append(
            record[key]
        )
    return {
        method: {n: (float(np.mean(v)), float(np.std(v))) for n, v in by_shot.items()}
        for method, by_shot in table.items()
    }


def markdown_table(summary, shots, fmt):
    header = "| method | " + " | ".join(f"{n} shots" for n in shots) + " |"
    lines = [header, "|---" * (len(shots) + 1) + "|"]
    for method, by_shot in summary.items():
        cells = [fmt(*by_shot[n]) if n in by_shot else "-" for n in shots]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_accuracy(summary, shots, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, by_shot in summary.items():
        xs = [n for n in shots if n in by_shot]
        means = np.array([by_shot[n][0] for n in xs]) * 100
        stds = np.array([by_shot[n][1] for n in xs]) * 100
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(n) for n in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser():
    parser = argparse.ArgumentParser(
        prog="sklearn-clip bench",
        description="Few-shot benchmark of CLIP adaptation methods on a features "
        ".npz (X_train, y_train, X_test, y_test, optional text_features).",
    )
    parser.add_argument("features", nargs="+", help="features .npz file(s)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds")
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
        metavar="METHOD", help=f"subset of: {', '.join(METHODS)}",
    )
    parser.add_argument("--out", default="bench_results",
                        help="folder for the JSON results and PNG plots")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None):
    """Entry point of ``sklearn-clip bench``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        argv = argv[1:]
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.features:
        dataset = load_features(path)
        records = run_benchmark(
            dataset, args.methods, args.shots, args.seeds, progress=not args.no_progress
        )
        accuracy = summarize(records, "accuracy")
        seconds = summarize(records, "fit_seconds")
        print(f"\n## {dataset['name']}: test accuracy (%), mean ± std over "
              f"{args.seeds} seeds\n")
        print(markdown_table(accuracy, args.shots,
                             lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}"))
        print(f"\n## {dataset['name']}: fit time (s), mean over seeds\n")
        print(markdown_table(seconds, args.shots, lambda m, s: f"{m:.3f}"))
        (out / f"{dataset['name']}.json").write_text(
            json.dumps({"dataset": dataset["name"], "records": records}, indent=1)
        )
        try:
            plot_accuracy(accuracy, args.shots, dataset["name"],
                          out / f"{dataset['name']}.png")
        except ImportError:
            print("(matplotlib not installed: no plot written)")
    print(f"\nResults written to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
