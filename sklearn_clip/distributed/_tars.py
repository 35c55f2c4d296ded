"""Reading WebDataset tar archives as a stream of samples.

A WebDataset archive holds samples as consecutive files sharing a key: the
file name up to its first dot (``shard-000/000017.jpg`` and
``shard-000/000017.cls`` are sample ``shard-000/000017``). An archive is read
front to back, once, and never held in memory whole.
"""

import posixpath
import tarfile

from .._images import IMAGE_EXTENSIONS, FailedRead, ImageBytes, is_url

#: File extensions read as the sample's image (lower case, no dot).
IMAGE_SUFFIXES = frozenset(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)


def sample_key(member_name):
    """``(key, extension)`` of a member: ``("dir/0001", "jpg")`` for
    ``"dir/0001.jpg"``, ``("dir/0001", "seg.png")`` for ``"dir/0001.seg.png"``.
    """
    directory, base = posixpath.split(member_name)
    stem, _, extension = base.partition(".")
    return posixpath.join(directory, stem), extension.lower()


def _open(url, storage_options):
    if is_url(url):
        import fsspec

        return fsspec.open(url, "rb", **(storage_options or {})).open()
    return open(url, "rb")


def iter_tar_samples(url, storage_options=None):
    """Yield ``(key, item)`` per sample of the archive at ``url`` (a path or
    URL), in archive order: ``item`` is the :class:`ImageBytes` of its first
    image file, or a :class:`FailedRead` when it has none (the row is then
    an error row, never dropped). Files of other kinds are skipped unread.
    """
    with (
        _open(url, storage_options) as raw,
        tarfile.open(fileobj=raw, mode="r|*") as archive,
    ):
        key, item, extensions = None, None, []
        for member in archive:
            if not member.isfile():
                continue
            member_key, extension = sample_key(member.name)
            if member_key != key:
                if key is not None:
                    yield key, item or _no_image(url, key, extensions)
                key, item, extensions = member_key, None, []
            extensions.append(extension)
            if item is None and extension.rpartition(".")[2] in IMAGE_SUFFIXES:
                data = archive.extractfile(member).read()
                item = ImageBytes(data, name=f"{url}#{member.name}")
        if key is not None:
            yield key, item or _no_image(url, key, extensions)


def _no_image(url, key, extensions):
    return FailedRead(
        f"{url}#{key}",
        ValueError(
            f"no image file in this sample (files: {', '.join(extensions)}); "
            f"image extensions: {', '.join(sorted(IMAGE_SUFFIXES))}"
        ),
    )
