"""Images stored in a column of Parquet files: a binary column of encoded
files, or the ``{bytes, path}`` structs of a Hugging Face ``Image`` feature
(the Parquet files of a dataset on the hub, or ``Dataset.to_parquet``); and
the Arrow files of a dataset saved with ``Dataset.save_to_disk``.

Each row is an input named ``"<file>#<column>[<row>]"``; a worker reads the
row groups that hold its shard's rows, once.
"""

import re

from .._images import FailedRead, ImageBytes, is_url

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
        The column: binary (encoded image files) or a Hugging Face ``Image``
        feature (structs with ``bytes``).
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
            names, n_rows = table.schema.names, table.num_rows
        else:
            parquet = _parquet_file(path, storage_options)
            names, n_rows = parquet.schema_arrow.names, parquet.metadata.num_rows
        if column not in names:
            raise ValueError(f"{path} has no column {column!r}; its columns: {names}")
        inputs += [f"{path}#{column}[{row}]" for row in range(n_rows)]
    return inputs


def is_column_input(identity):
    return bool(_IDENTITY.match(identity))


class ColumnReader:
    """Reads column inputs window after window; the row group last read
    stays in memory for the next window (a shard's rows are consecutive),
    so each row group is read once and memory holds one row group.
    """

    def __init__(self, storage_options=None):
        self.storage_options = storage_options
        self._files = {}
        self._group = (None, None, None)  # (file, column, group) of _values
        self._values = None

    def _file(self, path):
        if path not in self._files:
            parquet = _parquet_file(path, self.storage_options)
            bounds, start = [], 0
            for group in range(parquet.metadata.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                bounds.append((start, start + size))
                start += size
            self._files[path] = (parquet, bounds)
        return self._files[path]

    def read(self, identities):
        """The images of ``identities``, as :class:`ImageBytes` (or
        :class:`FailedRead` for an empty cell), in the order given.
        """
        items = []
        for identity in identities:
            match = _IDENTITY.match(identity)
            path, column, row = match["file"], match["column"], int(match["row"])
            if path.endswith(".arrow"):  # memory-mapped whole: no row groups
                if self._group != (path, column, 0):
                    table = _arrow_table(path, self.storage_options)
                    self._values = table.column(column)
                    self._group = (path, column, 0)
                items.append(_item(self._values[row].as_py(), identity))
                continue
            parquet, bounds = self._file(path)
            group = next(g for g, (a, b) in enumerate(bounds) if a <= row < b)
            if self._group != (path, column, group):
                self._values = parquet.read_row_group(group, columns=[column]).column(0)
                self._group = (path, column, group)
            value = self._values[row - bounds[group][0]].as_py()
            items.append(_item(value, identity))
        return items


def _item(value, name):
    if isinstance(value, dict):  # a Hugging Face Image cell
        value = value.get("bytes")
    if not value:
        return FailedRead(name, ValueError("no image bytes in this cell"))
    return ImageBytes(bytes(value), name=name)
