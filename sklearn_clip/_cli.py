"""The ``sklearn-clip`` command line.

Only argparse is imported until a command runs, so that ``--help`` and
``--version`` answer at once; errors in the user's input end in one line
and exit status 2, as argparse's own do.
"""

import argparse
import sys

from . import _onnx_cli
from ._version import __version__

# Mirrors _bench.METHODS (kept here so that --help does not import torch);
# tests check that the two agree.
METHOD_NAMES = (
    "zero-shot",
    "LR",
    "StandardScaler + LR",
    "linear probe",
    "attention probe",
    "CLIP-Adapter",
    "Tip-Adapter",
    "Tip-Adapter-F",
    "GDA",
    "GDA + zero-shot",
    "ZS linear probe",
    "CLIPClassifier",
)


def _number(convert, accepted, requirement):
    """An argparse type: ``convert`` the text, then require ``accepted``."""
    kind = "an integer" if convert is int else "a number"

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not accepted(value):
            raise argparse.ArgumentTypeError(f"{value} is not {requirement}")
        return value

    return parse


positive_int = _number(int, lambda value: value >= 1, "a positive integer")
non_negative_int = _number(int, lambda value: value >= 0, "a non-negative integer")
fraction = _number(float, lambda value: 0 < value < 1, "between 0 and 1")

#: Exit status of ``embed`` when the job finished but rows failed transiently
#: (a re-run retries them); 2 is an error, 130 an interruption (Ctrl-C).
EXIT_TRANSIENT = 3
EXIT_INTERRUPTED = 130


def timeout_seconds(text):
    """``SECONDS`` or ``CONNECT,READ`` (an argparse type)."""
    parts = text.split(",")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SECONDS or CONNECT,READ seconds"
        )
    values = tuple(_number(float, lambda v: v > 0, "positive")(p) for p in parts)
    return values[0] if len(values) == 1 else values


def preprocess_choice(text):
    """``--preprocess``: a pretrained tag, or a JSON object with mean, std,
    interpolation and resize_mode (an argparse type).
    """
    if text.lstrip().startswith("{"):
        return json_object(text)
    return text


PREPROCESS_HELP = (
    "image preprocessing when the weights do not carry it: a pretrained tag of "
    "--model whose preprocessing to copy, or a JSON object such as "
    '\'{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize_mode": "squash"}\' '
    "(default: the weights' own: a tag's, an hf-hub:/local-dir: config's, or for "
    "a checkpoint file the one published for --model)"
)


def json_object(text):
    """A JSON object (an argparse type)."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object {...}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sklearn-clip",
        description="Adapt frozen CLIP models to your labelled images, the "
        "scikit-learn way. Run 'sklearn-clip COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"sklearn-clip {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench = commands.add_parser(
        "bench",
        help="few-shot benchmark of every method on features or images",
        description="Few-shot benchmark of CLIP adaptation methods on a features "
        ".npz (X_train, y_train, X_test, y_test, optional text_features), an image "
        "folder (one sub-folder per class, optionally under train/ and test/ or val/) "
        "or a CSV of path,label[,split][,classname]. Nothing is tuned on the test "
        "split. Prints Markdown tables; writes JSON and a PNG plot per data set.",
    )
    bench.add_argument("data", nargs="+", help="features .npz, image folder or CSV")
    bench.add_argument(
        "--shots",
        type=positive_int,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        metavar="K",
        help="training images per class (default: 1 2 4 8 16)",
    )
    bench.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="few-shot draws per shot count (default: 3)",
    )
    bench.add_argument(
        "--methods",
        nargs="+",
        default=list(METHOD_NAMES),
        choices=METHOD_NAMES,
        metavar="METHOD",
        help="subset of: " + ", ".join(METHOD_NAMES) + " (quote names with spaces, "
        "e.g. --methods zero-shot 'GDA + zero-shot') (default: all)",
    )
    bench.add_argument(
        "--model",
        default="ViT-B-32",
        help="open_clip model for image folders and CSVs, or hf-hub:ORG/NAME or "
        "local-dir:FOLDER (default: ViT-B-32)",
    )
    bench.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="pretrained tag or local checkpoint path; 'none' for random "
        "weights (testing only) (default: laion2b_s34b_b79k)",
    )
    bench.add_argument(
        "--preprocess",
        type=preprocess_choice,
        default=None,
        metavar="TAG|JSON",
        help=PREPROCESS_HELP,
    )
    bench.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' (default: auto)",
    )
    bench.add_argument(
        "--test-size",
        type=fraction,
        default=0.5,
        help="held-out fraction when the images carry no split (default: 0.5)",
    )
    bench.add_argument(
        "--out",
        default="bench_results",
        help="folder for the JSON results and PNG plots (default: bench_results)",
    )
    bench.add_argument(
        "--load",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also time seed 0's fits again beside N busy torch processes (other "
        "jobs on the machine) and print both times side by side; every table "
        "says the machine's measured load (default: 0, no busy processes)",
    )
    bench.add_argument(
        "--unlabelled",
        choices=["none", "test", "pool"],
        default="none",
        help="also run each method with unlabelled images (TransCLIPClassifier), "
        "same draws: 'test' passes the test images unlabelled to fit "
        "(transductive), 'pool' the rest of the training pool and the validation "
        "split (inductive) (default: none)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    embed = commands.add_parser(
        "embed",
        help="embed image files into Parquet shards, locally or on Ray/Dask",
        description="Embed image files into a folder of Parquet shards (one "
        "part-NNNNNN.parquet per shard and a _manifest.json), on this machine or on "
        "a Ray or Dask cluster. Running the same command again computes only the "
        "missing shards and the rows that failed transiently. Read the result with "
        "sklearn_clip.distributed.EmbeddingStore(DIR). Exit status: 0 done (error "
        "rows, if any, are permanent: not images); 3 done, but rows failed "
        "transiently (network, timeout, 5xx, throttling, credentials): run the same "
        "command again to retry them; 2 error; 130 interrupted (run the same "
        "command again to resume).",
    )
    embed.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image folder (searched recursively), image file, WebDataset .tar "
        "archive (one shard each), Parquet file with an image column (--column), "
        "CSV with a 'path' column, or text file with one "
        "path or URL per line (relative paths are relative to the list's folder); "
        "each may be a URL read through fsspec (s3://bucket/a.jpg, "
        "s3://bucket/list.txt, or s3://bucket/folder/ for its image files)",
    )
    embed.add_argument("-o", "--output", required=True, help="output folder or URL")
    embed.add_argument(
        "--backend",
        choices=("local", "ray", "dask"),
        default="local",
        help="engine (default: local, this process)",
    )
    embed.add_argument(
        "--address",
        default=None,
        help="Ray or Dask cluster address (default: start a local cluster)",
    )
    embed.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="Ray actors, or workers of the Dask LocalCluster started here "
        "(default: one per GPU, else one per core)",
    )
    embed.add_argument(
        "--shard-size",
        type=positive_int,
        default=4096,
        help="images per shard (default: 4096)",
    )
    embed.add_argument(
        "--model",
        default="ViT-B-32",
        help="open_clip model, or hf-hub:ORG/NAME or local-dir:FOLDER "
        "(default: ViT-B-32)",
    )
    embed.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="pretrained tag or local checkpoint path; 'none' for random weights "
        "(default: laion2b_s34b_b79k)",
    )
    embed.add_argument(
        "--preprocess",
        type=preprocess_choice,
        default=None,
        metavar="TAG|JSON",
        help=PREPROCESS_HELP,
    )
    embed.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' (default: auto)",
    )
    embed.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="model precision; auto is bf16 on CUDA, fp32 on the CPU (default: auto)",
    )
    embed.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="images per forward pass (default: 64)",
    )
    embed.add_argument(
        "--column",
        default="image",
        help="the column holding the images in Parquet inputs (encoded bytes or "
        "a Hugging Face Image feature) (default: image)",
    )
    embed.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        metavar="JSON",
        help="fsspec options for URL inputs and the output, as a JSON object, e.g. "
        '\'{"client_kwargs": {"endpoint_url": "http://minio:9000"}}\' (default: the '
        "filesystems' own, from the environment)",
    )
    embed.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds a read of a URL may wait to connect and for each answer, or "
        "CONNECT,READ (default: 30); a read that fails transiently is tried 3 times",
    )
    embed.add_argument(
        "--retry-errors",
        choices=("transient", "all"),
        default="transient",
        help="error rows of finished shards that a re-run embeds again: those that "
        "failed transiently, or all (default: transient)",
    )
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    _onnx_cli.add_commands(commands, positive_int)
    return parser


def main(argv=None):
    """Entry point of the ``sklearn-clip`` command."""
    if argv is None:  # run as the command, not called from Python
        return _as_command(sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command in _onnx_cli.COMMANDS:
        return _onnx_cli.run(args)  # predict imports no torch: before _clip
    from ._clip import CLIPWeightsUnavailableError
    from .distributed import ManifestMismatchError, ShardsFailedError

    try:
        if args.command == "bench":
            from . import _bench

            return _bench.run(args)
        if args.command == "embed":
            return _embed(args)
    except KeyboardInterrupt:
        if args.command == "embed":
            advice = "finished shards are kept; run the same command again to resume"
        else:
            advice = (
                f"the data sets finished so far are in {args.out}; the bench does "
                "not resume: run the same command again to start over"
            )
        print(f"sklearn-clip {args.command}: interrupted: {advice}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ManifestMismatchError as exc:
        # One line per differing field.
        print(f"sklearn-clip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (
        ValueError,
        OSError,
        ImportError,
        CLIPWeightsUnavailableError,
        ShardsFailedError,
    ) as exc:
        if isinstance(exc, CLIPWeightsUnavailableError):
            exc = exc.for_command_line()  # --pretrained PATH, not pretrained='...'
        message = " ".join(str(exc).split())  # one line
        print(f"sklearn-clip {args.command}: error: {message}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover


def _embed(args):
    import warnings

    from ._featurizer import CLIPFeaturizer
    from .distributed import embed_to_parquet
    from .distributed._faults import summary_line

    if not args.output.strip():
        raise ValueError("the output folder (-o) is empty")
    paths = expand_inputs(args.inputs, args.column, args.storage_options)
    featurizer = CLIPFeaturizer(
        args.model,
        pretrained=None if args.pretrained.lower() == "none" else args.pretrained,
        preprocess=args.preprocess,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        timeout=args.timeout,
    )
    with warnings.catch_warnings():
        # The summary below says it on stdout, with the exit status.
        warnings.filterwarnings("ignore", message="embed_to_parquet: .* rows:")
        store = embed_to_parquet(
            featurizer,
            paths,
            args.output,
            backend=args.backend,
            shard_size=args.shard_size,
            n_workers=args.workers,
            address=args.address,
            storage_options=args.storage_options,
            retry_errors=args.retry_errors,
            progress=not args.no_progress and "auto",
        )
    summary = store.summary()
    print(
        f"{_count(store.n_inputs, 'image')} in {_count(store.n_shards, 'shard')} "
        f"at {args.output}: {summary_line(summary)}"
    )
    if summary["transient"]:
        print(
            f"sklearn-clip embed: {_count(summary['transient'], 'row')} failed "
            "transiently (network, timeout, server, credentials): run the same "
            f"command again to retry them (exit status {EXIT_TRANSIENT})",
            file=sys.stderr,
        )
        return EXIT_TRANSIENT
    return 0


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def expand_inputs(inputs, column="image", storage_options=None):
    """Image paths from folders, image files, CSV files and text lists; the
    rows of ``column`` of Parquet files; WebDataset archives as they are.
    """
    import csv
    import os
    from pathlib import Path

    from ._images import IMAGE_EXTENSIONS, is_url, list_image_files
    from .distributed import image_column_inputs
    from .distributed._format import is_tar

    def resolve(listing, entry):
        # URLs stay as they are: workers read them through fsspec
        return entry if "://" in entry else os.fspath(listing.parent / entry)

    paths = []
    for item in inputs:
        if is_url(item):  # never a local path
            paths += _expand_url(item, column, storage_options)
            continue
        source = Path(item)
        if source.is_dir():
            found = list_image_files(source)
            if not found:
                raise ValueError(f"no image files under the folder {item!r}")
            paths += found
        elif source.suffix.lower() in IMAGE_EXTENSIONS or is_tar(item):
            paths.append(os.fspath(source))  # an image, or a WebDataset archive
        elif source.suffix.lower() == ".parquet":
            paths += image_column_inputs(
                [item], column, storage_options=storage_options
            )
        elif source.suffix.lower() == ".csv":
            # utf-8-sig: spreadsheet programs start their CSVs with a BOM
            with open(source, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if "path" not in (reader.fieldnames or []):
                    raise ValueError(
                        f"{item!r} needs a header row with a 'path' column"
                    )
                rows = list(reader)
            for line, row in enumerate(rows, start=2):
                if not row["path"]:
                    raise ValueError(f"{item!r}, line {line}: no path")
                paths.append(resolve(source, row["path"]))
        elif source.is_file():
            try:
                lines = source.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as exc:
                raise ValueError(f"{item!r} is not a UTF-8 text list: {exc}") from None
            paths += [
                resolve(source, line)
                for line in lines
                if line.strip() and not line.lstrip().startswith("#")
            ]
        else:
            raise ValueError(f"{item!r} is neither a folder nor a file")
    return paths


def _expand_url(url, column, storage_options):
    """The inputs a URL stands for: an image or archive as it is, the rows
    of a Parquet file's column, the entries of a CSV or text list, or the
    image files under a folder (a prefix).
    """
    import csv
    import io
    import posixpath

    import fsspec

    from ._images import IMAGE_EXTENSIONS
    from ._remote import with_timeouts
    from .distributed import image_column_inputs
    from .distributed._format import is_tar

    suffix = posixpath.splitext(url.split("?", 1)[0])[1].lower()
    if suffix in IMAGE_EXTENSIONS or is_tar(url):
        return [url]
    if suffix == ".parquet":
        return image_column_inputs([url], column, storage_options=storage_options)
    options = with_timeouts(url, storage_options, own_retries=False)
    if suffix in (".csv", ".txt"):
        with fsspec.open(url, "r", encoding="utf-8-sig", **options) as handle:
            text = handle.read()
        base = url.rsplit("/", 1)[0]
        if suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if "path" not in (reader.fieldnames or []):
                raise ValueError(f"{url!r} needs a header row with a 'path' column")
            entries = [row["path"] for row in reader]
        else:
            entries = [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        return [
            entry if "://" in entry or entry.startswith("/") else f"{base}/{entry}"
            for entry in entries
        ]
    fs, root = fsspec.core.url_to_fs(url, **options)
    try:
        found = sorted(
            name
            for name in fs.find(root)
            if posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    except FileNotFoundError:
        found = []
    if not found:
        raise ValueError(
            f"no image files under {url!r} (an image, .tar, .parquet, .csv or .txt "
            "URL is read as such; any other URL is listed as a folder)"
        )
    return [fs.unstrip_protocol(name) for name in found]


if __name__ == "__main__":
    sys.exit(main())


def _as_command(argv):
    """``main(argv)`` with warnings shown as the command's own lines
    (``sklearn-clip bench: warning: ...``) instead of a line of the package's
    code, which a command-line user did not write.
    """
    import warnings

    command = next((a for a in argv if not a.startswith("-")), None)
    prefix = "sklearn-clip" if command is None else f"sklearn-clip {command}"

    def show(message, category, filename, lineno, file=None, line=None):
        print(
            f"{prefix}: warning: {message} ({category.__name__})",
            file=sys.stderr if file is None else file,
        )

    with warnings.catch_warnings():
        warnings.showwarning = show
        return main(argv)
