"""The on-disk format of an embedding job: its manifest, one Parquet file
per shard, and how each is written, checked and read.

Shard ``i`` holds inputs ``[i * shard_size, (i + 1) * shard_size)``. A shard
file is written under a temporary name and renamed when complete, so a file
named ``part-000123.parquet`` is a finished shard: a killed job leaves only
finished shards and temporary files (dot-files, which Parquet readers skip).
Paths go through fsspec: local disk, NFS and object stores.

Every data page of a shard carries a CRC-32 checksum (Parquet page checksums),
verified whenever the package reads the shard: a damaged file raises or is
computed again, and never yields embeddings.
"""

import hashlib
import importlib
import json
import os
import re
import time
import uuid

import numpy as np

from .._clip import embedding_dim
from .._featurizer import embedding_parameters
from .._images import is_url
from .._version import __version__

FORMAT = 1
MANIFEST_NAME = "_manifest.json"
# A shard's file name, matched whole (``old-part-000001.parquet`` is not one).
_PART_PATTERN = re.compile(r"part-(\d{6,})\.parquet")
# Parquet key-value metadata of each shard file.
_CACHE_KEY_FIELD = b"sklearn_clip.cache_key"
_SHARD_FIELD = b"sklearn_clip.shard"
_JOB_INPUTS_FIELD = b"sklearn_clip.job_inputs_sha256"  # the manifest's
_SHARD_INPUTS_FIELD = b"sklearn_clip.shard_inputs_sha256"  # this shard's paths
_CHECKSUMS_FIELD = b"sklearn_clip.page_checksums"  # "crc32": written with them
# The manifest's shape entries the shard was written under (JSON): a manifest
# edited since is found out instead of read with the wrong shape.
_JOB_SHAPE_FIELD = b"sklearn_clip.job_shape"
# A tar archive's version when its shard read it (see _tars.archive_version).
_SOURCE_VERSION_FIELD = b"sklearn_clip.source_version"
#: Manifest entries that fix the shape of the store: stamped on every shard.
SHAPE_FIELDS = ("embedding_dim", "n_inputs", "shard_size")
# Manifest entries that describe a run, not the job: not compared on resume.
_INFORMATIONAL = ("sklearn_clip_version", "created")

_INSTALL_HINTS = {
    "pyarrow": "pip install 'sklearn-clip[dask]' (or [ray]; the local backend "
    "needs only pyarrow and fsspec)",
    "fsspec": "pip install 'sklearn-clip[dask]' (or [ray]; the local backend "
    "needs only pyarrow and fsspec)",
    "ray": "pip install 'sklearn-clip[ray]'",
    "distributed": "pip install 'sklearn-clip[dask]'",
}


class ManifestMismatchError(ValueError):
    """The output folder holds another embedding job than the one asked for.

    Raised instead of mixing two jobs' shards in one folder; the message names
    every field that differs. Use a new folder, or delete the old one.
    """


class ShardsFailedError(RuntimeError):
    """Some shards of an embedding job failed; the finished ones are kept.

    Parameters
    ----------
    failures : dict of int to str
        Shard index to the error that stopped it.
    n_shards : int
        Shards of the job, for the message.
    output_dir : str or path
        The job's output folder, for the message.

    Attributes
    ----------
    failures : dict of int to str
        Shard index to the error that stopped it.
    """

    def __init__(self, failures, n_shards, output_dir):
        self.failures = dict(failures)
        shown = sorted(self.failures.items())[:10]
        lines = [f"  shard {i}: {reason}" for i, reason in shown]
        if len(self.failures) > len(shown):
            lines.append(f"  ... and {len(self.failures) - len(shown)} more")
        super().__init__(
            f"{len(self.failures)} of {n_shards} shards failed; the finished "
            f"shards in {output_dir} are kept, and running the same call again "
            "computes only the missing ones:\n" + "\n".join(lines)
        )


def require(module):
    """Import an optional engine or library, with an install hint if absent."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is required for this (not installed: {exc}). Install it "
            f"with: {_INSTALL_HINTS[module]}"
        ) from exc


def output_location(output_dir, storage_options=None):
    """``(filesystem, root path)`` of a local path or fsspec URL."""
    fsspec = require("fsspec")
    fs, root = fsspec.core.url_to_fs(os.fspath(output_dir), **(storage_options or {}))
    return fs, root.rstrip("/") or "/"


def part_name(shard):
    return f"part-{shard:06d}.parquet"


def check_path_inputs(inputs):
    """The inputs as a list of path strings; other items are refused by index."""
    if isinstance(inputs, (str, bytes, os.PathLike)):
        raise ValueError(
            f"inputs must be a list of image paths, got one path {inputs!r}; for a "
            "folder use sklearn_clip.load_image_folder or the CLI's "
            "'sklearn-clip embed FOLDER'."
        )
    try:
        items = list(inputs)
    except TypeError:
        raise ValueError(
            f"inputs must be a list of image paths, got {type(inputs).__name__}."
        ) from None
    if not items:
        raise ValueError("inputs is empty: at least one image path is required.")
    paths = []
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike)):
            raise ValueError(
                f"inputs[{i}] is a {type(item).__name__}; a distributed job takes "
                "image file paths or URLs (workers read the files themselves). Embed "
                "in-memory images with CLIPFeaturizer.transform."
            )
        path = os.fspath(item)
        # URLs are read through fsspec with the featurizer's storage_options;
        # workers may run in another folder: relative paths are made absolute.
        paths.append(path if is_url(path) else os.path.abspath(path))
    return paths


def inputs_digest(paths):
    """SHA-256 of the ordered input list (paths, not contents)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


#: Inputs that are WebDataset tar archives: one shard per archive.
TARS = "webdataset tars"


def is_tar(path):
    return path.lower().endswith(".tar")


def inputs_layout(paths):
    """``None`` for image files (shards of ``shard_size`` inputs) or
    :data:`TARS` when every input is a ``.tar`` archive (one shard each);
    a mix is refused.
    """
    tars = [is_tar(path) for path in paths]
    if not any(tars):
        return None
    if not all(tars):
        raise ValueError(
            f"inputs mix {sum(tars)} .tar archives with {len(tars) - sum(tars)} other "
            "files: give image files, or WebDataset .tar shards, not both."
        )
    return TARS


def job_fields(featurizer, paths, shard_size):
    """The manifest entries known before any model is loaded. For tar
    archives, the rows are counted only when each archive is read:
    ``n_inputs`` is then the number of archives and ``shard_size`` 1.
    """
    fields = {
        "format": FORMAT,
        "featurizer": embedding_parameters(featurizer),
        "embedding_dim": embedding_dim(featurizer.model),
        "shard_size": int(shard_size),
        "n_inputs": len(paths),
        "inputs_sha256": inputs_digest(paths),
    }
    if inputs_layout(paths) == TARS:
        fields.update(layout=TARS, shard_size=1)
    return fields


def read_manifest(fs, root):
    path = f"{root}/{MANIFEST_NAME}"
    try:
        # One request: another job may rewrite the object meanwhile (a
        # ranged read of an object store would then fail on its ETag).
        manifest = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not a readable manifest ({exc}); it was edited or damaged. "
            "Restore it, or delete the folder to start over."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a manifest of this package's format {FORMAT}; delete the "
            "folder to start over, or use a new one."
        )
    _check_manifest_entries(manifest, path)
    return manifest


def _check_manifest_entries(manifest, path):
    """Raise :class:`ManifestMismatchError` naming an entry of the wrong type."""
    wrong = [
        f"{field}={manifest.get(field)!r} (a positive integer is expected)"
        for field in SHAPE_FIELDS
        if not isinstance(manifest.get(field), int)
        or isinstance(manifest.get(field), bool)
        or manifest.get(field) < 1
    ]
    wrong += [
        f"{field}={manifest.get(field)!r} (a hex digest is expected)"
        for field, optional in (("inputs_sha256", False), ("cache_key", True))
        if not (
            isinstance(manifest.get(field), str)
            or (optional and manifest.get(field) is None)
        )
    ]
    if manifest.get("layout") not in (None, TARS):
        wrong.append(f"layout={manifest.get('layout')!r} (unknown)")
    if wrong:
        raise ManifestMismatchError(
            f"{path} was edited or damaged: {'; '.join(wrong)}. Restore it, or "
            "delete the folder to start over."
        )


class ManifestProblem(str):
    """Why a shard file is not usable: the manifest differs from what the
    shard was written under (``field`` names the entry). Such a shard means
    the manifest was edited: reading the store raises instead of using it.
    """

    field = None

    @classmethod
    def of(cls, field, manifest_value, shard_value):
        problem = cls(
            f"{field} is {manifest_value!r} in the manifest but was "
            f"{shard_value!r} when this shard was written"
        )
        problem.field = field
        return problem


def job_shape(manifest):
    """The :data:`SHAPE_FIELDS` of a manifest (stamped on each shard)."""
    return {field: manifest[field] for field in SHAPE_FIELDS}


def write_manifest(fs, root, manifest, *, exclusive=False):
    """Write the manifest atomically; with ``exclusive``, only if none exists.

    Returns False when ``exclusive`` and another run wrote one first. The
    exclusive write is atomic on local disk (a hard link) and on object
    stores with conditional writes (S3's ``If-None-Match``, through
    fsspec's ``"xb"`` mode); elsewhere it is a write followed by a read
    that checks the manifest is this run's.
    """
    fs.makedirs(root, exist_ok=True)
    manifest = {
        **manifest,
        "sklearn_clip_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = f"{root}/{MANIFEST_NAME}"
    text = json.dumps(manifest, indent=2)
    if not exclusive:
        _write_atomically(fs, path, text)
        return True
    if not _is_local(fs):
        return _create_exclusively(fs, path, text)
    temporary = f"{root}/.{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    try:
        os.link(temporary, path)  # atomic, and fails if the manifest exists
    except FileExistsError:
        return False
    finally:
        os.remove(temporary)
    return True


def _create_exclusively(fs, path, text):
    """Create the object ``path`` holding ``text`` unless it exists."""
    try:
        with fs.open(path, "xb") as handle:  # a conditional write
            handle.write(text.encode())
        return True
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):
        pass  # this file system has no exclusive mode
    if fs.exists(path):
        return False
    _write_atomically(fs, path, text)
    time.sleep(1.0)  # the other writer's object, if any, lands meanwhile
    fs.invalidate_cache(path)
    with fs.open(path, "r") as handle:
        return handle.read() == text


def check_manifest(existing, expected, output_dir):
    """Raise :class:`ManifestMismatchError` naming every differing field."""
    differing = []
    for field, value in expected.items():
        if field in _INFORMATIONAL:
            continue
        if field == "featurizer":
            old = existing.get(field) or {}
            differing += [
                (f"featurizer {name}", old.get(name), value[name])
                for name in value
                if old.get(name) != value[name]
            ]
        elif existing.get(field) != value:
            differing.append((field, existing.get(field), value))
    if differing:
        lines = [
            f"  {field}: {old!r} there, {new!r} now" for field, old, new in differing
        ]
        raise ManifestMismatchError(
            f"{output_dir} holds another embedding job (its {MANIFEST_NAME} "
            "differs):\n" + "\n".join(lines) + "\nWrite to a new folder, or delete "
            "this one to start over; shards of two jobs are never mixed."
            + (
                f"\nNo shard was written for that job yet: if no job is running "
                f"there, delete {MANIFEST_NAME} to claim the folder."
                if "cache_key" in existing and existing["cache_key"] is None
                else ""
            )
        )


def shard_count(n_inputs, shard_size):
    return -(-n_inputs // shard_size)


def shard_bounds(shard, shard_size, n_inputs):
    start = shard * shard_size
    return start, min(start + shard_size, n_inputs)


def shard_files(fs, root):
    """``{shard: (file name, version)}`` of the part files in the store's
    folder, from one listing; the version (size and modification time, or
    the object's ETag) changes whenever the file is rewritten.
    """
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return {}
    found = {}
    for entry in entries:
        base = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        match = _PART_PATTERN.fullmatch(base)
        # Exactly the name written for its shard (part-0000001.parquet, with
        # a digit too many, is not shard 1).
        if match and base == part_name(int(match.group(1))):
            version = tuple(
                str(entry.get(key))
                for key in ("size", "mtime", "ino", "ETag", "LastModified", "etag")
                if key in entry
            )
            found[int(match.group(1))] = (entry["name"], version)
    return found


def finished_shards(
    fs,
    root,
    manifest,
    *,
    paths=None,
    verify_data=False,
    checked=None,
    source_versions=None,
):
    """Shards whose file is complete and belongs to this job.

    A file that is unreadable, has the wrong row count, was written for
    another job (cache key, input list), without page checksums or, with
    ``paths`` given, for other inputs than this shard's, is left out, and so
    is, with ``verify_data``, a file with a data page that fails its checksum
    (every page is read). Returns ``(done, problems)``: the finished shard
    indices and ``{file name: why not}`` of the others.

    ``checked``, a dict kept by the caller, remembers each file's verdict
    by its version: a later call lists the folder once and reads only the
    footers of files added or rewritten since.

    ``source_versions`` (tar archives): ``{shard: version}`` of each archive
    now (see ``_tars.archive_version``; None where it cannot be read): a
    shard written from another version of its archive is left out.
    """
    checked = {} if checked is None else checked
    done, problems = set(), {}
    for shard, (name, version) in shard_files(fs, root).items():
        if checked.get(name, (None,))[0] != version:
            problem = shard_problem(
                fs, name, shard, manifest, paths, verify_data, source_versions
            )
            checked[name] = (version, problem)
        problem = checked[name][1]
        if problem is None:
            done.add(shard)
        else:
            problems[name] = problem
    return done, problems


def shard_problem(
    fs, name, shard, manifest, paths=None, verify_data=False, source_versions=None
):
    """Why the file ``name`` is not a finished ``shard`` of this job (None if
    it is one). With ``verify_data``, every data page is read and checked;
    with ``source_versions``, the version of a tar archive is compared.
    A :class:`ManifestProblem` says the manifest differs from what the shard
    was written under.
    """
    beyond = not 0 <= shard < shard_count(manifest["n_inputs"], manifest["shard_size"])
    try:
        with fs.open(name, "rb") as handle:
            metadata = _parquet().read_metadata(handle)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is redone
        return (
            BEYOND_THE_LAST if beyond else f"unreadable ({type(exc).__name__}: {exc})"
        )
    fields = metadata.metadata or {}
    same_job = fields.get(_JOB_INPUTS_FIELD, b"").decode() == manifest[
        "inputs_sha256"
    ] and fields.get(_CACHE_KEY_FIELD, b"").decode() == manifest.get("cache_key")
    if same_job and (mismatch := _shape_mismatch(fields, metadata, manifest)):
        return mismatch
    if beyond:
        return BEYOND_THE_LAST
    start, stop = shard_bounds(shard, manifest["shard_size"], manifest["n_inputs"])
    if manifest.get("layout") != TARS and metadata.num_rows != stop - start:
        return f"{metadata.num_rows} rows, expected {stop - start}"
    if fields.get(_CHECKSUMS_FIELD) != b"crc32":
        return "written without page checksums (by an sklearn-clip before 0.2)"
    if fields.get(_CACHE_KEY_FIELD, b"").decode() != manifest.get("cache_key"):
        return "written with another featurizer cache key"
    if fields.get(_SHARD_FIELD, b"").decode() != str(shard):
        return "holds another shard"
    if fields.get(_JOB_INPUTS_FIELD, b"").decode() != manifest["inputs_sha256"]:
        return "written for another input list"
    if paths is not None and fields.get(
        _SHARD_INPUTS_FIELD, b""
    ).decode() != inputs_digest(paths[start:stop]):
        return "written for other inputs than this shard's"
    if source_versions is not None and manifest.get("layout") == TARS:
        stamped = fields.get(_SOURCE_VERSION_FIELD)
        now = source_versions.get(shard)
        if stamped is None:
            return "written without its archive's version (by an older sklearn-clip)"
        if now is not None and stamped.decode() != now:
            return (
                f"its archive changed since it was read ({stamped.decode()} then, "
                f"{now} now)"
            )
    if verify_data:
        try:
            read_shard_table(fs, name)
        except OSError as exc:
            return str(exc)
    return None


def _shape_mismatch(fields, metadata, manifest):
    """A :class:`ManifestProblem` when the manifest's shape entries are not
    those this shard was written under (or its embedding width), else None.
    """
    if _JOB_SHAPE_FIELD in fields:
        try:
            stamped = json.loads(fields[_JOB_SHAPE_FIELD])
        except ValueError:
            stamped = {}
        for field in SHAPE_FIELDS:
            if field in stamped and stamped[field] != manifest[field]:
                return ManifestProblem.of(field, manifest[field], stamped[field])
    try:
        schema = metadata.schema.to_arrow_schema()
        width = schema.field("embedding").type.list_size
    except (KeyError, AttributeError):
        return None  # no embedding column: reading it fails with its own error
    if width != manifest["embedding_dim"]:
        return ManifestProblem.of("embedding_dim", manifest["embedding_dim"], width)
    return None


#: The problem of a part file numbered past the job's last shard: ignored.
BEYOND_THE_LAST = "beyond the last shard of this job"


#: Problems that say the shard belongs to another job than the manifest's.
OTHER_JOB = (
    "written with another featurizer cache key",
    "written for another input list",
)


def shard_rows(fs, name):
    """The number of rows of a shard file, from its footer."""
    with fs.open(name, "rb") as handle:
        return _parquet().read_metadata(handle).num_rows


def read_shard_table(fs, name, columns=None):
    """A shard file as a pyarrow Table, every data page read checked against
    its CRC-32; a damaged file raises ``OSError`` naming it.
    """
    try:
        with fs.open(name, "rb") as handle:
            return _parquet().read_table(
                handle, columns=columns, page_checksum_verification=True
            )
    except OSError as exc:
        raise OSError(
            f"damaged: {name} fails its checksums ({' '.join(str(exc).split())})"
        ) from None


def _parquet():
    require("pyarrow")
    return importlib.import_module("pyarrow.parquet")


def _write_atomically(fs, path, text_or_bytes):
    directory, name = path.rsplit("/", 1)
    temporary = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    mode = "w" if isinstance(text_or_bytes, str) else "wb"
    with fs.open(temporary, mode) as handle:
        handle.write(text_or_bytes)
    if _is_local(fs):
        # os.replace: atomic, and fails on a directory in the way instead of
        # moving the file into it (shutil.move, fsspec's local mv, would).
        os.replace(temporary, path)
    else:
        fs.mv(temporary, path)


def _is_local(fs):
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def shard_table(first_row, paths, hashes, embeddings, errors, kinds=None):
    """The Arrow table of one shard (the columns of the store); ``kinds``:
    ``"transient"`` or ``"permanent"`` per failed row (stores written before
    0.3 have no ``error_kind`` column).
    """
    pa = require("pyarrow")
    n, dim = embeddings.shape
    failed = np.array([error is not None for error in errors], dtype=bool)
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).ravel())
    embedding = pa.FixedSizeListArray.from_arrays(
        values, dim, mask=pa.array(failed) if failed.any() else None
    )
    return pa.table(
        {
            "row": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
            "input": pa.array([displayable(path) for path in paths], type=pa.string()),
            "content_sha256": pa.array(hashes, type=pa.string()),
            "embedding": embedding,
            "error": pa.array(errors, type=pa.string()),
            "error_kind": pa.array(
                [None] * n if kinds is None else kinds, type=pa.string()
            ),
        }
    )


def displayable(path):
    """``path`` as valid UTF-8: bytes of a file name that are not UTF-8 (legal
    on Linux) are shown as backslash escapes; the file itself is still read.
    """
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def embedding_matrix(column, dim):
    """Rows of a fixed-size-list column as a float32 array (NaN where null)."""
    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    values = array.values.slice(array.offset * dim, len(array) * dim)
    matrix = values.to_numpy(zero_copy_only=False).reshape(len(array), dim)
    if array.null_count:
        matrix = matrix.copy()
        matrix[~array.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return matrix


def write_shard(
    table, shard, paths, job, root_url, storage_options=None, source_version=None
):
    """Write ``table`` as the finished file of ``shard``: stamped with the
    job's cache key, input digests and shape (``job["shape"]``), and the
    version of its tar archive, every data page checksummed, under a
    temporary name renamed when complete.
    """
    stamps = {
        _CACHE_KEY_FIELD: job["cache_key"].encode(),
        _SHARD_FIELD: str(shard).encode(),
        _JOB_INPUTS_FIELD: job["inputs_sha256"].encode(),
        _SHARD_INPUTS_FIELD: inputs_digest(paths).encode(),
        _CHECKSUMS_FIELD: b"crc32",
    }
    if job.get("shape") is not None:
        stamps[_JOB_SHAPE_FIELD] = json.dumps(job["shape"], sort_keys=True).encode()
    if source_version is not None:
        stamps[_SOURCE_VERSION_FIELD] = source_version.encode()
    table = table.replace_schema_metadata(stamps)
    fs, root = output_location(root_url, storage_options)
    sink = require("pyarrow").BufferOutputStream()
    _parquet().write_table(table, sink, write_page_checksum=True)
    _write_atomically(fs, f"{root}/{part_name(shard)}", sink.getvalue().to_pybytes())
