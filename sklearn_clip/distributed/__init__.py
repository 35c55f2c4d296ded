"""Embed image collections on a cluster (Ray or Dask), resumably.

Importing this module imports no engine: Ray, Dask, pyarrow and fsspec are
imported when a function needs them, with an install hint where one is
missing (``pip install 'sklearn-clip[ray]'`` or ``'sklearn-clip[dask]'``).

- :func:`embed_to_parquet` embeds a list of image files into a folder of
  Parquet shards, on this machine, a Ray cluster or a Dask cluster; a re-run
  computes only the missing shards.
- :class:`EmbeddingStore` reads such a folder back in input order and
  exports it into the local embedding cache.
- :class:`CLIPBatchEmbedder` is the embedding step for Ray Data pipelines.

Model search needs no new API: scikit-learn's joblib parallelism runs on
Dask or Ray through ``joblib.parallel_config`` (see the user guide page
"Scaling out").

Inside: ``_embed`` orchestrates a job, ``_engines`` runs its shards on this
process, Ray or Dask, ``_worker`` is what every worker runs, ``_format`` is
the on-disk format (manifest, shard files, checksums), ``_store`` reads a
finished store and ``_ray_data`` is the Ray Data step.
"""

from ._columns import image_column_inputs
from ._embed import embed_to_parquet
from ._format import ManifestMismatchError, ShardsFailedError
from ._ray_data import CLIPBatchEmbedder
from ._store import EmbeddingStore

__all__ = [
    "CLIPBatchEmbedder",
    "EmbeddingStore",
    "ManifestMismatchError",
    "ShardsFailedError",
    "embed_to_parquet",
    "image_column_inputs",
]
