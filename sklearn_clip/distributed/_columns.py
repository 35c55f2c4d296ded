"""Images stored in a column of Parquet files: a binary column of encoded
files, a string column of image paths or URLs, or the ``{bytes, path}``
structs of a Hugging Face ``Image`` feature (the Parquet files of a dataset
on the hub, or ``Dataset.to_parquet``, whose cells may hold only a path);
and the Arrow files of a dataset saved with ``Dataset.save_to_disk``.

A path in a cell is read as the image: absolute paths and URLs as they are,
relative paths from the folder of the Parquet file that holds them.

Each row is an input named ``"<file>#<column>[<row>]"``; a worker reads the
row groups that hold its shard's rows, once.
"""

import os
import posixpath
import re
from dataclasses import dataclass

from .._images import FailedRead, ImageBytes, is_url, read_encoded
from .._remote import DEFAULT_TIMEOUT

_IDENTITY = re.compile(r"^(?P<file>.+)#(?P<column>[^#\[]+)\[(?P<row>\d+)\]$")


def _parquet_file(path, storage_options):
    import pyarrow.parquet as pq

    if is_url(path):
        import fsspec

        handle = fsspec.open(path, "rb", **(storage_options or {})).open()
        return pq.ParquetFile(handle)
    return pq.ParquetFile(path)


def _arrow_table(path, storage_options):
    """An Arrow IPC stream file (what ``save_to_disk`` writes) as a table,
    memory-mapped when local.
    """
    import pyarrow as pa

    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb", **(storage_options or {})) as handle:
            return pa.ipc.open_stream(handle).read_all()
    return pa.ipc.open_stream(pa.memory_map(path)).read_all()


def _saved_dataset_files(folder):
    """The Arrow files of a ``Dataset.save_to_disk`` folder, in order."""
    import json
    import os

    with open(os.path.join(folder, "state.json")) as handle:
        state = json.load(handle)
    return [os.path.join(folder, entry["filename"]) for entry in state["_data_files"]]


def image_column_inputs(files, column="image", *, storage_options=None):
    """The inputs of :func:`embed_to_parquet` for images held in a column of
    Parquet files: one per row, ``"<file>#<column>[<row>]"``, in file and
    row order.

    Parameters
    ----------
    files : list of str or path
        Parquet files (paths or URLs), or folders written by a Hugging Face
        dataset's ``save_to_disk`` (their Arrow files are read).
    column : str, default="image"
        The column: binary (encoded image files), string (image paths or
        URLs; relative paths are read from the Parquet file's folder) or a
        Hugging Face ``Image`` feature (structs with ``bytes`` and ``path``:
        a cell without bytes is read from its path). Another type is refused
        with its name.
    storage_options : dict, default=None
        fsspec options for URLs (give the featurizer the same ones).

    Returns
    -------
    inputs : list of str
        Only the files' footers are read.

    Examples
    --------
    >>> from sklearn_clip.distributed import embed_to_parquet, image_column_inputs
    >>> inputs = image_column_inputs(["train-00000.parquet"])  # doctest: +SKIP
    >>> store = embed_to_parquet(featurizer, inputs, "embeddings/")  # doctest: +SKIP
    """
    import os

    paths = []
    for path in map(str, files):
        if not is_url(path) and os.path.isdir(path):
            paths += _saved_dataset_files(path)
        else:
            paths.append(path)
    inputs = []
    for path in paths:
        if path.endswith(".arrow"):
            table = _arrow_table(path, storage_options)
            schema, n_rows = table.schema, table.num_rows
        else:
            parquet = _parquet_file(path, storage_options)
            schema, n_rows = parquet.schema_arrow, parquet.metadata.num_rows
        if column not in schema.names:
            raise ValueError(
                f"{path} has no column {column!r}; its columns: {schema.names}"
            )
        _check_column_type(schema.field(column).type, path, column)
        inputs += [f"{path}#{column}[{row}]" for row in range(n_rows)]
    return inputs


def _check_column_type(column_type, path, column):
    import pyarrow as pa

    kinds = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_string)
    if any(kind(column_type) for kind in (*kinds, pa.types.is_large_string)):
        return
    if pa.types.is_struct(column_type) and {"bytes", "path"} & {
        column_type.field(i).name for i in range(column_type.num_fields)
    }:
        return
    raise ValueError(
        f"the column {column!r} of {path} is of type {column_type}; image columns "
        "hold encoded files (binary), image paths or URLs (string), or Hugging "
        "Face Image cells (struct<bytes, path>)."
    )


def is_column_input(identity):
    return bool(_IDENTITY.match(identity))


@dataclass(frozen=True)
class PathCell:
    """A cell holding the path or URL of an image (resolved): read with
    :func:`read_path_cell`, by the caller's reading threads.
    """

    identity: str
    path: str


def read_path_cell(cell, storage_options=None, timeout=DEFAULT_TIMEOUT):
    """The image a :class:`PathCell` names, read once (:class:`ImageBytes`
    or a :class:`FailedRead` whose reason names the path; URLs with
    ``timeout``).
    """
    item = read_encoded(cell.path, storage_options, timeout)
    if isinstance(item, FailedRead):
        exc = item.error
        try:
            named = type(exc)(f"{cell.path} (the path in this cell): {exc}")
        except Exception:  # noqa: BLE001 - an exception type with other arguments
            named = exc
        return FailedRead(cell.identity, named)
    return item


class ColumnReader:
    """Reads column inputs window after window; the row group last read
    stays in memory for the next window (a shard's rows are consecutive),
    so each row group is read once and memory holds one row group.

    A row that cannot be read (its file gone, shorter than when the inputs
    were listed, without the column) is a :class:`FailedRead` saying why.
    """

    def __init__(self, storage_options=None):
        self.storage_options = storage_options
        self._files = {}
        self._group = (None, None, None)  # (file, column, group) of _values
        self._values = None

    def _file(self, path):
        if path not in self._files:
            try:
                parquet = _parquet_file(path, self.storage_options)
            except Exception as exc:  # noqa: BLE001 - each of its rows says why
                self._files[path] = exc
                raise
            bounds, start = [], 0
            for group in range(parquet.metadata.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                bounds.append((start, start + size))
                start += size
            self._files[path] = (parquet, bounds)
        if isinstance(self._files[path], Exception):
            raise self._files[path]
        return self._files[path]

    def read(self, identities):
        """The images of ``identities``, in the order given:
        :class:`ImageBytes`, a :class:`PathCell` for a cell holding a path,
        or a :class:`FailedRead` for an empty or unreadable cell.
        """
        items = []
        for identity in identities:
            match = _IDENTITY.match(identity)
            path, column, row = match["file"], match["column"], int(match["row"])
            try:
                value = self._value(path, column, row)
            except Exception as exc:  # noqa: BLE001 - reported in the row's place
                items.append(FailedRead(identity, exc))
                continue
            items.append(_item(value, identity, path))
        return items

    def _value(self, path, column, row):
        if path.endswith(".arrow"):  # memory-mapped whole: no row groups
            if self._group != (path, column, 0):
                table = _arrow_table(path, self.storage_options)
                self._values = _column_of(table, column, path)
                self._group = (path, column, 0)
            if row >= len(self._values):
                raise _beyond(row, len(self._values), path)
            return self._values[row].as_py()
        parquet, bounds = self._file(path)
        group = next((g for g, (a, b) in enumerate(bounds) if a <= row < b), None)
        if group is None:
            raise _beyond(row, bounds[-1][1] if bounds else 0, path)
        if self._group != (path, column, group):
            if column not in parquet.schema_arrow.names:
                raise _no_column(column, path)
            self._values = parquet.read_row_group(group, columns=[column]).column(0)
            self._group = (path, column, group)
        return self._values[row - bounds[group][0]].as_py()


def _column_of(table, column, path):
    if column not in table.schema.names:
        raise _no_column(column, path)
    return table.column(column)


def _beyond(row, n_rows, path):
    return IndexError(
        f"row {row} is past the end of {path}, which has {n_rows} rows now: the "
        "file changed since the inputs were listed (list them again)"
    )


def _no_column(column, path):
    return KeyError(
        f"{path} has no column {column!r} now: the file changed since the inputs "
        "were listed (list them again)"
    )


def _item(value, name, file):
    """The input a cell holds: its bytes, a path to read, or why neither."""
    if isinstance(value, dict):  # a Hugging Face Image cell
        data, path = value.get("bytes"), value.get("path")
        if data:
            return ImageBytes(bytes(data), name=name)
        if path:  # Dataset.to_parquet: a cell holding only the file's path
            return PathCell(name, _resolve(path, file))
        return FailedRead(name, ValueError("no image bytes and no path in this cell"))
    if isinstance(value, str):
        if not value:
            return FailedRead(name, ValueError("no image path in this cell"))
        return PathCell(name, _resolve(value, file))
    if not value:
        return FailedRead(name, ValueError("no image bytes in this cell"))
    return ImageBytes(bytes(value), name=name)


def _resolve(path, file):
    """A cell's path: URLs and absolute paths as they are, relative paths
    from the folder of the file holding the cell.
    """
    if is_url(path) or os.path.isabs(path):
        return path
    if is_url(file):
        return posixpath.join(posixpath.dirname(file), path)
    return os.path.join(os.path.dirname(os.path.abspath(file)), path)
