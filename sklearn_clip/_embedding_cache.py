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
from pathlib import Path

import numpy as np
from PIL import Image

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    namespace TEXT NOT NULL,
    content TEXT NOT NULL,
    vector BLOB NOT NULL,
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
        if isinstance(item, (str, os.PathLike)):
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
            exif = item.getexif()
            if exif:  # orientation changes the decoded image
                digest.update(bytes(exif))
        else:
            return None
    except OSError:
        return None
    return digest.hexdigest()


def namespace_key(**parts):
    """A stable hash of the parameters that determine an embedding."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_identity(pretrained):
    """Identify local checkpoint files by path, size and modification time
    (hashing hundreds of MB on every run would cost more than it saves)."""
    if pretrained is not None and os.path.isfile(pretrained):
        stat = os.stat(pretrained)
        return f"{os.path.abspath(pretrained)}:{stat.st_size}:{stat.st_mtime_ns}"
    return pretrained


class EmbeddingCache:
    """Persistent ``(namespace, content hash) -> float32 vector`` store.

    Parameters
    ----------
    directory : str or path
        Created if needed; holds ``embeddings.sqlite``.
    namespace : str
        See :func:`namespace_key`.
    dim : int
        Embedding width; stored vectors of another length are ignored.
    """

    def __init__(self, directory, namespace, dim):
        self.path = Path(directory) / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.dim = dim
        # Autocommit mode; transactions are explicit in ``put``. A generous
        # busy timeout lets concurrent writers queue instead of failing.
        self._connection = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(_SCHEMA)

    def get(self, keys):
        """Return ``{key: vector}`` for the keys present in the store."""
        found = {}
        unique = [k for k in dict.fromkeys(keys) if k is not None]
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(
                f"SELECT content, vector FROM embeddings WHERE namespace = ? "
                f"AND content IN ({marks})",
                [self.namespace, *chunk],
            )
            for content, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                # A row of the wrong length is never returned as an embedding.
                if vector.shape == (self.dim,) and np.all(np.isfinite(vector)):
                    found[content] = vector
        return found

    def put(self, keys, vectors):
        """Store one batch atomically (all rows or none)."""
        rows = [
            (self.namespace, key, np.asarray(vector, dtype=np.float32).tobytes())
            for key, vector in zip(keys, vectors)
            if key is not None
        ]
        if not rows:
            return
        with self._connection:  # BEGIN ... COMMIT, ROLLBACK on error
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows
            )

    def __len__(self):
        (count,) = self._connection.execute(
            "SELECT COUNT(*) FROM embeddings WHERE namespace = ?", [self.namespace]
        ).fetchone()
        return count

    def close(self):
        self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
