"""VisualPromptClassifier: seconds per training epoch with the decoded-image
cache against re-decoding every image every epoch, and prediction speed.

Both sides train the same padding prompt on the same real photos
(``../shared/data/images``) in one run; the CLIP weights are random (speed
does not depend on them). Prints a Markdown table and writes
``visual_prompt.json``.

    python benchmarks/visual_prompt.py                           # tiny model, CPU
    python benchmarks/visual_prompt.py --model ViT-B-32 --max-images 64
    python benchmarks/visual_prompt.py --model ViT-B-32 --device cuda --batch-size 256
"""

import argparse
import csv
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sklearn_clip import TINY_MODEL, VisualPromptClassifier, load_clip

IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images"


def machine(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads"


def load_set(name, max_images):
    root = IMAGES / name
    if not root.exists():
        raise SystemExit(f"{root} not found: the benchmark needs ../shared/data/images")
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] != "train"]
    # Every k-th row keeps the classes balanced when subsampling.
    train = train[:: max(1, len(train) // max_images)][:max_images]
    test = test[:: max(1, len(test) // max_images)][:max_images]
    return (
        [str(root / r["path"]) for r in train],
        [r["classname"] for r in train],
        [str(root / r["path"]) for r in test],
    )


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args):
    paths, labels, test_paths = load_set(args.set, args.max_images)
    pretrained = None
    device = args.device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_clip(args.model, pretrained, device)  # load once, outside the timings
    results = []
    for cache in (True, False):
        clf = VisualPromptClassifier(
            args.model,
            pretrained,
            prompt_size=args.prompt_size,
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            cache_images=cache,
            num_workers=args.num_workers,
            device=device,
            random_state=0,
            verbose=0,
        )
        sync(device)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(paths, labels)
        sync(device)
        total = time.perf_counter() - start
        epochs = np.asarray(clf.net_.history[:, "dur"])
        # The first epoch includes one-off warm-up (allocations, kernels).
        per_epoch = float(np.mean(epochs[1:] if len(epochs) > 1 else epochs))
        start = time.perf_counter()
        clf.predict(test_paths)
        sync(device)
        predict_s = time.perf_counter() - start
        results.append(
            dict(
                cache_images=cache,
                epoch_s=per_epoch,
                train_images_per_s=len(paths) / per_epoch,
                one_off_s=total - float(epochs.sum()),
                predict_images_per_s=len(test_paths) / predict_s,
                final_loss=float(clf.net_.history[-1, "train_loss"]),
            )
        )
    cached, redecoded = results
    ratio = redecoded["epoch_s"] / cached["epoch_s"]
    where = machine(device)
    print(
        f"\n## Visual prompt training: {args.model} (random weights), {args.set}, "
        f"{len(paths)} training images, batch {args.batch_size}, {args.epochs} epochs, "
        f"{where}\n"
    )
    print(
        "| images | s / epoch | training images/s | one-off s (decode once) "
        "| prediction images/s |"
    )
    print("|---|---|---|---|---|")
    for row in results:
        name = (
            "decoded once (cache)" if row["cache_images"] else "re-decoded every epoch"
        )
        print(
            f"| {name} | {row['epoch_s']:.3f} | {row['train_images_per_s']:.1f} "
            f"| {row['one_off_s']:.2f} | {row['predict_images_per_s']:.1f} |"
        )
    print(f"\nRe-decoding costs {ratio:.2f}x the cached epoch time.")
    if abs(cached["final_loss"] - redecoded["final_loss"]) > 1e-3:
        print(
            "WARNING: the two runs trained different prompts "
            f"(final loss {cached['final_loss']:.4f} vs {redecoded['final_loss']:.4f})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "visual_prompt.json", "w") as handle:
        json.dump(
            dict(
                vars(args),
                out=str(args.out),
                machine=where,
                n_train=len(paths),
                n_test=len(test_paths),
                redecode_over_cache=ratio,
                results=results,
            ),
            handle,
            indent=2,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=TINY_MODEL)
    parser.add_argument(
        "--set", default="hymenoptera", choices=["hymenoptera", "cifar10"]
    )
    parser.add_argument("--max-images", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--prompt-size",
        type=int,
        default=None,
        help="default: 30 on 224-pixel inputs, 8 on the tiny model",
    )
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    args = parser.parse_args()
    if args.prompt_size is None:
        args.prompt_size = 8 if args.model == TINY_MODEL else 30
    run(args)


if __name__ == "__main__":
    main()
