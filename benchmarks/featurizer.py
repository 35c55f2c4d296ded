"""CLIPFeaturizer speed, cache and memory, measured in one run.

On real photos (``../shared/data/images``) with a random-weight CLIP (speed
does not depend on the weights), same images and threads for every row:

* model forward only, on images decoded and preprocessed beforehand (the
  bound: decoding fully hidden);
* ``CLIPFeaturizer`` with its defaults, from the JPEG files;
* the straightforward loop of the seed notes: a DataLoader with one worker,
  batch 256, fp32, ``torch.no_grad``;
* opt-in faster forwards (CPU: dynamic int8 quantisation of the Linear
  layers; ``--compile``: torch.compile), with the cosine similarity of their
  embeddings to the fp32 ones;
* the embedding cache: a cold run against a warm re-run;
* peak memory (max RSS of a fresh process) for 2,000 and 20,000 inputs
  (paths repeat) with the tiny model: flat means O(batch), not O(N).

    python benchmarks/featurizer.py                       # CPU, ViT-B-32, ~5 min
    python benchmarks/featurizer.py --device cuda --models ViT-B-32 ViT-L-14
"""

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sklearn_clip import TINY_MODEL, CLIPFeaturizer, load_clip
from sklearn_clip._embedding_cache import (
    EmbeddingCache,
    checkpoint_identity,
    content_key,
)

IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images"
warnings.filterwarnings("ignore", message="pretrained=None")
warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
warnings.filterwarnings("ignore", message=".*quantize.*deprecated")


def photos(name, limit):
    root = IMAGES / name
    if not root.exists():
        raise SystemExit(f"{root} not found: the benchmark needs ../shared/data/images")
    with open(root / "labels.csv", newline="") as handle:
        paths = [str(root / row["path"]) for row in csv.DictReader(handle)]
    return paths[:limit]


def machine(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {torch.get_num_threads()} threads"


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function, device):
    sync(device)
    start = time.perf_counter()
    result = function()
    sync(device)
    return result, time.perf_counter() - start


def forward_only(encode, tensors, batch_size, device, precision_context):
    outputs = []
    with torch.inference_mode(), precision_context():
        for start in range(0, len(tensors), batch_size):
            batch = tensors[start : start + batch_size].to(device, non_blocking=True)
            outputs.append(encode(batch).float().cpu())
    return torch.nn.functional.normalize(torch.cat(outputs), dim=-1).numpy()


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return self.preprocess(Image.open(self.paths[index]).convert("RGB"))


def straightforward_loop(clip, paths, device):
    """The seed notes' loop: DataLoader, 1 worker, batch 256, fp32, no_grad."""
    loader = torch.utils.data.DataLoader(
        _Files(paths, clip.preprocess), batch_size=256, num_workers=1
    )
    outputs = []
    with torch.no_grad():
        for batch in loader:
            features = clip.model.encode_image(batch.to(device))
            outputs.append(torch.nn.functional.normalize(features, dim=-1).cpu())
    return torch.cat(outputs).numpy()


def cosine(a, b):
    return float(
        np.min(
            np.sum(a * b, axis=1)
            / np.linalg.norm(a, axis=1)
            / np.linalg.norm(b, axis=1)
        )
    )


def peak_rss_mb(n_inputs, model):
    """Max RSS of a fresh process featurizing ``n_inputs`` (repeating) paths."""
    code = f"""
import resource, warnings
warnings.simplefilter("ignore")
from benchmarks.featurizer import photos
from sklearn_clip import CLIPFeaturizer
paths = photos("cifar10", 3000)
items = [paths[i % len(paths)] for i in range({n_inputs})]
featurizer = CLIPFeaturizer(
    {model!r}, None, device="cpu", batch_size=256, progress=False
)
X = featurizer.fit_transform(items)
assert X.shape[0] == {n_inputs}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run_model(model, args, rows):
    device = args.device
    paths = photos(args.images, args.n_images)
    clip = load_clip(model, None, device)
    n = len(paths)
    decoded = torch.stack(
        [clip.preprocess(Image.open(p).convert("RGB")) for p in paths]
    )
    contexts = {
        "cpu": lambda: torch.autocast("cpu", enabled=False),
        "cuda": lambda: torch.autocast("cuda", dtype=torch.bfloat16),
    }
    context = contexts["cuda" if device.startswith("cuda") else "cpu"]
    # Warm-up (allocator, kernels, lazy init) outside every timing.
    forward_only(
        clip.model.encode_image,
        decoded[: args.batch_size],
        args.batch_size,
        device,
        context,
    )

    reference = forward_rate = None
    if args.only_cache:
        return cache_rows(model, args, rows, clip, paths, reference, forward_rate)
    reference, seconds = timed(
        lambda: forward_only(
            clip.model.encode_image, decoded, args.batch_size, device, context
        ),
        device,
    )
    forward_rate = n / seconds
    rows.append(
        dict(
            model=model,
            what="model forward only (pre-decoded tensors)",
            images_per_s=forward_rate,
            cosine=1.0,
        )
    )

    featurizer = CLIPFeaturizer(
        model, None, device=device, batch_size=args.batch_size, progress=False
    )
    ours, seconds = timed(lambda: featurizer.fit_transform(paths), device)
    rows.append(
        dict(
            model=model,
            what="CLIPFeaturizer defaults, from JPEG files",
            images_per_s=n / seconds,
            cosine=cosine(ours, reference),
        )
    )

    # One decoding worker *process* beside the model, instead of the default's
    # threads on the CPU (the README's "0.84 of the forward rate with one
    # worker"): on a small machine it competes with the model's threads.
    one_worker = CLIPFeaturizer(
        model,
        None,
        device=device,
        batch_size=args.batch_size,
        progress=False,
        num_workers=1,
    )
    worker_rows, seconds = timed(lambda: one_worker.fit_transform(paths), device)
    rows.append(
        dict(
            model=model,
            what="CLIPFeaturizer num_workers=1 (a decoding process), from JPEG files",
            images_per_s=n / seconds,
            cosine=cosine(worker_rows, reference),
        )
    )

    plain, seconds = timed(lambda: straightforward_loop(clip, paths, device), device)
    rows.append(
        dict(
            model=model,
            what="straightforward loop (1 worker, batch 256, no_grad)",
            images_per_s=n / seconds,
            cosine=cosine(plain, reference),
        )
    )

    if not device.startswith("cuda"):
        quantized = CLIPFeaturizer(
            model,
            None,
            device=device,
            batch_size=args.batch_size,
            progress=False,
            quantize=True,
        )
        quantized.fit_transform(paths[: args.batch_size])  # builds the int8 copy
        int8, seconds = timed(lambda: quantized.fit_transform(paths), device)
        rows.append(
            dict(
                model=model,
                what="CLIPFeaturizer quantize=True (int8 Linear), from JPEG files",
                images_per_s=n / seconds,
                cosine=cosine(int8, reference),
            )
        )
    if args.compile:
        compiled = torch.compile(clip.model.encode_image)
        _, compile_seconds = timed(
            lambda: forward_only(
                compiled, decoded[: args.batch_size], args.batch_size, device, context
            ),
            device,
        )
        out, seconds = timed(
            lambda: forward_only(compiled, decoded, args.batch_size, device, context),
            device,
        )
        rows.append(
            dict(
                model=model,
                what=f"forward only, torch.compile "
                f"(+{compile_seconds:.0f} s to compile)",
                images_per_s=n / seconds,
                cosine=cosine(out, reference),
            )
        )

    return cache_rows(model, args, rows, clip, paths, reference, forward_rate)


def cache_rows(model, args, rows, clip, paths, reference, forward_rate):
    device, n = args.device, len(paths)
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = CLIPFeaturizer(
            model,
            None,
            device=device,
            batch_size=args.batch_size,
            progress=False,
            cache_dir=cache_dir,
        )
        cold, cold_seconds = timed(lambda: cached.fit_transform(paths), device)
        # Warm re-runs, interleaved with nothing else: the median of three.
        warm_seconds = []
        for _ in range(3):
            warm, seconds = timed(lambda: cached.fit_transform(paths), device)
            warm_seconds.append(seconds)
        warm_seconds = float(np.median(warm_seconds))
        assert np.array_equal(cold, warm)
        # The lookup alone: every stored row's checksum is verified.
        with EmbeddingCache(cache_dir, cached._namespace(clip), cold.shape[1]) as store:
            keys = [content_key(p) for p in paths]
            found, lookup_seconds = timed(lambda: store.get(keys), "cpu")
            assert len(found) == n
        # Identity of a local checkpoint: the SHA-256 of its bytes, once per
        # process and file version.
        checkpoint = Path(cache_dir) / "checkpoint.pt"
        torch.save(clip.model.state_dict(), checkpoint)
        _, hash_seconds = timed(lambda: checkpoint_identity(str(checkpoint)), "cpu")
        megabytes = checkpoint.stat().st_size / 1e6
    reference = cold if reference is None else reference
    rows.append(
        dict(
            model=model,
            what="cache: cold run (embeds and stores)",
            images_per_s=n / cold_seconds,
            cosine=cosine(cold, reference),
        )
    )
    rows.append(
        dict(
            model=model,
            what=f"cache: warm re-run, median of 3 "
            f"({cold_seconds / warm_seconds:.0f}x faster than cold)",
            images_per_s=n / warm_seconds,
            cosine=cosine(warm, reference),
        )
    )
    rows.append(
        dict(
            model=model,
            what=f"cache: lookup with checksums alone "
            f"({lookup_seconds * 1e3:.1f} ms for {n} rows)",
            images_per_s=n / lookup_seconds,
            cosine=1.0,
        )
    )
    rows.append(
        dict(
            model=model,
            what=f"checkpoint identity: SHA-256 of a {megabytes:.0f} MB "
            f"checkpoint, once per process ({hash_seconds:.2f} s)",
            images_per_s=float("nan"),
            cosine=float("nan"),
        )
    )
    return forward_rate if forward_rate is not None else n / cold_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32"])
    parser.add_argument(
        "--images", default="hymenoptera", choices=["hymenoptera", "cifar10"]
    )
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory rows")
    parser.add_argument(
        "--only-cache",
        action="store_true",
        help="only the embedding-cache and checkpoint-identity rows",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    args = parser.parse_args()

    rows = []
    for model in args.models:
        run_model(model, args, rows)
    memory = {}
    if not args.no_memory:
        memory = {n: peak_rss_mb(n, TINY_MODEL) for n in (2000, 20000)}

    where = machine(args.device)
    print(
        f"\n## CLIPFeaturizer, {args.n_images} {args.images} photos, random weights, "
        f"batch {args.batch_size}, {where}\n"
    )
    print("| model | what | images/s | vs forward only | min cosine to fp32 |")
    print("|---|---|---|---|---|")
    for model in args.models:
        bound = next(r["images_per_s"] for r in rows if r["model"] == model)
        for r in (r for r in rows if r["model"] == model):
            if np.isnan(r["images_per_s"]):
                print(f"| {model} | {r['what']} | - | - | - |")
                continue
            print(
                f"| {model} | {r['what']} | {r['images_per_s']:,.1f} | "
                f"{r['images_per_s'] / bound:.2f} | {r['cosine']:.4f} |"
            )
    if memory:
        print(
            f"\nPeak memory (max RSS, {TINY_MODEL}, cifar10 paths repeating): "
            + ", ".join(f"{n:,} inputs {mb:.0f} MB" for n, mb in memory.items())
            + f" (embeddings of 20,000 inputs: {20000 * 64 * 4 / 2**20:.1f} MB)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "featurizer.json", "w") as handle:
        json.dump(
            dict(
                machine=where,
                args={k: str(v) for k, v in vars(args).items()},
                rows=rows,
                peak_rss_mb=memory,
            ),
            handle,
            indent=2,
        )


if __name__ == "__main__":
    main()
