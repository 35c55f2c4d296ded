"""A persistent, crash-safe store of image embeddings (SQLite in WAL mode).

Embeddings are keyed by a *namespace* (everything that determines the
embedding besides the image: model, weights, preprocessing, precision,
normalisation) and by the image's *content* hash, so an overwritten file is
embedded again and a renamed or copied one is not. Each batch is written in
one transaction: an interrupted run keeps every finished batch and never
leaves a partial row. SQLite's WAL mode lets several processes (joblib
workers) read and write the same file at once.
"""

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ._images import ImageBytes, RemoteFile
from ._warnings import warn

# Each row carries a checksum of (namespace, content, vector): a vector
# damaged on disk, or moved to another key, is a miss and is embedded again.
# (A new table name: caches from before the checksum are ignored, not read.)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS checked_embeddings (
    namespace TEXT NOT NULL,
    content TEXT NOT NULL,
    vector BLOB NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (namespace, content)
) WITHOUT ROWID
"""
# SQLite limits the number of bound parameters per statement.
_LOOKUP_CHUNK = 500
_FILE_CHUNK = 1 << 20


def content_key(item):
    """SHA-256 of what an input item *is*, not of where it lives.

    Files are hashed by their bytes, arrays by dtype, shape and bytes, PIL
    images by mode, size and pixels. Returns None for items that cannot be
    hashed (a missing file, an unsupported type): they are never cached, and
    decoding reports them.
    """
    digest = hashlib.sha256()
    try:
        if isinstance(item, (ImageBytes, RemoteFile)):  # a file's bytes: its key
            digest.update(b"file:")
            digest.update(item.data if isinstance(item, ImageBytes) else item.read())
        elif isinstance(item, (str, os.PathLike)):
            digest.update(b"file:")
            with open(item, "rb") as handle:
                while chunk := handle.read(_FILE_CHUNK):
                    digest.update(chunk)
        elif isinstance(item, np.ndarray):
            digest.update(f"array:{item.dtype.str}:{item.shape}:".encode())
            digest.update(np.ascontiguousarray(item).tobytes())
        elif isinstance(item, Image.Image):
            digest.update(f"pil:{item.mode}:{item.size}:".encode())
            digest.update(item.tobytes())
            # Palette images store indices: the colours and the transparent
            # index are part of what the image is.
            if item.palette is not None:
                digest.update(f"palette:{item.palette.mode}:".encode())
                digest.update(item.palette.tobytes())
            digest.update(f"transparency:{item.info.get('transparency')!r}:".encode())
            exif = item.getexif()
            if exif:  # orientation changes the decoded image
                digest.update(bytes(exif))
        else:
            return None
    except (OSError, ValueError):  # ValueError: a path with a NUL byte
        return None
    return digest.hexdigest()


def namespace_key(**parts):
    """A stable hash of the parameters that determine an embedding."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_CHECKPOINT_HASHES = {}


def checkpoint_identity(pretrained):
    """Identify a local checkpoint file by the SHA-256 of its bytes (other
    values, such as open_clip tags, as they are).

    The hash is computed once per process and file version (path, size,
    modification time, inode): an overwritten checkpoint whose size and
    modification time were restored still gets a new identity in the next
    process, so the embedding cache never serves its stale rows. Hashing
    runs at about 1-2 GB/s, a fraction of loading the same file.
    """
    if pretrained is None or not os.path.isfile(pretrained):
        return pretrained
    stat = os.stat(pretrained)
    version = (os.path.abspath(pretrained), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if version not in _CHECKPOINT_HASHES:
        digest = hashlib.sha256()
        with open(pretrained, "rb") as handle:
            while chunk := handle.read(_FILE_CHUNK * 8):
                digest.update(chunk)
        _CHECKPOINT_HASHES[version] = f"sha256:{digest.hexdigest()}"
    return _CHECKPOINT_HASHES[version]


def row_checksum(namespace, content, vector_bytes):
    """16-byte BLAKE2b of a row: detects damaged bytes and misplaced rows."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{namespace}\0{content}\0".encode())
    digest.update(vector_bytes)
    return digest.digest()


class EmbeddingCache:
    """Persistent ``(namespace, content hash) -> float32 vector`` store.

    A hit is exact or it is a miss: every row is checked against its
    checksum, length and finiteness before it is returned. A damaged
    database file is moved aside (with a warning naming both paths) and a
    fresh one started; a read-only cache serves its hits and stores nothing
    (one warning).

    Parameters
    ----------
    directory : str or path
        Created if needed; holds ``embeddings.sqlite``. ``~`` is expanded.
    namespace : str
        See :func:`namespace_key`.
    dim : int
        Embedding width; stored vectors of another length are ignored.
    """

    def __init__(self, directory, namespace, dim):
        self.path = Path(directory).expanduser() / "embeddings.sqlite"
        self.namespace = namespace
        self.dim = dim
        self.read_only = False
        self.damaged_rows = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # an existing read-only cache can still serve hits
        try:
            self._connection = self._connect_when_free()
        except sqlite3.DatabaseError as exc:
            if _is_read_only_error(exc):
                self._open_read_only(exc)
            elif isinstance(exc, sqlite3.OperationalError):
                raise  # locked for over a minute, disk full, ...: not damage
            else:
                self._start_over(exc)

    def _connect_when_free(self):
        # Switching a new database to WAL takes an exclusive lock, and SQLite
        # answers "database is locked" at once (no busy handler) to a second
        # process opening it at that moment: wait and retry, never treat it
        # as damage (measured: 57 of 150 simultaneous first opens by two
        # processes failed so).
        deadline = time.monotonic() + 60.0
        delay = 0.01
        while True:
            try:
                return self._connect()
            except sqlite3.OperationalError as exc:
                message = str(exc).lower()
                busy = "locked" in message or "busy" in message
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.5)

    def _connect(self):
        # Autocommit mode; transactions are explicit in ``put``. A generous
        # busy timeout lets concurrent writers queue instead of failing.
        connection = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            # Reads a page of the table: garbage in the file fails here, at
            # open time, instead of in the middle of a transform.
            connection.execute("SELECT COUNT(*) FROM checked_embeddings").fetchone()
        except BaseException:
            connection.close()
            raise
        return connection

    def _open_read_only(self, exc):
        if not self.path.exists():
            raise PermissionError(
                f"Cannot create the embedding cache {self.path}: {exc}. Use a "
                "writable cache_dir, or cache_dir=None."
            ) from None
        # immutable=1: no lock or WAL index files are needed (the directory
        # may be read-only too); nobody can write here anyway.
        uri = f"file:{self.path.as_posix()}?immutable=1"
        self._connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self.read_only = True
        warn(
            f"The embedding cache {self.path} is read-only ({exc}): cached "
            "embeddings are used, new ones are computed but not stored.",
            UserWarning,
        )

    def _start_over(self, exc):
        """Move a damaged database aside and start an empty one."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(f"{aside}{suffix}")
        warn(
            f"The embedding cache {self.path} is damaged ({type(exc).__name__}: "
            f"{exc}); it was moved to {aside} and a new, empty cache started. "
            "Delete the moved file once you do not need it.",
            UserWarning,
        )
        self._connection = self._connect()

    def get(self, keys):
        """Return ``{key: vector}`` for the keys present in the store."""
        try:
            return self._get(keys)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise  # locked, busy, ...: not damage
            self._connection.close()
            self._start_over(exc)
            return {}

    def _get(self, keys):
        found = {}
        unique = [k for k in dict.fromkeys(keys) if k is not None]
        expected_bytes = 4 * self.dim
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(
                f"SELECT content, vector, checksum FROM checked_embeddings "
                f"WHERE namespace = ? AND content IN ({marks})",
                [self.namespace, *chunk],
            ).fetchall()
            for content, blob, checksum in rows:
                if len(blob) != expected_bytes or checksum != row_checksum(
                    self.namespace, content, blob
                ):
                    self.damaged_rows += 1  # a miss: embedded and stored again
                    continue
                vector = np.frombuffer(blob, dtype=np.float32)
                if np.all(np.isfinite(vector)):
                    found[content] = vector
        return found

    def put(self, keys, vectors):
        """Store one batch atomically (all rows or none)."""
        if self.read_only:
            return
        rows = []
        for key, vector in zip(keys, vectors):
            if key is not None:
                blob = np.asarray(vector, dtype=np.float32).tobytes()
                rows.append(
                    (self.namespace, key, blob, row_checksum(self.namespace, key, blob))
                )
        if not rows:
            return
        try:
            with self._connection:  # BEGIN ... COMMIT, ROLLBACK on error
                self._connection.execute("BEGIN IMMEDIATE")
                self._connection.executemany(
                    "INSERT OR REPLACE INTO checked_embeddings VALUES (?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.OperationalError as exc:
            if not _is_read_only_error(exc):
                raise
            self.read_only = True
            warn(
                f"The embedding cache {self.path} is read-only ({exc}): new "
                "embeddings are computed but not stored.",
                UserWarning,
            )

    def __len__(self):
        (count,) = self._connection.execute(
            "SELECT COUNT(*) FROM checked_embeddings WHERE namespace = ?",
            [self.namespace],
        ).fetchone()
        return count

    def close(self):
        self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_read_only_error(exc):
    message = str(exc).lower()
    return (
        "readonly" in message or "read-only" in message or ("unable to open" in message)
    )
