"""CLIPBatchEmbedder: the embedding step as a Ray Data ``map_batches`` class."""

import numpy as np

from .._base import warn_unused_parameters
from ._worker import embed_inputs, load_worker


class CLIPBatchEmbedder:
    """Embed a column of image paths inside a Ray Data pipeline.

    A callable class for ``Dataset.map_batches`` with an actor pool: each
    actor loads the CLIP model once, then embeds batch after batch with the
    unchanged :class:`CLIPFeaturizer`. Output columns are those of the
    input batch plus ``content_sha256``, ``embedding`` (float32, NaN where
    the input failed) and ``error`` (``None`` where it did not): no row is
    dropped.

    Ray Data writes and checkpoints on its own terms; for jobs that must
    resume after a failure, use :func:`embed_to_parquet`.

    Parameters
    ----------
    featurizer : CLIPFeaturizer
        Model, weights, device, precision and batch settings to use
        (``on_error`` is always ``"nan"`` here).
    input_column : str, default="path"
        Column holding the image paths.

    See Also
    --------
    embed_to_parquet : Resumable embedding on Ray or Dask.

    Examples
    --------
    >>> import ray.data  # doctest: +SKIP
    >>> from sklearn_clip import CLIPFeaturizer
    >>> from sklearn_clip.distributed import CLIPBatchEmbedder
    >>> ds = ray.data.from_items([{"path": p} for p in paths])  # doctest: +SKIP
    >>> ds = ds.map_batches(
    ...     CLIPBatchEmbedder,
    ...     fn_constructor_kwargs={"featurizer": CLIPFeaturizer("ViT-B-32")},
    ...     batch_size=256,
    ...     num_gpus=1,
    ...     compute=ray.data.ActorPoolStrategy(size=4),
    ... )  # doctest: +SKIP
    """

    def __init__(self, featurizer, *, input_column="path"):
        warn_unused_parameters(
            featurizer,
            ["cache_dir", "memmap_dir"],
            "in CLIPBatchEmbedder (the embeddings are columns of the dataset)",
        )
        self.input_column = input_column
        # Load now, once per actor, not in the first batch.
        self._featurizer, _ = load_worker(featurizer.get_params())

    def __call__(self, batch):
        """Embed one batch (a dict of columns, Ray Data's "numpy" format)."""
        if self.input_column not in batch:
            raise KeyError(
                f"the batch has no column {self.input_column!r} (its columns: "
                f"{sorted(batch)}); set input_column=..."
            )
        paths = [str(path) for path in batch[self.input_column]]
        embeddings, hashes, errors, kinds = embed_inputs(self._featurizer, paths)
        return {
            **batch,
            "content_sha256": np.array(hashes, dtype=object),
            "embedding": embeddings,
            "error": np.array(errors, dtype=object),
            "error_kind": np.array(kinds, dtype=object),
        }
