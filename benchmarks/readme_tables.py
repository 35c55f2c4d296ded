"""The documentation's benchmark tables, made from the bench's JSON, and the
check that the documents still say what that JSON says.

A table in README.md (or any Markdown document) that quotes the bench is
preceded by a marker naming the table and the JSON it comes from, paths
relative to the repository root::

    <!-- table: accuracy from benchmarks/published/bench/stanford_cars.json -->
    | method | 1 shots | 2 shots | ...

Every body row of the documented table must be a row of the table made
here from that JSON, cell for cell (a document may quote fewer rows, never
other numbers); ``tests/test_documented_numbers.py`` runs the check on
the README, benchmarks/README.md and the docs. To update the documents
after a new run, copy the bench's JSON into ``benchmarks/published/`` and
print each table::

    cd benchmarks/published/bench
    python ../../readme_tables.py accuracy stanford_cars.json
    python benchmarks/readme_tables.py --check README.md

To add a table: write a function ``(list of JSON paths) -> Markdown table``
and register it in :data:`TABLES` (the name is what markers say).
"""

import argparse
import json
import re
import sys
from pathlib import Path

from sklearn_clip import _bench as bench

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!--\s*table:\s*(?P<name>.+?)\s+from\s+(?P<sources>.+?)\s*-->")


def read(path):
    """``(dataset name, records of the first run, conditions)`` of a bench
    JSON file; records timed beside busy processes (``--load``) are left out.
    """
    data = json.loads(Path(path).read_text())
    records = [r for r in data["records"] if "load" not in r]
    return data["dataset"], records, data.get("conditions", {})


def _shots(records):
    return sorted({r["shots"] for r in records})


def _one(sources):
    if len(sources) != 1:
        raise ValueError(f"this table comes from one JSON file, not {len(sources)}")
    return read(sources[0])


def accuracy(sources):
    """Test accuracy (%), mean ± sample std per method and shot count."""
    _, records, _ = _one(sources)
    return bench.markdown_table(
        bench.summarize(records, "accuracy"),
        _shots(records),
        lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}",
    )


def fit_time(sources):
    """Fit time (s), mean over the draws, per method and shot count."""
    _, records, _ = _one(sources)
    return bench.markdown_table(
        bench.summarize(records, "fit_seconds"),
        _shots(records),
        lambda m, s: f"{m:.3f}",
    )


def best_newer(sources):
    """The best newer method against the best seed-study method per shot."""
    _, records, _ = _one(sources)
    return bench.best_by_family(bench.summarize(records, "accuracy"), _shots(records))


def chooser_against_best(sources):
    """One row per set: CLIPClassifier's accuracy and its difference from
    the best single method on the test split, per shot count.
    """
    rows, all_shots = [], set()
    for source in sources:
        name, records, _ = read(source)
        summary = bench.summarize(records, "accuracy")
        shots = _shots(records)
        all_shots.update(shots)
        best = bench._largest_per_shot(
            summary, shots, lambda m: m not in bench.CHOOSERS and bench._inductive(m)
        )
        with_text = any(
            bench.METHODS[m].needs_text for m in summary if m in bench.METHODS
        )
        cells = []
        for n in shots:
            acc = summary["CLIPClassifier"][n][0]
            cells.append(f"{100 * acc:.2f} ({100 * (acc - best[n][0]):+.2f})")
        label = f"{name} (text)" if with_text else name
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    header = "| set | " + " | ".join(
        f"{n} shot{'s' if n != 1 else ''}" for n in sorted(all_shots)
    )
    return "\n".join([header + " |", "|---" * (len(all_shots) + 1) + "|", *rows])


def gda_against_scaled_lr(sources):
    """Image-only sets: StandardScaler + LR, the linear probe and GDA, mean
    accuracy per shot count, and GDA's difference from StandardScaler + LR.
    """
    methods = ("StandardScaler + LR", "linear probe", "GDA")
    rows = []
    for source in sources:
        name, records, _ = read(source)
        summary = bench.summarize(records, "accuracy")
        for n in _shots(records):
            means = [summary[m][n][0] for m in methods]
            rows.append(
                f"| {name} | {n} | "
                + " | ".join(f"{100 * m:.2f}" for m in means)
                + f" | {100 * (means[2] - means[0]):+.2f} |"
            )
    header = (
        "| set | shots | " + " | ".join(methods) + " | GDA - (StandardScaler + LR) |"
    )
    return "\n".join([header, "|---" * 6 + "|", *rows])


#: Table name (as markers give it) -> function of the JSON paths.
TABLES = {
    "accuracy": accuracy,
    "fit time": fit_time,
    "best newer": best_newer,
    "CLIPClassifier against the best single method": chooser_against_best,
    "GDA against StandardScaler + LR": gda_against_scaled_lr,
}


def _rows(table):
    """Body rows of a Markdown table as tuples of stripped cells."""
    lines = [line.strip() for line in table.strip().splitlines()]
    return [
        tuple(cell.strip() for cell in line.strip("|").split("|")) for line in lines[2:]
    ]


def _common_start(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def check(document, root=ROOT):
    """Problems (strings) of every marked table of ``document`` (a path);
    ``[]`` when each says what its JSON says.
    """
    document = Path(document)
    lines = document.read_text().splitlines()
    problems = []
    for number, line in enumerate(lines, 1):
        marker = MARKER.search(line)
        if not marker:
            continue
        where = f"{document.name}:{number}"
        name, sources = marker["name"], marker["sources"].split()
        if name not in TABLES:
            problems.append(f"{where}: no table {name!r}; known: {sorted(TABLES)}")
            continue
        paths = [root / source for source in sources]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            problems.append(f"{where}: {name!r} reads {missing}, which do not exist")
            continue
        table = []
        for following in lines[number:]:
            if following.strip().startswith("|"):
                table.append(following)
            elif table or following.strip():
                break
        if len(table) < 3:
            problems.append(f"{where}: no Markdown table follows the marker")
            continue
        made = _rows(TABLES[name](paths))
        for row in _rows("\n".join(table)):
            if row not in made:
                # The made row that starts most like it: its key cells.
                closest = max(made, key=lambda r: _common_start(r, row), default=())
                hint = (
                    f"; it gives {' | '.join(closest)!r}"
                    if _common_start(closest, row)
                    else "; no row starts so"
                )
                problems.append(
                    f"{where}: {name!r} row {' | '.join(row)!r} is not what "
                    f"{' '.join(sources)} gives{hint}"
                )
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", nargs="?", choices=sorted(TABLES))
    parser.add_argument("sources", nargs="*", help="bench JSON files")
    parser.add_argument("--check", nargs="+", metavar="DOCUMENT", default=[])
    args = parser.parse_args(argv)
    if args.table:
        print(TABLES[args.table]([Path(s) for s in args.sources]))
    problems = [p for document in args.check for p in check(document)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
