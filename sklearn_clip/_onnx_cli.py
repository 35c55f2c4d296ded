"""The ``export`` and ``predict`` commands: a fitted classifier to one ONNX
file, and that file served by onnxruntime.

``predict`` imports neither torch nor open_clip (only numpy, Pillow and
onnxruntime), so it runs in a small serving environment; ``export`` runs
where the classifier was fitted.
"""

import os
import sys

#: Image files ``predict`` takes from a folder (what Pillow commonly reads).
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

COMMANDS = ("export", "predict")


def add_commands(commands, positive_int):
    """Add ``export`` and ``predict`` to the command line's subparsers."""
    export = commands.add_parser(
        "export",
        help="convert a fitted classifier (joblib or skops file) to one ONNX file",
        description="Convert a fitted classifier, or a pipeline made by "
        "make_clip_pipeline, to one ONNX file: a pipeline becomes one graph "
        "from preprocessed pixels to probabilities; a head alone takes CLIP "
        "embeddings. The class labels and the image preprocessing are stored "
        "in the file; 'sklearn-clip predict' serves it without torch.",
    )
    export.add_argument("model", help="the fitted estimator (.joblib, .pkl or .skops)")
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument(
        "--quantize",
        action="store_true",
        help="dynamic int8 matrix products in the image tower (smaller, faster "
        "on CPU; embeddings at cosine ~0.999)",
    )
    export.add_argument(
        "--opset", type=positive_int, default=None, help="ONNX opset (default: latest)"
    )
    predict = commands.add_parser(
        "predict",
        help="predict with an exported ONNX classifier (no torch needed)",
        description="Predict labels and probabilities of images (files or "
        "folders) with a file written by 'sklearn-clip export', on onnxruntime. "
        "For a head exported alone, give .npy files of CLIP embeddings instead. "
        "Writes one row per input; an unreadable input gets its reason in the "
        "'error' column, and the exit status is then 1.",
    )
    predict.add_argument("model", help="the .onnx file")
    predict.add_argument("inputs", nargs="+", metavar="IMAGES", help="files or folders")
    predict.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="images per run (default 32)",
    )
    predict.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default="csv",
        help="CSV (path, label, error, one column per class) or JSON lines "
        "(default csv)",
    )
    predict.add_argument(
        "-o", "--output", default="-", help="where to write (default: stdout)"
    )
    predict.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: the cores this process may use)",
    )


def run(args):
    """Run ``export`` or ``predict``; return the exit status (errors in the
    user's input end in one line and status 2, as the other commands').
    """
    try:
        if args.command == "export":
            return _export(args)
        return _predict(args)
    except (ValueError, OSError, ImportError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"sklearn-clip {args.command}: error: {message}", file=sys.stderr)
        return 2


def _load_estimator(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.endswith(".skops"):
        import skops.io

        from ._persistence import SKOPS_TRUSTED_TYPES

        untrusted = set(skops.io.get_untrusted_types(file=path))
        trusted = untrusted & set(SKOPS_TRUSTED_TYPES)
        if untrusted - trusted:
            raise ValueError(
                f"{path} holds types skops does not trust: "
                f"{sorted(untrusted - trusted)}; load it yourself after checking "
                "them, then call sklearn_clip.export_onnx."
            )
        return skops.io.load(path, trusted=sorted(trusted))
    import joblib

    return joblib.load(path)


def _export(args):
    from ._onnx import export_onnx

    estimator = _load_estimator(args.model)
    model = export_onnx(
        estimator, args.output, target_opset=args.opset, quantize=args.quantize
    )
    meta = {p.key: p.value for p in model.metadata_props}
    size = os.path.getsize(args.output) / 1e6
    print(
        f"wrote {args.output} ({size:.1f} MB): input "
        f"{meta['sklearn_clip.input']}, {model.graph.output[1].name} over "
        f"{len(_classes(meta))} classes"
    )
    return 0


def _classes(meta):
    import json

    return json.loads(meta["sklearn_clip.classes"])


def _expand(inputs, suffixes):
    """Files of ``inputs`` in order; folders give their files with
    ``suffixes``, sorted, recursively. A missing input stays in the list
    (its row reports the error).
    """
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                found.extend(
                    os.path.join(folder, f)
                    for f in sorted(files)
                    if f.lower().endswith(suffixes)
                )
        else:
            found.append(item)
    return found


def _embedding_rows(paths):
    """``(row name, embedding or None, error or None)`` of .npy files."""
    import numpy as np

    for path in paths:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            yield path, None, f"{type(exc).__name__}: {exc}"
            continue
        for i, row in enumerate(np.atleast_2d(array)):
            yield f"{path}:{i}", row, None


def _embedding_results(classifier, rows, batch_size):
    """``(name, proba or None, error or None)`` of embedding rows, scored
    ``batch_size`` rows at a time.
    """
    import itertools

    import numpy as np

    rows = iter(rows)
    while batch := list(itertools.islice(rows, batch_size)):
        good = [row for _, row, error in batch if error is None]
        scores = iter(classifier.predict_proba(np.stack(good)) if good else [])
        for name, _, error in batch:
            yield name, None if error else next(scores), error


def _predict(args):
    import csv
    import json

    import numpy as np

    from ._onnx_runtime import OnnxClassifier

    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"{args.model}: no such file")
    classifier = OnnxClassifier(args.model, threads=args.threads)
    labels = classifier.classes_.tolist()
    classes = [str(c) for c in labels]
    if classifier.input_kind == "pixels":
        paths = _expand(args.inputs, _IMAGE_SUFFIXES)
        results = classifier.iter_predict_images(paths, batch_size=args.batch_size)
    else:
        rows = _embedding_rows(_expand(args.inputs, (".npy",)))
        results = _embedding_results(classifier, rows, args.batch_size)
    out = sys.stdout if args.output == "-" else open(args.output, "w", newline="")  # noqa: SIM115
    n_errors = 0
    try:
        writer = csv.writer(out) if args.format == "csv" else None
        if writer is not None:
            writer.writerow(["path", "label", "error", *classes])
        for name, proba, error in results:
            label = None if proba is None else labels[int(np.argmax(proba))]
            n_errors += error is not None
            if writer is not None:
                values = (
                    [""] * len(classes)
                    if proba is None
                    else [f"{p:.6g}" for p in proba]
                )
                writer.writerow(
                    [name, "" if label is None else label, error or "", *values]
                )
            else:
                record = {
                    "path": name,
                    "label": label,
                    "probabilities": None
                    if proba is None
                    else {c: float(p) for c, p in zip(classes, proba)},
                    "error": error,
                }
                out.write(json.dumps(record) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if n_errors:
        print(
            f"sklearn-clip predict: {n_errors} input(s) unreadable (see 'error')",
            file=sys.stderr,
        )
        return 1
    return 0
