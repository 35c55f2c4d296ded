"""Few-shot benchmark of every classifier on CLIP features.

Run ``sklearn-clip bench FEATURES.npz`` (or ``python -m sklearn_clip bench``).
For each shot count and seed it samples a few-shot training set from the
training pool, fits every method on it, and scores on the test split. Nothing
is tuned on the test split: methods run with their defaults.
"""

import csv
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from ._base import CLIPModelMismatchWarning
from ._bench_trust import report_trust, trust_measurements
from ._busy import busy_torch_processes
from ._clip_classifier import (
    CANDIDATES,
    IMAGE_ONLY_CANDIDATES,
    TEXT_CANDIDATES,
    CLIPClassifier,
)
from ._datasets import load_features
from ._featurizer import CLIPFeaturizer
from ._images import load_image_folder
from ._machine_load import LoadMonitor, MachineLoad, cpu_model
from ._model_selection import few_shot_indices
from ._text import encode_class_names
from ._transclip import TransCLIPClassifier
from ._unlabelled import UNLABELLED


@dataclass(frozen=True)
class Method:
    """A benchmarked method: builds an unfitted estimator from the dataset's
    text features (None for image-only sets).
    """

    build: Callable
    needs_text: bool = False
    uses_shots: bool = True  # False: the result does not depend on the train set
    seed: bool = True  # a method of the seed study (False: a newer one)


def _candidate(name, **flags):
    """A method built exactly as :class:`CLIPClassifier` builds its candidate
    of that name (seed 0, default device and temperature).
    """
    candidate = CANDIDATES[name]
    return Method(
        lambda text: candidate.build(text, None, 0, "auto"),
        needs_text=candidate.needs_text,
        **flags,
    )


# Fixed hyperparameters only: nothing here was chosen on a test split (see
# benchmarks/README.md for where the non-default ones come from).
METHODS = {
    "zero-shot": _candidate("zero-shot", uses_shots=False),
    "LR": Method(lambda text: LogisticRegression(max_iter=1000)),
    "StandardScaler + LR": _candidate("StandardScaler + LR"),
    "linear probe": _candidate("linear probe"),
    "attention probe": _candidate("attention probe"),
    "CLIP-Adapter": _candidate("CLIP-Adapter"),
    "Tip-Adapter": _candidate("Tip-Adapter", seed=False),
    "Tip-Adapter-F": _candidate("Tip-Adapter-F", seed=False),
    "GDA": _candidate("GDA", seed=False),
    "GDA + zero-shot": _candidate("GDA + zero-shot", seed=False),
    "ZS linear probe": _candidate("ZS linear probe", seed=False),
    # Chooses among the methods above by cross-validation on the training
    # samples; with text on the text-based ones, otherwise on image-only ones.
    # With its defaults (n_jobs too), as a user gets it.
    "CLIPClassifier": Method(
        lambda text: CLIPClassifier(text_features=text, random_state=0),
        seed=False,
    ),
}

#: Not single methods: left out of the "best single method" comparisons.
CHOOSERS = ("CLIPClassifier",)

#: Appended to a method's name for its run with unlabelled images.
UNLABELLED_SUFFIX = " + unlabelled"


def machine():
    """The machine, for the tables: processor, cores, torch's threads and
    kernels (the SIMD level changes both speed and float rounding).
    """
    import torch

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()})"
    )


def _read_labels_csv(path):
    """``path,label[,split][,classname]`` rows; paths relative to the CSV."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{path} needs a header with at least the columns path,label")
    for row in rows:
        row["path"] = os.fspath(path.parent / row["path"])
    return rows


def _image_rows(source):
    """Rows ``{path, label, split?, classname?}`` of an image folder or CSV."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return _read_labels_csv(source)
    splits = {"train": "train", "test": "test", "val": "test"}
    present = [d for d in ("train", "test", "val") if (source / d).is_dir()]
    if "train" in present and len(present) > 1:
        held_out = "test" if "test" in present else "val"
        rows = []
        for folder in ("train", held_out):
            paths, labels = load_image_folder(source / folder)
            rows += [
                dict(path=p, label=label, split=splits[folder])
                for p, label in zip(paths, labels)
            ]
        return rows
    paths, labels = load_image_folder(source)
    return [dict(path=p, label=label) for p, label in zip(paths, labels)]


def load_images(
    source,
    *,
    model,
    pretrained,
    preprocess=None,
    device="auto",
    test_size=0.5,
    random_state=0,
    progress=True,
):
    """Featurize an image folder or a ``path,label`` CSV once into a dataset.

    The split comes from ``train/`` and ``test/`` (or ``val/``) sub-folders or
    a ``split`` column (``train``; ``test`` or ``val``); otherwise a stratified
    ``test_size`` fraction is held out. Class text embeddings are made when
    the labels are names (or a ``classname`` column gives them).

    Returns a dict like :func:`load_features`.
    """
    from sklearn.model_selection import train_test_split

    rows = _image_rows(source)
    paths = [r["path"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    if all(r.get("split") for r in rows):
        split = np.array([r["split"] for r in rows])
        train = split == "train"
        test = np.isin(split, ["test", "val"])
        if not train.any() or not test.any():
            raise ValueError(f"{source}: the split column needs train and test rows")
    else:
        train_idx, test_idx = train_test_split(
            np.arange(len(rows)),
            test_size=test_size,
            stratify=labels,
            random_state=random_state,
        )
        train = np.isin(np.arange(len(rows)), train_idx)
        test = ~train
    featurizer = CLIPFeaturizer(
        model=model,
        pretrained=pretrained,
        preprocess=preprocess,
        device=device,
        progress=progress,
    )
    features = featurizer.transform(paths).astype(np.float32)
    names = {}
    for r in rows:
        names.setdefault(r["label"], r.get("classname") or r["label"])
    classes = np.unique(labels)
    text = None
    if all(not str(names[c]).isdigit() for c in classes):
        text = encode_class_names(
            [names[c] for c in classes],
            model=model,
            pretrained=pretrained,
            device=device,
        ).astype(np.float32)
    return dict(
        X_train=features[train],
        y_train=labels[train],
        X_test=features[test],
        y_test=labels[test],
        text_features=text,
        name=Path(source).stem,
        # Class text from random weights matches nothing: the model-mismatch
        # guard would fire on every text-based fit.
        random_weights=pretrained is None,
    )


def run_benchmark(
    dataset, methods, shots, seeds, progress=True, desc="bench", unlabelled="none"
):
    """Fit and score every method at every shot count and seed (``seeds``:
    a count, or the list of seeds to run).

    With ``unlabelled`` ``"test"`` or ``"pool"``, each method also runs
    wrapped in :class:`TransCLIPClassifier` on the same draw (as
    ``"<method> + unlabelled"``): ``"test"`` passes the test images
    unlabelled to ``fit`` and scores its transduction of them
    (transductive); ``"pool"`` passes the rest of the training pool and the
    validation split, and scores ``predict`` on the test images (inductive).

    Returns a list of records ``{method, shots, seed, accuracy, fit_seconds,
    ece, log_loss, reliability, abstention}`` (the last four: see
    :func:`._bench_trust.trust_measurements`).
    """
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    variants = [False] if unlabelled == "none" else [False, True]
    runs = [
        (n, s, m, v) for n in shots for s in seeds for m in methods for v in variants
    ]
    records, once = [], {}
    for n_shots, seed, name, with_unlabelled in tqdm(
        runs, desc=f"{desc} {dataset['name']}", disable=not progress
    ):
        method = METHODS[name]
        if method.needs_text and dataset["text_features"] is None:
            continue
        train = few_shot_indices(dataset["y_train"], n_shots, random_state=seed)
        # The same training rows (every draw of the whole pool, or a method
        # that ignores them) give the same model: every method is seeded. With
        # unlabelled images the labelled shots always count.
        record_name = name + UNLABELLED_SUFFIX if with_unlabelled else name
        uses_shots = method.uses_shots or with_unlabelled
        key = record_name if not uses_shots else (record_name, train.tobytes())
        if key in once:
            accuracy, seconds, trust = once[key]
        else:
            estimator = method.build(dataset["text_features"])
            X, y = dataset["X_train"][train], dataset["y_train"][train]
            if with_unlabelled:
                estimator = TransCLIPClassifier(estimator, random_state=0)
                X_unlabelled = _unlabelled_images(dataset, train, unlabelled)
                X = np.vstack([X, X_unlabelled])
                y = np.r_[y, np.full(len(X_unlabelled), UNLABELLED)]
            with warnings.catch_warnings():
                # Few-shot sets have as many classes as samples at 1 shot;
                # scikit-learn's LogisticRegression warns about that on every fit.
                warnings.filterwarnings(
                    "ignore", message=".*could represent a regression"
                )
                if dataset.get("random_weights"):
                    warnings.simplefilter("ignore", CLIPModelMismatchWarning)
                start = time.perf_counter()
                estimator.fit(X, y)
                seconds = time.perf_counter() - start
            if with_unlabelled and unlabelled == "test":
                labels = estimator.transduction_[len(train) :]
                accuracy = float(np.mean(labels == dataset["y_test"]))
            else:
                accuracy = float(estimator.score(dataset["X_test"], dataset["y_test"]))
            trust = trust_measurements(estimator, dataset["X_test"], dataset["y_test"])
            once[key] = (accuracy, seconds, trust)
        records.append(
            dict(
                method=record_name,
                shots=n_shots,
                seed=seed,
                accuracy=accuracy,
                fit_seconds=seconds,
                **trust,
            )
        )
    return records


def _unlabelled_images(dataset, train, protocol):
    """The unlabelled images of ``protocol`` (see :func:`run_benchmark`)."""
    if protocol == "test":
        return dataset["X_test"]
    pool = [np.delete(dataset["X_train"], train, axis=0)]
    if dataset.get("X_val") is not None:
        pool.append(dataset["X_val"])
    return np.vstack(pool)


def _inductive(method):
    return not method.endswith(UNLABELLED_SUFFIX)


def unlabelled_gains(summary, shots):
    """Lines of each method's accuracy change with the unlabelled images,
    and the best with them against the best without (any method, the
    chooser included; best on the test split: a reference, chosen by
    nothing). "" without unlabelled runs.
    """
    pairs = [
        (m, m + UNLABELLED_SUFFIX) for m in summary if m + UNLABELLED_SUFFIX in summary
    ]
    if not pairs:
        return ""
    header = "| method | " + " | ".join(f"{n} shots" for n in shots) + " |"
    lines = [header, "|---" * (len(shots) + 1) + "|"]
    for alone, with_unlabelled in pairs:
        cells = [
            f"{100 * (summary[with_unlabelled][n][0] - summary[alone][n][0]):+.2f}"
            if n in summary[alone] and n in summary[with_unlabelled]
            else "-"
            for n in shots
        ]
        lines.append(f"| {alone} | " + " | ".join(cells) + " |")
    best_alone = _largest_per_shot(summary, shots, _inductive)
    best_with = _largest_per_shot(summary, shots, lambda m: not _inductive(m))
    cells = []
    for n in shots:
        if n in best_alone and n in best_with:
            (a, name_a), (b, name_b) = best_alone[n], best_with[n]
            cells.append(
                f"{100 * (b - a):+.2f} ({name_b} {100 * b:.2f} vs {name_a} "
                f"{100 * a:.2f})"
            )
        else:
            cells.append("-")
    lines.append("| best with against best without | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(records, key):
    """``{method: {shots: (mean, std)}}`` of ``key`` over seeds."""
    table = {}
    for record in records:
        table.setdefault(record["method"], {}).setdefault(record["shots"], []).append(
            record[key]
        )
    return {
        # Sample standard deviation (ddof=1) over the draws; 0 for one draw.
        method: {
            n: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
            for n, v in by_shot.items()
        }
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
    """Accuracy against shots, one line per method: seed-study methods solid,
    newer ones dashed, every method its own colour and marker.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20").colors
    markers = "osD^v<>phX*"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (method, by_shot) in enumerate(summary.items()):
        xs = [n for n in shots if n in by_shot]
        means = np.array([by_shot[n][0] for n in xs]) * 100
        stds = np.array([by_shot[n][1] for n in xs]) * 100
        seed = METHODS[method].seed if method in METHODS else True
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            capsize=3,
            label=method,
            color=colours[(2 * i) % 20 + (i // 10) % 2],
            marker=markers[i % len(markers)],
            linestyle="-" if seed else "--",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(n) for n in shots])
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7, ncol=2, title="solid: seed study, dashed: newer", title_fontsize=7
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def best_by_family(summary, shots):
    """Lines comparing the best seed method with the best newer one per shot."""
    lines = []
    for n in shots:
        best = {}
        for family in (True, False):
            candidates = [
                (by_shot[n][0], method)
                for method, by_shot in summary.items()
                if n in by_shot
                and _inductive(method)
                and METHODS[method].seed is family
                and method not in CHOOSERS
            ]
            best[family] = max(candidates) if candidates else None
        if best[True] and best[False]:
            (seed_acc, seed_name), (new_acc, new_name) = best[True], best[False]
            lines.append(
                f"| {n} | {seed_name} {100 * seed_acc:.2f} | {new_name} "
                f"{100 * new_acc:.2f} | {100 * (new_acc - seed_acc):+.2f} |"
            )
    if not lines:
        return ""
    return "\n".join(
        [
            "| shots | best seed method | best newer method | gain |",
            "|---|---|---|---|",
            *lines,
        ]
    )


def _largest_per_shot(summary, shots, keep):
    """``{shots: (largest mean, method)}`` over the methods ``keep`` accepts."""
    largest = {}
    for n in shots:
        values = [
            (by_shot[n][0], method)
            for method, by_shot in summary.items()
            if n in by_shot and keep(method)
        ]
        if values:
            largest[n] = max(values)
    return largest


def chooser_against_best(summary, shots, chooser="CLIPClassifier"):
    """Lines comparing ``chooser`` with the best single method per shot (the
    best on the test split: a reference, chosen by nothing).
    """
    if chooser not in summary:
        return ""
    lines = []
    best = _largest_per_shot(
        summary, shots, lambda method: method not in CHOOSERS and _inductive(method)
    )
    for n, (best_acc, best_name) in best.items():
        if n not in summary[chooser]:
            continue
        acc = summary[chooser][n][0]
        lines.append(
            f"| {n} | {best_name} {100 * best_acc:.2f} | {100 * acc:.2f} | "
            f"{100 * (acc - best_acc):+.2f} |"
        )
    return "\n".join(
        [
            f"| shots | best single method (on test) | {chooser} | difference |",
            "|---|---|---|---|",
            *lines,
        ]
    )


def load_table(first, loaded, shots, n_busy):
    """Fit time of every method on the same draw (seed 0), in the first run
    (at whatever load the machine had: the table's title says) and beside
    ``n_busy`` busy torch processes, side by side.
    """
    first = {
        (r["method"], r["shots"]): r["fit_seconds"] for r in first if r["seed"] == 0
    }
    loaded = {(r["method"], r["shots"]): r["fit_seconds"] for r in loaded}
    header = "| method | " + " | ".join(
        f"{n} shots: first run / loaded (x)" for n in shots
    )
    lines = [header + " |", "|---" * (len(shots) + 1) + "|"]
    for method in dict.fromkeys(m for m, _ in loaded):
        cells = []
        for n in shots:
            if (method, n) not in loaded:
                cells.append("-")
                continue
            a, b = first[method, n], loaded[method, n]
            cells.append(f"{a:.2f} / {b:.2f} ({b / max(a, 1e-9):.1f}x)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chooser_cost(records, shots, has_text):
    """CLIPClassifier's fit time against its slowest candidate's (with its
    default candidates: text-based ones when ``has_text``), per shot count,
    means over the draws of ``records``; "" without it, and a sentence
    instead of the table when some candidate was not timed on its own.
    """
    chooser = "CLIPClassifier"
    seconds = summarize(records, "fit_seconds")
    if chooser not in seconds:
        return ""
    candidates = TEXT_CANDIDATES if has_text else IMAGE_ONLY_CANDIDATES
    # Its slowest candidate is known only where the bench timed every one:
    # the slowest of a few (zero-shot's 0.001 s) would make any ratio large.
    missing = [name for name in candidates if name not in seconds]
    if missing:
        return (
            f"Not compared: {chooser} fits {', '.join(candidates)}; the bench "
            f"did not time {', '.join(missing)} on their own (--methods), so "
            "its slowest candidate is unknown."
        )
    lines = []
    slowest_per_shot = _largest_per_shot(seconds, shots, candidates.__contains__)
    for n, (slowest, name) in slowest_per_shot.items():
        if n not in seconds[chooser] or any(n not in seconds[c] for c in candidates):
            continue
        own = seconds[chooser][n][0]
        lines.append(
            f"| {n} | {own:.2f} | {name} {slowest:.2f} | {own / slowest:.1f}x |"
        )
    if not lines:  # none of its candidates was benchmarked beside it
        return ""
    return "\n".join(
        [
            f"| shots | {chooser} fit (s) | its slowest candidate (s) | ratio |",
            "|---|---|---|---|",
            *lines,
        ]
    )


def run(args):
    """``sklearn-clip bench`` with parsed arguments (see :mod:`._cli`)."""
    for path in args.data:
        _check_source(path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    measured = 0
    started = time.perf_counter()
    loaded_seconds = 0.0
    # The machine's load over the timed runs (idle-or-not is measured, never
    # assumed) and over the runs beside the busy processes.
    run_load, busy_load = MachineLoad(), MachineLoad()
    print(f"sklearn-clip bench on {machine()}; {_load_now()}")
    for path in args.data:
        if Path(path).suffix == ".npz":
            dataset = load_features(path)
        else:
            with warnings.catch_warnings():
                if pretrained is None:
                    warnings.simplefilter("ignore", UserWarning)
                dataset = load_images(
                    path,
                    model=args.model,
                    pretrained=pretrained,
                    preprocess=getattr(args, "preprocess", None),
                    device=args.device,
                    test_size=args.test_size,
                    progress=progress,
                )
        with LoadMonitor() as monitor:
            records = run_benchmark(
                dataset,
                args.methods,
                args.shots,
                args.seeds,
                progress=progress,
                unlabelled=args.unlabelled,
            )
        load = monitor.result
        conditions = load.describe()
        if not records:
            # Earlier results in --out stay as they are.
            print(
                f"\n{dataset['name']}: none of the methods {args.methods} applies "
                "(the text-based ones need class text, which this set lacks); "
                "nothing measured, nothing written."
            )
            continue
        measured += 1
        accuracy = summarize(records, "accuracy")
        seconds = summarize(records, "fit_seconds")
        print(
            f"\n## {dataset['name']}: test accuracy (%), mean ± std over "
            f"{args.seeds} seeds\n"
        )
        print(
            markdown_table(
                accuracy, args.shots, lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}"
            )
        )
        run_load = run_load + load
        print(f"\n## {dataset['name']}: fit time (s), mean over seeds, {conditions}\n")
        print(markdown_table(seconds, args.shots, lambda m, s: f"{m:.3f}"))
        has_text = dataset["text_features"] is not None
        cost = chooser_cost(records, args.shots, has_text)
        if cost:
            print(f"\n## {dataset['name']}: CLIPClassifier's cost, {conditions}\n")
            print(cost)
        if args.load:
            # Same draw (seed 0), timed again beside busy processes.
            load_start = time.perf_counter()
            # The monitor outside the busy processes: their CPU time counts
            # as this run's own once they have finished, so "other
            # processes" are the machine's other jobs.
            with LoadMonitor() as busy_monitor, busy_torch_processes(args.load):
                loaded = run_benchmark(
                    dataset,
                    args.methods,
                    args.shots,
                    [0],
                    progress=progress,
                    desc=f"beside {args.load} busy processes:",
                    unlabelled=args.unlabelled,
                )
            loaded_seconds += time.perf_counter() - load_start
            busy_load = busy_load + busy_monitor.result
            print(
                f"\n## {dataset['name']}: fit time (s) of seed 0's draw, "
                f"{conditions} / beside {args.load} busy torch processes "
                f"(apart from them, {busy_monitor.result.describe()})\n"
            )
            print(load_table(records, loaded, args.shots, args.load))
            cost = chooser_cost(loaded, args.shots, has_text)
            if cost:
                print(
                    f"\n## {dataset['name']}: CLIPClassifier's cost beside "
                    f"{args.load} busy torch processes\n"
                )
                print(cost)
            for record in loaded:
                record["load"] = args.load
            records = records + loaded
        comparison = best_by_family(accuracy, args.shots)
        if comparison:
            print(
                f"\n## {dataset['name']}: best newer method against best seed method\n"
            )
            print(comparison)
        gains = unlabelled_gains(accuracy, args.shots)
        if gains:
            protocol = {
                "test": "the test images, unlabelled, in fit (transductive)",
                "pool": "the rest of the training pool and the validation split, "
                "unlabelled (inductive: test images unseen)",
            }[args.unlabelled]
            print(f"\n## {dataset['name']}: accuracy change (points) with {protocol}\n")
            print(gains)
        versus = chooser_against_best(accuracy, args.shots)
        if versus:
            print(
                f"\n## {dataset['name']}: CLIPClassifier against the best single "
                "method\n"
            )
            print(versus)
        conditions_record = {"machine": machine(), "load": load.as_dict()}
        if args.load:
            conditions_record["busy_processes"] = args.load
            conditions_record["load_beside_busy_processes"] = (
                busy_monitor.result.as_dict()
            )
        report_trust(records, args.shots, dataset["name"], out)
        (out / f"{dataset['name']}.json").write_text(
            json.dumps(
                {
                    "dataset": dataset["name"],
                    "records": records,
                    "conditions": conditions_record,
                },
                indent=1,
            )
        )
        try:
            plot_accuracy(
                accuracy,
                args.shots,
                f"{dataset['name']}: test accuracy by shots per class "
                f"(mean ± std over {args.seeds} draw{'s' if args.seeds != 1 else ''})",
                out / f"{dataset['name']}.png",
            )
        except ImportError:
            print(
                "(matplotlib not installed: no plot written; "
                "pip install 'sklearn-clip[plot]')"
            )
    if not measured:
        raise ValueError(
            "nothing was measured: choose --methods that apply to these data sets"
        )
    total = time.perf_counter() - started
    timing = f"{total // 60:.0f} min {total % 60:.0f} s"
    if args.load:
        timing += (
            f" ({loaded_seconds // 60:.0f} min {loaded_seconds % 60:.0f} s of it "
            f"beside {args.load} busy torch processes)"
        )
    print(f"\nResults written to {out}/")
    print(f"Benchmark time: {timing} on {machine()}")
    print(f"Load while timing: {run_load.describe()}")
    if args.load:
        print(
            f"Load beside the {args.load} busy torch processes (theirs not "
            f"counted): {busy_load.describe()}"
        )
    return 0


def _load_now():
    """The 1, 5 and 15-minute load averages now, for the header."""
    try:
        averages = os.getloadavg()
    except (AttributeError, OSError):
        return "load average unknown"
    return "load average now {:.2f}, {:.2f}, {:.2f} (1, 5, 15 min)".format(*averages)


def _check_source(path):
    """Refuse, by name, what the bench cannot read before any work starts."""
    source = Path(path)
    kind = source.suffix.lower()
    if source.is_dir() or (source.is_file() and kind in (".npz", ".csv")):
        return
    what = "does not exist" if not source.exists() else "is not a folder, .npz or .csv"
    raise ValueError(
        f"{path} {what}: give a features .npz (X_train, y_train, X_test, y_test), "
        "an image folder (one sub-folder per class) or a CSV of path,label"
    )
