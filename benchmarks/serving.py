"""Serving a CLIP image tower with onnxruntime against torch, in one run.

On real photos (``../shared/data/images/hymenoptera``) with a random-weight
CLIP (speed does not depend on the weights), the same preprocessed pixels
for every forward-only row:

* torch fp32 ``encode_image`` (forward only), torch's default threads;
* the package's ``CLIPFeaturizer`` (decode + resize + forward, from JPEGs);
* torch dynamic int8 (the featurizer's ``quantize=True`` path);
* onnxruntime fp32 and dynamic int8 (MatMul), sessions as the package makes
  them (intra-op spinning off, one thread per usable core), and fp32 with
  onnxruntime's default spinning for comparison;

idle, then beside two busy processes (each a torch matrix-product loop with
its default threads). Repeats are interleaved (route by route within each
repeat) and the median is reported. ``min cos`` is the smallest cosine
similarity of a route's embeddings to torch fp32's.

Then the cost of a serving environment: the installed size of what
``sklearn-clip predict`` needs (onnxruntime, numpy, Pillow and their
dependencies) against the torch stack (torch, torchvision, open_clip and
their dependencies, CUDA wheels included where installed), and the cold
start (a fresh process: imports, model load, first batch of 8 photos).

    python benchmarks/serving.py                      # ViT-B-32, ~10 min on 2 cores
    python benchmarks/serving.py --model sklearn-clip-tiny --repeats 2   # smoke run
"""

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from sklearn_clip import CLIPFeaturizer, load_clip
from sklearn_clip._clip import quantized_image_encoder
from sklearn_clip._onnx import image_tower_onnx, preprocess_settings
from sklearn_clip._onnx_runtime import decode_image, inference_session, preprocess_image

IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images/hymenoptera"
warnings.filterwarnings("ignore")

BUSY = """
import torch
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def photos(limit):
    if not IMAGES.exists():
        raise SystemExit(f"{IMAGES} not found: the benchmark needs ../shared/data")
    with open(IMAGES / "labels.csv", newline="") as handle:
        return [str(IMAGES / r["path"]) for r in csv.DictReader(handle)][:limit]


def cosine_min(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def spinning_session(path):
    """Onnxruntime's defaults (intra-op threads spin-wait)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def routes(args, paths, folder):
    clip = load_clip(args.model, None, "cpu")
    featurizer = CLIPFeaturizer(
        args.model, None, device="cpu", normalize=False, progress=False
    )
    settings = preprocess_settings(featurizer)
    pixels = np.stack([preprocess_image(decode_image(p), settings) for p in paths])
    tensor = torch.from_numpy(pixels)
    files = {}
    for quantize in (False, True):
        path = folder / f"tower-{args.model}-{'int8' if quantize else 'fp32'}.onnx"
        if not path.exists():
            start = time.perf_counter()
            model = image_tower_onnx(featurizer, quantize=quantize)
            path.write_bytes(model.SerializeToString())
            print(
                f"exported {path.name} in {time.perf_counter() - start:.0f} s "
                f"({path.stat().st_size / 1e6:.0f} MB)",
                flush=True,
            )
        files[quantize] = path
    int8 = quantized_image_encoder(args.model, None)
    fp32 = inference_session(files[False])
    q8 = inference_session(files[True])
    spinning = spinning_session(files[False])

    def torch_forward(encode):
        def run():
            with torch.inference_mode():
                return encode(tensor).float().numpy()

        return run

    def ort(session):
        return lambda: session.run(None, {"pixels": pixels})[0]

    return {
        "torch fp32 encode_image (forward only)": torch_forward(
            clip.model.encode_image
        ),
        "package CLIPFeaturizer (decode + resize + forward)": lambda: (
            featurizer.transform(paths)
        ),
        "torch dynamic int8 (forward only)": torch_forward(int8),
        "onnxruntime fp32 (spinning off)": ort(fp32),
        "onnxruntime fp32 (onnxruntime's default spinning)": ort(spinning),
        "onnxruntime dynamic int8 (spinning off)": ort(q8),
    }


def measure(table, repeats, n_images):
    rates = {name: [] for name in table}
    outputs = {}
    for _ in range(repeats):
        for name, run in table.items():
            start = time.perf_counter()
            outputs[name] = run()
            rates[name].append(n_images / (time.perf_counter() - start))
    return {n: float(np.median(r)) for n, r in rates.items()}, outputs


def dist_size(names):
    """Installed bytes of distributions ``names`` and their requirements."""
    seen, todo, total = set(), list(names), 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            try:
                total += os.path.getsize(file.locate())
            except OSError:
                pass
        for requirement in dist.requires or ():
            if "extra ==" in requirement:
                continue
            todo.append(
                requirement.split(";")[0]
                .split("[")[0]
                .split("<")[0]
                .split(">")[0]
                .split("=")[0]
                .split("!")[0]
                .split("~")[0]
                .strip()
            )
    return total, sorted(seen)


COLD_ORT = """
import sys, time
start = time.perf_counter()
from sklearn_clip._onnx_runtime import decode_image, inference_session, preprocess_image
import numpy as np, json
session = inference_session(sys.argv[1])
settings = json.loads(sys.argv[2])
pixels = np.stack([preprocess_image(decode_image(p), settings) for p in sys.argv[3:]])
session.run(None, {"pixels": pixels})
assert "torch" not in sys.modules
print(time.perf_counter() - start)
"""

COLD_TORCH = """
import sys, time
start = time.perf_counter()
from sklearn_clip import CLIPFeaturizer
CLIPFeaturizer(sys.argv[1], None, device="cpu", progress=False).transform(sys.argv[2:])
print(time.perf_counter() - start)
"""


def cold_start(code, *argv):
    """Seconds from interpreter start to the first batch's result."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, float(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--n-images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache-dir", default=None, help="keep the exported towers here"
    )
    args = parser.parse_args()
    paths = photos(args.n_images)
    folder = Path(args.cache_dir or tempfile.mkdtemp(prefix="sklearn-clip-onnx-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"model {args.model} (random weights), {len(paths)} photos, batch = all, "
        f"median of {args.repeats} interleaved repeats",
        flush=True,
    )
    table = routes(args, paths, folder)
    idle, outputs = measure(table, args.repeats, len(paths))
    busy = [
        subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.DEVNULL)
        for _ in range(2)
    ]
    try:
        time.sleep(2)
        loaded, _ = measure(table, args.repeats, len(paths))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    reference = outputs["torch fp32 encode_image (forward only)"]
    base_idle = idle["torch fp32 encode_image (forward only)"]
    base_loaded = loaded["torch fp32 encode_image (forward only)"]
    print()
    print("| route | img/s idle | img/s beside 2 busy processes | min cosine |")
    print("|---|---|---|---|")
    for name in table:
        print(
            f"| {name} | {idle[name]:.1f} ({idle[name] / base_idle:.2f}x) | "
            f"{loaded[name]:.1f} ({loaded[name] / base_loaded:.2f}x) | "
            f"{cosine_min(outputs[name], reference):.5f} |"
        )
    for label in ("fp32", "int8"):
        path = folder / f"tower-{args.model}-{label}.onnx"
        print(f"ONNX tower {label}: {path.stat().st_size / 1e6:.0f} MB")

    serving, _ = dist_size(["onnxruntime", "numpy", "pillow"])
    stack, names = dist_size(["torch", "torchvision", "open-clip-torch", "skorch"])
    print()
    print("| environment | installed size |")
    print("|---|---|")
    print(f"| onnxruntime + numpy + Pillow (predict) | {serving / 1e6:.0f} MB |")
    print(
        f"| torch + torchvision + open_clip + skorch ({len(names)} distributions) | "
        f"{stack / 1e6:.0f} MB |"
    )
    print(f"| ratio | {serving / stack:.3f} |")

    import json

    settings = json.dumps(preprocess_settings(CLIPFeaturizer(args.model, None)))
    first = paths[:8]
    print()
    print(
        "| cold start (fresh process, imports + first batch of 8) | wall s | inside s |"
    )
    print("|---|---|---|")
    ort_wall, ort_inner = cold_start(
        COLD_ORT, str(folder / f"tower-{args.model}-fp32.onnx"), settings, *first
    )
    torch_wall, torch_inner = cold_start(COLD_TORCH, args.model, *first)
    print(f"| onnxruntime fp32 | {ort_wall:.2f} | {ort_inner:.2f} |")
    print(f"| torch (CLIPFeaturizer, random init) | {torch_wall:.2f} | ", end="")
    print(f"{torch_inner:.2f} |")
    print(f"| ratio | {ort_wall / torch_wall:.2f} | {ort_inner / torch_inner:.2f} |")


if __name__ == "__main__":
    main()
