"""EmbeddingStore: read a folder written by ``embed_to_parquet``."""

import os

import numpy as np

from .._embedding_cache import EmbeddingCache
from .._images import ImageLoadError
from .._warnings import warn
from ._faults import error_columns, summarize
from ._format import (
    MANIFEST_NAME,
    OTHER_JOB,
    TARS,
    ManifestMismatchError,
    ManifestProblem,
    embedding_matrix,
    finished_shards,
    output_location,
    part_name,
    read_manifest,
    read_shard_table,
    shard_bounds,
    shard_count,
    shard_problem,
    shard_rows,
)

# Rows per transaction when exporting into the local embedding cache.
_EXPORT_CHUNK = 10_000


class EmbeddingStore:
    """The embeddings of a folder of Parquet shards, in input order.

    A store is what :func:`embed_to_parquet` writes: one
    ``part-000123.parquet`` per shard (columns ``row``, ``input``,
    ``content_sha256``, ``embedding``, ``error``, ``error_kind``) and a
    ``_manifest.json``.
    Any Parquet reader can read the folder too (pandas, Spark, DuckDB, Ray
    Data); this class adds input order, error handling and the export into
    the local embedding cache.

    Parameters
    ----------
    output_dir : str or path
        Local folder or fsspec URL of the store.
    storage_options : dict, default=None
        fsspec options (credentials, endpoints).

    Attributes
    ----------
    manifest : dict
        The job: featurizer parameters, ``cache_key``, ``embedding_dim``,
        ``shard_size``, ``n_inputs``, ``inputs_sha256``.
    n_inputs : int
        Rows of the finished store.
    embedding_dim : int
        Width of the embeddings.
    n_shards : int
        Shards of the job.

    Raises
    ------
    ManifestMismatchError
        The manifest disagrees with the shards (an edited ``embedding_dim``,
        ``n_inputs`` or ``shard_size``) or has an entry of the wrong type;
        the message names the field. Every shard's footer is checked when
        the store opens.

    See Also
    --------
    embed_to_parquet : Write a store.

    Examples
    --------
    >>> from sklearn_clip.distributed import EmbeddingStore
    >>> store = EmbeddingStore("embeddings/")  # doctest: +SKIP
    >>> X = store.to_numpy()  # doctest: +SKIP
    >>> store.errors()  # doctest: +SKIP
    [(17, '/data/img/broken.jpg', 'corrupt or truncated image: ...')]
    """

    def __init__(self, output_dir, *, storage_options=None):
        self.output_dir = output_dir
        self.storage_options = storage_options
        self._fs, self._root = output_location(output_dir, storage_options)
        manifest = read_manifest(self._fs, self._root)
        if manifest is None:
            raise FileNotFoundError(
                f"{output_dir} is not an embedding store: it has no {MANIFEST_NAME} "
                "(write one with sklearn_clip.distributed.embed_to_parquet)."
            )
        self.manifest = manifest
        self.embedding_dim = int(manifest["embedding_dim"])
        self.n_shards = shard_count(
            int(manifest["n_inputs"]), int(manifest["shard_size"])
        )
        # WebDataset archives: each shard's rows are counted when it is read.
        self._tars = manifest.get("layout") == TARS
        # File name -> (version, problem or None): footers are read once per
        # file version, not on every call (a store of tens of thousands of
        # shards answers from one listing).
        self._checked = {}
        # The manifest is checked against every shard's footer now: an
        # edited manifest raises here, before any array has its shape.
        self._missing_shards()

    def __repr__(self):
        missing = len(self.missing_shards())
        rows = "?" if self._tars and missing else self.n_inputs
        return (
            f"EmbeddingStore({os.fspath(self.output_dir)!r}: {rows} inputs, "
            f"{missing} of {self.n_shards} shards missing)"
        )

    def __len__(self):
        return self.n_inputs

    @property
    def n_inputs(self):
        """Rows of the finished store (for tar archives, their samples,
        counted once every shard is written).
        """
        if not self._tars:
            return int(self.manifest["n_inputs"])
        return self._spans()[-1][2] if self.n_shards else 0

    def _spans(self):
        """``(shard, first row, end row)`` of every shard, in row order."""
        if not self._tars:
            size, total = int(self.manifest["shard_size"]), self.n_inputs
            return [
                (shard, *shard_bounds(shard, size, total))
                for shard in range(self.n_shards)
            ]
        self._checked_complete()
        spans, start = [], 0
        for shard in range(self.n_shards):
            rows = shard_rows(self._fs, f"{self._root}/{part_name(shard)}")
            spans.append((shard, start, start + rows))
            start += rows
        return spans

    def missing_shards(self):
        """Indices of the shards not (or not validly) written yet.

        Returns
        -------
        shards : list of int
            Empty when the store is complete.
        """
        return self._missing_shards()[0]

    def _missing_shards(self):
        """``(missing shard indices, {file name: why not usable})``; the
        footers are checked here, the data pages when a shard is read.
        """
        done, problems = finished_shards(
            self._fs, self._root, self.manifest, checked=self._checked
        )
        edited = {
            name: why
            for name, why in problems.items()
            if isinstance(why, ManifestProblem)
        }
        if edited:
            fields = sorted({why.field for why in edited.values()})
            details = "; ".join(
                f"{name.rsplit('/', 1)[-1]}: {why}"
                for name, why in sorted(edited.items())[:5]
            )
            raise ManifestMismatchError(
                f"the {MANIFEST_NAME} of {self.output_dir} does not match its "
                f"shards ({', '.join(fields)}): {details}. The manifest was edited "
                "or replaced; restore it. Nothing is read from a store whose "
                "manifest and shards disagree."
            )
        return [s for s in range(self.n_shards) if s not in done], problems

    @property
    def is_complete(self):
        """Whether every shard is written."""
        return not self.missing_shards()

    def read_shard(self, shard, columns=None):
        """Read one shard.

        Parameters
        ----------
        shard : int
            Shard index, from 0 to ``n_shards - 1``.
        columns : list of str, default=None
            Columns to read (default: all).

        Returns
        -------
        table : pyarrow.Table
            One row per input of the shard.
        """
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} out of range [0, {self.n_shards}).")
        path = f"{self._root}/{part_name(shard)}"
        problem = shard_problem(self._fs, path, shard, self.manifest)
        if problem is not None:
            raise FileNotFoundError(self._incomplete_message([shard], {path: problem}))
        return self._read_shard(shard, columns)

    def _read_shard(self, shard, columns):
        """The shard's ``columns``, every page checked against its checksum."""
        try:
            return read_shard_table(
                self._fs, f"{self._root}/{part_name(shard)}", columns
            )
        except OSError as exc:
            raise OSError(
                f"shard {shard} of the store {self.output_dir} is {exc}. Nothing "
                "was returned from it. Run embed_to_parquet again with the same "
                "arguments: it checks every shard and computes damaged ones again."
            ) from None

    def _checked_complete(self):
        missing, problems = self._missing_shards()
        if missing:
            raise FileNotFoundError(self._incomplete_message(missing, problems))

    def _incomplete_message(self, missing, problems):
        shown = ", ".join(map(str, missing[:10])) + (
            " ..." if len(missing) > 10 else ""
        )
        message = (
            f"the store {self.output_dir} is incomplete: {len(missing)} of "
            f"{self.n_shards} shards are missing or not valid ({shown})."
        )
        if any(why in OTHER_JOB for why in problems.values()):
            return message + (
                f" Shards were written for another job than its {MANIFEST_NAME} "
                "describes (was the manifest edited or replaced?): restore that "
                "manifest, or embed into a new folder; running embed_to_parquet "
                "on this folder with other arguments is refused."
            )
        return message + (
            " Run embed_to_parquet again with the same arguments to compute them."
        )

    def _column(self, name):
        self._checked_complete()
        values = []
        for shard in range(self.n_shards):
            values.extend(self._read_shard(shard, [name]).column(0).to_pylist())
        return np.array(values, dtype=object)

    def inputs(self):
        """The input paths, in input order.

        Returns
        -------
        inputs : ndarray of str objects, shape (n_inputs,)
        """
        return self._column("input")

    def content_hashes(self):
        """The content key of every input, in input order.

        Returns
        -------
        hashes : ndarray of objects, shape (n_inputs,)
            Hex SHA-256 of each file's bytes (the key of the local embedding
            cache); ``None`` for files that could not be read.
        """
        return self._column("content_sha256")

    def errors(self):
        """The inputs that could not be embedded.

        Returns
        -------
        errors : list of (int, str, str)
            ``(row, input path, reason)`` for every failed row, in row order.
        """
        self._checked_complete()
        return self._errors()

    def _errors(self):
        found = []
        for shard, start, _ in self._spans():
            table = self._read_shard(shard, ["row", "input", "error"])
            compute = _parquet_compute()
            failed = table.filter(compute.is_valid(table.column("error")))
            offset = start if self._tars else 0  # tar shards count from 0
            found += zip(
                [row + offset for row in failed.column("row").to_pylist()],
                failed.column("input").to_pylist(),
                failed.column("error").to_pylist(),
            )
        return found

    def summary(self):
        """Rows embedded and error rows by kind and cause.

        Returns
        -------
        summary : dict
            ``rows``, ``embedded``, ``transient`` and ``permanent`` (error
            rows of each kind: a re-run embeds the transient ones again) and
            ``causes``: ``{kind: {exception name: rows}}``. Error rows of
            shards written by sklearn-clip 0.2, which record no kind, count
            as transient.

        Examples
        --------
        >>> store.summary()  # doctest: +SKIP
        {'rows': 29, 'transient': 0, 'permanent': 2, 'causes': {'permanent':
        {'ValueError': 1, 'FileNotFoundError': 1}}, 'embedded': 27}
        """
        self._checked_complete()
        return summarize(
            (
                error_columns(self._fs, f"{self._root}/{part_name(shard)}")
                for shard in range(self.n_shards)
            ),
            self.n_inputs,
        )

    def to_numpy(self, *, on_error="raise", memmap_path=None):
        """The embeddings in input order.

        Parameters
        ----------
        on_error : {"raise", "nan"}, default="raise"
            Rows whose input failed: ``"raise"`` one :class:`ImageLoadError`
            naming them; ``"nan"`` NaN rows and a warning (as
            :class:`CLIPFeaturizer`'s ``on_error``).
        memmap_path : str or path, default=None
            Write the array to this ``.npy`` file and return it memory-mapped,
            for stores larger than memory.

        Returns
        -------
        embeddings : ndarray of shape (n_inputs, embedding_dim), float32
        """
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}.")
        self._checked_complete()
        failures = [(row, repr(item), why) for row, item, why in self._errors()]
        if failures and on_error == "raise":
            raise ImageLoadError(failures, self.n_inputs)
        shape = (self.n_inputs, self.embedding_dim)
        if memmap_path is None:
            out = np.empty(shape, dtype=np.float32)
        else:
            out = np.lib.format.open_memmap(
                os.fspath(memmap_path), mode="w+", dtype=np.float32, shape=shape
            )
        for shard, start, stop in self._spans():
            table = self._read_shard(shard, ["row", "embedding"])
            rows = table.column("row").to_numpy() + (start if self._tars else 0)
            if not np.array_equal(rows, np.arange(start, stop)):
                raise ValueError(
                    f"shard {shard} of {self.output_dir} holds rows "
                    f"{rows[:3].tolist()}..., not {start}..{stop - 1}: the file "
                    "was altered; delete it and run embed_to_parquet again."
                )
            out[start:stop] = embedding_matrix(
                table.column("embedding"), self.embedding_dim
            )
        if failures:
            warn(
                f"{ImageLoadError(failures, self.n_inputs)} Their rows are NaN "
                "(on_error='nan').",
                UserWarning,
            )
        if memmap_path is not None:
            out.flush()
        return out

    def to_embedding_cache(self, cache_dir):
        """Copy the embeddings into a local embedding cache.

        Afterwards a :class:`CLIPFeaturizer` with ``cache_dir=cache_dir`` and
        the same cache key (model, weights, resolved precision, normalisation)
        reads these embeddings instead of computing them, for any path whose
        file has the same bytes. A GPU job with ``precision="auto"`` ran in
        bfloat16: set ``precision="bf16"`` on the local featurizer to share
        its cache key, or run the job with ``precision="fp32"``.

        Parameters
        ----------
        cache_dir : str or path
            The featurizer's ``cache_dir``.

        Returns
        -------
        n_rows : int
            Embeddings written (rows with an error or no content hash are
            skipped).
        """
        self._checked_complete()
        written = 0
        with EmbeddingCache(
            cache_dir, self.manifest["cache_key"], self.embedding_dim
        ) as cache:
            for shard in range(self.n_shards):
                table = self._read_shard(
                    shard, ["content_sha256", "embedding", "error"]
                )
                hashes = table.column("content_sha256").to_pylist()
                errors = table.column("error").to_pylist()
                matrix = embedding_matrix(table.column("embedding"), self.embedding_dim)
                keep = [
                    i
                    for i, (key, error) in enumerate(zip(hashes, errors))
                    if key is not None and error is None
                ]
                for start in range(0, len(keep), _EXPORT_CHUNK):
                    chunk = keep[start : start + _EXPORT_CHUNK]
                    cache.put([hashes[i] for i in chunk], matrix[chunk])
                written += len(keep)
        return written


def _parquet_compute():
    import pyarrow.compute

    return pyarrow.compute
