"""The ``sklearn-clip`` command line.

Only argparse is imported until a command runs, so that ``--help`` and
``--version`` answer at once; errors in the user's input end in one line
and exit status 2, as argparse's own do.
"""

import argparse
import sys

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
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        metavar="K",
        help="training images per class (default: 1 2 4 8 16)",
    )
    bench.add_argument(
        "--seeds",
        type=int,
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
        "e.g. --methods zero-shot 'GDA + zero-shot')",
    )
    bench.add_argument(
        "--model",
        default="ViT-B-32",
        help="open_clip model for image folders and CSVs (default: ViT-B-32)",
    )
    bench.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="pretrained tag or local checkpoint path; 'none' for random "
        "weights (testing only) (default: laion2b_s34b_b79k)",
    )
    bench.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'",
    )
    bench.add_argument(
        "--test-size",
        type=float,
        default=0.5,
        help="held-out fraction when the images carry no split (default: 0.5)",
    )
    bench.add_argument(
        "--out",
        default="bench_results",
        help="folder for the JSON results and PNG plots (default: bench_results)",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    """Entry point of the ``sklearn-clip`` command."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    from ._clip import CLIPWeightsUnavailableError

    try:
        if args.command == "bench":
            from . import _bench

            return _bench.run(args)
    except (ValueError, OSError, CLIPWeightsUnavailableError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"sklearn-clip {args.command}: error: {message}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
