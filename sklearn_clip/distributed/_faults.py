"""What a job does about failed rows: which rows a re-run embeds again, and
the summary a job ends with (rows embedded, error rows by kind and cause).

Every error row records whether its failure is ``"transient"`` (the input
may be readable later: network, timeout, 5xx, throttling, credentials) or
``"permanent"`` (the bytes are not an image, or the file does not exist),
in the shard's ``error_kind`` column. Shards written before that column
existed (sklearn-clip 0.2) have no kinds: their error rows count as
transient, so a re-run tries them again and records their kind.
"""

from .._remote import PERMANENT, TRANSIENT
from ._format import _parquet, read_shard_table

#: What ``retry_errors`` accepts.
RETRY_CHOICES = ("transient", "all")


def error_columns(fs, name):
    """``(errors, kinds)`` of a shard file: the ``error`` column and the
    ``error_kind`` column (``None`` per row in shards written without one).
    """
    with fs.open(name, "rb") as handle:
        names = _parquet().read_schema(handle).names
    columns = ["error", "error_kind"] if "error_kind" in names else ["error"]
    table = read_shard_table(fs, name, columns)
    errors = table.column("error").to_pylist()
    if "error_kind" in columns:
        kinds = table.column("error_kind").to_pylist()
    else:
        kinds = [None] * len(errors)
    return errors, kinds


def rows_to_retry(fs, name, retry_errors):
    """Offsets of the rows of a finished shard that a re-run embeds again:
    its transient error rows (and those of unknown kind), or with
    ``retry_errors="all"`` every error row.
    """
    errors, kinds = error_columns(fs, name)
    return [
        offset
        for offset, (error, kind) in enumerate(zip(errors, kinds))
        if error is not None and (retry_errors == "all" or kind != PERMANENT)
    ]


def summarize(errors_and_kinds, n_rows):
    """The summary of a store from its ``(errors, kinds)`` per shard:
    ``{"rows", "embedded", "transient", "permanent", "causes"}``, causes
    being ``{kind: {exception name: rows}}``.
    """
    summary = {"rows": n_rows, "transient": 0, "permanent": 0, "causes": {}}
    for errors, kinds in errors_and_kinds:
        for error, kind in zip(errors, kinds):
            if error is None:
                continue
            kind = PERMANENT if kind == PERMANENT else TRANSIENT
            summary[kind] += 1
            cause = error.split(":", 1)[0].strip() or "error"
            causes = summary["causes"].setdefault(kind, {})
            causes[cause] = causes.get(cause, 0) + 1
    summary["embedded"] = n_rows - summary["transient"] - summary["permanent"]
    return summary


def summary_line(summary):
    """One line: ``"29 rows: 27 embedded, 2 error rows (permanent: 1
    ValueError, 1 FileNotFoundError)"``.
    """
    failed = summary["transient"] + summary["permanent"]
    line = (
        f"{summary['rows']} rows: {summary['embedded']} embedded, {failed} error rows"
    )
    parts = []
    for kind in (TRANSIENT, PERMANENT):
        causes = summary["causes"].get(kind)
        if causes:
            listed = ", ".join(
                f"{count} {cause}"
                for cause, count in sorted(causes.items(), key=lambda c: -c[1])
            )
            parts.append(f"{kind}: {listed}")
    return line + (f" ({'; '.join(parts)})" if parts else "")
