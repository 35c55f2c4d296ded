"""Trainable heads: package defaults against the seed study's training recipe.

For each head (linear probe, attention probe, CLIP-Adapter), shot count and
few-shot sampling seed, fit the head twice on the same training set - with
the package defaults and with the seed recipe (AdamW lr 1e-4, batch 32, 200
epochs for the linear probe, 400 for the others, judged on the last epoch) -
and score both on the test split. Nothing is selected on the test split.

    python benchmarks/heads.py                 # 3 seeds, ~20 min on 2 CPU cores
    python benchmarks/heads.py --seeds 1       # quick mode
    python benchmarks/heads.py --shots 16 --seeds 1 --seed-code   # + plain skorch
    python benchmarks/heads.py --load 2 --shots 2 16   # idle vs 2 busy processes

``--seed-code`` adds a third side: the seed recipe as a plain skorch
``NeuralNetClassifier`` runs it (DataLoader batches, unfused AdamW), the
straightforward implementation, on the same modules; both other sides share
the package's faster machinery.

Prints a Markdown table (mean +- std accuracy, mean fit seconds, speed-up)
and writes ``heads.json`` and ``heads.png`` to ``--out``.
"""

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from skorch import NeuralNetClassifier
from tqdm.auto import tqdm

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    LinearProbeClassifier,
    ZeroShotClassifier,
    few_shot_indices,
)
from sklearn_clip._attention_probe import AttentionProbeModule
from sklearn_clip._base import DEFAULT_LOGIT_SCALE
from sklearn_clip._bench import machine
from sklearn_clip._clip_adapter import CLIPAdapterModule
from sklearn_clip._datasets import load_features
from sklearn_clip._linear_probe import LinearProbeModule

DEFAULT_FEATURES = (
    Path(__file__).resolve().parents[2]
    / "shared/data/features/clip-vit-b32/stanford_cars.npz"
)


def seed_recipe(epochs):
    return dict(solver="adamw", lr=1e-4, batch_size=32, max_epochs=epochs, alpha=0.0)


# name -> (estimator class, seed-recipe params); the defaults need no params.
HEADS = {
    "linear probe": (LinearProbeClassifier, dict(batch_norm=True, **seed_recipe(200))),
    "attention probe": (
        AttentionProbeClassifier,
        dict(ratio=0.4, pre_bn=True, post_bn=True, **seed_recipe(400)),
    ),
    "CLIP-Adapter": (
        CLIPAdapterClassifier,
        dict(ratio=0.2, batch_norm=True, **seed_recipe(400)),
    ),
}


# name -> module factory(seed-recipe params, class text tensor), for --seed-code
SEED_CODE_MODULES = {
    "linear probe": lambda p, text: LinearProbeModule(
        text.shape[1], text.shape[0], p["batch_norm"]
    ),
    "attention probe": lambda p, text: AttentionProbeModule(
        text, p["ratio"], p["pre_bn"], p["post_bn"]
    ),
    "CLIP-Adapter": lambda p, text: CLIPAdapterModule(
        text,
        p["ratio"],
        CLIPAdapterClassifier().reduction,
        p["batch_norm"],
        DEFAULT_LOGIT_SCALE,
    ),
}


def build_seed_code(head, text, seed):
    """The seed recipe as a plain skorch net: default DataLoader, unfused AdamW."""
    recipe = HEADS[head][1]
    text = torch.as_tensor(text, dtype=torch.float32).contiguous()
    torch.manual_seed(seed)
    return NeuralNetClassifier(
        SEED_CODE_MODULES[head](recipe, text),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.AdamW,
        lr=recipe["lr"],
        batch_size=recipe["batch_size"],
        max_epochs=recipe["max_epochs"],
        train_split=None,
        iterator_train__shuffle=True,
        device="cpu",
        verbose=0,
    )


def build(head, variant, text, seed):
    if variant == "seed code":
        return build_seed_code(head, text, seed)
    cls, recipe = HEADS[head]
    params = {} if variant == "defaults" else dict(recipe)
    if cls is not LinearProbeClassifier:
        params["text_features"] = text
    # The training seed follows the sampling seed: at 16 shots, where every
    # draw is the whole pool, the seeds still average training randomness.
    return cls(device="cpu", random_state=seed, **params)


def fit_score(make_estimator, X, y, X_test, y_test, repeats=1):
    """Fit ``repeats`` times (the same seeded model each time) and return the
    test accuracy and the median fit time: a fit of a second or less on a
    shared virtual machine varies by +-25 % from run to run.
    """
    times = []
    for _ in range(repeats):
        estimator = make_estimator()
        start = time.perf_counter()
        estimator.fit(X, y)
        times.append(time.perf_counter() - start)
    return float(estimator.score(X_test, y_test)), float(np.median(times))


def run(data, heads, shots, seeds, out, variants=("defaults", "seed recipe")):
    records = []
    jobs = [(n, s, h) for n in shots for s in range(seeds) for h in heads]
    for n_shots, seed, head in tqdm(jobs, desc="heads"):
        rows = few_shot_indices(data["y_train"], n_shots, random_state=seed)
        X, y = data["X_train"][rows], data["y_train"][rows]
        for variant in variants:
            accuracy, seconds = fit_score(
                lambda head=head, variant=variant, seed=seed: build(
                    head, variant, data["text_features"], seed
                ),
                X,
                y,
                data["X_test"],
                data["y_test"],
                # The seed recipe runs for minutes; its timing noise averages out.
                repeats=3 if variant == "defaults" else 1,
            )
            records.append(
                dict(
                    head=head,
                    variant=variant,
                    shots=n_shots,
                    seed=seed,
                    accuracy=accuracy,
                    fit_seconds=seconds,
                )
            )
        # Written after every job: an interrupted run keeps what it measured.
        (out / "heads.json").write_text(
            json.dumps({"machine": machine(), "records": records}, indent=1)
        )
    return records


def by_head_and_shots(records):
    """``{(head, shots): {variant: [records]}}`` in the order measured."""
    table = {}
    for r in records:
        table.setdefault((r["head"], r["shots"]), {}).setdefault(
            r["variant"], []
        ).append(r)
    return table


def summarize(records):
    table = by_head_and_shots(records)
    lines = [
        "| head | shots | defaults (%) | seed recipe (%) | difference | "
        "defaults fit (s, median of 3) | seed recipe fit (s) | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (head, n_shots), variants in table.items():
        if len(variants) < 2:
            continue
        acc = {
            v: 100 * np.array([r["accuracy"] for r in rs]) for v, rs in variants.items()
        }
        sec = {v: np.mean([r["fit_seconds"] for r in rs]) for v, rs in variants.items()}
        ours, seed = acc["defaults"], acc["seed recipe"]
        lines.append(
            f"| {head} | {n_shots} | {ours.mean():.2f} ± {ours.std():.2f} | "
            f"{seed.mean():.2f} ± {seed.std():.2f} | "
            f"{ours.mean() - seed.mean():+.2f} | "
            f"{sec['defaults']:.2f} | {sec['seed recipe']:.1f} | "
            f"{sec['seed recipe'] / sec['defaults']:.0f}x |"
        )
    return "\n".join(lines)


def summarize_seed_code(records):
    """Defaults and the shared-machinery seed recipe against the plain skorch loop."""
    table = by_head_and_shots(records)
    lines = [
        "| head | shots | seed code (%) | seed code fit (s) | seed recipe fit (s) | "
        "defaults fit (s) | defaults speed-up over seed code |",
        "|---|---|---|---|---|---|---|",
    ]
    for (head, n_shots), variants in table.items():
        if "seed code" not in variants:
            continue
        sec = {v: np.mean([r["fit_seconds"] for r in rs]) for v, rs in variants.items()}
        acc = 100 * np.mean([r["accuracy"] for r in variants["seed code"]])
        lines.append(
            f"| {head} | {n_shots} | {acc:.2f} | {sec['seed code']:.1f} | "
            f"{sec['seed recipe']:.1f} | {sec['defaults']:.2f} | "
            f"{sec['seed code'] / sec['defaults']:.0f}x |"
        )
    return "\n".join(lines)


def plot(records, zero_shot, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, head in enumerate(dict.fromkeys(r["head"] for r in records)):
        for variant, style in (("defaults", "-o"), ("seed recipe", "--s")):
            rs = [r for r in records if r["head"] == head and r["variant"] == variant]
            shots = sorted({r["shots"] for r in rs})
            means = [
                100 * np.mean([r["accuracy"] for r in rs if r["shots"] == n])
                for n in shots
            ]
            ax.plot(shots, means, style, color=f"C{i}", label=f"{head} ({variant})")
    if zero_shot is not None:
        ax.axhline(100 * zero_shot, color="gray", linestyle=":", label="zero-shot")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


#: The trained heads as CLIPClassifier builds them (the --load table).
TRAINED = ("Tip-Adapter-F", "ZS linear probe", "attention probe", "CLIP-Adapter")


def load_table(data, shots, n_busy, repeats=2):
    """Fit time of every trained head, idle and beside ``n_busy`` busy torch
    processes, with the package's thread policy (one intra-op thread) and
    with torch's own thread count (``SKLEARN_CLIP_HEAD_THREADS=0``, the
    behaviour before the policy), all in one run, repeats interleaved.
    """
    from sklearn_clip._bench import busy_torch_processes
    from sklearn_clip._clip_classifier import CANDIDATES
    from sklearn_clip._torch_utils import HEAD_THREADS_VARIABLE

    names = TRAINED + ("linear probe",)
    draws = {n: few_shot_indices(data["y_train"], n, random_state=0) for n in shots}
    policies = {"one thread (default)": "1", "torch's threads": "0"}
    times = {}
    for load in ("idle", "loaded"):
        with busy_torch_processes(n_busy if load == "loaded" else 0):
            for _ in range(repeats):
                for policy, value in policies.items():
                    os.environ[HEAD_THREADS_VARIABLE] = value
                    for n in shots:
                        X, y = data["X_train"][draws[n]], data["y_train"][draws[n]]
                        for name in names:
                            head = CANDIDATES[name].build(
                                data["text_features"], None, 0, "cpu"
                            )
                            start = time.perf_counter()
                            head.fit(X, y)
                            times.setdefault((load, policy, n, name), []).append(
                                time.perf_counter() - start
                            )
    os.environ.pop(HEAD_THREADS_VARIABLE, None)
    lines = [
        f"\nFit time (s, median of {repeats}), stanford_cars draw 0, {machine()}; "
        f"loaded = beside {n_busy} busy torch processes (each looping a "
        "256x512 @ 512x512 product with torch's default threads)\n",
        "| head | shots | "
        + " | ".join(f"{p}: idle / loaded (x)" for p in policies)
        + " |",
        "|---|---|" + "---|" * len(policies),
    ]
    for n in shots:
        for name in names:
            cells = []
            for policy in policies:
                idle = np.median(times["idle", policy, n, name])
                loaded = np.median(times["loaded", policy, n, name])
                cells.append(f"{idle:.2f} / {loaded:.2f} ({loaded / idle:.1f}x)")
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--heads", nargs="+", choices=list(HEADS), default=list(HEADS))
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument(
        "--seed-code",
        action="store_true",
        help="also time the seed recipe as a plain skorch net runs it",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="only the fit-time table of the trained heads, idle and beside N "
        "busy torch processes, with and without the one-thread policy",
    )
    args = parser.parse_args(argv)
    if not args.features.exists():
        parser.error(
            f"{args.features} not found (the real features live in ../shared/data)"
        )
    warnings.simplefilter("ignore", UserWarning)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_features(args.features)
    if args.load:
        print(load_table(data, args.shots, args.load))
        return
    zero_shot = None
    if data["text_features"] is not None:
        zero_shot = (
            ZeroShotClassifier(text_features=data["text_features"])
            .fit(data["X_train"], data["y_train"])
            .score(data["X_test"], data["y_test"])
        )
    variants = ("defaults", "seed recipe") + (("seed code",) if args.seed_code else ())
    records = run(data, args.heads, args.shots, args.seeds, args.out, variants)
    print(f"\n{data['name']}, {args.seeds} seed(s), machine: {machine()}")
    if zero_shot is not None:
        print(f"zero-shot: {100 * zero_shot:.2f} %")
    print(summarize(records))
    if args.seed_code:
        print()
        print(summarize_seed_code(records))
    plot(records, zero_shot, args.out / "heads.png")
    print(f"wrote {args.out / 'heads.json'} and {args.out / 'heads.png'}")


if __name__ == "__main__":
    main()
